"""The one place a :class:`ChaishuHandler` is composed: production, demo, benchmarks, tests.

Two entry points, one composition:

* :func:`build_handler` (async) opens what is not given — the MySQL pool, the Neo4j
  driver, Redis, the LLM extractor (its provider rows are read from ``ai_providers``) —
  ensures the graph schema, and hands everything to :func:`compose_handler`. What it
  opened, ``await handler.aclose()`` closes, newest first; what the caller passed in stays
  the caller's.
* :func:`compose_handler` (sync) wires given parts only: the demo, the benchmarks and the
  tests use it with their own engine, graph store or extractor instead of wiring the
  handler themselves.

Extractor choice per chapter (``extractor_for(options)``): provider ``rules`` (a task with
``use_ai = false``, or a queue item for ``rules``) → the rules extractor (imported and
built by the first such chapter); anything else → the node's one LLM extractor. A
provider that is unknown, inactive or has no API key fails its chapters with that reason
(not retryable), so ``kgworker status`` and the chaishu task page show why. A node
that serves only ``rules`` builds no LLM extractor at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from neo4j import AsyncDriver
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.chaishu.handler import ChaishuHandler, Closer, ExtractorFor, GraphWrittenHook
from kgworker.config import Settings
from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    ExtractionOptions,
    Extractor,
)
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.store.dialect import is_server
from kgworker.store.graph import create_driver
from kgworker.store.graph_batches import GroupCommitWriter
from kgworker.store.graph_writer import GraphSink, GraphWriter
from kgworker.store.mysql import create_engine

log = logging.getLogger(__name__)

#: The provider name that means "no model": rule-based extraction.
RULES = "rules"


class LazyRules:
    """The rules extractor, imported and built by the first ``rules`` chapter: a node that
    only sees LLM tasks never loads the rules modules (nor jieba, which they load)."""

    def __init__(self) -> None:
        self._rules: Extractor | None = None

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions
                      ) -> ChapterExtraction:
        if self._rules is None:
            from kgworker.rules.extractor import RulesExtractor

            self._rules = RulesExtractor()
        return await self._rules.extract(chapter, options)


def make_extractor_for(rules: Extractor, llm: Extractor | None) -> ExtractorFor:
    """``extractor_for``: rules for provider ``rules``, else the LLM extractor (which fails
    the chapter with the reason when the provider is not usable: never a silent fallback)."""

    def extractor_for(options: ExtractionOptions) -> Extractor:
        if options.provider.lower() == RULES or llm is None:
            return rules
        return llm

    return extractor_for


def compose_handler(
    settings: Settings,
    *,
    engine: AsyncEngine,
    redis: RedisClient,
    graph: GraphSink | None = None,
    driver: AsyncDriver | None = None,
    extractor: Extractor | None = None,
    llm: Extractor | None = None,
    on_graph_written: GraphWrittenHook | None = None,
    closers: Sequence[Closer] = (),
) -> ChaishuHandler:
    """A handler from given parts. ``graph`` or ``driver`` (then the Neo4j writer) is the
    graph store; ``extractor`` answers every chapter (tests, benchmarks), else rules for
    ``rules`` and ``llm`` for the rest."""
    if graph is None:
        if driver is None:
            raise ValueError("compose_handler needs a graph store or a Neo4j driver")
        graph = GroupCommitWriter(GraphWriter(driver, database=settings.neo4j_database,
                                              batch_size=settings.kg_graph_batch_size))
    extractor_for = (make_extractor_for(LazyRules(), llm) if extractor is None
                     else make_extractor_for(extractor, extractor))
    return ChaishuHandler(settings, engine=engine, redis=redis, graph=graph,
                          extractor_for=extractor_for, on_graph_written=on_graph_written,
                          closers=closers)


def serves_only_rules(settings: Settings) -> bool:
    return list(settings.kg_worker_providers) == [RULES]


async def build_handler(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    redis: RedisClient | None = None,
    driver: AsyncDriver | None = None,
    graph: GraphSink | None = None,
    extractor: Extractor | None = None,
    on_graph_written: GraphWrittenHook | None = None,
) -> ChaishuHandler:
    """A node's handler from settings; the given parts are borrowed, the rest opened here."""
    from kgworker.llm.extractor import create_llm_extractor  # heavy: httpx, json-repair

    closers: list[Callable[[], Awaitable[object]]] = []
    try:
        if redis is None:
            redis = create_redis(settings)
            closers.append(redis.aclose)
        if engine is None:
            engine = create_engine(settings, isolation_level="READ COMMITTED")
            closers.append(engine.dispose)
        if graph is None and driver is None:
            driver = create_driver(settings)
            closers.append(driver.close)
        llm = None
        if extractor is None and not serves_only_rules(settings):
            # the LLM cache and call records need the server's SQL (not the demo's SQLite)
            llm = await create_llm_extractor(settings, redis, engine if is_server(engine)
                                             else None)
            closers.append(llm.aclose)
            usable = llm.registry.usable()
            log.info("extractors: rules + LLM providers %s", ",".join(usable) or "(none usable)")
        handler = compose_handler(
            settings, engine=engine, redis=redis, graph=graph, driver=driver,
            extractor=extractor, llm=llm, on_graph_written=on_graph_written, closers=closers,
        )
        if llm is not None:  # Redis came back empty: its rate windows and permits re-seeded
            handler.reset_hooks.append(llm.on_redis_reset)
    except BaseException:
        for close in reversed(closers):
            try:
                await close()
            except Exception:
                log.debug("closing after a failed set-up", exc_info=True)
        raise
    try:
        await handler.ensure_schema()
    except Exception as exc:
        log.warning("graph schema not ensured yet (%s): retried when a task starts", exc)
    return handler
