"""Chapters in flight on one node (``python -m bench concurrency``).

One ``bench.node`` process (``run_worker`` under uvloop, chaishu pipeline, LLM extractor,
Neo4j graph writer) with ``N`` slots for N in ``--in-flight``, against the fake provider at
``--latency`` s per call (no capacity limit, so it never answers 429). ``KG_LLM_MODE=single``:
one call per chapter, so the ideal throughput is ``N / latency`` chapters per second.

Measured over a ``--window`` s window starting ``--warmup`` s after the push:
chapters completed per second (MySQL), LLM calls in flight (the fake server's arrivals in
the window × latency / window, Little's law), event-loop lag of the worker (a probe in the
worker process wakes every 50 ms and records how late it is: p50, p99, max), RSS of the
worker, CPU used by the worker and by the whole machine in the window.

``--graph null`` swaps the Neo4j writer for a sink that writes nothing, to show what the
graph writes cost; the default is the real writer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import common


def _lag(path: Path, start: float, end: float) -> list[float]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, _, lag = line.partition(" ")
        if lag and start <= float(t) <= end:
            out.append(float(lag))
    return out


async def measure(n: int, args: argparse.Namespace, fake: Any, base: Any) -> dict[str, float]:
    ideal = n / args.latency
    books = max(1, n // 100)
    # enough chapters that the queue never runs dry, even at the ideal rate
    per_book = int(ideal * (args.warmup + args.window + 10) / books) + 10
    per_book = min(per_book, args.max_chapters // books)
    scratch = common.Scratch(base)
    await scratch.create(books=books, chapters=per_book, sentences=args.sentences)
    lag_file = common.log_path(f"lag-{n}")
    lag_file.unlink(missing_ok=True)
    pool = args.pool_size
    env = common.node_env(
        scratch, fake.url, n, KG_LLM_MODE="single", KGB_LAG_FILE=str(lag_file),
        DB_POOL_SIZE=str(pool), DB_POOL_MAX_OVERFLOW=str(pool), DB_POOL_TIMEOUT="60",
        KG_LLM_TIMEOUT="120", KG_LLM_COMPATIBLE_TIMEOUT="120",
        **({"KGB_GRAPH": "null"} if args.graph == "null" else {}),
    )
    try:
        proc = common.spawn(["-m", "bench.node"], env, f"concurrency-{n}")
        try:
            await asyncio.sleep(args.start_wait)
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}")
            await scratch.enqueue()
            await asyncio.sleep(args.warmup)
            fake.reset()
            node = psutil.Process(proc.pid)
            cpu0, sys0 = sum(node.cpu_times()[:2]), psutil.cpu_times()
            before, t0, wall0 = await scratch.completed(), time.monotonic(), time.time()
            rss: list[float] = []
            while time.monotonic() - t0 < args.window:
                rss.append(node.memory_info().rss)
                await asyncio.sleep(min(2.0, max(0.1, args.window - (time.monotonic() - t0))))
            after, elapsed, wall1 = await scratch.completed(), time.monotonic() - t0, time.time()
            cpu1, sys1 = sum(node.cpu_times()[:2]), psutil.cpu_times()
            log = fake.log()
        finally:
            common.stop(proc, timeout=40)
        busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
        total = sum(sys1) - sum(sys0)
        arrivals = [r for r in log["requests"] if wall0 <= r["t"] <= wall1]
        lags = _lag(lag_file, wall0, wall1)
        rate = (after - before) / elapsed
        return {
            "rate": rate, "ideal": ideal, "share": rate / ideal,
            "llm_in_flight": len(arrivals) * args.latency / elapsed,
            "lag_p50": common.percentile(lags, 50) * 1000,
            "lag_p99": common.percentile(lags, 99) * 1000,
            "lag_max": max(lags, default=float("nan")) * 1000,
            "rss": common.med(rss) / 2**20,
            "cpu_node": (cpu1 - cpu0) / elapsed * 100,
            "cpu_machine": busy / total * 100 * (os.cpu_count() or 1) if total else 0.0,
            "errors": sum(1 for r in arrivals if r["status"] != 200),
        }
    finally:
        await scratch.drop()


def plot(results: dict[int, list[dict[str, float]]], path: Path, latency: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    levels = sorted(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels, [n / latency for n in levels], "--", label="ideal (in flight / latency)")
    ax.plot(levels, [common.med([r["rate"] for r in results[n]]) for n in levels], "o-",
            label="achieved")
    ax.set(xlabel="chapters in flight (slots)", ylabel="chapters per second",
           title=f"One node, fake LLM at {latency:g} s per call", xscale="log", yscale="log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in-flight", default="100,500,1000")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--start-wait", type=float, default=4.0)
    parser.add_argument("--sentences", type=int, default=40, help="chapter length / 30 chars")
    parser.add_argument("--pool-size", type=int, default=40, help="DB_POOL_SIZE (= overflow)")
    parser.add_argument("--max-chapters", type=int, default=12000)
    parser.add_argument("--graph", choices=("neo4j", "null"), default="neo4j")
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--plot", default="docs/img/concurrency.png")
    args = parser.parse_args()
    levels = [int(n) for n in args.in_flight.split(",")]
    base = common.base_settings()
    load_before = common.load()
    results: dict[int, list[dict[str, float]]] = {}

    async def run() -> str:
        with common.fake_llm("--latency", str(args.latency)) as fake:
            for run_no in range(args.runs):
                for n in levels:
                    r = await common.retried(partial(measure, n, args, fake, base))
                    results.setdefault(n, []).append(r)
                    print(f"run {run_no + 1} in flight {n}: {r['rate']:.1f}/s of {r['ideal']:.0f}"
                          f" ({r['share']:.0%}), LLM in flight {r['llm_in_flight']:.0f},"
                          f" lag p99 {r['lag_p99']:.1f} ms, RSS {r['rss']:.0f} MiB,"
                          f" CPU node {r['cpu_node']:.0f} % machine {r['cpu_machine']:.0f} %",
                          flush=True)
        return await common.versions(base)

    versions = asyncio.run(run())

    def col(n: int, key: str, fmt: str = "{:,.1f}") -> str:
        return common.span([r[key] for r in results[n]], fmt)

    lines = ["", f"## Concurrency: chapters in flight on one node"
             f" ({time.strftime('%Y-%m-%d %H:%M')} UTC)", "", f"`{common.command_line()}`", "",
             f"{common.machine()}; {versions}. Machine load: {load_before} before,"
             f" {common.load()} after (other engineers' tests were running).", "",
             f"One node, N slots, `KG_LLM_MODE=single` (one {args.latency:g} s call per chapter:"
             f" ideal = N / {args.latency:g} s), graph writer: {args.graph}, LLM cache off,"
             f" `DB_POOL_SIZE={args.pool_size}`, `DB_POOL_MAX_OVERFLOW={args.pool_size}`"
             f" (MariaDB max_connections 500), fake LLM without capacity limit; window"
             f" {args.window:g} s after {args.warmup:g} s warm-up; medians of {args.runs} runs"
             " (min–max). CPU in % of one core (the machine has"
             f" {os.cpu_count()}).", "",
             "| in flight | chapters/s | ideal/s | share of ideal | LLM calls in flight |"
             " loop lag p50 ms | loop lag p99 ms | loop lag max ms | RSS MiB |"
             " worker CPU % | machine CPU % | LLM errors |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in levels:
        lines.append(
            f"| {n:,} | {col(n, 'rate')} | {n / args.latency:,.0f}"
            f" | {common.span([r['share'] * 100 for r in results[n]], '{:.1f} %')}"
            f" | {col(n, 'llm_in_flight', '{:,.0f}')} | {col(n, 'lag_p50')} | {col(n, 'lag_p99')}"
            f" | {col(n, 'lag_max')} | {col(n, 'rss', '{:,.0f}')} | {col(n, 'cpu_node', '{:.0f}')}"
            f" | {col(n, 'cpu_machine', '{:.0f}')} | {col(n, 'errors', '{:.0f}')} |")
    lines.append("")
    if args.plot:
        path = common.ROOT / args.plot
        plot(results, path, args.latency)
        lines += [f"![concurrency]({path.relative_to(common.ROOT / 'docs').as_posix()})", ""]
    report = "\n".join(lines)
    print(report)
    if args.append:
        common.append_doc(report)
    return 0
