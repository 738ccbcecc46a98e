"""Loads the Lua scripts in ``lua/`` and runs them by SHA, alone or pipelined.

Every Lua script of kgworker is a file in ``lua/`` headed by its KEYS, ARGV and return
values; code elsewhere never holds Lua text. A line ``--#include NAME`` is replaced by
``lua/include/NAME.lua`` (shared prologues such as the fenced claim lookup are written
once), and the SHA is that of the expanded source, which is what the server sees.

Each script is read once from the package, called with EVALSHA and loaded on a
``NOSCRIPT`` answer: a restarted server, a promoted replica (Sentinel failover, Cluster
failover) or a new Cluster master has an empty script cache, and Redis 7 does not replicate
``SCRIPT LOAD``. In Cluster mode ``SCRIPT LOAD`` goes to every primary. Pipelined calls are
retried once after loading every script, which keeps batched lease renewal and
acknowledgement at one round trip per master in the normal case, in every mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from kgworker.queue.connection import RedisClient

INCLUDE = "--#include "


def _lua_dir() -> Any:
    return resources.files("kgworker.queue").joinpath("lua")


#: Every script of the package, by name (``lua/{name}.lua``).
SCRIPT_NAMES = tuple(sorted(
    entry.name.removesuffix(".lua") for entry in _lua_dir().iterdir()
    if entry.name.endswith(".lua")
))

Call = tuple[str, Sequence[str], Sequence[Any]]


class LuaScript:
    """One transition: its source and SHA1 (computed locally, as the server does)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def expand(source: str, seen: frozenset[str] = frozenset()) -> str:
    """``source`` with every ``--#include NAME`` line replaced by that include's text."""
    lines = []
    for line in source.splitlines():
        if line.startswith(INCLUDE):
            name = line[len(INCLUDE):].strip()
            if name in seen:
                raise ValueError(f"include cycle through {name}")
            text = _lua_dir().joinpath("include", f"{name}.lua").read_text("utf-8")
            lines.append(expand(text, seen | {name}).rstrip("\n"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


@cache
def script(name: str) -> LuaScript:
    """The script ``lua/{name}.lua`` of this package, includes expanded."""
    if name not in SCRIPT_NAMES:
        raise KeyError(f"no Lua script {name!r} in kgworker/queue/lua")
    return LuaScript(name, expand(_lua_dir().joinpath(f"{name}.lua").read_text("utf-8")))


async def load_all(client: RedisClient) -> None:
    """SCRIPT LOAD every transition (on every primary, in Cluster mode)."""
    for name in SCRIPT_NAMES:
        await client.script_load(script(name).source)


async def run(client: RedisClient, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA one script, loading it first if the server does not know it."""
    lua = script(name)
    try:
        return await client.evalsha(lua.sha, len(keys), *keys, *args)
    except NoScriptError:
        await client.script_load(lua.source)
        return await client.evalsha(lua.sha, len(keys), *keys, *args)


async def run_many(client: RedisClient, calls: Sequence[Call]) -> list[Any]:
    """Run several scripts in one pipeline (not a transaction); results in call order.

    A result that is an exception is returned as such, so one failed call (e.g. a
    Cluster slot that moved) does not hide the results of the others. In Cluster mode the
    pipeline is split by master (one round trip to each, sent concurrently); each call's
    keys share one slot. ``EVALSHA`` goes through ``execute_command`` because redis-py's
    cluster pipeline refuses its ``evalsha`` method, not the command.
    """
    if not calls:
        return []
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.execute_command("EVALSHA", script(name).sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
            await load_all(client)
            continue
        return results
    raise AssertionError("unreachable")  # pragma: no cover


def describe(name: str) -> str:
    """A script's header sentence(s) before its KEYS lines: what transition it is."""
    words: list[str] = []
    for line in _lua_dir().joinpath(f"{name}.lua").read_text("utf-8").splitlines():
        if not line.startswith("--") or line.startswith(("-- KEYS", "-- ARGV", INCLUDE)):
            break
        words.append(line.removeprefix("--").strip())
    text = " ".join(words)
    return text.removeprefix(f"{name}.lua: ")


def render_markdown() -> str:
    """The scripts table of ``docs/redis-keys.md``: one transition per file."""
    lines = ["| script | what it does |", "|---|---|"]
    lines += [f"| `{name}.lua` | {describe(name)} |" for name in SCRIPT_NAMES]
    return "\n".join(lines) + "\n"
