"""The chaishu job handler: a task is a book, a chapter is a unit any free slot may claim.

Per chapter: claim (MySQL, leased; up to 8 per transaction: :mod:`kgworker.store.claims`)
→ extract (any :class:`Extractor`, given the novel's known canonical names as its roster) →
resolve entities against the novel's alias table (:mod:`kgworker.store.aliases`: new
aliases committed under a per-novel lock, one turn for the chapters that meet there:
:mod:`kgworker.chaishu.resolve_groups`) → write the graph (one Neo4j transaction, shared
with the book's chapters that finish meanwhile on this node:
:mod:`kgworker.store.graph_batches`) → commit the chapter and the task counters (one MySQL
transaction, shared the same way: :mod:`kgworker.store.finish_groups`) → publish
progress. A crash between the graph commit and the MySQL
commit leaves the chapter ``running`` under a lease that expires; the chapter is then
redone, which writes the same graph again (the writer is idempotent), so nothing is doubled.

Stops: a suspended provider (``ai:provider:suspend:{name}``) pauses the task before the
next chapter and sends an interrupted chapter back to ``pending``; a cancelled task stops
between chapters and its in-flight extraction is cancelled (checked every
``KG_CANCEL_POLL_INTERVAL`` seconds, one query per task per node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from neo4j.exceptions import Neo4jError
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.owners import owners_now
from kgworker.chaishu.resolve_groups import ResolveGroups, alias_table
from kgworker.config import Settings
from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    ExtractionError,
    ExtractionOptions,
    Extractor,
)
from kgworker.domain.graph_rows import prepare_chapter
from kgworker.domain.progress import Progress
from kgworker.domain.status import TaskStatus
from kgworker.queue import switches
from kgworker.queue.connection import RedisClient
from kgworker.queue.old_workers import old_worker_tasks
from kgworker.queue.progress import publish_progress
from kgworker.runtime.handler import Job, JobStart, StoreHealthSink, Unit, UnitKey
from kgworker.store import books, task_queues
from kgworker.store import chapters as chapter_store
from kgworker.store import claims as claim_store
from kgworker.store import tasks as task_store
from kgworker.store.aliases import AliasStore
from kgworker.store.books import ChapterSource
from kgworker.store.chapters import ChapterClaimed
from kgworker.store.errors import outage_of
from kgworker.store.finish_groups import Completed, FinishGroups
from kgworker.store.graph_writer import GraphSink
from kgworker.store.schema.chaishu import KnowledgeGraphConfig
from kgworker.store.txn import read_committed

log = logging.getLogger(__name__)

ExtractorFor = Callable[[ExtractionOptions], Extractor]
#: Test hook run after the graph commit and before the MySQL commit (crash injection).
GraphWrittenHook = Callable[[ChapterClaimed], Awaitable[None]]
#: Releases a resource the handler was built with (engine, driver, clients).
Closer = Callable[[], Awaitable[object]]

CONFIG_TTL = 30.0
#: Waits of a chapter step while its store is out: first, then doubling up to the last.
OUTAGE_FIRST_WAIT = 0.5
OUTAGE_MAX_WAIT = 10.0
#: How often ``is_complete`` (called after every chapter) returns a task's dead claims at
#: most: the first call always does (a book taken over from a dead node).
REAP_SECONDS = 1.0
#: How often a node with nothing in flight asks an out Neo4j whether it is back.
PROBE_SECONDS = 2.0

T = TypeVar("T")


class _Stopped(Exception):
    """The task left ``running`` while its chapter was being extracted."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    source: ChapterSource
    chapter: ChapterInput
    options: ExtractionOptions


class ChaishuHandler:
    """:class:`~kgworker.runtime.handler.JobHandler` for chaishu knowledge-graph tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: AsyncEngine,
        redis: RedisClient,
        graph: GraphSink,
        extractor_for: ExtractorFor,
        on_graph_written: GraphWrittenHook | None = None,
        closers: Sequence[Closer] = (),
    ) -> None:
        self.settings = settings
        self.engine = read_committed(engine)
        self.redis = redis
        self.extractor_for = extractor_for
        self.on_graph_written = on_graph_written
        self.writer = graph
        self.aliases = AliasStore(self.engine)
        self.resolutions = ResolveGroups(self.aliases)
        self.finishes = FinishGroups(self.engine)
        self.closers = list(closers)
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._config: tuple[float, KnowledgeGraphConfig | None] = (0.0, None)
        self._status: dict[int, tuple[float, str | None]] = {}
        #: When ``is_complete`` last returned the task's dead claims (monotonic seconds).
        self._reaped: dict[int, float] = {}
        self.health: StoreHealthSink | None = None
        self._probed_at = 0.0
        #: Set when Redis was found to have lost its data: the fleet duties run at once.
        self.redis_reset = asyncio.Event()
        #: Called then too (the LLM extractor re-seeds its limits): see ``on_redis_reset``.
        self.reset_hooks: list[Closer] = []

    # ------------------------------------------------------------------ JobHandler --
    async def start(self, job: Job) -> JobStart:
        await self.ensure_schema()
        extra = {"provider": job.provider, "task_id": job.task_id}
        if job.task_id in await old_worker_tasks(self.redis):
            log.warning("an old chaishu worker holds this task: queue item dropped", extra=extra)
            return JobStart.DROPPED
        result = await task_store.start_task(self.engine, job.task_id)
        if result.outcome is not task_store.StartOutcome.MISSING:
            await task_queues.record(self.engine, [(job.task_id, job.provider)])
        if result.outcome is task_store.StartOutcome.MISSING:
            log.warning("task does not exist (deleted?): queue item dropped", extra=extra)
            return JobStart.DROPPED
        if result.outcome is task_store.StartOutcome.REFUSED:
            log.info("task is completed or cancelled: queue item dropped", extra=extra)
            return JobStart.DONE
        log.info("task %s", result.outcome.value, extra=extra)
        if result.outcome is task_store.StartOutcome.STARTED:
            novel_id = await books.novel_of_task(self.engine, job.task_id)
            if novel_id is not None:
                await self.aliases.reset_if_unused(novel_id)
        if result.progress is not None:
            await self._publish(result.progress)
        return JobStart.DONE if result.finalised else JobStart.OPEN

    async def claim_unit(self, job: Job, owner: str, lease_seconds: float) -> Unit | None:
        units = await self.claim_units(job, owner, lease_seconds, 1)
        return units[0] if units else None

    async def claim_units(
        self, job: Job, owner: str, lease_seconds: float, limit: int
    ) -> list[Unit]:
        """Up to ``limit`` chapters of the task in one MySQL transaction (batched claims)."""
        if not await self._stores_ready():
            return []  # a store is out: in-flight chapters wait, nothing new is taken
        try:
            if await self._suspended(job):
                paused = await task_store.pause_task(self.engine, job.task_id)
                if paused is not None:
                    log.info("provider suspended: task paused",
                             extra={"provider": job.provider, "task_id": job.task_id})
                    await self._publish(paused)
                return []
            claims = await claim_store.claim_chapters(
                self.engine, job.task_id, owner, lease_seconds, limit)
        except Exception as exc:
            store = outage_of(exc, "mysql")
            if store is None:
                raise
            self._failed(store, exc)
            return []
        self._ok("mysql")
        return [Unit(key=claim.key, data=claim) for claim in claims]

    async def run_unit(self, job: Job, unit: Unit) -> None:
        claim: ChapterClaimed = unit.data
        extra = {"provider": job.provider, "task_id": claim.task_id,
                 "chapter_id": claim.chapter_id}
        started = time.monotonic()
        loaded = await self._step("mysql", lambda: self._load(job, claim))
        if loaded is None:
            await self._finish(claim, error="chapter row not found", run={})
            return
        try:
            extraction = await self._step("mysql", lambda: self._extract(job, loaded))
        except _Stopped:
            await chapter_store.release_chapter(self.engine, claim)
            log.info("task stopped: chapter put back", extra=extra)
            return
        except ExtractionError as exc:
            await self._extraction_failed(job, claim, exc.reason, exc.retryable, extra)
            return
        novel_id = loaded.chapter.novel_id
        extraction = await self._step(
            "mysql", lambda: self.resolutions.resolve(novel_id, extraction))
        extracted = time.monotonic()
        graph = prepare_chapter(
            loaded.chapter, extraction, loaded.options, novel_title=loaded.source.novel_title,
            novel_author=loaded.source.novel_author, word_count=loaded.source.word_count,
        )
        try:
            written = await self._step("neo4j", lambda: self.writer.write_chapter(graph))
        except Neo4jError as exc:  # refused by the database: the chapter's own failure
            await self._extraction_failed(job, claim, f"graph write failed: {exc}", True, extra)
            return
        if self.on_graph_written is not None:
            await self.on_graph_written(claim)
        for reason, count in written.dropped.items():
            graph.drop(reason, count)
        done = time.monotonic()
        await self._finish(claim, error=None, entities=graph.entity_count,
                           relations=written.relations_written, run={
                               "extract_ms": int((extracted - started) * 1000),
                               "graph_ms": int((done - extracted) * 1000),
                               "total_ms": int((done - started) * 1000),
                               "dropped": graph.dropped or None,
                               **_usage(extraction, loaded.options),
                           })

    async def renew_units(
        self, owner: str, units: Sequence[Unit], lease_seconds: float
    ) -> set[UnitKey]:
        claims: list[ChapterClaimed] = [unit.data for unit in units]
        lost = await chapter_store.renew_claims(
            self.engine, owner, [c.token for c in claims], lease_seconds
        )
        return {c.key for c in claims if c.token in lost}

    async def release_unit(self, job: Job, unit: Unit) -> None:
        await chapter_store.release_chapter(self.engine, unit.data)

    async def is_complete(self, job: Job) -> bool:
        complete = await self._check_complete(job)
        if complete:
            self._reaped.pop(job.task_id, None)
        return complete

    async def _check_complete(self, job: Job) -> bool:
        if time.monotonic() - self._reaped.get(job.task_id, -REAP_SECONDS) >= REAP_SECONDS:
            self._reaped[job.task_id] = time.monotonic()
            owners = await owners_now(self.engine, self.redis, self.settings)
            if owners is not None:
                await chapter_store.reap_expired(
                    self.engine, task_id=job.task_id, owners=owners,
                    max_attempts=self.settings.kg_chapter_max_attempts,
                )
        progress = await task_store.progress_of(self.engine, job.task_id)  # the counters
        if progress is None or progress.status != TaskStatus.RUNNING:
            return True
        if not progress.finished:
            return False
        finalised = await task_store.finalise_task(self.engine, job.task_id)  # recounts
        if finalised is not None:
            await self._publish(finalised)
            return True
        status = await task_store.task_status(self.engine, job.task_id)
        return status != TaskStatus.RUNNING  # else the recount found chapters left

    async def on_redis_reset(self) -> None:
        """Redis came back empty: wake the duties (reconciliation) and re-seed limits."""
        self.redis_reset.set()
        for hook in self.reset_hooks:
            try:
                await hook()
            except Exception:
                log.exception("reacting to the Redis reset failed")

    # ---------------------------------------------------------------- store outages --
    def use_health(self, health: StoreHealthSink) -> None:
        """The node's store health (the runtime hands it over before the first claim)."""
        self.health = health

    def _failed(self, store: str, exc: BaseException) -> None:
        if self.health is not None:
            self.health.failed(store, exc)

    def _ok(self, store: str) -> None:
        if self.health is not None:
            self.health.ok(store)

    async def _step(self, store: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run one store step of a chapter; while its store is out, wait and run it again.

        An outage is not the chapter's fault (:func:`kgworker.store.errors.outage_of`): no
        attempt is spent and the claim stays ours (our liveness key tells the fleet we
        live). The wait ends when the store answers, when the claim is lost (the runtime
        cancels us), or when the node gives up past ``KG_STORE_DEADLINE``.
        """
        delay = OUTAGE_FIRST_WAIT
        while True:
            try:
                result = await step()
            except Exception as exc:
                failing = outage_of(exc, store)
                if failing is None:
                    raise
                self._failed(failing, exc)
                log.warning("%s unavailable (%s): chapter step waits %.1f s", failing,
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, OUTAGE_MAX_WAIT)
                continue
            self._ok(store)
            return result

    async def _stores_ready(self) -> bool:
        """False while MySQL or Neo4j is out; Neo4j is probed now and then (no chapter may
        be in flight to notice it is back)."""
        blocking = self.health.blocking() if self.health is not None else None
        if blocking != "neo4j":
            return True
        if time.monotonic() - self._probed_at < PROBE_SECONDS:
            return False
        self._probed_at = time.monotonic()
        try:
            await self.writer.ensure_schema()
        except Exception as exc:
            if outage_of(exc, "neo4j") is None:
                raise
            self._failed("neo4j", exc)
            return False
        self._ok("neo4j")
        return True

    # --------------------------------------------------------------------- helpers --
    async def ensure_schema(self) -> None:
        """Graph constraints and indexes, once per process."""
        async with self._schema_lock:
            if not self._schema_ready:
                await self.writer.ensure_schema()
                self._schema_ready = True

    async def aclose(self) -> None:
        """Release what the factory opened for the handler (:mod:`.factory`), newest first."""
        closers, self.closers = self.closers[::-1], []
        for close in closers:
            try:
                await close()
            except Exception:
                log.exception("closing a pipeline resource failed")

    async def _suspended(self, job: Job) -> bool:
        return await switches.suspended(self.redis, *{job.provider, job.provider_name})

    async def _publish(self, progress: Progress) -> None:
        await publish_progress(self.redis, self.settings.kg_progress_channel, progress)

    async def _task_status(self, task_id: int) -> str | None:
        """The task's status, read at most once per poll interval per node."""
        now = time.monotonic()
        fetched, status = self._status.get(task_id, (0.0, None))
        if now - fetched >= self.settings.kg_cancel_poll_interval:
            status = await task_store.task_status(self.engine, task_id)
            self._status[task_id] = (now, status)
        return status

    async def _default_config(self) -> KnowledgeGraphConfig | None:
        fetched, config = self._config
        if time.monotonic() - fetched < CONFIG_TTL:
            return config
        config = await books.default_config(self.engine)
        self._config = (time.monotonic(), config)
        return config

    async def _load(self, job: Job, claim: ChapterClaimed) -> _Loaded | None:
        source = await books.chapter_source(self.engine, claim.task_id, claim.chapter_id)
        if source is None:
            return None
        config = await self._default_config()
        table = await alias_table(self.aliases, source.novel_id)
        chapter = ChapterInput(
            novel_id=source.novel_id, chapter_id=claim.chapter_id,
            chapter_number=source.chapter_number, title=source.title,
            content=source.content, task_id=claim.task_id, roster=table.roster(),
        )
        return _Loaded(source, chapter,
                       options_from(config, job.provider_name, use_ai=source.use_ai))

    async def _extract(self, job: Job, loaded: _Loaded) -> ChapterExtraction:
        """Extract while watching the task: a cancel stops the extraction at once."""
        extractor = self.extractor_for(loaded.options)
        work = asyncio.ensure_future(extractor.extract(loaded.chapter, loaded.options))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.settings.kg_cancel_poll_interval)
                if done:
                    return work.result()
                if await self._cancelled(job.task_id):
                    raise _Stopped
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)

    async def _cancelled(self, task_id: int) -> bool:
        """Whether the task was cancelled; an unreadable status is not a cancel (an answer
        being paid for is never thrown away for a poll that MySQL could not answer)."""
        try:
            return await self._task_status(task_id) == TaskStatus.CANCELLED
        except Exception as exc:
            if outage_of(exc, "mysql") is None:
                raise
            self._failed("mysql", exc)
            return False

    async def _extraction_failed(
        self, job: Job, claim: ChapterClaimed, reason: str, retryable: bool, extra: dict[str, Any]
    ) -> None:
        if await self._suspended(job):
            await chapter_store.release_chapter(self.engine, claim, error=reason)
            paused = await task_store.pause_task(self.engine, claim.task_id)
            if paused is not None:
                await self._publish(paused)
            log.info("provider suspended mid-chapter: chapter back to pending", extra=extra)
        elif retryable and claim.attempts < self.settings.kg_chapter_max_attempts:
            await chapter_store.release_chapter(self.engine, claim, error=reason,
                                                count_attempt=True)
            log.warning("chapter will be retried: %s", reason, extra=extra)
        else:
            log.warning("chapter failed: %s", reason, extra=extra)
            await self._finish(claim, error=reason, run={})

    async def _finish(
        self, claim: ChapterClaimed, *, error: str | None, run: dict[str, Any],
        entities: int = 0, relations: int = 0,
    ) -> None:
        if error is None:  # with the task's other chapters completing now (one commit)
            completed = Completed(claim, entities, relations, run)
            finished = await self._step("mysql", lambda: self.finishes.completed(completed))
        else:
            finished = await self._step("mysql", lambda: chapter_store.finish_chapter(
                self.engine, claim, error=error, run=run))
        if finished.lost:
            log.warning("chapter claim lost before commit: left to its new holder",
                        extra={"task_id": claim.task_id, "chapter_id": claim.chapter_id})
        elif finished.progress is not None:
            await self._publish(finished.progress)
            if finished.finalised:
                log.info("task %s", finished.finalised, extra={"task_id": claim.task_id})


def options_from(
    config: KnowledgeGraphConfig | None, provider: str, *, use_ai: bool
) -> ExtractionOptions:
    """The default ``knowledge_graph_configs`` row as extraction options."""
    if config is None:
        return ExtractionOptions(provider=provider if use_ai else "rules")
    return ExtractionOptions(
        provider=provider if use_ai else "rules",
        model=config.ai_model or None,
        enable_entity_extraction=bool(config.enable_entity_extraction),
        enable_relation_extraction=bool(config.enable_relation_extraction),
        entity_types=tuple(str(t) for t in (config.entity_types or ())),
        relation_types=tuple(str(t) for t in (config.relation_types or ())),
        rule_config=dict(config.rule_config or {}),
        max_content_length=config.max_content_length or 4000,
    )


def _usage(extraction: ChapterExtraction, options: ExtractionOptions) -> dict[str, Any]:
    """LLM calls, tokens and cost the extractor paid for this chapter, and who produced it."""
    return {
        "provider": extraction.provider or options.provider,
        "model": extraction.model,
        "llm_calls": extraction.llm_calls,
        "prompt_tokens": extraction.prompt_tokens,
        "completion_tokens": extraction.completion_tokens,
        "cost": extraction.cost,
    }
