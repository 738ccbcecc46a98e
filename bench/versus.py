"""kgworker against a faithful model of the seed's process model (``python -m bench versus``).

Both systems run on the same servers against the same fake provider (fixed latency,
``--latency`` s per call, unlimited capacity) with the same book of ``--chapters``
chapters, at each of ``--slots`` slots:

- **old**: ``bench/oldworker.py``: ``slots`` forked processes, each synchronous (blocking
  pop from the right, PyMySQL, sync httpx, one auto-commit MERGE per entity and relation
  with the sync neo4j driver), one whole task per process;
- **kgworker**: one ``bench.node`` process (``run_worker`` under uvloop, chaishu pipeline,
  LLM extractor) with ``slots`` slots, ``KG_LLM_MODE=three`` so it makes the same calls
  per chapter as the old model (entities, protagonist, relations), cache off.

The seed works a task in one process, chapter after chapter: one book keeps one of its
processes busy whatever the pool size. To measure the process model at full use, the
queue holds ``slots`` copies of the book (``slots`` tasks) for both systems. The full
books would take the old model hours (200 chapters × 3 calls × 2 s = 20 min per book),
so throughput is measured over a fixed window: completed chapters from ``--warmup`` s
after the push until ``--window`` s later. RSS is summed over the process tree (psutil;
the fake server and the databases are not counted), sampled every 2 s in the window; PSS
(shared pages split between the processes that map them) is sampled once mid-window.
The systems alternate within each repetition, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench import common

GiB = 2**30


async def measure(system: str, slots: int, args: argparse.Namespace, url: str,
                  base: Any) -> dict[str, float]:
    scratch = common.Scratch(base)
    await scratch.create(books=slots, chapters=args.chapters)
    try:
        if system == "old":
            env = scratch.env(PYTHONUNBUFFERED="1")
            proc = common.spawn(["-m", "bench.oldworker", "--provider", common.PROVIDER,
                                 "--processes", str(slots), "--llm-base-url", url], env, "old")
        else:
            env = common.node_env(scratch, url, slots, KG_LLM_MODE="three",
                                  DB_POOL_SIZE=str(min(20, slots + 2)),
                                  DB_POOL_MAX_OVERFLOW="10")
            proc = common.spawn(["-m", "bench.node"], env, "kgworker")
        try:
            await asyncio.sleep(args.start_wait)  # imports, connections, forks
            if proc.poll() is not None:
                raise RuntimeError(f"{system} exited with {proc.returncode}")
            await scratch.enqueue()
            await asyncio.sleep(args.warmup)
            before, started = await scratch.completed(), time.monotonic()
            rss: list[float] = []
            pss = 0.0
            processes = 0
            while time.monotonic() - started < args.window:
                mem, processes = common.tree_memory(proc.pid)
                rss.append(mem)
                if not pss and time.monotonic() - started >= args.window / 2:
                    pss, _ = common.tree_memory(proc.pid, pss=True)
                await asyncio.sleep(min(2.0, max(0.1, args.window - (time.monotonic() - started))))
            after, elapsed = await scratch.completed(), time.monotonic() - started
        finally:
            common.stop(proc, timeout=5)  # the seed stops only between books
        per_min = (after - before) / elapsed * 60
        rss_b = common.med(rss)
        return {"per_min": per_min, "rss": rss_b, "pss": pss, "processes": processes,
                "rss_slot": rss_b / slots, "per_min_gb": per_min / (rss_b / GiB),
                "per_min_gb_pss": per_min / (pss / GiB) if pss else float("nan")}
    finally:
        await scratch.drop()


def _table(results: dict[tuple[str, int], list[dict[str, float]]], slots: list[int],
           ideal: dict[int, float]) -> list[str]:
    def col(system: str, n: int, key: str, scale: float = 1.0, fmt: str = "{:,.1f}") -> str:
        return common.span([r[key] / scale for r in results[(system, n)]], fmt)

    lines = ["| slots | system | chapters/min | ideal/min | total RSS MiB | processes |"
             " RSS/slot MiB | chapters/min per GB RSS | PSS MiB | chapters/min per GB PSS |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in slots:
        for system in ("old", "kgworker"):
            rs = results[(system, n)]
            lines.append(
                f"| {n} | {system} | {col(system, n, 'per_min')} | {ideal[n]:,.0f}"
                f" | {col(system, n, 'rss', 2**20, '{:,.0f}')}"
                f" | {int(common.med([r['processes'] for r in rs]))}"
                f" | {col(system, n, 'rss_slot', 2**20, '{:,.2f}')}"
                f" | {col(system, n, 'per_min_gb', 1, '{:,.0f}')}"
                f" | {col(system, n, 'pss', 2**20, '{:,.0f}')}"
                f" | {col(system, n, 'per_min_gb_pss', 1, '{:,.0f}')} |")
    lines += ["", "| slots | RSS per slot, old / kgworker | chapters/min per GB RSS,"
              " kgworker / old | same on PSS | chapters/min, kgworker / old |",
              "|---:|---:|---:|---:|---:|"]
    for n in slots:
        pairs = list(zip(results[("old", n)], results[("kgworker", n)], strict=True))
        mem = [o["rss_slot"] / k["rss_slot"] for o, k in pairs]
        gb = [k["per_min_gb"] / o["per_min_gb"] for o, k in pairs]
        gb_pss = [k["per_min_gb_pss"] / o["per_min_gb_pss"] for o, k in pairs]
        thr = [k["per_min"] / o["per_min"] for o, k in pairs if o["per_min"]]
        lines.append(f"| {n} | {common.span(mem, '{:,.1f}x')} | {common.span(gb, '{:,.1f}x')}"
                     f" | {common.span(gb_pss, '{:,.1f}x')} | {common.span(thr, '{:,.2f}x')} |")
    if len(slots) >= 2:
        lo, hi = min(slots), max(slots)

        def marginal(system: str) -> float:
            rss = {n: common.med([r["rss"] for r in results[(system, n)]]) for n in (lo, hi)}
            return (rss[hi] - rss[lo]) / (hi - lo) / 2**20

        old, new = marginal("old"), marginal("kgworker")
        lines += ["", f"Marginal RSS per added slot ({lo} → {hi} slots, medians): old"
                  f" {old:,.1f} MiB, kgworker {new:,.2f} MiB ({old / new:,.0f}x less)."]
    return lines


def plot(results: dict[tuple[str, int], list[dict[str, float]]], slots: list[int],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for system, marker in (("old", "o"), ("kgworker", "s")):
        left.plot(slots, [common.med([r["rss"] / 2**20 for r in results[(system, n)]])
                          for n in slots], marker=marker, label=system)
        right.plot(slots, [common.med([r["per_min"] for r in results[(system, n)]])
                           for n in slots], marker=marker, label=system)
    left.set(xlabel="slots", ylabel="total RSS (MiB)", title="Memory", xscale="log",
             yscale="log")
    right.set(xlabel="slots", ylabel="chapters per minute", title="Throughput",
              xscale="log", yscale="log")
    for ax in (left, right):
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(slots, [str(n) for n in slots])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Seed process model vs kgworker (fake LLM, fixed latency)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", default="2,10,50")
    parser.add_argument("--chapters", type=int, default=200)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--systems", default="old,kgworker", help="for smoke runs")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--start-wait", type=float, default=4.0)
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--plot", default="docs/img/versus.png")
    args = parser.parse_args()
    slots = [int(n) for n in args.slots.split(",")]
    systems = args.systems.split(",")
    base = common.base_settings()
    load_before = common.load()
    results: dict[tuple[str, int], list[dict[str, float]]] = {}

    async def run() -> str:
        with common.fake_llm("--latency", str(args.latency)) as fake:
            for run_no in range(args.runs):
                for n in slots:
                    order = systems if run_no % 2 == 0 else systems[::-1]
                    for system in order:
                        r = await common.retried(
                            partial(measure, system, n, args, fake.url, base))
                        results.setdefault((system, n), []).append(r)
                        print(f"run {run_no + 1} slots {n} {system}: {r['per_min']:.1f}/min"
                              f" RSS {r['rss'] / 2**20:.0f} MiB PSS {r['pss'] / 2**20:.0f} MiB",
                              flush=True)
        return await common.versions(base)

    versions = asyncio.run(run())
    calls = 3  # entities, protagonist, relations (every chapter of the book has characters)
    ideal = {n: n / (calls * args.latency) * 60 for n in slots}
    if len(systems) < 2:
        print(results)
        return 0
    lines = ["", f"## Versus the seed's process model ({time.strftime('%Y-%m-%d %H:%M')} UTC)",
             "", f"`{common.command_line()}`", "",
             f"{common.machine()}; {versions}. Machine load: {load_before} before,"
             f" {common.load()} after (other engineers' tests were running).", "",
             f"Fake LLM at {args.latency:g} s per call, {args.chapters}-chapter book, one copy"
             f" per slot (the seed runs a whole book in one process); chapters completed in a"
             f" {args.window:g} s window starting {args.warmup:g} s after the push; medians of"
             f" {args.runs} runs (min–max); ratios are per run, old and kgworker side by side."
             f" Ideal = slots / ({calls} calls × {args.latency:g} s).", "",
             *_table(results, slots, ideal), ""]
    if args.plot:
        path = common.ROOT / args.plot
        plot(results, slots, path)
        lines += [f"![versus]({path.relative_to(common.ROOT / 'docs').as_posix()})", ""]
    report = "\n".join(lines)
    print(report)
    if args.append:
        common.append_doc(report)
    return 0
