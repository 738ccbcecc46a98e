"""kgworker nodes as subprocesses (``python -m tests.pipeline.worker_app``) for a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from kgworker.config import Settings, settings_to_env

ROOT = Path(__file__).resolve().parents[2]


class Procs:
    """Worker subprocesses of one test, killed at teardown."""

    def __init__(self, settings: Settings, env: dict[str, str], logs: Path) -> None:
        self.settings, self.env, self.logs = settings, env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, node: str, **knobs: Any) -> subprocess.Popen[bytes]:
        """A node named ``node``; ``knobs`` are settings or ``KGT_*`` test knobs."""
        full = {**self.env, **settings_to_env(self.settings), "KG_WORKER_NODE_NAME": node}
        full.update({k.upper(): str(v) for k, v in knobs.items()})
        with open(self.logs / f"{node}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tests.pipeline.worker_app"],
                                    cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, node: str) -> str:
        path = self.logs / f"{node}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop_all(self, timeout: float = 15) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                codes.append(proc.wait(5))
        return codes
