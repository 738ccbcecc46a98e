"""Run the fake provider in a subprocess (for tests where several processes share it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class FakeLLMProcess:
    """``with FakeLLMProcess("--rpm-limit", "30") as fake: ... fake.log()``."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> FakeLLMProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakellm", "--port", "0", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("FAKELLM_LISTENING"):
            self.__exit__()
            raise RuntimeError(f"fake LLM did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_fake/log", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def configure(self, **config: Any) -> None:
        httpx.post(f"{self.url}/_fake/config", json=config, timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset", timeout=10).raise_for_status()
