"""Smoke runs of the fleet benchmarks: tiny sizes, one iteration, nothing asserted on time.

They only prove the scripts still run end to end against the real servers (nothing is
appended to docs/benchmarks.md and no plot is written).
"""

from __future__ import annotations

import importlib
import sys

import pytest

pytestmark = pytest.mark.usefixtures("base_settings")


def run_bench(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(f"bench.{name}")
    monkeypatch.setattr(sys, "argv", [f"bench {name}", *args])
    assert module.main() == 0


@pytest.mark.parametrize("system", ["old", "kgworker"])
def test_versus_runs(system: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("versus", "--systems", system, "--slots", "1", "--runs", "1", "--chapters", "3",
              "--latency", "0.05", "--warmup", "0.5", "--window", "1", "--start-wait", "2",
              "--plot", "", monkeypatch=monkeypatch)


def test_concurrency_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("concurrency", "--books", "1,2", "--slots", "2", "--chapters", "20", "--runs", "1",
              "--latency", "0.05", "--warmup", "0.5", "--window", "1", "--start-wait", "2",
              "--ceiling-concurrency", "4", "--ceiling-warmup", "0.5",
              "--plot", "", monkeypatch=monkeypatch)


def test_ceiling_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("ceiling", "--books", "1,2", "--chapters", "10", "--concurrency", "4",
              "--warmup", "0.5", "--window", "1", monkeypatch=monkeypatch)


def test_store_cost_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("store_cost", "--chapters", "10", "--slots", "2", "--latency", "0.05",
              "--start-wait", "2", "--idle", "0.5", monkeypatch=monkeypatch)


@pytest.mark.slow  # about 15-20 s: two node start-ups and a lease expiry
def test_recovery_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("recovery", "--held", "2", "--runs", "1", "--latency", "0.05", "--lease", "1",
              "--reaper", "0.3", "--start-wait", "1.5", "--settle", "0.5",
              "--cap", "30", monkeypatch=monkeypatch)


def test_ratelimit_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("ratelimit", "--nodes", "2", "--slots", "2", "--limit", "5", "--window", "1",
              "--windows", "1", "--latency", "0.05", "--runs", "1", "--start-wait", "1",
              monkeypatch=monkeypatch)


def test_idle_node_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run_bench("idle_node", "--slots", "2", "--start-wait", "1.5", "--samples", "1",
              monkeypatch=monkeypatch)
