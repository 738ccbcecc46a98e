"""A typed async view of one provider's queue and its claims: every method is one transition.

``claim`` pops a batch while the queue has items (one round trip for up to N jobs);
``wait`` blocks on an empty queue with ``BLMOVE`` into ``active`` and ``claim_active``
turns that item into a claim. ``ack``/``release``/``dead_letter`` are fenced by the claim's
token. The Lua behind each method is in ``lua/`` with its KEYS/ARGV/returns header.

A claim records its ``owner`` (node name + run id, the name the node beats under in
``kgw:liveness``): ``reap`` returns a dead owner's claims at once, before their lease runs
out (see :mod:`kgworker.queue.liveness`); a claim without an owner is judged by its lease.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kgworker.keys import QUEUE_PREFIX, ProviderKeys
from kgworker.queue import scripts
from kgworker.queue.connection import RedisClient


class ReleaseOutcome(enum.IntEnum):
    """What ``release.lua`` did with a claim (its return codes)."""

    LOST = 0  #: the claim was gone or had another token: someone else holds the item
    REQUEUED = 1  #: back at the head of the queue
    DEAD_LETTERED = 2  #: failed more than ``max_stalls`` times: moved to the DLQ


class MalformedItem(Exception):
    """A queue item the worker cannot read: it goes to the DLQ with this reason."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claim held by this node."""

    claim_id: str
    token: str
    raw: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class ReapResult:
    requeued: int
    dead_lettered: int
    rescued: int
    early: int = 0  #: of requeued + dead-lettered: taken from dead owners before their lease


#: The largest id a task row can have (a signed 64-bit column; chaishu's is 32-bit).
MAX_TASK_ID = 2**63 - 1


def parse_item(raw: bytes, provider: str) -> tuple[int, dict[str, Any]]:
    """``(task_id, payload)`` of a chaishu item, or :class:`MalformedItem` with a reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedItem("not UTF-8") from None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise MalformedItem(f"not JSON: {exc}") from None
    except RecursionError:  # json.loads gives up on very deep nesting this way
        raise MalformedItem("not JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise MalformedItem(f"not a JSON object: {type(payload).__name__}")
    if "task_id" not in payload:
        raise MalformedItem("no task_id")
    task_id = payload["task_id"]
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise MalformedItem(f"task_id is not an integer: {task_id!r}")
    if task_id <= 0:
        raise MalformedItem(f"task_id is not positive: {task_id}")
    if task_id > MAX_TASK_ID:
        raise MalformedItem(f"task_id is beyond any task row: {task_id}")
    name = payload.get("provider", provider)
    if not isinstance(name, str):
        raise MalformedItem(f"provider is not a string: {name!r}")
    # chaishu's producer builds the key from provider.strip().lower() and puts the provider
    # into the payload as given: match them the same way
    if name.strip().lower() != provider:
        raise MalformedItem(f"unknown provider {name!r} on the {provider!r} queue")
    return task_id, payload


def dlq_entry(raw: bytes, reason: str, node: str, provider: str) -> str:
    """The JSON of a DLQ entry; raw bytes that are not UTF-8 are base64 with a marker."""
    entry: dict[str, Any] = {"reason": reason, "node": node, "provider": provider}
    try:
        entry["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw"] = base64.b64encode(raw).decode("ascii")
        entry["raw_encoding"] = "base64"
    entry["at"] = int(time.time())
    return json.dumps(entry, ensure_ascii=False)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ProviderQueue:
    """The queue ``kg:ai_queue:{provider}`` and its claims, as seen by one node."""

    def __init__(
        self,
        client: RedisClient,
        provider: str,
        *,
        node: str,
        lease_seconds: float,
        max_stalls: int,
        owner: str = "",
    ) -> None:
        self.client = client
        self.keys = ProviderKeys.for_provider(provider)
        self.provider = self.keys.provider
        self.node = node
        self.owner = owner  #: "" = claims judged by their lease alone
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.max_stalls = max_stalls

    # --- claiming --------------------------------------------------------------------
    async def claim(self, count: int) -> list[Claimed]:
        """Claim up to ``count`` items from the head of the queue without blocking."""
        k = self.keys
        token = secrets.token_hex(8)
        prefix = secrets.token_hex(8)
        flat = await scripts.run(
            self.client,
            "claim",
            [k.queue, k.claims, k.leases, k.stalls],
            [count, prefix, token, self.node, self.lease_ms, self.owner],
        )
        return [
            Claimed(_as_str(flat[i]), token, _as_bytes(flat[i + 1]), int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def wait(self, block_seconds: float) -> bytes | None:
        """Block up to ``block_seconds`` for an item, moving it into ``active`` (FIFO)."""
        k = self.keys
        raw = await self.client.blmove(k.queue, k.active, block_seconds, "LEFT", "RIGHT")  # type: ignore[arg-type]
        return None if raw is None else _as_bytes(raw)

    async def claim_active(self, raw: bytes) -> Claimed | None:
        """Claim an item that :meth:`wait` moved; None if the reaper already took it back."""
        k = self.keys
        claimed = Claimed(secrets.token_hex(8), secrets.token_hex(8), raw, 0)
        attempts = await scripts.run(
            self.client,
            "claim_active",
            [k.active, k.claims, k.leases, k.stalls],
            [raw, claimed.claim_id, claimed.token, self.node, self.lease_ms, self.owner],
        )
        if int(attempts) < 0:
            return None
        return Claimed(claimed.claim_id, claimed.token, raw, int(attempts))

    # --- finishing -------------------------------------------------------------------
    def ack_call(self, claim: Claimed) -> scripts.Call:
        k = self.keys
        return ("ack", [k.claims, k.leases, k.stalls, k.open], [claim.claim_id, claim.token])

    async def ack(self, claim: Claimed) -> bool:
        """Forget a finished claim; False when the lease was lost (someone else has it)."""
        name, keys, args = self.ack_call(claim)
        return bool(await scripts.run(self.client, name, keys, args))

    async def release(
        self, claim: Claimed, *, count_attempt: bool, reason: str = ""
    ) -> ReleaseOutcome:
        """Put the item back at the queue head (or, past ``max_stalls``, in the DLQ)."""
        k = self.keys
        result = await scripts.run(
            self.client,
            "release",
            [k.queue, k.claims, k.leases, k.stalls, k.dlq, k.open],
            [
                claim.claim_id,
                claim.token,
                "1" if count_attempt else "0",
                self.max_stalls,
                self.node,
                self.provider,
                reason or "failed",
            ],
        )
        return ReleaseOutcome(int(result))

    async def dead_letter(self, claim: Claimed, reason: str) -> bool:
        """Move the claimed item to the DLQ with ``reason``; False when the lease was lost."""
        k = self.keys
        entry = dlq_entry(claim.raw, reason, self.node, self.provider)
        result = await scripts.run(
            self.client,
            "dead_letter",
            [k.claims, k.leases, k.stalls, k.dlq, k.open],
            [claim.claim_id, claim.token, entry],
        )
        return bool(result)

    # --- leases and open jobs ------------------------------------------------------------
    def renew_call(self, claims: Sequence[Claimed]) -> scripts.Call:
        args: list[Any] = [self.lease_ms]
        for claim in claims:
            args += [claim.claim_id, claim.token]
        return ("renew", [self.keys.claims, self.keys.leases], args)

    async def open(self, claim: Claimed, task_id: int) -> bool:
        """List a claimed job in ``open`` so other nodes can claim its units."""
        entry = json.dumps(
            {
                "raw": claim.raw.decode("utf-8"),
                "node": self.node,
                "task_id": task_id,
                "attempts": claim.attempts,
            },
            ensure_ascii=False,
        )
        args = [claim.claim_id, claim.token, entry]
        keys = [self.keys.claims, self.keys.open]
        return bool(await scripts.run(self.client, "open", keys, args))

    async def open_jobs(self) -> dict[str, dict[str, Any]]:
        """Claim id → entry of every job of this provider open to the fleet."""
        found = await self.client.hgetall(self.keys.open)
        jobs: dict[str, dict[str, Any]] = {}
        for claim_id, encoded in found.items():
            try:
                jobs[_as_str(claim_id)] = json.loads(encoded)
            except ValueError:
                continue
        return jobs

    async def claim_owners(self) -> dict[str, str]:
        """Claim id → owner of every claim that names one (the reaper asks their beats)."""
        owners: dict[str, str] = {}
        for claim_id, encoded in (await self.client.hgetall(self.keys.claims)).items():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                owner = json.loads(encoded).get("owner")
                if isinstance(owner, str) and owner:
                    owners[_as_str(claim_id)] = owner
        return owners

    async def reap(
        self, *, active_grace_ms: int, limit: int = 1000, dead: dict[str, str] | None = None
    ) -> ReapResult:
        """Requeue expired claims and ``dead`` ones (claim id → owner judged dead, taken only
        while the claim still names that owner), dead-letter poison items, rescue stranded
        items."""
        k = self.keys
        args: list[Any] = [self.max_stalls, self.node, self.provider, active_grace_ms, limit]
        for claim_id, owner in (dead or {}).items():
            args += [claim_id, owner]
        result = await scripts.run(
            self.client,
            "reap",
            [k.queue, k.active, k.active_seen, k.claims, k.leases, k.stalls, k.dlq, k.open],
            args,
        )
        return ReapResult(int(result[0]), int(result[1]), int(result[2]), int(result[3]))

    # --- inspection (tests, status, tools) -----------------------------------------------
    async def push(self, *payloads: dict[str, Any] | bytes) -> int:
        """RPUSH items as the chaishu producer does."""
        items = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in payloads]
        return int(await self.client.rpush(self.keys.queue, *items))

    async def dead_letters(self) -> list[dict[str, Any]]:
        entries = await self.client.lrange(self.keys.dlq, 0, -1)
        return [json.loads(_as_bytes(e).decode("utf-8", "surrogateescape")) for e in entries]

    async def counts(self) -> dict[str, int]:
        """Lengths of the queue, active list, claims and DLQ (one pipeline)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(k.queue)
        pipe.llen(k.active)
        pipe.hlen(k.claims)
        pipe.llen(k.dlq)
        pipe.hlen(k.open)
        queued, active, claims, dlq, open_ = await pipe.execute()
        return {
            "queued": int(queued),
            "active": int(active),
            "claimed": int(claims),
            "dead": int(dlq),
            "open": int(open_),
        }


async def open_task_ids(client: RedisClient, provider: str) -> set[int]:
    """Task ids some node holds open for ``provider`` (its open hash)."""
    ids: set[int] = set()
    for raw in await client.hvals(ProviderKeys.for_provider(provider).open):
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            ids.add(int(json.loads(raw)["task_id"]))
    return ids


async def push_missing(
    client: RedisClient, provider: str, items: dict[int, str], *, push: bool = True
) -> list[int]:
    """Push ``items`` (task id → item JSON) of tasks found nowhere in the provider's queue,
    active list, claims or open jobs; atomic (``reconcile.lua``). The task ids missing
    (pushed, unless ``push`` is False: then only named)."""
    if not items:
        return []
    k = ProviderKeys.for_provider(provider)
    args: list[Any] = ["1" if push else "0"]
    for task_id, item in items.items():
        args += [str(task_id), item]
    pushed = await scripts.run(client, "reconcile", [k.queue, k.active, k.claims, k.open], args)
    return [int(_as_str(task)) for task in pushed]


async def queued_task_ids(client: RedisClient, provider: str, limit: int = 10_000) -> set[int]:
    """Task ids of the items waiting in the provider's queue (the first ``limit``)."""
    ids: set[int] = set()
    for raw in await client.lrange(ProviderKeys.for_provider(provider).queue, 0, limit - 1):
        try:
            ids.add(parse_item(_as_bytes(raw), provider)[0])
        except MalformedItem:
            continue
    return ids


async def queue_providers(client: RedisClient) -> list[str]:
    """Providers that have a chaishu queue key now (``kg:ai_queue:*``, untagged)."""
    names: set[str] = set()
    async for raw in client.scan_iter(match=QUEUE_PREFIX + "*", count=500):
        names.add(_as_str(raw)[len(QUEUE_PREFIX):])
    return sorted(names)
