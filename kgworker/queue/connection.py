"""One factory for the Redis client, whatever the deployment: single, Sentinel or Cluster.

Every caller gets a ``redis.asyncio`` client that speaks the same commands, so scripts and
transitions never care which mode is configured (see ``docs/redis-keys.md``).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from kgworker.config import Settings

RedisClient: TypeAlias = "Redis | RedisCluster"

#: Generous pool: blocking claims hold one connection per provider, never one per slot.
MAX_CONNECTIONS = 200


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
        return Redis.from_url(url, **kwargs)
    if settings.redis_is_cluster:
        kwargs.pop("health_check_interval", None)
        return RedisCluster(host=settings.redis_host, port=settings.redis_port, **kwargs)
    if settings.redis_sentinels:
        sentinels = []
        for entry in settings.redis_sentinels:
            host, _, port = entry.rpartition(":")
            sentinels.append((host, int(port)))
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 2}
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
