"""Three worker processes share one provider limited to N requests per window.

The fake provider's own log (arrival times, seen from the server) must show the limit was
never exceeded in any window, and that the fleet used at least 90 % of it. The window is
5 s instead of a minute so the test is short; the limiter and the check are the same.
"""

from __future__ import annotations

import subprocess
import sys
import time

from kgworker.config import Settings
from tests.fakellm import FakeLLMProcess, max_in_window
from tests.llm.conftest import ROOT_DIR, provider_json

LIMIT = 25
WINDOW = 5.0
WORKERS = 3


def test_three_processes_share_the_rpm_limit(
    settings: Settings, worker_env: dict[str, str]
) -> None:
    with FakeLLMProcess(
        "--rpm-limit", str(LIMIT), "--rpm-window", str(WINDOW), "--latency", "0.05"
    ) as fake:
        env = {
            **worker_env,
            "KG_LLM_PROVIDERS": provider_json(fake.url),
            "KG_PROVIDER_LIMITS": f"deepseek:rpm={LIMIT}",
            "KG_RATE_WINDOW_SECONDS": str(WINDOW),
            "KG_LLM_BACKOFF_BASE": "0.05",
            "KG_LLM_BACKOFF_CAP": "0.5",
        }
        start = time.time() + 3.0  # every process imported and connected by then
        until = start + 2.5 * WINDOW
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.llm.rpm_worker",
                    "--start",
                    str(start),
                    "--until",
                    str(until),
                    "--concurrency",
                    "8",
                ],
                cwd=ROOT_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        log = fake.log()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.startswith("done"), err[-2000:]
    times = [r["t"] for r in log["requests"]]
    busiest = max_in_window(times, WINDOW)
    first = min(times)
    used = sum(1 for t in times if t < first + 2 * WINDOW)
    print(
        f"requests={len(times)} busiest_window={busiest}/{LIMIT} "
        f"first_two_windows={used}/{2 * LIMIT} violations={log['violations']}"
    )
    assert log["violations"] == 0
    assert busiest <= LIMIT
    assert used >= 0.9 * 2 * LIMIT
    assert all(r["status"] == 200 for r in log["requests"])
