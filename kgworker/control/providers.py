"""``kgworker provider pause|resume|scale|fallback``: steer a provider on every node at once.

Pause and resume set and lift the chaishu suspend key (which the breaker also sets);
scale writes the live slot limit that every node re-reads within about a second
(``kgw:provider_slots``), capped on each node by ``KG_MAX_PROCESSES_PER_PROVIDER``;
``scale NAME auto`` hands the provider to the adaptive controller (:mod:`kgworker.llm.adaptive`).
Fallback switches moving waiting tasks to backups on or off (the fleet duties move them).
A name is accepted only if something knows it — ``ai_providers``, ``rules``, the node's
configuration or an existing queue — so a typo is an error, not a silent new key.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.config.specs import parse_fallback
from kgworker.control.enqueue import check_provider_name, known_providers
from kgworker.control.errors import ControlError
from kgworker.keys import PROVIDER_SLOTS_KEY
from kgworker.observe.fleet import discover_providers
from kgworker.queue import switches
from kgworker.queue.connection import RedisClient


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
    await switches.suspend(redis, provider, seconds)
    length = f"for {seconds} s" if seconds else "until resumed"
    return ProviderChange(provider, "paused", f"no node claims from it {length}")


async def resume(redis: RedisClient, provider: str) -> ProviderChange:
    was = await switches.lift(redis, provider)
    detail = "claiming resumes within a second" if was else "it was not paused"
    return ProviderChange(provider, "resumed", detail)


async def scale(
    settings: Settings, redis: RedisClient, provider: str, slots: int | str | None
) -> ProviderChange:
    """Set (``slots``), make adaptive (``"auto"``) or clear (``None``) the live limit."""
    from kgworker.llm import adaptive

    was_auto = (await redis.hget(PROVIDER_SLOTS_KEY, provider)) in (b"auto", "auto")
    if slots == adaptive.AUTO:
        await redis.hset(PROVIDER_SLOTS_KEY, provider, adaptive.AUTO)
        target = await adaptive.set_mode(redis, settings, provider, True)
        cap = settings.kg_max_processes_per_provider
        return ProviderChange(provider, "scaled", (
            f"adaptive: the fleet's requests in flight follow an AIMD target (now {target}, "
            f"{settings.kg_adaptive_min}..{settings.kg_adaptive_max}); {cap} slots per node"
        ))
    if isinstance(slots, str):
        raise ControlError(f"expected a slot count or 'auto', got {slots!r}")
    if was_auto and provider not in adaptive.configured(settings):
        await adaptive.set_mode(redis, settings, provider, False)
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


async def fallback(
    settings: Settings, redis: RedisClient, provider: str, on: bool
) -> ProviderChange:
    """Allow (or stop) moving the provider's waiting tasks to its backups while suspended."""
    try:
        chains = parse_fallback(settings.kg_provider_fallback)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    if on and provider not in chains:
        raise ControlError(f"{provider} has no backups in KG_PROVIDER_FALLBACK")
    await switches.set_fallback(redis, provider, on)
    if not on:
        return ProviderChange(provider, "fallback off", "its tasks wait for it while suspended")
    backups = " → ".join(chains[provider])
    detail = f"while suspended, waiting tasks move to {backups}"
    return ProviderChange(provider, "fallback on", detail)
