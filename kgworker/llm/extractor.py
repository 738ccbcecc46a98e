"""``LLMExtractor``: one chapter in, one validated :class:`ChapterExtraction` out.

Order of every call, and why: cache first (a hit must cost nothing, not even a rate-limit
slot: answers kept in memory during a store outage, then MySQL; when MySQL cannot be read
no call starts — :class:`StoreUnavailable` goes to the handler, which waits and tries the
step again — unless the operator turned the cache off), then the breaker (a suspended
provider is not called), then the shared limiter (one admission per HTTP attempt, so
retries count against the limit too), then the call with retries; a 429 cools the whole
provider down. A call that still fails counts towards the breaker only when the provider
is at fault (transport, 5xx, 429, auth), not for a chapter that a content filter refused.
Chapters are chunked, never cut; a chunk whose answer was cut at max_tokens is split in two
and asked again. Entity resolution across chapters is not done here: the pipeline applies
``kgworker.domain.resolution`` to the merged result. Every answer received goes to the
cache and every call to ``kgworker_llm_calls`` through :mod:`kgworker.llm.pending`, which
keeps what MySQL does not take yet.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.config.specs import PriceTable
from kgworker.domain import script
from kgworker.domain.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    Chunk,
    estimate_tokens,
    split_into_chunks,
)
from kgworker.domain.extraction import (
    ChapterExtraction,
    ChapterInput,
    ExtractionError,
    ExtractionOptions,
    merge_extractions,
)
from kgworker.domain.names import CACHED_LENGTH, NAME_CACHE_SIZE, to_simplified
from kgworker.llm import prompts
from kgworker.llm.accounting import CallRecord, CallRecorder, MySQLRecorder
from kgworker.llm.adaptive import AdaptiveGate
from kgworker.llm.cache import (
    CachedAnswer,
    CacheEntry,
    MySQLCache,
    ResponseCache,
    cache_key,
    redo_key,
)
from kgworker.llm.errors import CallErrorKind, LLMCallError, ProviderSuspendedError
from kgworker.llm.limits import Breaker, RateLimiter
from kgworker.llm.parsing import (
    TruncatedAnswer,
    UnparseableAnswer,
    apply_protagonists,
    default_name_key,
    load_answer,
    validate_extraction,
)
from kgworker.llm.pending import PendingWrites
from kgworker.llm.providers import ChatRequest, ChatResponse, ProviderClient, ProviderRegistry
from kgworker.llm.retry import RetryPolicy, call_with_retries
from kgworker.llm.stats import LLM_STATS
from kgworker.queue.connection import RedisClient

log = logging.getLogger(__name__)

#: How often a cut answer may halve its chunk before the chapter fails.
MAX_SPLIT_DEPTH = 3


def _split(text: str, budget: int) -> list[Chunk]:
    """Chunks with an overlap that stays well under the budget (a tenth, at most the default)."""
    return split_into_chunks(text, budget, min(DEFAULT_CHUNK_OVERLAP, budget // 10))


def chinese_name_key(name: str) -> str:
    """NFKC + traditional→simplified: a traditional-variant answer still "occurs" in the text.

    A name's key is remembered (an answer's names are compared many times each, chapter
    after chapter); a chunk's text is not (see :data:`~kgworker.domain.names.CACHED_LENGTH`)."""
    if len(name) <= CACHED_LENGTH:
        return _cached_name_key(name)
    return default_name_key(to_simplified(name))


@lru_cache(maxsize=NAME_CACHE_SIZE)
def _cached_name_key(name: str) -> str:
    return default_name_key(to_simplified(name))


@dataclass(frozen=True)
class RedisReseeded:
    """What :meth:`LLMExtractor.on_redis_reset` put back."""

    admissions: int  #: rate-window entries re-added
    cooldowns: int  #: 429 cool-downs restored
    permits: int  #: adaptive permits of calls in flight restored
    targets: list[str]  #: adaptive providers whose target restarted at KG_ADAPTIVE_INITIAL


@dataclass
class _Chapter:
    """Per-chapter state: where calls go and what they cost."""

    chapter: ChapterInput
    options: ExtractionOptions
    client: ProviderClient
    model: str
    schema: prompts.Schema
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


class LLMExtractor:
    """The production :class:`~kgworker.domain.extraction.Extractor` for AI tasks."""

    def __init__(
        self,
        settings: Settings,
        registry: ProviderRegistry,
        redis: RedisClient,
        engine: AsyncEngine | None = None,
        *,
        recorder: CallRecorder | None = None,
        cache: ResponseCache | None = None,
        name_key: Callable[[str], str] = chinese_name_key,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.limiter = RateLimiter(redis, settings)
        self.breaker = Breaker(redis, settings)
        self.adaptive = AdaptiveGate(redis, settings)
        self.recorder = recorder or (MySQLRecorder(engine) if engine is not None else None)
        self.cache = cache or (MySQLCache(engine) if engine is not None else None)
        self.pending = PendingWrites(self.cache, self.recorder)
        self.prices = PriceTable.parse(settings.kg_llm_prices)
        self.policy = RetryPolicy.from_settings(settings)
        self.name_key = name_key
        # what every name's conversion reads, now rather than while admitted requests wait;
        # OpenCC itself is built by the first text that needs it (most never do)
        script.triggers()
        self.rng = rng or random.Random()
        #: Repairs applied to answers ("fence", "json_repair", ...) and re-asks, for eval.
        self.repairs: Counter[str] = Counter()

    async def aclose(self) -> None:
        """Write what is kept (bounded), stop the adaptive loops, close the provider clients."""
        await self.pending.aclose()
        await self.adaptive.aclose()
        await self.registry.aclose()

    async def on_redis_reset(self) -> RedisReseeded:
        """Redis came back without its data: put back what this node knows is in use.

        The rate windows get this node's admissions of the current window (and its 429
        cool-downs), the adaptive permits the requests it has in flight, and a vanished
        adaptive target restarts at ``KG_ADAPTIVE_INITIAL``; with every node doing the same,
        the fleet's counts are what they were, so the next window does not burst above the
        provider's limit. Idempotent (the same member ids); raises what Redis raises, so the
        caller can simply call it again.
        """
        admissions, cooldowns = await self.limiter.reseed()
        permits, targets = await self.adaptive.reseed()
        done = RedisReseeded(admissions, cooldowns, permits, targets)
        log.warning("Redis lost its data: LLM limits re-seeded (%d admissions, %d cool-downs, "
                    "%d permits; targets restarted: %s)", admissions, cooldowns, permits,
                    ",".join(targets) or "none")
        return done

    async def extract(self, chapter: ChapterInput, options: ExtractionOptions) -> ChapterExtraction:
        if not options.enable_entity_extraction:
            return ChapterExtraction()
        client = self.registry.get(options.provider)
        state = _Chapter(
            chapter,
            options,
            client,
            client.model_for(options.model),
            prompts.Schema.from_options(options),
        )
        parts: list[ChapterExtraction] = []
        for chunk in _split(chapter.content, self.settings.kg_chunk_tokens):
            parts += await self._extract_text(state, chunk.text, 0)
        result = merge_extractions(parts) if parts else ChapterExtraction()
        return result.model_copy(
            update={
                "llm_calls": state.calls,
                "prompt_tokens": state.prompt_tokens,
                "completion_tokens": state.completion_tokens,
                "cost": state.cost,
                "provider": client.name,
                "model": state.model,
            }
        )

    async def _extract_text(
        self, state: _Chapter, text: str, depth: int
    ) -> list[ChapterExtraction]:
        try:
            return [await self._extract_chunk(state, text)]
        except TruncatedAnswer:
            pieces = _split(text, max(estimate_tokens(text) // 2 + 1, 8))
            if depth >= MAX_SPLIT_DEPTH or len(pieces) < 2:
                size = estimate_tokens(text)
                raise ExtractionError(
                    f"{state.client.name}: answer cut at max_tokens "
                    f"({self.settings.kg_llm_max_tokens}) even for a {size}-token chunk"
                ) from None
            self.repairs["split_on_length"] += 1
            log.info("answer cut at max_tokens: splitting the chunk in %d", len(pieces))
            out: list[ChapterExtraction] = []
            for piece in pieces:
                out += await self._extract_text(state, piece.text, depth + 1)
            return out

    async def _extract_chunk(self, state: _Chapter, text: str) -> ChapterExtraction:
        chapter, schema = state.chapter, state.schema
        roster = [n for names in chapter.roster.values() for n in names]
        if self.settings.kg_llm_mode == "single":
            messages = prompts.single_messages(chapter.title, text, schema, chapter.roster)
            plain = prompts.single_messages(chapter.title, text, schema, {})
            data = await self._ask(state, "single", messages, plain)
            return validate_extraction(data, schema, text, roster=roster, name_key=self.name_key)
        entities_only = replace(schema, relations=False)
        data = await self._ask(
            state, "entities", prompts.entity_messages(chapter.title, text, schema, chapter.roster),
            prompts.entity_messages(chapter.title, text, schema, {}),
        )
        found = validate_extraction(
            data, entities_only, text, roster=roster, name_key=self.name_key
        )
        people = [c.name for c in found.characters]
        protagonists: dict[str, Any] = {}
        if people:
            protagonists = await self._ask(
                state, "protagonist", prompts.protagonist_messages(chapter.title, text, people)
            )
        if schema.relations and people:
            messages = prompts.relation_messages(
                chapter.title,
                text,
                schema,
                people,
                [e.name for e in found.events],
                [p.name for p in found.locations],
            )
            relations = await self._ask(state, "relations", messages)
            data = {**data, **{k: relations.get(k) for k in prompts.RELATION_KEYS}}
        result = validate_extraction(data, schema, text, roster=roster, name_key=self.name_key)
        apply_protagonists(result, protagonists)
        return result

    async def _ask(
        self,
        state: _Chapter,
        purpose: str,
        messages: list[dict[str, str]],
        without_roster: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """A parsed JSON answer: from the cache, else from the provider (re-asked if garbled).

        ``without_roster``: the same prompt without the roster, for the redo key
        (:mod:`kgworker.llm.cache`). Raises :class:`StoreUnavailable` when the cache cannot
        be read.
        """
        request = ChatRequest(
            state.model, messages, self.settings.kg_llm_max_tokens, self.settings.kg_llm_temperature
        )
        params = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "json": True,
        }
        name, version = state.client.name, prompts.PROMPT_VERSION
        keys = [cache_key(name, state.model, version, messages, params)]
        if without_roster is not None:
            chapter = state.chapter
            keys.append(redo_key(name, state.model, version, without_roster, params,
                                 task_id=chapter.task_id, chapter_id=chapter.chapter_id))
        use_cache = (
            self.cache is not None and state.options.use_cache and self.settings.kg_llm_cache
        )
        if use_cache and self.cache is not None:
            hit = self.pending.answer(keys)
            if hit is None:
                hit = await self.cache.get(keys)  # StoreUnavailable: no call starts
                self.pending.store_reachable()
            if hit is not None:
                try:
                    data = load_answer(hit.text).data
                except (UnparseableAnswer, TruncatedAnswer):
                    data = None
                if data is not None:
                    await self._record(state, purpose, "cached", cached=True)
                    return data
        last: UnparseableAnswer | None = None
        for attempt in range(self.settings.kg_llm_parse_retries + 1):
            response = await self._call(state, purpose, request)
            try:
                parsed = load_answer(response.text, response.finish_reason)
            except UnparseableAnswer as exc:
                last = exc
                self.repairs["reask"] += 1
                log.warning("unparseable answer (%s), attempt %d", exc.reason, attempt + 1)
                continue
            self.repairs.update(parsed.repairs)
            if use_cache:
                answer = CachedAnswer(
                    response.text, response.prompt_tokens, response.completion_tokens
                )
                await self.pending.store_answer(
                    CacheEntry(tuple(keys), answer, name, state.model, version)
                )
            return parsed.data
        assert last is not None
        raise ExtractionError(f"{state.client.name}: unusable answer ({last.reason})")

    async def _call(self, state: _Chapter, purpose: str, request: ChatRequest) -> ChatResponse:
        client, name = state.client, state.client.spec.name
        estimate = sum(estimate_tokens(m["content"]) for m in request.messages) + request.max_tokens

        async def attempt(number: int) -> ChatResponse:
            until = await self.breaker.suspended_until(name)
            if until is not None:
                raise ProviderSuspendedError(name, until)
            permit = await self.limiter.acquire(client.name, estimate)
            async with self.adaptive.call(client.name) as in_flight:  # fleet-wide AIMD permit
                response = await client.complete(request, lambda: self.limiter.sent(permit))
                if in_flight is not None:
                    in_flight.tokens = response.prompt_tokens + response.completion_tokens
            await self.limiter.reconcile(
                permit, response.prompt_tokens + response.completion_tokens
            )
            return response

        async def on_error(exc: LLMCallError, number: int) -> None:
            # An adaptive provider's bare 429 is a concurrency signal: AIMD cuts the target,
            # a provider-wide pause would only stall the fleet. A Retry-After is still obeyed.
            adaptive = exc.retry_after is None and self.adaptive.enabled_cached(client.name)
            if exc.kind is CallErrorKind.RATE_LIMITED and not adaptive:
                await self.limiter.cool_down(client.name, exc.retry_after)

        started = time.monotonic()
        try:
            response, retries = await call_with_retries(
                attempt, self.policy, on_error=on_error, rng=self.rng
            )
        except LLMCallError as exc:
            await self._record(
                state,
                purpose,
                "error",
                retries=exc.attempts - 1,
                http_status=exc.status,
                error=str(exc),
                latency=time.monotonic() - started,
            )
            if exc.kind.provider_fault and await self.breaker.record_failure(name):
                raise ProviderSuspendedError(name, None) from exc
            raise ExtractionError(f"{name}: {exc}", retryable=exc.kind.transient) from exc
        await self.breaker.record_success(name)
        cost = self.prices.cost(state.model, response.prompt_tokens, response.completion_tokens)
        state.calls += 1
        state.prompt_tokens += response.prompt_tokens
        state.completion_tokens += response.completion_tokens
        state.cost += cost
        await self._record(
            state,
            purpose,
            "ok",
            retries=retries,
            latency=time.monotonic() - started,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            cost=cost,
        )
        return response

    async def _record(
        self,
        state: _Chapter,
        purpose: str,
        status: Any,
        *,
        cached: bool = False,
        retries: int = 0,
        latency: float = 0.0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float = 0.0,
        http_status: int | None = None,
        error: str | None = None,
    ) -> None:
        LLM_STATS.record_call(
            state.client.name, model=state.model or "", seconds=latency,
            outcome="cached" if cached else str(status), prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, retries=retries, cost_usd=cost,
        )
        await self.pending.store_record(
            CallRecord(
                provider=state.client.name,
                model=state.model,
                purpose=purpose,
                status=status,
                prompt_version=prompts.PROMPT_VERSION,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_ms=int(latency * 1000),
                retries=retries,
                cost=cost,
                cached=cached,
                http_status=http_status,
                error=error,
                task_id=state.chapter.task_id,
                chapter_id=state.chapter.chapter_id,
                node=self.settings.kg_worker_node_name,
            )
        )


async def create_llm_extractor(
    settings: Settings, redis: RedisClient, engine: AsyncEngine | None = None
) -> LLMExtractor:
    """The node's extractor: providers from ``ai_providers`` (if any) and configuration."""
    registry = await ProviderRegistry.load(settings, engine)
    return LLMExtractor(settings, registry, redis, engine)
