"""Errors of one LLM call, classified once so retry, breaker and pipeline agree on them."""

from __future__ import annotations

from enum import StrEnum

from kgworker.domain.extraction import ExtractionError


class CallErrorKind(StrEnum):
    """Why a call failed; decides retry (transient) and breaker counting (provider faults)."""

    RATE_LIMITED = "rate_limited"  # 429
    SERVER = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, protocol error
    BAD_REQUEST = "bad_request"  # 400, 404, 422...
    AUTH = "auth"  # 401, 403
    CONTENT_FILTER = "content_filter"
    BAD_RESPONSE = "bad_response"  # 200 with an unreadable envelope

    @property
    def transient(self) -> bool:
        return self in _TRANSIENT

    @property
    def provider_fault(self) -> bool:
        """Counted by the breaker: the provider (not this chapter) is what is wrong."""
        return self in _PROVIDER_FAULTS


_TRANSIENT = frozenset(
    {
        CallErrorKind.RATE_LIMITED,
        CallErrorKind.SERVER,
        CallErrorKind.TIMEOUT,
        CallErrorKind.CONNECTION,
    }
)
_PROVIDER_FAULTS = _TRANSIENT | {CallErrorKind.AUTH, CallErrorKind.BAD_RESPONSE}


class LLMCallError(Exception):
    """One failed HTTP exchange with a provider, with the provider's own message."""

    def __init__(
        self,
        kind: CallErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1


class ProviderSuspendedError(ExtractionError):
    """The provider is suspended (breaker or operator): put the chapter back, pause the task."""

    def __init__(self, provider: str, until: float | None) -> None:
        super().__init__(f"provider {provider} is suspended", retryable=True)
        self.provider = provider
        self.until = until


class ProviderUnavailableError(ExtractionError):
    """No usable provider of that name (unknown, inactive, or without its API key)."""

    def __init__(self, provider: str, why: str) -> None:
        super().__init__(f"provider {provider}: {why}", retryable=False)
        self.provider = provider
