"""The raw store ceiling: how fast the servers on this box take chapter-shaped writes.

No LLM, no queue, no node: ``--concurrency`` coroutines in one process (as the slots of a
node share one) loop over what a chapter ends with, on the real store code: claim a
chapter (:func:`~kgworker.store.claims.claim_chapters`), prepare its graph
(:func:`~kgworker.domain.graph_rows.prepare_chapter` on the fake LLM's answer for that
chapter, computed once up front), write it (:class:`~kgworker.store.graph_writer.GraphWriter`)
and finish it. By default as a node does it: claims of up to 8 chapters (the coroutines
share what one claim took), the graph written through the per-book group commit
(:mod:`kgworker.store.graph_batches`) and completed chapters committed per task group
(:mod:`kgworker.store.finish_groups`); ``--single`` claims, writes and finishes one chapter
per transaction (the ceiling before those, to compare). With several books the
coroutines take turns over them (each coroutine cycles through the books). Chapters per
second are counted over a ``window`` after a ``warmup``. When a book has no pending
chapter left, no more are claimed and the window ends early at the last completion (the
result says ``dry``; in the drain fewer than ``concurrency`` chapters are in flight, so a
dry result is a little low).

``python -m bench ceiling`` runs it alone; ``bench.concurrency`` runs it beside the node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped]
from sqlalchemy import text

from bench import common
from kgworker.chaishu.handler import options_from
from kgworker.config import Settings
from kgworker.domain.extraction import ChapterExtraction, ChapterInput, ExtractionOptions
from kgworker.domain.graph_rows import prepare_chapter
from kgworker.runtime.consumer import UNIT_BATCH
from kgworker.store import books as book_store
from kgworker.store import chapters as chapter_store
from kgworker.store import claims
from kgworker.store.finish_groups import Completed, FinishGroups
from kgworker.store.graph import create_driver
from kgworker.store.graph_batches import GroupCommitWriter
from kgworker.store.graph_writer import GraphSink, GraphWriter
from kgworker.store.mysql import create_engine
from kgworker.store.tasks import start_task
from tests.fakellm import AnswerRequest, default_answerer

#: How the coroutines claim: one at a time (as a node's consumer does) or all at once.
CLAIMS = ("serial", "concurrent")


def fake_answer(number: int, sentences: int) -> tuple[str, ChapterExtraction]:
    """Chapter ``number`` of a scratch book and what the fake LLM answers for it."""
    content = common.book_chapter(number, sentences)
    data = default_answerer(AnswerRequest("single", content, "", common.MODEL, "openai"))
    return content, ChapterExtraction.model_validate(data)


@dataclass
class _Run:
    """The shared state of one measurement's coroutines."""

    answers: dict[int, tuple[str, ChapterExtraction]]
    options: ExtractionOptions
    novels: dict[int, int]  # task id → novel id
    done: list[float]  # monotonic time of each completed chapter
    failed: list[tuple[float, str]] = field(default_factory=list)  # (time, exception)
    missed: list[float] = field(default_factory=list)  # claims that found no free row
    dry_at: float | None = None
    stop: bool = False
    #: Held around each claim in ``serial`` mode: a node claims one chapter at a time (its
    #: provider's consumer); ``concurrent`` lets every coroutine claim at once.
    claim_lock: asyncio.Lock | None = None
    #: Chapters one claim takes (8 as a node's consumer, 1 with ``--single``); what a
    #: coroutine took beyond its own waits here for the next coroutine of that book.
    batch: int = 1
    claimed: dict[int, list[Any]] = field(default_factory=dict)
    #: Set when chapters are committed in groups (the node's way).
    finishes: FinishGroups | None = None


async def _pending(engine: Any, task_id: int) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(
            "SELECT COUNT(*) FROM knowledge_graph_chapter_status"
            " WHERE kg_task_id = :t AND status = 'pending'"), {"t": task_id}))


async def _claim(run: _Run, engine: Any, task_id: int, owner: str) -> Any:
    waiting = run.claimed.setdefault(task_id, [])
    if waiting:
        return waiting.pop(0)
    if run.claim_lock is None:
        got = await claims.claim_chapters(engine, task_id, owner, 300.0, run.batch)
    else:
        async with run.claim_lock:
            if waiting:
                return waiting.pop(0)
            got = await claims.claim_chapters(engine, task_id, owner, 300.0, run.batch)
    waiting.extend(got[1:])
    return got[0] if got else None


async def _slot(index: int, run: _Run, engine: Any, writer: GraphSink) -> None:
    tasks = list(run.novels)
    turn = index
    while not run.stop:
        task_id = tasks[turn % len(tasks)]
        turn += 1
        try:
            claim = await _claim(run, engine, task_id, f"ceiling-{index}")
        except Exception as exc:  # deadlock retries used up: counted, claimed again
            run.failed.append((time.monotonic(), f"claim {type(exc).__name__}"))
            continue
        if claim is None:  # lost every race for the first rows, or the book is dry
            if not await _pending(engine, task_id):  # dry: the window ends
                run.dry_at = run.dry_at or time.monotonic()
                run.stop = True
                return
            run.missed.append(time.monotonic())
            continue
        content, extraction = run.answers[claim.chapter_number]
        chapter = ChapterInput(novel_id=run.novels[task_id], chapter_id=claim.chapter_id,
                               chapter_number=claim.chapter_number,
                               title=f"第{claim.chapter_number}章", content=content,
                               task_id=task_id)
        graph = prepare_chapter(chapter, extraction, run.options, novel_title="bench",
                                novel_author="-")
        try:
            written = await writer.write_chapter(graph)
            times = {"extract_ms": 0, "graph_ms": 0, "total_ms": 0}
            if run.finishes is not None:
                finished = await run.finishes.completed(Completed(
                    claim, graph.entity_count, written.relations_written, times))
            else:
                finished = await chapter_store.finish_chapter(
                    engine, claim, entities=graph.entity_count,
                    relations=written.relations_written, run=times)
        except Exception as exc:  # e.g. deadlock retries used up: counted, chapter put back
            run.failed.append((time.monotonic(), f"write/finish {type(exc).__name__}"))
            with contextlib.suppress(Exception):
                await chapter_store.release_chapter(engine, claim, error=repr(exc))
            continue
        if not finished.lost:
            run.done.append(time.monotonic())


async def measure(base: Settings, books: int, chapters: int, *, concurrency: int = 100,
                  warmup: float = 5.0, window: float = 30.0, sentences: int = 40,
                  pool_size: int = 40, claims: str = "serial",
                  grouped: bool = True) -> dict[str, float]:
    """Chapters/s of ``concurrency`` coroutines on ``books`` fresh books of ``chapters``."""
    scratch = common.Scratch(base)
    await scratch.create(books=books, chapters=chapters, sentences=sentences)
    settings = scratch.settings.model_copy(update={
        "db_pool_size": pool_size, "db_pool_max_overflow": pool_size, "db_pool_timeout": 60})
    engine = create_engine(settings)
    driver = create_driver(settings)
    try:
        plain = GraphWriter(driver)
        await plain.ensure_schema()
        writer: GraphSink = GroupCommitWriter(plain) if grouped else plain
        for task_id in scratch.tasks:
            await start_task(engine, task_id)
        config = await book_store.default_config(engine)
        run = _Run(answers={n: fake_answer(n, sentences) for n in range(1, chapters + 1)},
                   options=options_from(config, common.PROVIDER, use_ai=True),
                   novels=dict(zip(scratch.tasks, scratch.novels, strict=True)), done=[],
                   claim_lock=asyncio.Lock() if claims == "serial" else None,
                   batch=UNIT_BATCH if grouped else 1,
                   finishes=FinishGroups(engine) if grouped else None)
        me = psutil.Process()
        began, cpu0, sys0 = time.monotonic(), sum(me.cpu_times()[:2]), psutil.cpu_times()
        slots = [asyncio.create_task(_slot(i, run, engine, writer)) for i in range(concurrency)]
        try:
            while not run.stop and time.monotonic() - began < warmup:
                await asyncio.sleep(0.1)
            if not run.stop:  # dry in the warm-up: the whole run is the window
                t0, cpu0, sys0 = time.monotonic(), sum(me.cpu_times()[:2]), psutil.cpu_times()
            else:
                t0 = began
            while not run.stop and time.monotonic() - t0 < window:
                await asyncio.sleep(min(0.2, window - (time.monotonic() - t0)))
            if run.dry_at is None:
                t1, cpu1, sys1 = time.monotonic(), sum(me.cpu_times()[:2]), psutil.cpu_times()
        finally:
            run.stop = True
            await asyncio.gather(*slots)
        if run.dry_at is not None:  # the chapters in flight when it ran dry count too
            t1 = max([t0, *run.done])
            cpu1, sys1 = sum(me.cpu_times()[:2]), psutil.cpu_times()
        done = sum(1 for t in run.done if t0 <= t <= t1)
        busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
        total = sum(sys1) - sum(sys0)
        elapsed = max(t1 - t0, 1e-9)
        failed = sorted({name for t, name in run.failed if t0 <= t <= t1})
        if failed:
            print(f"store ceiling: chapter failures in the window: {', '.join(failed)}",
                  file=sys.stderr)
        return {"rate": done / elapsed, "seconds": elapsed, "dry": float(run.dry_at is not None),
                "failed": sum(1 for t, _ in run.failed if t0 <= t <= t1) / elapsed,
                "missed": sum(1 for t in run.missed if t0 <= t <= t1) / elapsed,
                "cpu_bench": (cpu1 - cpu0) / elapsed * 100,
                "cpu_ms": (cpu1 - cpu0) * 1000 / done if done else float("nan"),
                "cpu_machine": busy / total * 100 * (os.cpu_count() or 1) if total else 0.0}
    finally:
        await driver.close()
        await engine.dispose()
        await scratch.drop()


def line(books: int, r: dict[str, float]) -> str:
    """One measurement as a progress line."""
    return (f"store ceiling, {books} book(s): {r['rate']:.1f} ch/s over {r['seconds']:.1f} s"
            f"{' (dry)' if r['dry'] else ''}, failed {r['failed']:.1f}/s,"
            f" claims missed {r['missed']:.1f}/s,"
            f" CPU bench {r['cpu_bench']:.0f} % ({r['cpu_ms']:.1f} ms per chapter)"
            f" machine {r['cpu_machine']:.0f} %")


def describe(concurrency: int, pool_size: int, warmup: float, window: float,
             claims: str = "serial", grouped: bool = True) -> str:
    """What a ceiling row measured, for the report."""
    how = ("one claim at a time, as a node's consumer claims" if claims == "serial"
           else "claims concurrent")
    way = (f"claim_chapters (up to {UNIT_BATCH}, shared) → prepare_chapter (the fake LLM's"
           " answer) → the per-book graph group commit → the per-task MySQL group commit"
           if grouped else "claim_chapters (one) → prepare_chapter (the fake LLM's answer) →"
           " GraphWriter.write_chapter → finish_chapter, one transaction each")
    return (f"Store ceiling: {concurrency} coroutines in one process, no LLM and no queue,"
            f" each looping {way} ({how}) over fresh books of the same size,"
            f" `DB_POOL_SIZE={pool_size}` (= overflow), Neo4j driver defaults; window"
            f" {window:g} s after {warmup:g} s warm-up, ended early when a book runs dry"
            " (`dry`: then at the last completion, and from the start if dry within the"
            " warm-up). `failed/s`: claims, writes or finishes that raised (e.g. MySQL"
            " deadlock retries used up); a chapter is put back to pending. `missed/s`: claims"
            " that found pending rows but won none. CPU in % of one core; bench CPU ms: the"
            " bench process's CPU time per chapter completed.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--books", default="1,10")
    parser.add_argument("--chapters", type=int, default=3000, help="chapters per book")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--sentences", type=int, default=40, help="chapter length / 30 chars")
    parser.add_argument("--pool-size", type=int, default=40, help="DB_POOL_SIZE (= overflow)")
    parser.add_argument("--claims", choices=CLAIMS, default="serial")
    parser.add_argument("--single", action="store_true",
                        help="one chapter per claim, graph and MySQL transaction")
    args = parser.parse_args()
    base = common.base_settings()
    for books in (int(b) for b in args.books.split(",")):
        r = asyncio.run(measure(base, books, args.chapters, concurrency=args.concurrency,
                                warmup=args.warmup, window=args.window,
                                sentences=args.sentences, pool_size=args.pool_size,
                                claims=args.claims, grouped=not args.single))
        print(line(books, r), flush=True)
    return 0
