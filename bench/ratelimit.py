"""Three nodes against one rate-limited provider (``python -m bench ratelimit``).

``--nodes`` ``bench.node`` processes (``--slots`` slots each, single mode: one call per
chapter) work one book through one provider limited to ``--limit`` requests per
``--window`` s: the nodes are told the limit (``KG_PROVIDER_LIMITS=deepseek:rpm=N``,
``KG_RATE_WINDOW_SECONDS=W``: the shared Redis limiter) and the fake server enforces the
same limit on its own clock (a sliding window; a request over it gets a 429 and is
counted as a violation). The fake answers in ``--latency`` s, so the slots could send far
more than the limit allows.

From the server's log, over ``--windows`` windows from the first request: share of the
limit used (requests answered 200 / (windows × limit)), overruns (requests the server had
to refuse because the window was full: must be 0), 429s seen, and the busiest sliding
window. A minute-long window makes one run last minutes; the default window is 20 s (the
limiter and the check do not depend on its length).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench import common
from tests.fakellm.server import max_in_window


async def measure(args: argparse.Namespace, fake: Any, base: Any) -> dict[str, float]:
    duration = args.windows * args.window
    chapters = int(args.limit * (duration / args.window + 2) * 1.5) + 20
    scratch = common.Scratch(base)
    await scratch.create(books=1, chapters=chapters, sentences=10)
    fake.reset()
    procs = []
    try:
        for i in range(args.nodes):
            env = common.node_env(
                scratch, fake.url, args.slots, KG_LLM_MODE="single",
                KG_WORKER_NODE_NAME=f"bench-rl-{i}",
                KG_PROVIDER_LIMITS=f"{common.PROVIDER}:rpm={args.limit}",
                KG_RATE_WINDOW_SECONDS=str(args.window), DB_POOL_SIZE="6",
            )
            procs.append(common.spawn(["-m", "bench.node"], env, f"ratelimit-{i}"))
        await asyncio.sleep(args.start_wait)
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a node exited with {proc.returncode}")
        await scratch.enqueue()
        deadline = time.monotonic() + 30
        while not fake.log()["requests"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(duration + 1.0)
        log = fake.log()
    finally:
        common.stop_all(procs)
        await scratch.drop()
    requests = log["requests"]
    first = min((r["t"] for r in requests), default=0.0)
    inside = [r for r in requests if r["t"] < first + duration]
    ok = [r["t"] for r in inside if r["status"] == 200]
    return {
        "used": len(ok) / (args.windows * args.limit),
        "ok": len(ok),
        "overruns": float(log["violations"]),
        "http_429": sum(1 for r in requests if r["status"] == 429),
        "busiest": max_in_window([r["t"] for r in requests if r["status"] == 200], args.window),
        "other_errors": sum(1 for r in requests if r["status"] not in (200, 429)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--limit", type=int, default=40, help="requests per window")
    parser.add_argument("--window", type=float, default=20.0, help="seconds")
    parser.add_argument("--windows", type=int, default=3, help="windows measured per run")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--start-wait", type=float, default=5.0)
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    base = common.base_settings()
    load_before = common.load()
    results: list[dict[str, float]] = []

    async def run() -> str:
        with common.fake_llm("--latency", str(args.latency), "--rpm-limit", str(args.limit),
                             "--rpm-window", str(args.window)) as fake:
            for run_no in range(args.runs):
                r = await common.retried(lambda: measure(args, fake, base))
                results.append(r)
                print(f"run {run_no + 1}: used {r['used']:.1%} ({r['ok']:.0f}),"
                      f" overruns {r['overruns']:.0f}, 429s {r['http_429']:.0f},"
                      f" busiest window {r['busiest']:.0f}/{args.limit}", flush=True)
        return await common.versions(base)

    versions = asyncio.run(run())
    used = common.span([r["used"] * 100 for r in results], "{:.1f} %")
    answered = common.span([r["ok"] for r in results], "{:.0f}")
    busiest = common.span([r["busiest"] for r in results], "{:.0f}")
    lines = ["", f"## Rate limit: {args.nodes} nodes, one provider"
             f" ({time.strftime('%Y-%m-%d %H:%M')} UTC)", "", f"`{common.command_line()}`", "",
             f"{common.machine()}; {versions}. Machine load: {load_before} before,"
             f" {common.load()} after (other engineers' tests were running).", "",
             f"{args.nodes} nodes × {args.slots} slots, one book, limit {args.limit} requests"
             f" per {args.window:g} s window (= {args.limit * 60 / args.window:g}/min), known to"
             f" the nodes and enforced by the fake server (sliding window, 429 above it); the"
             f" server answers in {args.latency:g} s, so the slots alone could send"
             f" {args.nodes * args.slots / args.latency * args.window:,.0f} per window."
             f" Measured over {args.windows} windows from the first request; medians of"
             f" {args.runs} runs (min–max).", "",
             "| measure | result |", "|---|---|",
             f"| share of the limit used | {used} |",
             f"| requests answered in {args.windows} windows (limit"
             f" {args.windows * args.limit}) | {answered} |",
             f"| busiest sliding window (limit {args.limit}) | {busiest} |",
             f"| overruns (server refused: window full), total | "
             f"{sum(r['overruns'] for r in results):.0f} |",
             f"| 429s seen, total | {sum(r['http_429'] for r in results):.0f} |",
             f"| other errors, total | {sum(r['other_errors'] for r in results):.0f} |", ""]
    report = "\n".join(lines)
    print(report)
    if args.append:
        common.append_doc(report)
    return 0
