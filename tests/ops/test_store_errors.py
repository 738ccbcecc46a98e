"""Stores that refuse or do not answer: one line that names the store, where and why.

Against the real servers: a wrong password, an unknown database, TLS offered to a server
that has none, and ports nobody listens on. ``kgworker run`` stops at once (exit 2) on
what waiting cannot fix and logs one line per retry otherwise; ``kgworker db`` prints one
line; a successful upgrade prints nothing but its result.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import sys
import time

import pytest
from pydantic import SecretStr
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text

from kgworker.config import Settings
from kgworker.queue.connection import create_redis
from kgworker.store.errors import StoreFault, classify, describe
from kgworker.store.migrate import head_revision
from kgworker.store.mysql import create_engine

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
WRONG = "not-the-password-4711"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens once the block ends


async def _mysql_error(settings: Settings) -> BaseException:
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("MySQL accepted the connection")


async def test_driver_errors_are_classified(settings: Settings) -> None:
    port = settings.mysql_parts().port
    cases = [
        ({"db_password": SecretStr(WRONG)}, True, "Access denied"),
        ({"db_name": "kgt_no_such_database"}, True, "Unknown database"),
        ({"db_tls": True}, True, "TLS"),
        ({"db_port": closed_port()}, False, "connection refused"),
        ({"db_host": "no-such-host.invalid"}, False, "host name not resolved"),
    ]
    for update, fatal, reason in cases:
        broken = settings.model_copy(update=update)
        exc = await _mysql_error(broken)
        fault = classify(exc)
        assert (fault.fatal, reason in fault.reason) == (fatal, True), (update, fault)
        line = describe(broken, "mysql", exc)
        assert line.startswith(f"mysql {broken.mysql_parts().host}:"), line
        assert WRONG not in line and "\n" not in line
    assert describe(settings, "mysql", exc).startswith(f"mysql 127.0.0.1:{port}")
    redis = create_redis(settings.model_copy(update={"redis_port": closed_port()}))
    with pytest.raises(RedisConnectionError) as refused:
        await redis.ping()
    await redis.aclose()
    assert classify(refused.value) == StoreFault("connection refused", fatal=False)
    assert classify(AuthenticationError("invalid username-password pair")).fatal
    cut = ConnectionError("lost")
    cut.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert classify(cut) == StoreFault("TLS connection closed early", fatal=False)


async def _run(env: dict[str, str], *args: str, timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None if still running at ``timeout``, output, seconds taken)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return None, out.decode(), time.monotonic() - started
    return proc.returncode, out.decode(), time.monotonic() - started


def _levels(output: str, *levels: str) -> list[str]:
    return [line for line in output.splitlines()
            if (m := LOG_LINE.match(line)) and m.group(1) in levels]


def _node_env(worker_env: dict[str, str], **extra: str) -> dict[str, str]:
    # deepseek: the node reads ai_providers at start, where the old retries lived
    return {**worker_env, "KG_WORKER_PROVIDERS": "deepseek", "KG_API_ENABLED": "false",
            "LOG_FORMAT": "text", **extra}


async def test_run_with_a_wrong_password_stops_at_once(worker_env: dict[str, str]) -> None:
    env = _node_env(worker_env, DB_PASSWORD=WRONG)
    code, out, took = await _run(env, "run", timeout=10)
    assert code == 2, f"exit {code} after {took:.1f} s:\n{out[-3000:]}"
    (line,) = out.splitlines()  # that line is all it prints
    assert _levels(out, "CRITICAL") == [line]
    port = env["DB_PORT"]
    assert f"mysql {env['DB_HOST']}:{port}: Access denied" in line, line
    assert "waiting cannot fix this" in line
    assert "Traceback" not in out and WRONG not in out


async def test_run_with_stores_down_logs_each_retry_then_gives_up(
    worker_env: dict[str, str],
) -> None:
    mysql_port, redis_port = closed_port(), closed_port()
    env = _node_env(worker_env, DB_PORT=str(mysql_port), REDIS_PORT=str(redis_port),
                    KG_STORE_DEADLINE="4")
    code, out, took = await _run(env, "run", timeout=30)
    assert code == 1, f"exit {code} after {took:.1f} s:\n{out[-3000:]}"
    retries = _levels(out, "WARNING")
    assert len(retries) >= 3, out[-3000:]
    for line in retries:
        assert f"mysql 127.0.0.1:{mysql_port}" in line and "connection refused" in line, line
        assert f"redis 127.0.0.1:{redis_port}" in line, "the line says Redis is down too"
    (last,) = _levels(out, "ERROR", "CRITICAL")
    assert "KG_STORE_DEADLINE" in last and f"127.0.0.1:{mysql_port}" in last, last
    assert "Traceback" not in out
    assert 4 <= took < 15, took


async def test_db_commands_with_mysql_down_print_one_line(worker_env: dict[str, str]) -> None:
    port = closed_port()
    env = {**worker_env, "DB_PORT": str(port)}
    for command in ("current", "upgrade"):
        code, out, _ = await _run(env, "db", command, timeout=60)
        assert code == 1, out
        assert out.splitlines() == [f"error: mysql 127.0.0.1:{port}: connection refused"], out


async def test_db_upgrade_prints_only_its_result(worker_env: dict[str, str]) -> None:
    for before in ("empty", head_revision()):
        code, out, _ = await _run(worker_env, "db", "upgrade", timeout=120)
        assert code == 0, out
        (line,) = out.splitlines()  # no MySQL warning about the version table's key
        assert f": {before} -> " in line, line
