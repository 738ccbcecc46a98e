"""Chapters in flight on one node, beside the raw store ceiling (``python -m bench concurrency``).

One ``bench.node`` process (``run_worker`` under uvloop, chaishu pipeline, LLM extractor,
Neo4j graph writer) with ``N`` slots for N in ``--slots``, on ``B`` books for B in
``--books``, against the fake provider at ``--latency`` s per call (no capacity limit, so it
never answers 429). ``KG_LLM_MODE=single``: one call per chapter, so the ideal throughput is
``N / latency`` chapters per second.

Every book has ``--chapters`` chapters whatever the slot count or the number of books (ten
books are ten books of that size), so the per-chapter bookkeeping cost is the same in every
cell. The default is enough for one book at the ideal rate of the largest slot count over
warm-up + window, capped at ``--max-chapters``; a cell whose book ran out of pending
chapters by the end of the window says ``dry``.

Measured over a ``--window`` s window starting ``--warmup`` s after the push:
chapters completed per second (MySQL), LLM calls in flight (the fake server's arrivals in
the window × latency / window, Little's law), event-loop lag of the worker (a probe in the
worker process wakes every 50 ms and records how late it is: p50, p99, max), RSS of the
worker, CPU used by the worker and by the whole machine in the window.

In the same run, interleaved with the node's cells, :mod:`bench.ceiling` measures the raw
store ceiling for each book count (no LLM, no queue: the real claim, graph write and finish
at ``--ceiling-concurrency`` coroutines), and each cell is also given as a share of it.

``--graph null`` swaps the Neo4j writer for a sink that writes nothing, to show what the
graph writes cost; the default is the real writer.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import ceiling, common

Cell = tuple[int, int]  # (books, slots)


def _lag(path: Path, start: float, end: float) -> list[float]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, _, lag = line.partition(" ")
        if lag and start <= float(t) <= end:
            out.append(float(lag))
    return out


def share(part: float, whole: float) -> float:
    """``part / whole`` in %, NaN when there is no whole (e.g. no ceiling measured)."""
    return part / whole * 100 if whole else float("nan")


def chapters_per_book(args: argparse.Namespace, slots: list[int]) -> int:
    """``--chapters``, or enough that one book at the ideal rate of the largest slot count
    on all ``--nodes`` does not run dry in warm-up + window (capped at ``--max-chapters``)."""
    if args.chapters:
        return int(args.chapters)
    ideal = args.nodes * max(slots) / args.latency
    return min(int(ideal * (args.warmup + args.window + 10)) + 10, int(args.max_chapters))


async def _dry(scratch: common.Scratch) -> bool:
    """Whether some started book has no pending chapter left (a book not started yet has
    no chapter rows, and is not dry)."""
    rows = await scratch.rows(
        "SELECT t.status, COUNT(cs.chapter_id) FROM knowledge_graph_tasks t"
        " LEFT JOIN knowledge_graph_chapter_status cs"
        " ON cs.kg_task_id = t.id AND cs.status = 'pending' GROUP BY t.id, t.status")
    return any(status == "completed" or (status == "running" and int(pending) == 0)
               for status, pending in rows)


async def measure(cell: Cell, args: argparse.Namespace, fake: Any, base: Any
                  ) -> dict[str, float]:
    books, n = cell
    nodes = args.nodes
    ideal = nodes * n / args.latency
    scratch = common.Scratch(base)
    await scratch.create(books=books, chapters=args.per_book, sentences=args.sentences)
    lag_files = [common.log_path(f"lag-{books}-{n}-{i}") for i in range(nodes)]
    for lag_file in lag_files:
        lag_file.unlink(missing_ok=True)
    pool = args.pool_size
    envs = [common.node_env(
        scratch, fake.url, n, KG_LLM_MODE="single", KGB_LAG_FILE=str(lag_file),
        KG_WORKER_NODE_NAME=f"bench-node-{i + 1}",
        DB_POOL_SIZE=str(pool), DB_POOL_MAX_OVERFLOW=str(pool), DB_POOL_TIMEOUT="60",
        KG_LLM_TIMEOUT="120", KG_LLM_COMPATIBLE_TIMEOUT="120",
        **({"KGB_GRAPH": "null"} if args.graph == "null" else {}),
    ) for i, lag_file in enumerate(lag_files)]
    try:
        procs = [common.spawn(["-m", "bench.node"], env, f"concurrency-{books}-{n}-{i}")
                 for i, env in enumerate(envs)]
        try:
            await asyncio.sleep(args.start_wait)
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"node exited with {proc.returncode}")
            await scratch.enqueue()
            await asyncio.sleep(args.warmup)
            fake.reset()
            workers = [psutil.Process(proc.pid) for proc in procs]
            cpu0, sys0 = sum(sum(w.cpu_times()[:2]) for w in workers), psutil.cpu_times()
            before, t0, wall0 = await scratch.completed(), time.monotonic(), time.time()
            rss: list[float] = []
            while time.monotonic() - t0 < args.window:
                rss += [w.memory_info().rss for w in workers]
                await asyncio.sleep(min(2.0, max(0.1, args.window - (time.monotonic() - t0))))
            after, elapsed, wall1 = await scratch.completed(), time.monotonic() - t0, time.time()
            cpu1, sys1 = sum(sum(w.cpu_times()[:2]) for w in workers), psutil.cpu_times()
            dry = await _dry(scratch)
            log = fake.log()
        finally:
            for proc in procs:
                common.stop(proc, timeout=40)
        busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
        total = sum(sys1) - sum(sys0)
        arrivals = [r for r in log["requests"] if wall0 <= r["t"] <= wall1]
        lags = [lag for lag_file in lag_files for lag in _lag(lag_file, wall0, wall1)]
        rate = (after - before) / elapsed
        return {
            "rate": rate, "ideal": ideal, "share": rate / ideal, "dry": float(dry),
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


def plot(results: dict[Cell, list[dict[str, float]]], ceilings: dict[int, list[dict[str, float]]],
         path: Path, latency: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    levels = sorted({n for _, n in results})
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels, [n / latency for n in levels], "--", label="ideal (in flight / latency)")
    for books in sorted({b for b, _ in results}):
        mine = [n for n in levels if (books, n) in results]
        line = ax.plot(mine, [common.med([r["rate"] for r in results[books, n]]) for n in mine],
                       "o-", label=f"{books} book(s)")
        if books in ceilings:
            ax.axhline(common.med([r["rate"] for r in ceilings[books]]), linestyle=":",
                       color=line[0].get_color(), label=f"store ceiling, {books} book(s)")
    ax.set(xlabel="chapters in flight (slots)", ylabel="chapters per second",
           title=f"One node, fake LLM at {latency:g} s per call", xscale="log", yscale="log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(results: dict[Cell, list[dict[str, float]]],
            ceilings: dict[int, list[dict[str, float]]], latency: float, nodes: int = 1
            ) -> str:
    """The last line: 1 book at 100 slots, 10 books at 500 (else at the fewest, the most
    slots measured for that book count; ``–`` when the book count was not measured)."""
    def cell(books: int, slots: int, pick: Any) -> Cell | None:
        mine = [n for b, n in results if b == books]
        return None if not mine else (books, slots if slots in mine else pick(mine))

    def rate(found: Cell | None) -> float:
        return common.med([r["rate"] for r in results[found]]) if found else float("nan")

    one, ten = cell(1, 100, min), cell(10, 500, max)
    x, y = rate(one), rate(ten)
    ideal = nodes * one[1] / latency if one else float("nan")
    top = common.med([r["rate"] for r in ceilings.get(1, [])])

    def num(value: float, fmt: str) -> str:
        return "–" if value != value else fmt.format(value)  # NaN: not measured

    return (f"throughput: 1 book {num(x, '{:.1f}')} ch/s ({num(share(x, ideal), '{:.0f}')} %"
            f" of ideal, {num(share(x, top), '{:.0f}')} % of store ceiling);"
            f" 10 books {num(y, '{:.1f}')} ch/s")


def report(args: argparse.Namespace, results: dict[Cell, list[dict[str, float]]],
           ceilings: dict[int, list[dict[str, float]]], versions: str, load_before: str
           ) -> list[str]:
    def col(rows: list[dict[str, float]], key: str, fmt: str = "{:,.1f}") -> str:
        return common.span([r[key] for r in rows], fmt)

    def dry(rows: list[dict[str, float]]) -> str:
        return f"{sum(int(r['dry']) for r in rows)}/{len(rows)}"

    fleet = "One node, N slots" if args.nodes == 1 else (
        f"{args.nodes} nodes on this machine, N slots each (worker CPU and RSS: the nodes"
        " together, RSS per node)")
    ideal_of = "N" if args.nodes == 1 else f"{args.nodes} × N"
    where = "on one node" if args.nodes == 1 else f"on {args.nodes} nodes"
    lines = ["", f"## Concurrency: chapters in flight {where}, and the store ceiling"
             f" ({time.strftime('%Y-%m-%d %H:%M')} UTC)", "", f"`{common.command_line()}`", "",
             f"{common.machine()}; {versions}. Machine load: {load_before} before,"
             f" {common.load()} after (other engineers' tests may have been running).", "",
             f"{fleet}, `KG_LLM_MODE=single` (one {args.latency:g} s call per chapter:"
             f" ideal = {ideal_of} / {args.latency:g} s), graph writer: {args.graph},"
             " LLM cache off,"
             f" `DB_POOL_SIZE={args.pool_size}`, `DB_POOL_MAX_OVERFLOW={args.pool_size}`"
             f" (MariaDB max_connections 500), fake LLM without capacity limit. Every book has"
             f" {args.per_book:,} chapters of about {args.sentences * 30:,} characters, in every"
             " cell (ten books are ten such books); window"
             f" {args.window:g} s after {args.warmup:g} s warm-up; medians of {args.runs} runs"
             " (min–max), cells and ceilings interleaved. `dry`: runs in which a book had no"
             " pending chapter left at the end of the window. CPU in % of one core (the"
             f" machine has {os.cpu_count()}).", "",
             "| books | slots | chapters/s | ideal/s | share of ideal | share of store ceiling"
             " | LLM calls in flight | loop lag p50 ms | loop lag p99 ms | loop lag max ms"
             " | RSS MiB | worker CPU % | machine CPU % | LLM errors | dry |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for books, n in sorted(results):
        rows = results[books, n]
        top = common.med([r["rate"] for r in ceilings.get(books, [])])
        lines.append(
            f"| {books} | {n:,} | {col(rows, 'rate')} | {args.nodes * n / args.latency:,.0f}"
            f" | {common.span([r['share'] * 100 for r in rows], '{:.1f} %')}"
            f" | {common.span([share(r['rate'], top) for r in rows], '{:.0f} %')}"
            f" | {col(rows, 'llm_in_flight', '{:,.0f}')} | {col(rows, 'lag_p50')}"
            f" | {col(rows, 'lag_p99')} | {col(rows, 'lag_max')} | {col(rows, 'rss', '{:,.0f}')}"
            f" | {col(rows, 'cpu_node', '{:.0f}')} | {col(rows, 'cpu_machine', '{:.0f}')}"
            f" | {col(rows, 'errors', '{:.0f}')} | {dry(rows)} |")
    lines += ["", ceiling.describe(args.ceiling_concurrency, args.pool_size,
                                   args.ceiling_warmup, args.window, args.ceiling_claims), "",
              "| books | store ceiling chapters/s | failed/s | missed/s | bench CPU %"
              " | bench CPU ms | machine CPU % | dry |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for books, rows in sorted(ceilings.items()):
        lines.append(f"| {books} | {col(rows, 'rate')} | {col(rows, 'failed')}"
                     f" | {col(rows, 'missed')}"
                     f" | {col(rows, 'cpu_bench', '{:.0f}')} | {col(rows, 'cpu_ms')}"
                     f" | {col(rows, 'cpu_machine', '{:.0f}')} | {dry(rows)} |")
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--books", default="1,10", help="books per cell, comma list")
    parser.add_argument("--slots", "--in-flight", dest="slots", default="100,500",
                        help="slots (chapters in flight) per cell, comma list")
    parser.add_argument("--chapters", type=int, default=0,
                        help="chapters per book (default: see --max-chapters)")
    parser.add_argument("--max-chapters", type=int, default=3000,
                        help="cap of the default --chapters")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--start-wait", type=float, default=4.0)
    parser.add_argument("--sentences", type=int, default=40, help="chapter length / 30 chars")
    parser.add_argument("--pool-size", type=int, default=40, help="DB_POOL_SIZE (= overflow)")
    parser.add_argument("--graph", choices=("neo4j", "null"), default="neo4j")
    parser.add_argument("--nodes", type=int, default=1,
                        help="node processes per cell (each with the cell's slots)")
    parser.add_argument("--ceiling-concurrency", type=int, default=100)
    parser.add_argument("--ceiling-warmup", type=float, default=5.0)
    parser.add_argument("--ceiling-claims", choices=ceiling.CLAIMS, default="serial")
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--plot", default="docs/img/concurrency.png")
    args = parser.parse_args()
    book_counts = [int(b) for b in args.books.split(",")]
    levels = [int(n) for n in args.slots.split(",")]
    args.per_book = chapters_per_book(args, levels)
    base = common.base_settings()
    load_before = common.load()
    results: dict[Cell, list[dict[str, float]]] = {}
    ceilings: dict[int, list[dict[str, float]]] = {}

    async def run() -> str:
        with common.fake_llm("--latency", str(args.latency)) as fake:
            for run_no in range(args.runs):
                for books in book_counts:
                    c = await common.retried(partial(
                        ceiling.measure, base, books, args.per_book,
                        concurrency=args.ceiling_concurrency, warmup=args.ceiling_warmup,
                        window=args.window, sentences=args.sentences, pool_size=args.pool_size,
                        claims=args.ceiling_claims))
                    ceilings.setdefault(books, []).append(c)
                    print(f"run {run_no + 1} {ceiling.line(books, c)}", flush=True)
                    for n in levels:
                        r = await common.retried(partial(measure, (books, n), args, fake, base))
                        results.setdefault((books, n), []).append(r)
                        dry = " (dry)" if r["dry"] else ""
                        print(f"run {run_no + 1} {books} book(s), {n} slots: {r['rate']:.1f}/s"
                              f" of {r['ideal']:.0f} ({r['share']:.0%}){dry},"
                              f" LLM in flight {r['llm_in_flight']:.0f},"
                              f" lag p99 {r['lag_p99']:.1f} ms, RSS {r['rss']:.0f} MiB,"
                              f" CPU node {r['cpu_node']:.0f} % machine {r['cpu_machine']:.0f} %",
                              flush=True)
        return await common.versions(base)

    versions = asyncio.run(run())
    lines = report(args, results, ceilings, versions, load_before)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no plot", file=sys.stderr)
    elif args.plot:
        path = common.ROOT / args.plot
        plot(results, ceilings, path, args.latency)
        lines += [f"![concurrency]({path.relative_to(common.ROOT / 'docs').as_posix()})", ""]
    last = summary(results, ceilings, args.latency, args.nodes)
    lines += [f"`{last}`", ""]
    text = "\n".join(lines)
    print(text)
    if args.append:
        common.append_doc(text)
    print(last)
    return 0
