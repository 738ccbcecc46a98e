"""Which node runs are alive: each node's beat in ``kgw:liveness``, every second.

A chapter claim (MySQL) and a queue claim (Redis) name their owner (node name + run id).
The claim's lease fences a node that is alive but stuck; the beat tells a dead node from one
that merely cannot renew: a dead owner's claims go back at once (no need to wait out the
lease: the reaper returns its queue claims at its next sweep, so a kill -9 costs about
``DEAD_AFTER_MS`` plus one ``KG_REAPER_INTERVAL``), and a live owner's chapters are left
alone while a store outage keeps it from renewing. An owner that never beat (a
node of an older version, a test driving a handler by hand) is judged by its lease alone,
as is every owner after Redis lost its data (the beats are gone with it; MySQL leases are
unaffected and still renewed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from kgworker.keys import LIVENESS_KEY
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient

#: A node beats every second; silent this long (ms), it is dead.
DEAD_AFTER_MS = 6000
#: Beats older than this are forgotten (runs long gone).
FORGET_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class OwnerStates:
    alive: frozenset[str]
    dead: frozenset[str]  #: owners that beat once and fell silent (or stopped)


async def beat(redis: RedisClient, owner: str, *, alive: bool = True) -> None:
    await scripts.run(redis, "liveness_beat", [LIVENESS_KEY],
                      [owner, "1" if alive else "0", FORGET_MS])


async def states(redis: RedisClient, owners: Iterable[str]) -> OwnerStates:
    """Alive and dead ``owners``; the rest never beat (judge them by their leases)."""
    names = sorted(set(owners))
    if not names:
        return OwnerStates(frozenset(), frozenset())
    now, *scores = await scripts.run(redis, "liveness_read", [LIVENESS_KEY], names)
    alive: set[str] = set()
    dead: set[str] = set()
    for owner, score in zip(names, scores, strict=True):
        if int(score) < 0:
            continue
        (alive if int(now) - int(score) <= DEAD_AFTER_MS else dead).add(owner)
    return OwnerStates(frozenset(alive), frozenset(dead))


def new_epoch() -> str:
    """The value a node sets ``kgw:epoch`` to when it finds it missing: when (ms)."""
    return str(int(time.time() * 1000))
