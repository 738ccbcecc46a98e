"""Run the old worker node as a subprocess from a test.

The node leads a process group of its own, so :meth:`LegacyProcess.kill` can SIGKILL the node
and all of its slot processes at once (by process group id, which is the node's pid), the
way an operator's ``docker kill`` ended the old worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .codec import WORKER_PREFIX, decode_fields, node_key, text_of
from .status import pid_alive

ROOT = Path(__file__).resolve().parents[2]


class LegacyProcess:
    """An old worker node; ``async with`` starts it, waits until it is registered, and
    stops it (SIGTERM, then SIGKILL) on the way out."""

    def __init__(
        self,
        env: Mapping[str, str],
        redis: Any,
        *,
        node_name: str = "legacy-node",
        providers: Sequence[str] = ("openai",),
        workers_per_provider: int = 1,
        chapter_delay: float = 0.05,
        node_ttl: int = 180,
        guard_interval: float | None = None,
        write_graph: bool = False,
        log_path: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.redis = redis
        self.node_name = node_name
        self.expected_slots = len(providers) * workers_per_provider
        self.env = dict(env)
        self.env.setdefault("PYTHONPATH", str(ROOT))
        self.env.update({
            "LEGACY_NODE_NAME": node_name,
            "LEGACY_PROVIDERS": ",".join(providers),
            "LEGACY_WORKERS_PER_PROVIDER": str(workers_per_provider),
            "LEGACY_CHAPTER_DELAY": str(chapter_delay),
            "LEGACY_NODE_TTL": str(node_ttl),
            "LEGACY_WRITE_GRAPH": "1" if write_graph else "0",
            "PYTHONUNBUFFERED": "1",
        })
        if guard_interval is not None:
            self.env["LEGACY_GUARD_INTERVAL"] = str(guard_interval)
        self.env.update(extra_env or {})
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="legacy-worker-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    # --------------------------------------------------------------- lifecycle --
    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.legacy.worker"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until this node's key and a key per slot exist (keys a killed node of the same
        name left behind do not count: their pids are dead)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise RuntimeError(f"legacy worker exited early:\n{self.output()}")
            node = decode_fields(await self.redis.hgetall(node_key(self.node_name)))
            if node.get("pid") == self.pid and \
                    len(await self.slot_pids(alive_only=True)) >= self.expected_slots:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"legacy worker not ready in {timeout} s:\n{self.output()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the node and its slots together; popped items are lost."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the node (it stops its slots and removes its keys); SIGKILL on timeout."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                break
            await asyncio.sleep(0.05)
        # slots that outlived their node (they should not): end them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return int(self.proc.returncode)

    async def __aenter__(self) -> LegacyProcess:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.terminate()

    # --------------------------------------------------------------- inspection --
    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def slot_pids(self, *, alive_only: bool = False) -> list[int]:
        """Pids of the ``kg:worker`` keys that name this node (optionally: live ones)."""
        pids: list[int] = []
        async for raw in self.redis.scan_iter(match=WORKER_PREFIX + "*"):
            key = text_of(raw)
            fields = decode_fields(await self.redis.hgetall(key))
            if fields.get("node_name") == self.node_name:
                with contextlib.suppress(ValueError):
                    pids.append(int(key[len(WORKER_PREFIX):]))
        return sorted(pid for pid in pids if not alive_only or pid_alive(pid))

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
