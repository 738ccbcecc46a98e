"""What a store's error means to an operator: one line, and whether waiting can fix it.

Every caller that reports a store problem asks :func:`classify` — the node's wait for its
stores, the ``ai_providers`` read, the runtime's store health, ``kgworker db`` and the
control commands — so an access-denied is never retried for minutes and a refused
connection never stops a node at once.

*Fatal* (the configuration or the server's accounts must change): wrong user or password,
unknown database, missing privileges, a host the server refuses, TLS that cannot be
negotiated or verified, a Redis or Neo4j authentication refusal. Everything else is
*transient*: refused, reset, timed out, a host name not resolvable yet (a Kubernetes
Service appears after its pods), too many connections, a server shutting down.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from neo4j.exceptions import ServiceUnavailable, SessionExpired, TransientError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from kgworker.config import Settings
from kgworker.domain.extraction import StoreUnavailable

#: MySQL/MariaDB error codes that waiting cannot fix.
FATAL_MYSQL_CODES: dict[int, str] = {
    1044: "access denied to the database",
    1045: "access denied (user or password)",
    1049: "unknown database",
    1129: "host blocked by the server (mysqladmin flush-hosts)",
    1130: "host not allowed to connect",
    1142: "command denied (missing privilege)",
    1143: "column access denied (missing privilege)",
    1227: "access denied (missing privilege)",
    1251: "authentication method not supported by the client",
    1698: "access denied (user or password)",
    1862: "the password has expired",
    2026: "TLS connection error",
    3118: "the account is locked",
    3159: "the server requires TLS (set DB_TLS=true)",
}
_OS_REASONS: dict[int, str] = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNABORTED: "connection aborted",
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (-?\d+)\]")
_DRIVER_PREFIX = re.compile(r"^\([\w.]+\)\s*")
#: TLS errors of a connection cut short (a restarting proxy), not of a bad configuration.
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
_FATAL_NEO4J = frozenset({"AuthError", "Forbidden", "TokenExpired", "ConfigurationError"})


@dataclass(frozen=True)
class StoreFault:
    """One line of reason, and whether waiting could fix it."""

    reason: str
    fatal: bool


class StoreUnusable(Exception):
    """A store refused us for a reason waiting cannot fix (the CLI exits 2)."""


class StoreUnreachable(Exception):
    """A store stayed unreachable past ``KG_STORE_DEADLINE`` (the CLI exits 1)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error, the driver error it wraps (``.orig``) and their causes, once each."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return _DRIVER_PREFIX.sub("", line).strip()


def _mysql_code(exc: BaseException) -> tuple[int, str] | None:
    """``(code, message)`` of a MySQL driver error (asyncmy, pymysql: ``args = (code, msg)``)."""
    args: tuple[object, ...] = tuple(exc.args)
    if len(args) >= 2 and isinstance(args[0], int) and 1000 <= args[0] < 5000:
        return args[0], str(args[1])
    return None


def _os_reason(chain: list[BaseException]) -> str | None:
    for exc in chain:
        if isinstance(exc, socket.gaierror):
            return "host name not resolved"
        if isinstance(exc, TimeoutError):
            return "timed out"
        if isinstance(exc, OSError) and exc.errno in _OS_REASONS:
            return _OS_REASONS[exc.errno]
    for exc in chain:  # drivers that keep only the text: "... ([Errno 111] ...)"
        found = _ERRNO_IN_TEXT.search(str(exc))
        if found:
            number = int(found.group(1))
            if number < 0:
                return "host name not resolved"
            if number in _OS_REASONS:
                return _OS_REASONS[number]
    return None


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message or exc.reason}"
    hint = " (the server does not speak TLS?)" if exc.reason == "WRONG_VERSION_NUMBER" else ""
    return f"TLS handshake failed: {exc.reason or _first_line(str(exc))}{hint}"


def _auth_refusal(exc: BaseException) -> str | None:
    """Redis and Neo4j refusals of our credentials (class names: no import needed)."""
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith("redis") and name in ("AuthenticationError", "NoPermissionError",
                                                "AuthenticationWrongNumberOfArgsError"):
        return _first_line(str(exc)) or "authentication failed"
    if module.startswith("neo4j") and name in _FATAL_NEO4J:
        return _first_line(str(exc)) or name
    return None


def classify(exc: BaseException) -> StoreFault:
    """The one-line reason of a store error and whether it is fatal (see the module doc)."""
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, _TLS_CUT):  # the connection dropped mid-handshake: try again
            return StoreFault("TLS connection closed early", fatal=False)
        if isinstance(item, ssl.SSLError):
            return StoreFault(_tls_reason(item), fatal=True)
        refusal = _auth_refusal(item)
        if refusal is not None:
            return StoreFault(refusal, fatal=True)
    for item in chain:
        found = _mysql_code(item)
        if found is None:
            continue
        code, message = found
        if code in FATAL_MYSQL_CODES:
            return StoreFault(_first_line(message) or FATAL_MYSQL_CODES[code], fatal=True)
        return StoreFault(_os_reason(chain) or _first_line(message) or f"error {code}", False)
    reason = _os_reason(chain)
    if reason is None:
        reason = _first_line(str(exc)).split("(Background on this error", 1)[0].strip()
    return StoreFault(reason or type(exc).__name__, fatal=False)


def endpoint(settings: Settings, store: str) -> str:
    """``host:port`` of a store (never a user name or password), for log lines; empty for
    a store this module does not know."""
    if store == "mysql":
        parts = settings.mysql_parts()
        return f"{parts.host}:{parts.port}"
    if store == "redis":
        if settings.redis_url is not None:
            url = urlsplit(settings.redis_url.get_secret_value())
            return f"{url.hostname or 'localhost'}:{url.port or 6379}"
        if settings.redis_sentinels:
            return f"sentinels {','.join(settings.redis_sentinels)}"
        return f"{settings.redis_host}:{settings.redis_port}"
    if store == "neo4j":
        url = urlsplit(settings.neo4j_uri)
        return f"{url.hostname or 'localhost'}:{url.port or 7687}"
    return ""


def describe(settings: Settings, store: str, exc: BaseException) -> str:
    """``mysql 127.0.0.1:3306: access denied …`` — the store, its endpoint and the reason."""
    where = endpoint(settings, store)
    return f"{store}{' ' + where if where else ''}: {classify(exc).reason}"


def store_of(exc: BaseException) -> str | None:
    """Which store's driver raised ``exc`` (``redis``, ``mysql``, ``neo4j``), else None."""
    module = type(exc).__module__.split(".", 1)[0]
    return {"redis": "redis", "sqlalchemy": "mysql", "asyncmy": "mysql", "pymysql": "mysql",
            "neo4j": "neo4j"}.get(module)


# --- an outage, or the chapter's own failure? -----------------------------------------------
# An unreachable MySQL, Neo4j or Redis (refused, reset, timed out, a failover in progress)
# is nobody's fault the chapter could mend: the handler waits for the store and tries the
# same step again, and no attempt is spent. Anything else a store says (a constraint, bad
# data, a statement the chapter's content provoked) is the chapter's failure.

#: MySQL client errors of a connection, not of a statement (2003 cannot connect, 2006 gone
#: away, 2013 lost during query, 2055 lost at handshake, 1040 too many connections, 1053
#: shutdown in progress, 1927 connection killed).
_MYSQL_CONNECTION_CODES = frozenset({2003, 2005, 2006, 2013, 2055, 1040, 1053, 1927})


def _server_code(exc: BaseException) -> int | None:
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def outage_of(exc: BaseException, default: str = "store") -> str | None:
    """The store ``exc`` says is unreachable (``default`` for a bare socket error), or None
    when it is the chapter's failure."""
    if isinstance(exc, StoreUnavailable):
        return exc.store
    if isinstance(exc, ServiceUnavailable | SessionExpired | TransientError):
        return "neo4j"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "redis"
    if isinstance(exc, PoolTimeoutError | InterfaceError):
        return "mysql"
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or _server_code(exc) in _MYSQL_CONNECTION_CODES:
            return "mysql"
        if isinstance(exc, OperationalError) and _server_code(exc) is None:
            return "mysql"  # the driver's own connection trouble carries no server code
        return None
    if isinstance(exc, OSError | TimeoutError):
        return default
    return None
