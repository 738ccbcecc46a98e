"""Provider clients in the three chaishu call styles (docs/chaishu-compat.md §4).

Providers come from the ``ai_providers`` table and, for deployments without it, from
``KG_LLM_PROVIDERS`` (JSON). Each usable provider gets one long-lived ``httpx.AsyncClient``
so connections are reused across chapters; timeouts are per phase (a slow connect is not a
slow answer). Every failure is mapped to a :class:`CallErrorKind` here, once, so retry and
breaker logic never look at HTTP details.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.config.redact import register_secrets
from kgworker.llm.errors import CallErrorKind, LLMCallError, ProviderUnavailableError
from kgworker.llm.http import httpx
from kgworker.store.errors import StoreUnreachable, StoreUnusable, classify

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
#: Names that need no API key (local or self-hosted servers).
KEYLESS = frozenset({"ollama", "localai", "openai-compatible"})
#: Used only when a row has no base_url; the chaishu app normally fills it.
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "deepseek": "https://api.deepseek.com",
    "zhipu": "https://open.bigmodel.cn/api/paas/v4",
    "claude": "https://api.anthropic.com/v1",
    "ollama": "http://localhost:11434",
}
#: Providers whose API accepts ``response_format={"type": "json_object"}``.
JSON_MODE = frozenset({"openai", "deepseek", "zhipu"})
#: Finish reasons that mean the provider refused the content.
FILTER_REASONS = frozenset({"content_filter", "sensitive", "refusal"})


class CallStyle(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"


@dataclass(frozen=True)
class ProviderSpec:
    """One ``ai_providers`` row (or its configuration equivalent)."""

    name: str
    api_key: str = ""
    base_url: str = ""
    models: tuple[str, ...] = ()
    is_active: bool = True
    display_name: str = ""

    @property
    def key(self) -> str:
        return self.name.lower()

    def endpoint(self) -> tuple[CallStyle, str]:
        """Call style and URL (docs/chaishu-compat.md §4); ValueError when there is no URL."""
        base = (self.base_url or DEFAULT_BASE_URLS.get(self.key, "")).rstrip("/")
        if not base:
            raise ValueError("no base_url")
        if self.key in ("openai", "deepseek", "zhipu"):
            return CallStyle.OPENAI, f"{base}/chat/completions"
        if self.key == "claude":
            return CallStyle.ANTHROPIC, f"{base}/messages"
        if self.key == "ollama":
            return CallStyle.OLLAMA, f"{base}/api/generate"
        return CallStyle.OPENAI, f"{base}/v1/chat/completions"

    @property
    def compatible(self) -> bool:
        """Self-hosted style servers get the longer (120 s) timeout."""
        return self.key not in ("openai", "deepseek", "zhipu", "claude")

    def unusable_reason(self) -> str | None:
        if not self.is_active:
            return "inactive"
        if not self.api_key and self.key in ("openai", "deepseek", "zhipu", "claude"):
            return "no API key"
        try:
            self.endpoint()
        except ValueError as exc:
            return str(exc)
        return None


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: Sequence[Mapping[str, str]]
    max_tokens: int = 2000
    temperature: float = 0.7
    json_mode: bool = True


@dataclass(frozen=True)
class ChatResponse:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    raw_usage: dict[str, Any] = field(default_factory=dict)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _provider_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("msg") or err)[:300]
        return str(err)[:300]
    return str(body)[:300]


def redact_key(text: str, key: str) -> str:
    """``text`` without the API key: providers quote a refused key in their error body."""
    return text.replace(key, "***") if len(key) >= 4 else text


def classify_status(response: httpx.Response, api_key: str = "") -> LLMCallError:
    """Map a non-2xx answer to an error carrying the provider's own message (minus the key)."""
    status, message = response.status_code, redact_key(_provider_message(response), api_key)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return LLMCallError(
            CallErrorKind.RATE_LIMITED, message, status=status, retry_after=retry_after
        )
    if status == 408:
        return LLMCallError(CallErrorKind.TIMEOUT, message, status=status)
    if status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return LLMCallError(CallErrorKind.SERVER, message, status=status, retry_after=retry_after)
    if status in (401, 403):
        return LLMCallError(CallErrorKind.AUTH, message, status=status)
    lowered = message.lower()
    if ("content" in lowered and ("filter" in lowered or "policy" in lowered)) or "敏感" in message:
        return LLMCallError(CallErrorKind.CONTENT_FILTER, message, status=status)
    return LLMCallError(CallErrorKind.BAD_REQUEST, message, status=status)


class ProviderClient:
    """Calls one provider; safe to share between all slots of a node."""

    def __init__(self, spec: ProviderSpec, settings: Settings) -> None:
        reason = spec.unusable_reason()
        if reason is not None:
            raise ProviderUnavailableError(spec.name, reason)
        self.spec = spec
        self.style, self.url = spec.endpoint()
        read = settings.kg_llm_compatible_timeout if spec.compatible else settings.kg_llm_timeout
        timeout = httpx.Timeout(
            connect=settings.kg_llm_connect_timeout, read=read, write=30.0, pool=read
        )
        self._client = httpx.AsyncClient(
            timeout=timeout,
            headers=self._headers(),
            limits=httpx.Limits(max_keepalive_connections=20),
        )

    @property
    def name(self) -> str:
        return self.spec.key

    def model_for(self, configured: str | None) -> str:
        """The config's ai_model, else the provider's first model."""
        if configured:
            return configured
        if self.spec.models:
            return self.spec.models[0]
        raise ProviderUnavailableError(self.spec.name, "no model configured")

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        key = self.spec.api_key
        if self.style is CallStyle.ANTHROPIC:
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        messages = [dict(m) for m in request.messages]
        if self.style is CallStyle.ANTHROPIC:
            system = "\n".join(m["content"] for m in messages if m["role"] == "system")
            body: dict[str, Any] = {
                "model": request.model,
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "messages": [m for m in messages if m["role"] != "system"],
            }
            if system:
                body["system"] = system
            return body
        if self.style is CallStyle.OLLAMA:
            system = "\n".join(m["content"] for m in messages if m["role"] == "system")
            prompt = "\n\n".join(m["content"] for m in messages if m["role"] != "system")
            body = {
                "model": request.model,
                "prompt": prompt,
                "stream": False,
                "options": {"temperature": request.temperature, "num_predict": request.max_tokens},
            }
            if system:
                body["system"] = system
            if request.json_mode:
                body["format"] = "json"
            return body
        body = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_mode and self.spec.key in JSON_MODE:
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(
        self, request: ChatRequest, on_sent: Callable[[], Awaitable[None]] | None = None
    ) -> ChatResponse:
        """One HTTP exchange. Raises :class:`LLMCallError`; never retries (see retry.py).

        ``on_sent`` runs once the request body is on the wire (the limiter re-stamps the
        request then, so a slow connect does not count as an earlier request).
        """
        started = time.monotonic()

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            if on_sent is not None and event.endswith("send_request_body.complete"):
                await on_sent()

        try:
            response = await self._client.post(
                self.url, json=self.build_body(request), extensions={"trace": trace}
            )
        except httpx.TimeoutException as exc:
            raise LLMCallError(CallErrorKind.TIMEOUT, f"{type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            raise LLMCallError(CallErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise classify_status(response, self.spec.api_key)
        try:
            body = response.json()
        except ValueError as exc:
            raise LLMCallError(
                CallErrorKind.BAD_RESPONSE,
                redact_key(f"non-JSON body: {response.text[:200]!r}", self.spec.api_key),
            ) from exc
        return self._read(body, time.monotonic() - started)

    def _read(self, body: Any, latency: float) -> ChatResponse:
        if not isinstance(body, dict):
            raise LLMCallError(CallErrorKind.BAD_RESPONSE, "answer is not an object")
        try:
            if self.style is CallStyle.ANTHROPIC:
                text_ = "".join(
                    part.get("text", "") for part in body["content"] if part.get("type") == "text"
                )
                reason = {"max_tokens": "length", "end_turn": "stop"}.get(
                    str(body.get("stop_reason")), str(body.get("stop_reason"))
                )
                usage = body.get("usage") or {}
                p_tok, c_tok = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
            elif self.style is CallStyle.OLLAMA:
                text_ = body["response"]
                reason = str(body.get("done_reason") or "stop")
                usage = {k: body.get(k) for k in ("prompt_eval_count", "eval_count")}
                p_tok, c_tok = usage["prompt_eval_count"] or 0, usage["eval_count"] or 0
            else:
                choice = body["choices"][0]
                text_ = (choice.get("message") or {}).get("content") or ""
                reason = str(choice.get("finish_reason") or "stop")
                usage = body.get("usage") or {}
                p_tok, c_tok = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMCallError(
                CallErrorKind.BAD_RESPONSE, f"unexpected answer shape: {exc!r}"
            ) from exc
        if reason in FILTER_REASONS:
            raise LLMCallError(CallErrorKind.CONTENT_FILTER, f"refused by the provider ({reason})")
        return ChatResponse(
            str(text_), reason, int(p_tok or 0), int(c_tok or 0), latency, dict(usage)
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def specs_from_settings(settings: Settings) -> list[ProviderSpec]:
    """Providers from ``KG_LLM_PROVIDERS`` (JSON list of objects)."""
    raw = settings.kg_llm_providers.get_secret_value().strip()
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"KG_LLM_PROVIDERS: not JSON ({exc})") from exc
    if not isinstance(items, list):
        raise ValueError("KG_LLM_PROVIDERS: expected a JSON list")
    return [_spec(item) for item in items]


def _spec(row: Mapping[str, Any]) -> ProviderSpec:
    models = row.get("models") or []
    if isinstance(models, str):
        try:
            models = json.loads(models)
        except ValueError:
            models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, list):
        models = []
    return ProviderSpec(
        name=str(row["name"]),
        api_key=str(row.get("api_key") or ""),
        base_url=str(row.get("base_url") or ""),
        models=tuple(str(m) for m in models),
        is_active=bool(row.get("is_active", True)),
        display_name=str(row.get("display_name") or ""),
    )


async def specs_from_database(engine: AsyncEngine) -> list[ProviderSpec] | None:
    """Rows of ``ai_providers``; ``None`` when the table does not exist."""
    query = text(
        "SELECT name, display_name, api_key, base_url, models, is_active FROM ai_providers"
    )
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
    except DBAPIError as exc:
        if "1146" in str(exc.orig) or "doesn't exist" in str(exc.orig):
            return None
        raise
    return [_spec(dict(row)) for row in rows]


async def _specs_when_reachable(
    engine: AsyncEngine, deadline_seconds: float
) -> list[ProviderSpec] | None:
    """:func:`specs_from_database`, retried while MySQL cannot be reached (a restart at the
    moment a node starts), up to ``KG_STORE_DEADLINE``. An error waiting cannot fix raises
    :class:`StoreUnusable` at once, the deadline :class:`StoreUnreachable` (one line each)."""
    deadline = time.monotonic() + deadline_seconds
    where = f"mysql {engine.url.host}:{engine.url.port or 3306}"
    delay = 0.2
    while True:
        try:
            return await specs_from_database(engine)
        except (OperationalError, InterfaceError, OSError) as exc:
            fault = classify(exc)
            if fault.fatal:
                raise StoreUnusable(f"{where}: {fault.reason} (reading ai_providers)") from None
            if time.monotonic() + delay > deadline:
                raise StoreUnreachable(
                    f"{where}: {fault.reason}; ai_providers unreadable for "
                    f"{deadline_seconds:g} s (KG_STORE_DEADLINE)"
                ) from None
            log.warning("ai_providers not readable yet: %s unreachable (%s); retrying in %.1f s",
                        where, fault.reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class ProviderRegistry:
    """Clients by provider name (lower-cased, as queue suffixes and breaker keys are)."""

    def __init__(self, settings: Settings, specs: Sequence[ProviderSpec]) -> None:
        self._settings = settings
        self._specs = {spec.key: spec for spec in specs}
        self._clients: dict[str, ProviderClient] = {}

    @classmethod
    async def load(cls, settings: Settings, engine: AsyncEngine | None = None) -> ProviderRegistry:
        """Configuration first, then table rows (which win on equal names)."""
        specs = {s.key: s for s in specs_from_settings(settings)}
        if engine is not None:
            for spec in await _specs_when_reachable(engine, settings.kg_store_deadline) or []:
                specs[spec.key] = spec
        register_secrets(spec.api_key for spec in specs.values() if spec.api_key)
        return cls(settings, list(specs.values()))

    def usable(self) -> list[str]:
        """Names that can be called; the others are logged once with the reason."""
        names = []
        for key, spec in self._specs.items():
            reason = spec.unusable_reason()
            if reason is None:
                names.append(key)
            else:
                log.info("provider skipped: %s", reason, extra={"provider": key})
        return names

    def get(self, name: str) -> ProviderClient:
        key = name.lower()
        client = self._clients.get(key)
        if client is None:
            spec = self._specs.get(key)
            if spec is None:
                raise ProviderUnavailableError(name, "not configured")
            client = self._clients[key] = ProviderClient(spec, self._settings)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
