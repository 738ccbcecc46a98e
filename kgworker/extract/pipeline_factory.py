"""The production :class:`ChaishuHandler` of a node, built from settings alone.

Why a factory: the handler needs asynchronous set-up (the provider rows of ``ai_providers``
are read before the first chapter, the graph constraints exist before the first write),
and the resources it opens (MySQL pool, Neo4j driver, one HTTP client per provider, maybe
Redis) must be closed at shutdown: ``await handler.aclose()`` does that, newest first.

Extractor choice per chapter (``extractor_for(options)``): provider ``rules`` (a task with
``use_ai = false``, or a queue item for ``rules``) → :class:`RulesExtractor`; anything else
→ the node's one :class:`LLMExtractor`. A provider that is unknown, inactive or has no API
key fails its chapters with that reason (``ProviderUnavailableError``, not retryable), so
``kgworker status`` and the chaishu task page show why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kgworker.config import Settings
from kgworker.domain.extraction import ExtractionOptions, Extractor
from kgworker.extract.pipeline import ChaishuHandler
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.rules.extractor import RulesExtractor
from kgworker.store.graph import create_driver
from kgworker.store.graph_writer import GraphWriter
from kgworker.store.mysql import create_engine

log = logging.getLogger(__name__)

#: The provider name that means "no model": rule-based extraction.
RULES = "rules"


def make_extractor_for(
    rules: Extractor, llm: Extractor
) -> Callable[[ExtractionOptions], Extractor]:
    """``extractor_for``: rules for provider ``rules``, else the LLM extractor (which fails
    the chapter with the reason when the provider is not usable: never a silent fallback)."""

    def extractor_for(options: ExtractionOptions) -> Extractor:
        return rules if options.provider.lower() == RULES else llm

    return extractor_for


async def create_chaishu_handler(
    settings: Settings, *, redis: RedisClient | None = None
) -> ChaishuHandler:
    """Engine, driver, graph schema and extractors for one node; close with ``aclose()``.

    ``redis`` is borrowed when given (the caller closes it), else created and owned.
    """
    from kgworker.llm.extractor import create_llm_extractor  # heavy: httpx, json-repair

    closers: list[Callable[[], Awaitable[object]]] = []
    try:
        if redis is None:
            redis = create_redis(settings)
            closers.append(redis.aclose)
        engine = create_engine(settings, isolation_level="READ COMMITTED")
        closers.append(engine.dispose)
        driver = create_driver(settings)
        closers.append(driver.close)
        graph = GraphWriter(driver, database=settings.neo4j_database,
                            batch_size=settings.kg_graph_batch_size)
        llm = await create_llm_extractor(settings, redis, engine)
        closers.append(llm.aclose)
        usable = llm.registry.usable()
        log.info("extractors: rules + LLM providers %s", ",".join(usable) or "(none usable)")
        handler = ChaishuHandler(
            settings, engine=engine, driver=None, redis=redis, graph=graph,
            extractor_for=make_extractor_for(RulesExtractor(), llm), closers=closers,
        )
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
