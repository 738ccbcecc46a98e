"""``kgworker provider pause|resume|scale``: steer a provider on every node at once.

Pause and resume are the LLM layer's (the chaishu suspend key, which the breaker also
sets); scale writes the live slot limit that every node re-reads within about a second
(``kgw:provider_slots``), capped on each node by ``KG_MAX_PROCESSES_PER_PROVIDER``.
A name is accepted only if something knows it — ``ai_providers``, ``rules``, the node's
configuration or an existing queue — so a typo is an error, not a silent new key.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.observe.control import ControlError, check_provider_name, known_providers
from kgworker.observe.fleet import discover_providers
from kgworker.queue.connection import RedisClient
from kgworker.queue.keys import PROVIDER_SLOTS_KEY


@dataclass(frozen=True)
class ProviderChange:
    provider: str
    action: str
    detail: str


async def resolve_provider(
    settings: Settings, redis: RedisClient, engine: AsyncEngine | None, name: str
) -> str:
    """The canonical (lower-case) provider name, or :class:`ControlError` if nobody knows it."""
    wanted = check_provider_name(name).lower()
    known = {"rules", *settings.kg_worker_providers}
    known.update(await discover_providers(redis))
    if engine is not None:
        try:
            known.update(await known_providers(engine))
        except Exception as exc:  # no chaishu tables: the other sources still count
            if wanted not in known:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise ControlError(
                    f"unknown provider {name!r}, and ai_providers could not be read ({reason})",
                    404,
                ) from None
    if wanted not in known:
        raise ControlError(
            f"unknown provider {name!r} (known: {', '.join(sorted(known))})", 404
        )
    return wanted


async def pause(redis: RedisClient, provider: str, seconds: int | None) -> ProviderChange:
    from kgworker.llm import limits

    await limits.pause(redis, provider, seconds)
    length = f"for {seconds} s" if seconds else "until resumed"
    return ProviderChange(provider, "paused", f"no node claims from it {length}")


async def resume(redis: RedisClient, provider: str) -> ProviderChange:
    from kgworker.llm import limits
    from kgworker.queue.keys import suspend_key

    was = bool(await redis.exists(suspend_key(provider)))
    await limits.resume(redis, provider)
    detail = "claiming resumes within a second" if was else "it was not paused"
    return ProviderChange(provider, "resumed", detail)


async def scale(
    settings: Settings, redis: RedisClient, provider: str, slots: int | None
) -> ProviderChange:
    """Set (``slots``) or clear (``None``: back to KG_WORKERS_PER_PROVIDER) the live limit."""
    if slots is None:
        await redis.hdel(PROVIDER_SLOTS_KEY, provider)
        default = settings.provider_slot_limit
        return ProviderChange(provider, "scaled", f"back to the configured {default} per node")
    if slots < 0:
        raise ControlError("the slot count must be 0 or more")
    await redis.hset(PROVIDER_SLOTS_KEY, provider, str(slots))
    cap = settings.kg_max_processes_per_provider
    detail = f"{slots} slots per node, applied by every node within seconds"
    if slots > cap:
        detail += f" (nodes cap it at KG_MAX_PROCESSES_PER_PROVIDER={cap} here)"
    if slots == 0:
        detail += "; nothing is claimed until scaled up"
    return ProviderChange(provider, "scaled", detail)
