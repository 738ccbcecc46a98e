"""Queue benchmark: kgworker's runtime against SAQ 0.26 and arq 0.28 on the same Redis.

Run it in a virtualenv with the ``bench`` extra (arq pins redis-py below 6, so keep it
apart from the development one)::

    python -m bench queue --redis redis://127.0.0.1:6379/15

Measured per system, each worker in its own process with uvloop, medians of ``--runs``:
no-op throughput (``--jobs`` jobs, concurrency ``--concurrency``, drain rate from the
first to the last completion), Redis commands per job (``INFO commandstats`` delta over
the drain, less the bench's own INCR and polling), pickup latency p50/p99 on an idle
worker, RSS per in-flight sleeping job (1,000 at once) and kill -9 recovery time (a job
whose worker is killed, finished by a second worker; capped at ``--recovery-cap`` s).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is first on sys.path and bench/queue.py would shadow the
# standard library's queue module (which redis-py imports): drop it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

HERE = Path(__file__).resolve().parent
SYSTEMS = ("kgworker", "saq", "arq", "arq-fast")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = Redis.from_url(url)
        self.polls = 0

    async def reset(self) -> None:
        await self.redis.flushdb()

    def spawn(
        self, system: str, mode: str, concurrency: int, **env: str
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                str(HERE / "queue_workers.py"),
                system,
                mode,
                str(concurrency),
                self.url,
            ],
            env={**os.environ, "PYTHONPATH": str(HERE.parent), **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            for _ in range(200):
                if proc.poll() is not None:
                    return
                await asyncio.sleep(0.05)
            proc.kill()
            proc.wait()

    async def until(self, key: str, n: int, timeout: float, interval: float = 0.002) -> float:
        deadline = time.monotonic() + timeout
        while True:
            self.polls += 1
            value = await self.redis.get(key)
            if value is not None and int(value) >= n:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key} < {n} after {timeout} s")
            await asyncio.sleep(interval)

    async def enqueue(self, system: str, n: int, *, stamp: bool = False) -> None:
        if system == "kgworker":
            import json

            items = [
                json.dumps(
                    {"task_id": i + 1, "provider": "bench", **({"t": time.time()} if stamp else {})}
                )
                for i in range(n)
            ]
            for i in range(0, n, 1000):
                await self.redis.rpush("kg:ai_queue:bench", *items[i : i + 1000])
        elif system == "saq":
            from saq import Queue

            queue = Queue.from_url(self.url, name="bench")
            for i in range(0, n, 500):
                await asyncio.gather(
                    *(
                        queue.enqueue("job", **({"t": time.time()} if stamp else {}))
                        for _ in range(min(500, n - i))
                    )
                )
            await queue.disconnect()
        else:
            from arq import create_pool
            from arq.connections import RedisSettings

            pool = await create_pool(RedisSettings.from_dsn(self.url))
            for i in range(0, n, 500):
                await asyncio.gather(
                    *(
                        pool.enqueue_job("job", time.time() if stamp else None)
                        for _ in range(min(500, n - i))
                    )
                )
            await pool.aclose()

    async def commands(self) -> tuple[int, int]:
        """All calls (Redis counts those made inside scripts too) and EVALSHA/EVAL calls."""
        stats = await self.redis.info("commandstats")
        total = sum(int(v["calls"]) for v in stats.values())
        scripts = sum(
            int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in ("evalsha", "eval")
        )
        return total, scripts

    # --- measurements ------------------------------------------------------------------
    async def throughput(
        self, system: str, jobs: int, concurrency: int
    ) -> tuple[float, float, float]:
        await self.reset()
        await self.enqueue(system, jobs)
        self.polls = 0
        before = await self.commands()
        proc = self.spawn(system, "noop", concurrency)
        try:
            first = await self.until("bench:done", 1, 60, 0.001)
            last = await self.until("bench:done", jobs, 300, 0.005)
            after = await self.commands()
        finally:
            await self.stop(proc)
        own = jobs + self.polls + 2  # the handler's INCR, our GETs, INFO
        rate = (jobs - 1) / (last - first)
        return rate, (after[0] - before[0] - own) / jobs, (after[1] - before[1]) / jobs

    async def latency(self, system: str, samples: int) -> tuple[float, float]:
        await self.reset()
        proc = self.spawn(system, "noop", 10)
        try:
            await self.until("bench:ready", 1, 60, 0.01)
            await asyncio.sleep(1.0)  # let the worker reach its idle wait
            for i in range(samples):
                await self.enqueue(system, 1, stamp=True)
                await self.until("bench:done", i + 1, 30, 0.001)
                await asyncio.sleep(0.02)
            lat = sorted(float(x) * 1000 for x in await self.redis.lrange("bench:lat", 0, -1))
        finally:
            await self.stop(proc)
        return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]

    async def memory(self, system: str, inflight: int) -> tuple[float, float]:
        await self.reset()
        proc = self.spawn(system, "sleep", inflight, BENCH_SLEEP="120")
        try:
            await self.until("bench:ready", 1, 60, 0.01)
            await asyncio.sleep(1.5)
            idle = _rss_mb(proc.pid)
            await self.enqueue(system, inflight)
            await self.until("bench:started", inflight, 120, 0.05)
            await asyncio.sleep(0.5)
            busy = _rss_mb(proc.pid)
        finally:
            await self.stop(proc)
        return idle, (busy - idle) / inflight

    async def recovery(self, system: str, cap: float) -> float | None:
        await self.reset()
        victim = self.spawn(system, "sleep", 1, BENCH_SLEEP="3600")
        helper: subprocess.Popen[bytes] | None = None
        try:
            await self.until("bench:ready", 1, 60, 0.01)
            await self.enqueue(system, 1)
            await self.until("bench:started", 1, 60, 0.01)
            helper = self.spawn(system, "sleep", 1, BENCH_SLEEP="0")
            await asyncio.sleep(1.0)
            victim.kill()
            victim.wait()
            killed = time.perf_counter()
            try:
                done = await self.until("bench:done", 1, cap, 0.02)
            except TimeoutError:
                return None
            return done - killed
        finally:
            await self.stop(victim)
            if helper is not None:
                await self.stop(helper)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import redis

    found = {"python": platform.python_version(), "redis-py": redis.__version__}
    for name in ("kgworker", "saq", "arq", "uvloop"):
        try:
            found[name] = version(name)
        except Exception:
            found[name] = "-"
    return found


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    bench = Bench(args.redis)
    rows: list[dict[str, Any]] = []
    for system in args.systems:
        row: dict[str, Any] = {"system": system}
        tp = [await bench.throughput(system, args.jobs, args.concurrency) for _ in range(args.runs)]
        row["jobs_s"] = statistics.median(t[0] for t in tp)
        row["cmds_job"] = statistics.median(t[1] for t in tp)
        row["scripts_job"] = statistics.median(t[2] for t in tp)
        samples = args.samples if system != "arq" else max(10, args.samples // 4)
        lat = [await bench.latency(system, samples) for _ in range(args.runs)]
        row["p50_ms"] = statistics.median(p for p, _ in lat)
        row["p99_ms"] = statistics.median(p for _, p in lat)
        if args.inflight:
            idle, per = await bench.memory(system, args.inflight)
            row["idle_mb"], row["mb_per_job"] = idle, per
        if args.recovery_cap:
            row["recovery_s"] = await bench.recovery(system, args.recovery_cap)
        print(row, flush=True)
        rows.append(row)
    await bench.redis.aclose()
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    info = _versions()
    head = (
        "| system | no-op jobs/s | Redis cmds/job | scripts/job | pickup p50 ms | pickup p99 ms "
        "| idle RSS MiB | MiB per in-flight job | kill -9 recovery s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        rec = r.get("recovery_s")
        rec_text = (
            "-"
            if "recovery_s" not in r
            else (f"> {args.recovery_cap:g}" if rec is None else f"{rec:.1f}")
        )
        lines.append(
            f"| {r['system']} | {r['jobs_s']:,.0f} | {r['cmds_job']:.1f} | {r['scripts_job']:.2f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r.get('idle_mb', 0):.0f} "
            f"| {r.get('mb_per_job', 0):.3f} | {rec_text} |"
        )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )
    versions = ", ".join(f"{k} {v}" for k, v in info.items())
    return (
        f"Machine: {machine}. Versions: {versions}.\n"
        f"Settings: {args.jobs} jobs, concurrency {args.concurrency}, medians of {args.runs} runs; "
        f"{args.inflight} in-flight sleeping jobs for memory; "
        f"recovery capped at {args.recovery_cap:g} s.\n\n" + head + "\n".join(lines) + "\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--samples", type=int, default=100, help="pickup samples per run")
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--recovery-cap", type=float, default=75.0)
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    print()
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
