"""Dedicated store servers for the chaos suite: Redis (AOF, fsync always), MariaDB and Neo4j.

Each runs from a directory of the test's own (``tmp_path``) on a free loopback port, so
killing and restarting them never touches the shared servers other tests use. Neo4j reuses
the jars and launcher class that ``scripts/services up`` built under ``.services/neo4j``.
Every server is stopped through the pid this module started, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DB_USER = "chaos"
DB_PASSWORD = "chaos-pass-1"
NEO4J_PASSWORD = "chaos-pass-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.1)


class Server:
    """One server process: ``start()``, ``stop()`` (SIGTERM, then SIGKILL), ``restart()``."""

    name = "server"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def ready(self) -> bool:
        return port_open(self.port)

    def prepare(self) -> None:
        """One-time set-up before the first start."""

    def after_start(self) -> None:
        """Set-up each start needs once the server accepts connections."""

    def start(self, timeout: float = 120) -> None:
        if self.proc is None:
            self.prepare()
        log = open(self.home / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env(),
                                     start_new_session=True)
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.tail()}")
            return self.ready()

        wait_until(up, timeout, self.name)
        self.after_start()

    def tail(self) -> str:
        path = self.home / f"{self.name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, timeout: float = 60) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        wait_until(lambda: not port_open(self.port), 30, f"{self.name} port release")

    def restart(self) -> float:
        """Stop and start again; returns the seconds the server was down."""
        t0 = time.monotonic()
        self.stop()
        self.start()
        self.restarts += 1
        return time.monotonic() - t0

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class RedisServer(Server):
    name = "redis"

    def command(self) -> list[str]:
        return [shutil.which("redis-server") or "/usr/bin/redis-server",
                "--bind", HOST, "--port", str(self.port), "--dir", str(self.home),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--protected-mode", "no"]

    def ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class MariaDBServer(Server):
    name = "mariadb"

    @property
    def socket_path(self) -> Path:
        return self.home / "m.sock"

    def prepare(self) -> None:
        data = self.home / "data"
        if (data / "mysql").is_dir():
            return
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}",
             f"--user={_user()}",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             "--skip-name-resolve"],
            check=True, capture_output=True)

    def command(self) -> list[str]:
        return ["mariadbd", "--no-defaults", f"--datadir={self.home / 'data'}",
                f"--socket={self.socket_path}", f"--pid-file={self.home / 'm.pid'}",
                f"--log-error={self.home / 'mariadb.err'}", f"--port={self.port}",
                f"--bind-address={HOST}", f"--user={_user()}", "--skip-name-resolve",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                "--max-connections=500", "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=1"]

    def ready(self) -> bool:
        return self.socket_path.exists() and port_open(self.port)

    def after_start(self) -> None:
        sql = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
               f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1';")
        for _ in range(50):
            result = subprocess.run(
                ["mariadb", "--no-defaults", f"--socket={self.socket_path}", "-uroot",
                 "-e", sql], capture_output=True, check=False)
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"mariadb bootstrap failed: {result.stderr!r}")


class Neo4jServer(Server):
    name = "neo4j"
    BUILT = ROOT / ".services" / "neo4j"

    def command(self) -> list[str]:
        return ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Dfile.encoding=UTF-8",
                "--add-opens=java.base/java.nio=ALL-UNNAMED",
                "--add-opens=java.base/java.io=ALL-UNNAMED",
                "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
                "-Dio.netty.tryReflectionSetAccessible=true",
                "-cp", f"{self.BUILT / 'classes'}:{self.BUILT / 'lib'}/*",
                "Launcher", str(self.home), str(self.port)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KG_NEO4J_PASSWORD": NEO4J_PASSWORD}

    def ready(self) -> bool:
        return "KGWORKER-NEO4J READY" in self.tail() and port_open(self.port)

    def start(self, timeout: float = 180) -> None:
        log = self.home / f"{self.name}.log"
        if log.exists():  # READY is looked for in this start's output only
            log.rename(self.home / f"{self.name}-{time.monotonic_ns()}.log")
        super().start(timeout)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def neo4j_available() -> bool:
    return (Neo4jServer.BUILT / "classes").is_dir() and shutil.which("java") is not None


def mariadb_available() -> bool:
    return all(shutil.which(b) for b in ("mariadbd", "mariadb-install-db", "mariadb"))
