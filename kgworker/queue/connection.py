"""One factory for the Redis client, whatever the deployment: single, Sentinel or Cluster.

Every caller gets a ``redis.asyncio`` client that speaks the same commands, so scripts and
transitions never care which mode is configured (see ``docs/redis-keys.md``). Failover
behaviour per mode is in ``docs/redis-ha.md``: a Sentinel client asks the sentinels for the
master on every new connection; a Cluster client follows MOVED/ASK and re-reads the slot map
after a connection error. Both retry a failed command a few times (redis-py's default
exponential backoff, capped at 1 s) before the caller's own backoff takes over.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from kgworker.config import Settings

RedisClient: TypeAlias = "Redis | RedisCluster"

#: What an unreachable or failing-over Redis raises, in every mode: redis-py's errors,
#: socket errors, and the Cluster client's own (``SlotNotCoveredError`` while a failed
#: master's slots have no owner yet, "cannot connect" while no seed node answers), which
#: do not derive from ``RedisError``. Callers back off and try again on these.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

#: Generous pool: blocking claims hold one connection per provider, never one per slot.
#: In Cluster mode the limit is per node, and each blocking call takes its own connection
#: of the node that owns the queue's slot (redis-py never multiplexes commands on one).
MAX_CONNECTIONS = 200
#: Sentinels answer at once; a sentinel that does not is skipped for the next one.
SENTINEL_TIMEOUT = 2.0


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.redis_tls:
        return {}
    kwargs: dict[str, Any] = {
        "ssl": True,
        "ssl_cert_reqs": "required" if settings.redis_tls_verify else "none",
        "ssl_check_hostname": settings.redis_tls_verify,
    }
    if settings.redis_tls_ca_file is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file is not None:
        kwargs["ssl_certfile"] = str(settings.redis_tls_cert_file)
    if settings.redis_tls_key_file is not None:
        kwargs["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return kwargs


def _common_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "max_connections": MAX_CONNECTIONS,
        **_tls_kwargs(settings),
    }
    password = settings.redis_password.get_secret_value()
    if password:
        kwargs["password"] = password
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    return kwargs


def create_redis(settings: Settings, **overrides: Any) -> RedisClient:
    """A client for the configured deployment. ``overrides`` go to the client constructor."""
    kwargs = {**_common_kwargs(settings), **overrides}
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        if settings.redis_is_cluster:
            url = url.replace("+cluster", "", 1)
            kwargs.pop("health_check_interval", None)
            return RedisCluster.from_url(url, **kwargs)
        if url.startswith("unix:"):  # TCP-only options are refused by unix-socket connections
            for option in ("socket_keepalive", "socket_connect_timeout"):
                kwargs.pop(option, None)
        return Redis.from_url(url, **kwargs)
    if settings.redis_is_cluster:
        kwargs.pop("health_check_interval", None)
        return RedisCluster(host=settings.redis_host, port=settings.redis_port, **kwargs)
    if settings.redis_sentinels:
        sentinels = []
        for entry in settings.redis_sentinels:
            host, _, port = entry.rpartition(":")
            sentinels.append((host, int(port)))
        sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "socket_timeout": SENTINEL_TIMEOUT,
        }
        sentinel_password = settings.redis_sentinel_password.get_secret_value()
        if sentinel_password:
            sentinel_kwargs["password"] = sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs
        )
        client: Redis = sentinel.master_for(
            settings.redis_sentinel_master, db=settings.redis_db, **kwargs
        )
        return client
    return Redis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db, **kwargs)
