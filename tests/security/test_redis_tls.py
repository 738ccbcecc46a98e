"""TLS to Redis: a self-signed CA and a server certificate for 127.0.0.1 (``openssl``), a
redis-server listening only on its ``--tls-port``; ``create_redis`` with ``REDIS_TLS=true``
and the CA file round-trips, ``kgworker doctor`` says OK, and without the CA (or without
TLS) the connection is refused rather than silently downgraded."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgworker.config import Settings, settings_to_env
from kgworker.queue.connection import create_redis
from tests.chaos.servers import HOST, RedisServer
from tests.security.conftest import clean_env

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")


def make_certs(home: Path) -> dict[str, Path]:
    """CA key/cert, then a server key and a cert signed by it for IP 127.0.0.1."""
    run = lambda *args: subprocess.run(["openssl", *args], cwd=home, check=True,  # noqa: E731
                                       capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=kgworker test CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
        "server.key", "-out", "server.csr")
    (home / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return {name: home / f"{name.replace('_', '.')}" for name in
            ("ca_crt", "server_crt", "server_key")}


class TlsRedis(RedisServer):
    def __init__(self, home: Path, certs: dict[str, Path]) -> None:
        super().__init__(home)
        self.certs = certs

    def command(self) -> list[str]:
        return [shutil.which("redis-server") or "redis-server", "--bind", HOST, "--port", "0",
                "--tls-port", str(self.port), "--tls-cert-file", str(self.certs["server_crt"]),
                "--tls-key-file", str(self.certs["server_key"]),
                "--tls-ca-cert-file", str(self.certs["ca_crt"]), "--tls-auth-clients", "no",
                "--dir", str(self.home), "--save", "", "--appendonly", "no"]

    def ready(self) -> bool:
        return "Ready to accept connections" in self.tail()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    server = TlsRedis(tmp_path / "redis", make_certs(certs_dir))
    try:
        server.start(timeout=30)
    except RuntimeError as exc:
        if "TLS" in str(exc) or "tls" in str(exc):
            pytest.skip(f"redis-server built without TLS: {exc}")
        raise
    try:
        yield server
    finally:
        server.__exit__()


def tls_settings(settings: Settings, server: TlsRedis, **update: object) -> Settings:
    values: dict[str, object] = {"redis_host": HOST, "redis_port": server.port, "redis_db": 0,
                                 "redis_tls": True, "redis_tls_ca_file": server.certs["ca_crt"]}
    values.update(update)
    return settings.model_copy(update=values)


async def test_create_redis_round_trips_over_tls(settings: Settings, tls_redis: TlsRedis) -> None:
    client = create_redis(tls_settings(settings, tls_redis))
    try:
        await client.set("kgtest:tls", "往返 ok")
        assert (await client.get("kgtest:tls")) in (b"\xe5\xbe\x80\xe8\xbf\x94 ok", "往返 ok")
        assert await client.ping()
    finally:
        await client.aclose()


async def test_tls_is_verified_not_downgraded(settings: Settings, tls_redis: TlsRedis) -> None:
    no_ca = create_redis(tls_settings(settings, tls_redis, redis_tls_ca_file=None))
    plain = create_redis(tls_settings(settings, tls_redis, redis_tls=False))
    try:
        for client in (no_ca, plain):  # unknown CA; plain text against a TLS port
            with pytest.raises(Exception):  # noqa: B017, PT011 (redis-py wraps ssl errors variously)
                await asyncio.wait_for(client.ping(), 5)
    finally:
        await no_ca.aclose()
        await plain.aclose()


async def test_doctor_says_ok_over_tls(settings: Settings, tls_redis: TlsRedis,
                                       tmp_path: Path) -> None:
    env = clean_env(**settings_to_env(tls_settings(settings, tls_redis)))
    assert env["REDIS_TLS"].lower() in ("true", "1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", "doctor", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode()
    assert proc.returncode == 0, out
    redis_lines = [line for line in out.splitlines() if "redis" in line.lower()]
    assert redis_lines and any("ok" in line.lower() for line in redis_lines), out
