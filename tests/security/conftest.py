"""Helpers of the security tests: a leaky fake provider, a password-protected Redis,
a MySQL user with a known password, and ``kgworker`` subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from tests.chaos.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]


class LeakyProvider:
    """An OpenAI-style endpoint that refuses every key and quotes it back in the error body,
    as some real providers do ("Incorrect API key provided: sk-...")."""

    def __init__(self) -> None:
        self.keys_seen: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.keys_seen.append(key)
        body = {"error": {"message": f"Incorrect API key provided: {key}",
                          "type": "invalid_request_error", "code": "invalid_api_key"}}
        return web.json_response(body, status=401)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def leaky() -> AsyncIterator[LeakyProvider]:
    server = LeakyProvider()
    await server.start()
    yield server
    await server.stop()


class SecretRedis(RedisServer):
    """A dedicated redis-server with ``requirepass``."""

    def __init__(self, home: Path, password: str) -> None:
        super().__init__(home)
        self.password = password

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", self.password, "--appendonly", "no"]

    def ready(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                data = b""
                while b"PONG" not in data and b"-" not in data:
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    data += chunk
                return b"PONG" in data
        except OSError:
            return False


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[SecretRedis]:
    server = SecretRedis(tmp_path / "redis", "Rd-" + uuid.uuid4().hex[:16])
    with server:
        yield server


@pytest.fixture
async def db_user(settings: Settings, mysql_engine: AsyncEngine) -> AsyncIterator[tuple[str, str]]:
    """A MySQL user with a known, distinctive password, allowed on this test's database."""
    user = f"kgsec{uuid.uuid4().hex[:8]}"
    password = "Db-" + uuid.uuid4().hex[:16]
    async with mysql_engine.begin() as conn:
        for host in ("127.0.0.1", "localhost"):
            await conn.execute(text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"))
            await conn.execute(text(f"GRANT ALL ON `{settings.db_name}`.* TO '{user}'@'{host}'"))
    yield user, password
    async with mysql_engine.begin() as conn:
        for host in ("127.0.0.1", "localhost"):
            await conn.execute(text(f"DROP USER IF EXISTS '{user}'@'{host}'"))


def clean_env(**variables: Any) -> dict[str, str]:
    """The process environment without store/kgworker variables, plus ``variables``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "DB_", "NEO4J_", "KG_", "DATABASE_", "LOG_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update({k: str(v) for k, v in variables.items()})
    return env


class Kgworker:
    """A ``kgworker`` subprocess with stdout and stderr in files."""

    def __init__(self, env: dict[str, str], out: Path, *args: str) -> None:
        self.stdout_path, self.stderr_path = out / "stdout.txt", out / "stderr.txt"
        with open(self.stdout_path, "wb") as so, open(self.stderr_path, "wb") as se:
            self.proc = subprocess.Popen([sys.executable, "-m", "kgworker", *args], cwd=out,
                                         env=env, stdout=so, stderr=se)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    async def wait(self, timeout: float) -> int:
        for _ in range(int(timeout * 10)):
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.1)
        raise AssertionError(f"kgworker still running after {timeout} s")

    def output(self) -> str:
        return (self.stdout_path.read_text(errors="replace") + "\n"
                + self.stderr_path.read_text(errors="replace"))


def providers_json(name: str, url: str, key: str) -> str:
    return json.dumps([{"name": name, "base_url": url, "api_key": key, "models": ["m1"]}])


def assert_no_secret(where: str, content: str, secrets: dict[str, str]) -> None:
    found = [name for name, value in secrets.items() if value in content]
    assert not found, f"{', '.join(found)} found in {where}"
