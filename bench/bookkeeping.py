"""``python -m bench bookkeeping``: MariaDB's cost of one chapter's bookkeeping by book size.

For each book size, every chapter but the last ``--sample`` is marked completed in bulk
(rows and counters, as if worked), then the last ones go through the store one by one:
``claim_chapter``; the reap of the task's expired claims that the handler's completion
check starts with (``reap (check)``); ``finish_chapter`` and the rest of the check
(``progress_of``, and ``finalise_task`` once it says finished). The last chapter, which
finalises the task, is reported apart (once per book). The engine has one connection,
so MariaDB's session status counts exactly these statements: per chapter, rows read by
the handlers (``Handler_read_*``), rows sorted (``Sort_rows``: a filesort), statements
(``Questions``), wall time and MariaDB's CPU time (``server_cpu_us``: the server process's
threads' scheduler time from ``/proc``, when the server runs on this machine, as the
project's test services do; all its threads, so background work is included).

To measure another checkout of the package, run the file with that checkout first on
PYTHONPATH from outside this directory:
``PYTHONPATH=<checkout> python <this checkout>/bench/bookkeeping.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import Scratch, base_settings
from kgworker.store import chapters as chapter_store
from kgworker.store import claims
from kgworker.store import tasks as task_store
from kgworker.store.mysql import create_engine

_STATUS = ("Handler_read_first", "Handler_read_key", "Handler_read_next",
           "Handler_read_prev", "Handler_read_rnd", "Handler_read_rnd_next", "Sort_rows",
           "Sort_scan", "Sort_range", "Created_tmp_tables", "Questions")


async def _status(engine: AsyncEngine, server_pid: int | None = None) -> Counter[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SHOW SESSION STATUS"))
        status = Counter({str(k): int(v) for k, v in rows if k in _STATUS})
    if server_pid is not None:
        status["server_cpu_us"] = _cpu_ns(server_pid) // 1000
    return status


def _cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of process ``pid`` (``/proc/*/schedstat``)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int(stat.read_text().split()[0])
    return total


async def _server_pid(engine: AsyncEngine) -> int | None:
    """MariaDB's pid when it runs here (its pid file readable), else None."""
    async with engine.connect() as conn:
        pid_file = await conn.scalar(text("SELECT @@pid_file"))
    try:
        pid = int(Path(str(pid_file)).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}/task").is_dir() else None


def _per(delta: Counter[str], n: int, elapsed: float) -> dict[str, float]:
    reads = sum(v for k, v in delta.items() if k.startswith("Handler_read"))
    return {"rows read": reads / n, "sorted": delta["Sort_rows"] / n,
            "statements": delta["Questions"] / n, "ms": elapsed * 1000 / n,
            "server_cpu_us": delta["server_cpu_us"] / n}


async def _prefill(scratch: Scratch, task_id: int, keep: int) -> None:
    """Mark all but the last ``keep`` chapter rows completed, counters to match (and, where
    the claim order table exists, without their entries, as claims would have left it)."""
    assert scratch.engine is not None
    async with scratch.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE knowledge_graph_chapter_status cs JOIN chapters c ON c.id = cs.chapter_id"
            " SET cs.status = 'completed', cs.entities_extracted = 3,"
            " cs.relations_extracted = 2 WHERE cs.kg_task_id = :t AND c.chapter_number <= :n"
        ), {"t": task_id, "n": await _count(conn, task_id) - keep})
        if await conn.scalar(text(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
                " AND table_name = 'kgworker_pending_chapters'")):
            await conn.execute(text(  # as our claims of these chapters would have left it
                "DELETE p FROM kgworker_pending_chapters p JOIN knowledge_graph_chapter_status cs"
                " ON cs.kg_task_id = p.task_id AND cs.chapter_id = p.chapter_id"
                " WHERE p.task_id = :t AND cs.status = 'completed'"), {"t": task_id})
        await conn.execute(text(
            "UPDATE knowledge_graph_tasks t SET completed_chapters = (SELECT COUNT(*) FROM"
            " knowledge_graph_chapter_status WHERE kg_task_id = t.id AND status = 'completed'),"
            " total_entities = 3 * completed_chapters, total_relations = 2 * completed_chapters"
            " WHERE t.id = :t"), {"t": task_id})


async def _count(conn: Any, task_id: int) -> int:
    return int(await conn.scalar(text(
        "SELECT COUNT(*) FROM knowledge_graph_chapter_status WHERE kg_task_id = :t"),
        {"t": task_id}))


async def one_size(chapters: int, sample: int) -> dict[str, dict[str, float]]:
    scratch = Scratch(base_settings())
    try:
        await scratch.create(1, chapters, sentences=1)
        task_id = scratch.tasks[0]
        engine = create_engine(scratch.settings, pool_size=1, max_overflow=0,
                               pool_pre_ping=False)
        try:
            await task_store.start_task(engine, task_id)
            await _prefill(scratch, task_id, min(sample, chapters))
            claim_d: Counter[str] = Counter()
            finish_d: Counter[str] = Counter()
            last_d: Counter[str] = Counter()
            reap_d: Counter[str] = Counter()
            claim_s = finish_s = last_s = reap_s = 0.0
            owners = chapter_store.Owners(frozenset({"bench"}), frozenset(), 60.0)
            done = 0
            pid = await _server_pid(engine)
            probe = await _status(engine, pid)
            probe = (await _status(engine, pid)) - probe  # what reading the status costs
            while True:
                before = await _status(engine, pid)
                t0 = time.perf_counter()
                claim = await claims.claim_chapter(engine, task_id, "bench", 60)
                claim_s += time.perf_counter() - t0
                mid = await _status(engine, pid)
                claim_d += (mid - before) - probe
                if claim is None:
                    break
                t0 = time.perf_counter()
                await chapter_store.reap_expired(engine, task_id=task_id, owners=owners)
                reap_s += time.perf_counter() - t0
                after = await _status(engine, pid)
                reap_d += (after - mid) - probe
                mid = after
                t0 = time.perf_counter()
                await chapter_store.finish_chapter(engine, claim, entities=3, relations=2)
                progress = await task_store.progress_of(engine, task_id)
                if progress is not None and progress.finished:
                    await task_store.finalise_task(engine, task_id)
                elapsed = time.perf_counter() - t0
                delta = (await _status(engine, pid) - mid) - probe
                if await task_store.task_status(engine, task_id) == "running":
                    finish_s += elapsed
                    finish_d += delta
                    done += 1
                else:
                    last_s, last_d = elapsed, delta
            status = await task_store.task_status(engine, task_id)
            assert status == "completed", status
            stored = await scratch.rows(
                "SELECT completed_chapters, total_entities FROM knowledge_graph_tasks"
                " WHERE id = :t", t=task_id)
            assert tuple(stored[0]) == (chapters, 3 * chapters), stored
        finally:
            await engine.dispose()
        return {"claim": _per(claim_d, done + 1, claim_s),
                "reap (check)": _per(reap_d, done + 1, reap_s),
                "finish+check": _per(finish_d, done, finish_s),
                "last (final)": _per(last_d, 1, last_s)}
    finally:
        await scratch.drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 12_000])
    parser.add_argument("--sample", type=int, default=200,
                        help="chapters worked one by one at the end of each book")
    args = parser.parse_args()
    print(f"kgworker from {chapter_store.__file__}")
    print(f"{'chapters':>9} {'step':<13} {'rows read':>10} {'sorted':>8} {'stmts':>6}"
          f" {'ms':>7} {'server CPU µs':>14}   (per chapter, last {args.sample} chapters)")
    for size in args.sizes:
        result = asyncio.run(one_size(size, args.sample))
        for step, per in result.items():
            print(f"{size:>9,} {step:<13} {per['rows read']:>10,.1f} {per['sorted']:>8,.1f}"
                  f" {per['statements']:>6.1f} {per['ms']:>7.2f} {per['server_cpu_us']:>14,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
