"""kill -9 of a node holding 10 chapters (``python -m bench recovery``).

Node A (``bench.node``, ``--held`` slots) claims every chapter of a ``--held``-chapter book
while the fake provider holds each call for a minute; node B (same slots) is then
started and, once it is registered, the provider is set to ``--latency`` s per call and A
is killed with SIGKILL. A held the task's queue claim and all the chapter claims.

Per chapter the bench polls MySQL every 0.1 s: *re-claimed* = seconds from the kill until
its claim row names B; *finished* = until its status is ``completed``; *task re-claimed* =
until the task's queue claim in Redis names B (the reaper gave A's claim back and B took
it). Lost = chapters not completed within ``--cap`` s; duplicated = completions beyond one
per chapter in the task counters and chapter rows (``completed_chapters`` and ``status =
'completed'`` rows). Lease and reaper interval are the defaults unless ``--lease`` /
``--reaper`` are given. The last line: ``recovery: kill -9 → re-claimed <s> s (median, last
chapter; task <s> s); lost <n>, duplicated <m>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any

from bench import common


async def measure(args: argparse.Namespace, fake: Any, base: Any) -> dict[str, Any]:
    scratch = common.Scratch(base)
    await scratch.create(books=1, chapters=args.held)
    task_id = scratch.tasks[0]
    extra = {"KG_LLM_MODE": "single", "DB_POOL_SIZE": "6", "KG_LLM_TIMEOUT": "120",
             "KG_LLM_COMPATIBLE_TIMEOUT": "120"}
    if args.lease:
        extra["KG_LEASE_SECONDS"] = str(args.lease)
    if args.reaper:
        extra["KG_REAPER_INTERVAL"] = str(args.reaper)
    fake.configure(latency=60.0)
    a = common.spawn(["-m", "bench.node"], common.node_env(
        scratch, fake.url, args.held, KG_WORKER_NODE_NAME="bench-a", **extra), "recovery-a")
    b = None
    try:
        await asyncio.sleep(args.start_wait)
        await scratch.enqueue()

        async def a_holds_all() -> bool:
            held = await scratch.scalar(
                "SELECT COUNT(*) FROM kgworker_chapter_claims WHERE task_id = :t"
                " AND token IS NOT NULL AND owner LIKE 'bench-a-%'", t=task_id)
            return bool(int(held) >= args.held)

        if not await common.wait_for(a_holds_all, 60):
            raise RuntimeError("node A never held every chapter")
        b = common.spawn(["-m", "bench.node"], common.node_env(
            scratch, fake.url, args.held, KG_WORKER_NODE_NAME="bench-b", **extra),
            "recovery-b")
        await asyncio.sleep(args.start_wait + args.b_wait)
        if b.poll() is not None:
            raise RuntimeError(f"node B exited with {b.returncode}")
        fake.configure(latency=args.latency)
        os.kill(a.pid, signal.SIGKILL)
        killed = time.monotonic()
        chapters = scratch.chapters.get(task_id) or [int(r[0]) for r in await scratch.rows(
            "SELECT chapter_id FROM knowledge_graph_chapter_status WHERE kg_task_id = :t",
            t=task_id)]
        reclaimed: dict[int, float] = {}
        finished: dict[int, float] = {}
        task_claimed: float | None = None
        while len(finished) < len(chapters) and time.monotonic() - killed < args.cap:
            now = time.monotonic() - killed
            if task_claimed is None and await _b_holds_task(scratch):
                task_claimed = now
            for cid, owner, status in await scratch.rows(
                "SELECT cs.chapter_id, cl.owner, cs.status FROM knowledge_graph_chapter_status cs"
                " LEFT JOIN kgworker_chapter_claims cl ON cl.task_id = cs.kg_task_id"
                " AND cl.chapter_id = cs.chapter_id WHERE cs.kg_task_id = :t", t=task_id):
                if owner and str(owner).startswith("bench-b-"):
                    reclaimed.setdefault(int(cid), now)
                if status == "completed":
                    finished.setdefault(int(cid), now)
                    reclaimed.setdefault(int(cid), now)
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)  # let B finalise the task, anything doubled show up
        counted = int(await scratch.scalar(
            "SELECT completed_chapters FROM knowledge_graph_tasks WHERE id = :t", t=task_id))
        rows = int(await scratch.scalar(
            "SELECT COUNT(*) FROM knowledge_graph_chapter_status WHERE kg_task_id = :t"
            " AND status = 'completed'", t=task_id))
        status = await scratch.scalar(
            "SELECT status FROM knowledge_graph_tasks WHERE id = :t", t=task_id)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        if b is not None:
            common.stop(b, timeout=30)
        await scratch.drop()
    return {
        "reclaim": sorted(reclaimed.values()), "finish": sorted(finished.values()),
        "lost": len(chapters) - len(finished),
        "duplicated": max(0, counted - len(chapters)) + max(0, rows - len(chapters)),
        "task_status": str(status), "chapters": len(chapters),
        "task_claim": task_claimed if task_claimed is not None else float("nan"),
    }


async def _b_holds_task(scratch: Any) -> bool:
    """Whether a queue claim of the provider names node B (the claims hash in Redis)."""
    from kgworker.keys import ProviderKeys
    from kgworker.queue.connection import create_redis

    redis = create_redis(scratch.settings)
    try:
        claims = await redis.hvals(ProviderKeys.for_provider(common.PROVIDER).claims)
    finally:
        await redis.aclose()
    return any(json.loads(c).get("node") == "bench-b" for c in claims)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--held", type=int, default=10, help="chapters A holds (= its slots)")
    parser.add_argument("--latency", type=float, default=2.0, help="per call after the kill")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cap", type=float, default=120.0)
    parser.add_argument("--lease", type=float, default=0.0, help="KG_LEASE_SECONDS (0 = default)")
    parser.add_argument("--reaper", type=float, default=0.0,
                        help="KG_REAPER_INTERVAL (0 = default)")
    parser.add_argument("--start-wait", type=float, default=4.0)
    parser.add_argument("--b-wait", type=float, default=2.0, help="extra wait for node B")
    parser.add_argument("--settle", type=float, default=3.0, help="wait after the last finish")
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    base = common.base_settings()
    load_before = common.load()
    results: list[dict[str, Any]] = []

    async def run() -> str:
        with common.fake_llm("--latency", "60") as fake:
            for run_no in range(args.runs):
                r = await common.retried(lambda: measure(args, fake, base))
                results.append(r)
                print(f"run {run_no + 1}: task re-claimed {r['task_claim']:.1f} s, chapters"
                      f" re-claimed {r['reclaim'][:1]}..{r['reclaim'][-1:]} s,"
                      f" finished ..{r['finish'][-1:]} s, lost {r['lost']},"
                      f" duplicated {r['duplicated']}, task {r['task_status']}", flush=True)
        return await common.versions(base)

    versions = asyncio.run(run())
    last_claim = [max(r["reclaim"], default=float("nan")) for r in results]
    first_claim = [min(r["reclaim"], default=float("nan")) for r in results]
    last_done = [max(r["finish"], default=float("nan")) for r in results]
    task_claim = [r["task_claim"] for r in results]
    all_done = [t for r in results for t in r["finish"]]
    lease = f"{args.lease:g} s" if args.lease else f"{base.kg_lease_seconds:g} s (default)"
    reaper = f"{args.reaper:g} s" if args.reaper else f"{base.kg_reaper_interval:g} s (default)"
    lines = ["", f"## Recovery: kill -9 of a node holding {args.held} chapters"
             f" ({time.strftime('%Y-%m-%d %H:%M')} UTC)", "", f"`{common.command_line()}`", "",
             f"{common.machine()}; {versions}. Machine load: {load_before} before,"
             f" {common.load()} after (other engineers' tests were running).", "",
             f"Lease {lease}, reaper interval {reaper}, fake LLM at"
             f" {args.latency:g} s per call after the kill (single mode: one call per chapter);"
             f" node A held the task's queue claim and all {args.held} chapter claims. Times in"
             f" seconds from the kill; medians of {args.runs} runs (min–max).", "",
             "| measure | result |", "|---|---|",
             f"| task's queue claim re-claimed by B | {common.span(task_claim)} s |",
             f"| first chapter re-claimed by B | {common.span(first_claim)} s |",
             f"| last chapter re-claimed by B | {common.span(last_claim)} s |",
             f"| every chapter finished by B (last one) | {common.span(last_done)} s |",
             f"| per chapter, kill → finished, p50 / max over all runs"
             f" | {common.percentile(all_done, 50):.1f} / {max(all_done, default=0):.1f} s |",
             f"| lost (not finished within {args.cap:g} s), total over runs"
             f" | {sum(r['lost'] for r in results)} |",
             f"| duplicated completions, total over runs"
             f" | {sum(r['duplicated'] for r in results)} |",
             f"| task status at the end"
             f" | {', '.join(sorted({r['task_status'] for r in results}))} |",
             ""]
    report = "\n".join(lines)
    print(report)
    lost = sum(r["lost"] for r in results)
    doubled = sum(r["duplicated"] for r in results)
    print(f"recovery: kill -9 → re-claimed {common.med(last_claim):.1f} s (median,"
          f" last chapter; task {common.med(task_claim):.1f} s); lost {lost},"
          f" duplicated {doubled}")
    if args.append:
        common.append_doc(report)
    return 0
