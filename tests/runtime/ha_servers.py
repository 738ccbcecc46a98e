"""Where the Redis Cluster and the Sentinel set for the HA tests are, or why a test skips.

``scripts/test`` starts both (``scripts/services up-cluster`` / ``up-sentinel``) and exports
``KG_TEST_CLUSTER_URL`` (``redis+cluster://host:port``) and ``KG_TEST_SENTINELS``
(``host:port,…``, master group ``KG_TEST_SENTINEL_MASTER``). Without those variables:
when the user exported their own servers (``REDIS_HOST`` …) the HA tests skip, since ours
may not be theirs to use; otherwise the project's own loopback topology is used when it is
up (``scripts/services env-cluster`` / ``env-sentinel``), and the tests skip when it is not.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from kgworker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_VARIABLE = "KG_TEST_CLUSTER_URL"
SENTINELS_VARIABLE = "KG_TEST_SENTINELS"
SENTINEL_MASTER_VARIABLE = "KG_TEST_SENTINEL_MASTER"


@dataclass(frozen=True)
class SentinelSet:
    sentinels: list[str]
    master: str


def _services_env(command: str) -> dict[str, str]:
    result = subprocess.run(
        [str(ROOT / "scripts" / "services"), command],
        capture_output=True,
        text=True,
        check=False,
    )
    env: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key.strip()] = (shlex.split(value) or [""])[0]
    return env


def _user_servers() -> bool:
    return bool(os.environ.get("REDIS_HOST") or os.environ.get("REDIS_URL"))


@functools.cache
def _cluster() -> str | None:
    """The Cluster URL; None (with :func:`cluster_url` skipping) when there is none."""
    url = os.environ.get(CLUSTER_VARIABLE)
    if url:
        return url
    if _user_servers():
        return None
    env = _services_env("env-cluster")
    if env.get("REDIS_CLUSTER") != "true":
        return None
    url = f"redis+cluster://{env['REDIS_HOST']}:{env['REDIS_PORT']}"
    return url if _cluster_up(url) else None


def _cluster_up(url: str) -> bool:
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, RedisError

    try:
        client = RedisCluster.from_url(url.replace("+cluster", ""), socket_connect_timeout=1)
    except (RedisClusterException, RedisError, OSError):
        return False
    try:
        return bool(client.ping())
    except (RedisClusterException, RedisError, OSError):
        return False
    finally:
        client.close()


def cluster_url() -> str:
    """The Cluster URL, or skip the calling test with the reason."""
    url = _cluster()
    if url is None:
        if _user_servers():
            pytest.skip(f"Redis Cluster tests: REDIS_* are your servers; set {CLUSTER_VARIABLE}")
        pytest.skip(f"no Redis Cluster ({CLUSTER_VARIABLE} unset, scripts/services up-cluster)")
    return url


def cluster_settings(settings: Settings) -> Settings:
    """``settings`` with Redis pointed at the Cluster (database 0, the only one there)."""
    return settings.model_copy(
        update={
            "redis_url": SecretStr(cluster_url()),
            "redis_cluster": True,
            "redis_sentinels": [],
            "redis_db": 0,
        }
    )


@functools.cache
def _sentinels() -> SentinelSet | None:
    listed = os.environ.get(SENTINELS_VARIABLE)
    if listed:
        master = os.environ.get(SENTINEL_MASTER_VARIABLE) or "kgmaster"
        return SentinelSet([s.strip() for s in listed.split(",") if s.strip()], master)
    if _user_servers():
        return None
    env = _services_env("env-sentinel")
    if not env.get("REDIS_SENTINELS"):
        return None
    found = SentinelSet(env["REDIS_SENTINELS"].split(","), env["REDIS_SENTINEL_MASTER"])
    return found if _sentinels_up(found) else None


def _sentinels_up(found: SentinelSet) -> bool:
    import redis

    for entry in found.sentinels:
        host, _, port = entry.rpartition(":")
        client = redis.Redis(host=host, port=int(port), socket_connect_timeout=1)
        try:
            if client.sentinel_get_master_addr_by_name(found.master):
                return True
        except (redis.RedisError, OSError):
            continue
        finally:
            client.close()
    return False


def sentinel_set() -> SentinelSet:
    """The Sentinel set, or skip the calling test with the reason."""
    found = _sentinels()
    if found is None:
        if _user_servers():
            pytest.skip(f"Redis Sentinel tests: REDIS_* are your servers; set {SENTINELS_VARIABLE}")
        pytest.skip(f"no Redis Sentinel ({SENTINELS_VARIABLE} unset, scripts/services up-sentinel)")
    return found


def sentinel_settings(settings: Settings) -> Settings:
    """``settings`` with Redis reached through the sentinels (database 0)."""
    found = sentinel_set()
    return settings.model_copy(
        update={
            "redis_url": None,
            "redis_cluster": False,
            "redis_sentinels": found.sentinels,
            "redis_sentinel_master": found.master,
            "redis_db": 0,
        }
    )
