"""Adaptive concurrency vs fixed settings chosen the old way (``python -m bench adaptive``).

One fake provider with a hidden capacity K (429 above K requests in flight, answers in
``--latency`` + up to ``--jitter`` seconds), three worker processes that always want more
than K (``tests/llm/adaptive_worker.py``: chapters through ``LLMExtractor``). Three
settings, each ``--runs`` times for ``--seconds``:

* **fixed, too low**: every process keeps ``--low`` calls in flight (a cautious guess);
* **fixed, too high**: ``--high`` per process, no adaptive control: what an operator who
  saw idle capacity would set; 429s, retries and provider-wide cool-downs follow;
* **adaptive**: the same demand as *too high*, steered by the fleet's AIMD target.

Throughput is answered calls per second *seen by the provider* (its own log), after a
``--warmup``; medians of the runs. Then one adaptive run with K changing (K, K/2, K) is
charted: target and provider-side requests in flight over time (``--chart``, PNG).
``--append`` adds the results to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis as sync_redis

from bench.common import append_doc, command_line, load, machine, med, service_environ, span
from kgworker.config import Settings, load_settings, settings_to_env
from tests.fakellm import FakeLLMProcess, concurrency_samples
from tests.llm.adaptive_fleet import FleetRun, fleet_env, phase, run_fleet

ROOT = Path(__file__).resolve().parents[1]
#: The test suite's marker of a Redis database in use: the bench takes a free one the same way.
DB_LOCK = "kgtest:db-lock"
TOKEN = uuid.uuid4().hex


def _client(settings: Settings, db: int) -> sync_redis.Redis:
    return sync_redis.Redis(host=settings.redis_host, port=settings.redis_port, db=db,
                            password=settings.redis_password.get_secret_value() or None)


def _settings() -> Settings:
    """Settings on a Redis database no test or other benchmark holds (marked, then ours)."""
    base = load_settings(environ=service_environ(), dotenv_path=None)
    for db in range(1, 16):
        client = _client(base, db)
        try:
            if client.set(DB_LOCK, TOKEN, nx=True, ex=3600):
                return base.model_copy(update={"redis_db": db})
        finally:
            client.close()
    raise RuntimeError("no free Redis database (1-15 all marked in use)")


def _flush(settings: Settings) -> None:
    client = _client(settings, settings.redis_db)
    client.flushdb()
    client.set(DB_LOCK, TOKEN, ex=3600)
    client.close()


def _release(settings: Settings) -> None:
    client = _client(settings, settings.redis_db)
    if client.get(DB_LOCK) == TOKEN.encode():
        client.flushdb()
    client.close()


def _one(args: argparse.Namespace, settings: Settings, mode: str,
         schedule: list[tuple[int, float]]) -> FleetRun:
    _flush(settings)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DB_", "NEO4J_"))}
    base.update(settings_to_env(settings))
    base["PYTHONPATH"] = str(ROOT)
    latency = ("--latency", str(args.latency), "--latency-jitter", str(args.jitter))
    with FakeLLMProcess(*latency) as fake:
        env = fleet_env(base, fake.url, adaptive=mode == "adaptive", period=args.period)
        per_process = args.low if mode == "fixed-low" else args.high
        return run_fleet(fake, env, settings, schedule, workers=args.workers,
                         concurrency=per_process)


def _chart(run: FleetRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = run.started
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    xs = [t - t0 for t, _ in run.targets]
    ax.step(xs, [v for _, v in run.targets], where="post", label="fleet target (permits)")
    end = run.marks[-1][0]
    seconds = list(range(int(end - t0)))
    in_flight = [
        sum(s) / len(s)
        for s in (concurrency_samples(run.records, t0 + i, t0 + i + 1) for i in seconds)
    ]
    ax.plot(seconds, in_flight, label="in flight at the provider (1 s mean)", alpha=0.8)
    for (start, k), (stop, _) in zip(run.marks, run.marks[1:], strict=False):
        ax.hlines(k, start - t0, stop - t0, colors="red", linestyles="dashed")
    ax.plot([], [], "r--", label="hidden capacity K")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests in flight")
    ax.set_title("Adaptive concurrency: 3 worker processes, one provider")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench adaptive")
    parser.add_argument("--capacity", type=int, default=12)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--low", type=int, default=1, help="fixed calls per process, too low")
    parser.add_argument("--high", type=int, default=16, help="per process: too high, and demand")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--period", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "adaptive-target.png")
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    settings = _settings()
    try:
        return _bench(args, settings)
    finally:
        _release(settings)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    k = args.capacity
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.strftime("%Y-%m-%d %H:%M")
    for mode in ("fixed-low", "fixed-high", "adaptive"):
        for number in range(args.runs):
            run = _one(args, settings, mode, [(k, args.seconds)])
            start, end = run.marks[0][0] + args.warmup, run.marks[-1][0]
            figures = phase(run.records, start, end)
            figures["chapters"] = sum(r.get("chapters", 0) for r in run.results)
            figures["errors"] = sum(r.get("errors", 0) for r in run.results)
            results.setdefault(mode, []).append(figures)
            print(mode, number + 1, figures, flush=True)
    chart_run = _one(args, settings, "adaptive",
                     [(k, args.seconds), (max(1, k // 2), args.seconds), (k, args.seconds)])
    _chart(chart_run, args.chart)
    print(f"chart: {args.chart}")
    report = _report(args, results, started)
    print(report)
    if args.append:
        append_doc(report)
    return 0


def _report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], at: str) -> str:
    names = {
        "fixed-low": f"fixed, too low ({args.low} per process = {args.low * args.workers})",
        "fixed-high": f"fixed, too high ({args.high} per process = {args.high * args.workers})",
        "adaptive": f"adaptive (demand {args.high * args.workers}, AIMD target)",
    }
    lines = [
        f"\n## Adaptive concurrency ({at})\n",
        f"`{command_line()}` — {machine()}; {load()} at the end (the machine is shared).",
        f"Fake provider with hidden capacity K = {args.capacity} (429 above it), answers in "
        f"{args.latency * 1000:.0f}–{(args.latency + args.jitter) * 1000:.0f} ms; "
        f"{args.workers} worker processes, chapters through `LLMExtractor`; control period "
        f"{args.period} s. {args.seconds:g} s per run, the first {args.warmup:g} s not counted; "
        f"median (min–max) of {args.runs} runs, measured from the provider's own log.\n",
        "| setting | answered calls/s | in flight at the provider | 429 share of calls |",
        "|---|---:|---:|---:|",
    ]
    for mode, runs in results.items():
        lines.append(
            f"| {names[mode]} | {span([r['ok_per_s'] for r in runs])} | "
            f"{span([r['mean'] for r in runs])} | "
            f"{span([100 * r['ratio_429'] for r in runs], '{:.2f}')} % |"
        )
    best = med([r["ok_per_s"] for r in results["adaptive"]])
    ideal = args.capacity / (args.latency + args.jitter / 2)
    lines.append(
        f"\nK / mean latency = {ideal:.1f} calls/s is the ceiling; adaptive reached "
        f"{best:.1f} ({100 * best / ideal:.0f} %). Target over time with K = {args.capacity}, "
        f"{max(1, args.capacity // 2)}, {args.capacity} ({args.seconds:g} s each):\n\n"
        "![adaptive target](img/adaptive-target.png)\n"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
