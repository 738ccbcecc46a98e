"""What an idle node holds in memory (``python -m bench idle_node``).

A real ``python -m kgworker run`` node (the CLI, the chaishu pipeline, the LLM extractor
against the fake provider, the pipeline duties) is started on a scratch database with an
open task-less queue. Once it is idle — up for ``--start-wait`` s and then using under
``--quiet`` of a core over one second — its ``VmRSS`` (and ``VmHWM``, the peak) are read
from ``/proc/<pid>/status`` ``--samples`` times, a second apart; the median is reported.
Each configuration runs with the HTTP endpoint off and on (``KG_API_ENABLED``: aiohttp is
only imported when it is on).

``--code LABEL=DIR,...`` starts the node on other checkouts of kgworker in turn, e.g.
``--code before=<main checkout>,after=.`` (the node runs in DIR with ``PYTHONPATH=DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from bench import common


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


async def wait_idle(node: psutil.Process, start_wait: float, quiet: float, timeout: float
                    ) -> float:
    """Seconds until the node used under ``quiet`` of a core over one second."""
    began = time.monotonic()
    await asyncio.sleep(start_wait)
    while time.monotonic() - began < timeout:
        before = sum(node.cpu_times()[:2])
        await asyncio.sleep(1.0)
        if sum(node.cpu_times()[:2]) - before < quiet:
            return time.monotonic() - began
    raise RuntimeError(f"the node did not go idle within {timeout:.0f} s")


async def measure(args: argparse.Namespace, fake_url: str, code: str, api: bool
                  ) -> dict[str, float]:
    scratch = common.Scratch(common.base_settings())
    await scratch.create(books=1, chapters=1)
    try:
        env = common.node_env(scratch, fake_url, args.slots, PYTHONPATH=code,
                              KG_API_ENABLED=str(api).lower(), KG_API_PORT="0")
        proc = common.spawn(["-m", "kgworker", "run"], env, "idle-node", cwd=Path(code))
        try:
            node = psutil.Process(proc.pid)
            took = await wait_idle(node, args.start_wait, args.quiet, args.timeout)
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}")
            rss, hwm = [], []
            for _ in range(args.samples):
                rss.append(status_kib(proc.pid, "VmRSS"))
                hwm.append(status_kib(proc.pid, "VmHWM"))
                await asyncio.sleep(1.0)
            return {"idle after s": took, "VmRSS MiB": common.med(rss) / 1024,
                    "VmHWM MiB": common.med(hwm) / 1024}
        finally:
            await asyncio.to_thread(common.stop, proc, 20)
    finally:
        await scratch.drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--start-wait", type=float, default=5.0)
    parser.add_argument("--quiet", type=float, default=0.02,
                        help="CPU seconds per second under which the node counts as idle")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--code", default=f"this={common.ROOT}",
                        help="LABEL=DIR,...: kgworker checkouts the node runs on, in turn")
    parser.add_argument("--runs", type=int, default=1, help="runs of each code, interleaved")
    args = parser.parse_args()
    codes = [item.split("=", 1) for item in args.code.split(",")]
    found: dict[tuple[str, bool], list[dict[str, float]]] = {}

    async def run() -> None:
        with common.fake_llm() as fake:
            for _ in range(args.runs):
                for label, path in codes:
                    for api in (False, True):
                        result = await common.retried(
                            lambda p=path, a=api: measure(args, fake.url, p, a))
                        found.setdefault((label, api), []).append(result)
                        print(f"{label} api={'on' if api else 'off'}: "
                              f"VmRSS {result['VmRSS MiB']:.1f} MiB, "
                              f"VmHWM {result['VmHWM MiB']:.1f} MiB "
                              f"(idle after {result['idle after s']:.0f} s)", flush=True)

    asyncio.run(run())
    print(f"\nidle node, {args.slots} slots, fake LLM ({common.machine()})")
    print("| code | HTTP endpoint | VmRSS MiB | VmHWM MiB |\n|---|---|---:|---:|")
    for (label, api), results in found.items():
        rss = common.med([r["VmRSS MiB"] for r in results])
        hwm = common.med([r["VmHWM MiB"] for r in results])
        print(f"| {label} | {'on' if api else 'off'} | {rss:.1f} | {hwm:.1f} |")
    return 0
