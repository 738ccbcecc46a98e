"""Adaptive concurrency against a provider with a hidden capacity, three worker processes.

The fake provider answers 429 above K requests in flight; the workers know nothing of K and
always want more than K. Seen from the provider (its own log of arrival and answer times):
after convergence the fleet's requests in flight stay within 20 % of K and fewer than 2 %
of calls get a 429; when K changes mid-run the fleet follows it down and up again. The
control loop steps every 0.5 s here (``KG_ADAPTIVE_PERIOD``); answers take 200-300 ms so
that three client processes on a small shared CI machine are not CPU-bound (then the
provider would see fewer requests than the fleet holds permits for). ``python -m bench
adaptive`` runs the same fleet longer.
"""

from __future__ import annotations

from kgworker.config import Settings
from kgworker.llm.adaptive import read_states
from kgworker.queue.connection import RedisClient
from tests.fakellm import FakeLLMProcess
from tests.llm.adaptive_fleet import fleet_env, phase, run_fleet

K1, K2 = 12, 6
CONVERGE = 10.0  #: seconds allowed to find K from the initial target (2)
FOLLOW = 6.0  #: seconds allowed to follow a change of K
STEADY = 12.0  #: seconds measured after each of those


async def test_fleet_finds_and_follows_the_hidden_capacity(
    settings: Settings, worker_env: dict[str, str], redis: RedisClient
) -> None:
    with FakeLLMProcess("--latency", "0.2", "--latency-jitter", "0.1") as fake:
        env = fleet_env(worker_env, fake.url, adaptive=True)
        run = run_fleet(fake, env, settings,
                        [(K1, CONVERGE + STEADY), (K2, FOLLOW + STEADY), (K1, FOLLOW + STEADY)])
    chapters = sum(r["chapters"] for r in run.results)
    errors = sum(r["errors"] for r in run.results)
    notes = [line for err in run.stderr for line in err.splitlines() if "llm.retry" not in line]
    # A chapter fails only when its calls outlive every retry, which can happen right after
    # K halves (calls already in flight above the new K are refused); the bound is the same
    # as the 429 share the issue allows after convergence.
    assert chapters > 1000 and errors <= 0.02 * chapters, (run.results, notes[-20:])
    (t1, _), (t2, _), (t3, _), (t_end, _) = run.marks
    phases = {
        "K=12": phase(run.records, t1 + CONVERGE, t2),
        "K=6": phase(run.records, t2 + FOLLOW, t3),
        "K=12 again": phase(run.records, t3 + FOLLOW, t_end),
    }
    tuned = settings.model_copy(update={"kg_adaptive_providers": "deepseek"})
    state = (await read_states(redis, tuned, ["deepseek"]))[0]
    kinds = {h["kind"] for h in state["history"]}
    for name, figures in phases.items():
        print(name, figures)
    print("last changes:", [(h["old"], h["new"], h["kind"]) for h in state["history"][:12]])
    for (name, figures), k in zip(phases.items(), (K1, K2, K1), strict=True):
        assert abs(figures["mean"] - k) <= 0.2 * k, (name, figures)
        assert figures["ratio_429"] < 0.02, (name, figures)
        assert figures["calls"] > 100, (name, figures)
    assert {"increase", "decrease_429"} <= kinds
