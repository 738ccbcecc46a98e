"""Drives a fleet of ``adaptive_worker`` processes against the fake provider, for the test
and for ``python -m bench adaptive``: start the workers, wait for the first request, walk
through a schedule of hidden capacities, sample the fleet's target, stop, collect the log."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import redis as sync_redis

from kgworker.config import Settings
from kgworker.keys import LlmKeys
from tests.fakellm import FakeLLMProcess, concurrency_samples
from tests.llm.conftest import ROOT_DIR, provider_json


def fleet_env(
    worker_env: dict[str, str], url: str, *, adaptive: bool, period: float = 0.5
) -> dict[str, str]:
    env = {
        **worker_env,
        "KG_LLM_PROVIDERS": provider_json(url),
        "KG_ADAPTIVE_PERIOD": str(period),
        "KG_ADAPTIVE_INITIAL": "2",
        "KG_ADAPTIVE_MAX": "40",
        "KG_LLM_BACKOFF_BASE": "0.05",
        "KG_LLM_BACKOFF_CAP": "0.5",
        "KG_LLM_MAX_ATTEMPTS": "10",
        "KG_BREAKER_THRESHOLD": "100000",
        "KG_LLM_CACHE": "false",
    }
    if adaptive:
        env["KG_ADAPTIVE_PROVIDERS"] = "deepseek"
    return env


@dataclass
class FleetRun:
    started: float  #: first request seen by the provider
    marks: list[tuple[float, int]]  #: (time, capacity) at each step of the schedule
    records: list[dict[str, Any]]
    results: list[dict[str, int]]
    targets: list[tuple[float, int]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def run_fleet(
    fake: FakeLLMProcess,
    env: dict[str, str],
    settings: Settings,
    schedule: list[tuple[int, float]],
    *,
    workers: int = 3,
    concurrency: int = 16,
) -> FleetRun:
    """``schedule``: (capacity, seconds) steps; the first starts at the first request."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.llm.adaptive_worker", "--concurrency", str(concurrency)],
            cwd=ROOT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(workers)
    ]
    client = sync_redis.Redis(host=settings.redis_host, port=settings.redis_port,
                              db=settings.redis_db,
                              password=settings.redis_password.get_secret_value() or None)
    state_key = LlmKeys.for_provider("deepseek").aimd
    run = FleetRun(0.0, [], [], [])
    try:
        fake.configure(capacity=schedule[0][0])
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", "worker did not start"
        deadline = time.time() + 60
        while not fake.log()["requests"]:
            assert time.time() < deadline, "no request reached the provider"
            time.sleep(0.1)
        run.started = time.time()
        for capacity, seconds in schedule:
            fake.configure(capacity=capacity)
            run.marks.append((time.time(), capacity))
            end = time.time() + seconds
            while time.time() < end:
                raw = client.hget(state_key, "target")
                if raw is not None:
                    run.targets.append((time.time(), int(raw)))
                time.sleep(0.25)
        run.marks.append((time.time(), 0))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            run.stderr.append(err)
            lines = out.strip().splitlines()
            run.results.append(json.loads(lines[-1]) if lines else {})
        client.close()
    run.records = fake.log()["requests"]
    return run


def phase(records: list[dict[str, Any]], start: float, end: float) -> dict[str, float]:
    """Provider-side figures of [start, end): requests in flight (mean, lowest/highest
    one-second mean), calls, answered calls per second and the share of 429s."""
    samples = concurrency_samples(records, start, end)
    calls = [r for r in records if start <= r["t"] < end]
    throttled = sum(1 for r in calls if r["status"] == 429)
    per_second = [statistics.mean(samples[i : i + 20]) for i in range(0, len(samples), 20)]
    return {
        "mean": round(statistics.mean(samples), 2),
        "lowest_second": round(min(per_second), 2),
        "highest_second": round(max(per_second), 2),
        "calls": len(calls),
        "ok_per_s": round((len(calls) - throttled) / (end - start), 1),
        "ratio_429": round(throttled / max(1, len(calls)), 4),
    }
