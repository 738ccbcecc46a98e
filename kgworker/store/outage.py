"""Telling a store outage from the chapter's own failure.

An unreachable MySQL, Neo4j or Redis (refused, reset, timed out, a failover in progress)
is nobody's fault the chapter could mend: the handler waits for the store and tries the
same step again, and no attempt is spent. Anything else a store says (a constraint, bad
data, a syntax the chapter's content provoked) is the chapter's failure.
"""

from __future__ import annotations

from neo4j.exceptions import ServiceUnavailable, SessionExpired, TransientError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from kgworker.domain.extraction import StoreUnavailable

#: MySQL client errors of a connection, not of a statement (2003 cannot connect, 2006 gone
#: away, 2013 lost during query, 2055 lost at handshake, 1040 too many connections, 1053
#: shutdown in progress, 1927 connection killed).
_MYSQL_CONNECTION_CODES = frozenset({2003, 2005, 2006, 2013, 2055, 1040, 1053, 1927})


def _mysql_code(exc: BaseException) -> int | None:
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def store_of(exc: BaseException, default: str = "store") -> str | None:
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
        if exc.connection_invalidated or _mysql_code(exc) in _MYSQL_CONNECTION_CODES:
            return "mysql"
        if isinstance(exc, OperationalError) and _mysql_code(exc) is None:
            return "mysql"  # the driver's own connection trouble carries no server code
        return None
    if isinstance(exc, OSError | TimeoutError):
        return default
    return None
