"""What one chapter costs the stores and the worker (``python -m bench store_cost``).

One ``bench.node`` process (the production pipeline, LLM extractor, Neo4j writer) with
``--slots`` slots processes one book of ``--chapters`` chapters against the fake provider
(``KG_LLM_MODE=single``, ``--latency`` s per call). Its MySQL, Redis and Neo4j connections
go through counting proxies (:mod:`bench.wire`), so the per-chapter numbers are this
worker's alone even while other runs share the servers: MySQL statements by kind and
pings, Redis commands by name, Bolt RUN (Cypher statements) and transactions. Worker CPU
is the process's user + system time. The servers' own counters (``SHOW GLOBAL STATUS``,
``INFO commandstats``) are printed beside them; those count every client of the box.

Two windows: *steady* from 10 % to 90 % of the book's chapters completed (no task start
or finish in it), and *whole* from the push to the last chapter (task bookkeeping
included, spread over the chapters). Both include the node's background work (heartbeats,
duties) over the window.

``--code LABEL=DIR[:PATH...],...`` runs the worker on other checkouts of kgworker, one
after the other in the same run, e.g. ``--code before=<main checkout>,after=.``; the worker
runs in DIR with ``PYTHONPATH=DIR:PATH...`` (e.g. a directory holding another build of a
dependency, to compare it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from sqlalchemy import text

from bench import common
from bench.wire import STATEMENTS, BoltParser, CountingProxy, MySQLParser, RedisParser

MYSQL_STATUS = ("Questions", "Com_select", "Com_insert", "Com_update", "Com_delete",
                "Com_commit", "Com_rollback", "Com_set_option", "Com_admin_commands")
Snapshot = dict[str, Any]
#: ``bench.node`` under cProfile; SIGUSR2 writes the stats (the bench sends it at the end).
PROFILED = """import cProfile, signal, sys
from bench.node import main
profile = cProfile.Profile()
signal.signal(signal.SIGUSR2, lambda *_: profile.dump_stats({path!r}))
profile.enable()
sys.exit(main())
"""


async def global_status(scratch: common.Scratch) -> dict[str, int]:
    """MariaDB's global counters and Redis's summed command calls (every client's)."""
    from kgworker.queue.connection import create_redis

    names = ", ".join(f"'{n}'" for n in MYSQL_STATUS)
    assert scratch.engine is not None
    async with scratch.engine.connect() as conn:
        rows = await conn.execute(text(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"))
        out = {f"global {name}": int(value) for name, value in rows}
    redis = create_redis(scratch.settings)
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    out["global Redis calls"] = sum(int(v["calls"]) for v in stats.values())
    return out


async def snapshot(scratch: common.Scratch, proxies: dict[str, CountingProxy],
                   node: psutil.Process) -> Snapshot:
    times = node.cpu_times()
    return {"t": time.monotonic(), "done": await scratch.completed(),
            "cpu": times.user + times.system, "global": await global_status(scratch),
            **{name: proxy.snapshot() for name, proxy in proxies.items()}}


def per_chapter(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """Deltas between two snapshots, divided by the chapters completed in between."""
    chapters = max(1, b["done"] - a["done"])
    out: dict[str, float] = {"chapters": b["done"] - a["done"],
                             "chapters/s": (b["done"] - a["done"]) / (b["t"] - a["t"]),
                             "worker CPU ms": (b["cpu"] - a["cpu"]) * 1000 / chapters}
    for store in ("mysql", "redis", "neo4j"):
        delta: Counter[str] = b[store] - a[store]
        for key, value in delta.items():
            out[f"{store} {key}"] = value / chapters
    queries = sum(v for k, v in (b["mysql"] - a["mysql"]).items() if k.startswith("query "))
    out["mysql statements"] = queries / chapters
    out["redis commands"] = sum((b["redis"] - a["redis"]).values()) / chapters
    for key in b["global"]:
        out[key] = (b["global"][key] - a["global"][key]) / chapters
    return out


async def wait_done(scratch: common.Scratch, target: int, timeout: float) -> None:
    if not await common.wait_for(lambda: _reached(scratch, target), timeout):
        raise RuntimeError(f"fewer than {target} chapters completed in {timeout:g} s")


async def _reached(scratch: common.Scratch, target: int) -> bool:
    return bool(await scratch.completed() >= target)


async def dump_profile(pid: int, path: Path) -> None:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    if not await common.wait_for(lambda: _exists(path), 60):
        raise RuntimeError("the worker wrote no profile")


async def _exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def measure(args: argparse.Namespace, fake: Any, base: Any, code: str
                  ) -> dict[str, dict[str, float]]:
    """Run one book through a worker on ``code`` (``DIR[:PATH...]``), the counts of both
    windows and of an idle window before the push."""
    home = Path(code.split(os.pathsep)[0]).resolve()
    scratch = common.Scratch(base)
    await scratch.create(books=1, chapters=args.chapters, sentences=args.sentences)
    parts = base.mysql_parts()
    neo4j_host, _, neo4j_port = base.neo4j_uri.split("://", 1)[1].rpartition(":")
    proxies = {
        "mysql": CountingProxy((parts.host, parts.port), MySQLParser),
        "redis": CountingProxy((base.redis_host, base.redis_port), RedisParser),
        "neo4j": CountingProxy((neo4j_host, int(neo4j_port.split("/")[0])), BoltParser),
    }
    try:
        for proxy in proxies.values():
            await proxy.__aenter__()
        pool = str(args.pool_size)
        env = common.node_env(
            scratch, fake.url, args.slots, KG_LLM_MODE="single", PYTHONPATH=code,
            DB_HOST="127.0.0.1", DB_PORT=str(proxies["mysql"].port),
            REDIS_HOST="127.0.0.1", REDIS_PORT=str(proxies["redis"].port),
            NEO4J_URI=f"bolt://127.0.0.1:{proxies['neo4j'].port}",
            DB_POOL_SIZE=pool, DB_POOL_MAX_OVERFLOW=pool, DB_POOL_TIMEOUT="60")
        command = ["-c", PROFILED.format(path=str(args.profile))] if args.profile else [
            "-m", "bench.node"]
        proc = common.spawn(command, env, "store-cost", cwd=home)
        try:
            await asyncio.sleep(args.start_wait)
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}")
            node = psutil.Process(proc.pid)
            idle0 = await snapshot(scratch, proxies, node)
            await asyncio.sleep(args.idle)
            start = await snapshot(scratch, proxies, node)
            await scratch.enqueue()
            n = args.chapters
            await wait_done(scratch, max(1, n // 10), args.timeout)
            steady0 = await snapshot(scratch, proxies, node)
            await wait_done(scratch, n * 9 // 10, args.timeout)
            steady1 = await snapshot(scratch, proxies, node)
            await wait_done(scratch, n, args.timeout)
            end = await snapshot(scratch, proxies, node)
            if args.profile:
                await dump_profile(proc.pid, Path(args.profile))
        finally:
            # in a thread: the proxies live on this loop and carry the node's last words
            await asyncio.to_thread(common.stop, proc, 40)
        idle = per_chapter(idle0, start)  # "per chapter" of an idle window: divided by 1
        seconds = start["t"] - idle0["t"]
        return {"steady": per_chapter(steady0, steady1), "whole": per_chapter(start, end),
                "idle/s": {k: v / seconds for k, v in idle.items()
                           if k not in ("chapters", "chapters/s")}}
    finally:
        for proxy in proxies.values():
            await proxy.__aexit__(None, None, None)
        await scratch.drop()


def median_runs(found: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per window and key, the median over runs (a key a run lacks counts as 0)."""
    out: dict[str, dict[str, float]] = {}
    for window in found[0]:
        keys = {k for run in found for k in run[window]}
        out[window] = {k: common.med([run[window].get(k, 0.0) for run in found]) for k in keys}
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


#: The rows kept in docs/benchmarks.md (stdout has every command by name).
BRIEF = ("chapters/s", "worker CPU ms", "mysql statements", "mysql query", "mysql PING",
         "redis commands", "neo4j RUN", "neo4j BEGIN", "global Questions", "global Redis")


def table(results: dict[str, dict[str, dict[str, float]]], window: str, *, brief: bool = False
          ) -> list[str]:
    labels = list(results)
    keys: list[str] = []
    for label in labels:
        keys += [k for k in results[label][window] if k not in keys
                 and (not brief or k.startswith(BRIEF))]
    head = ["chapters", "chapters/s", "worker CPU ms", "mysql statements", "redis commands",
            "neo4j RUN"]
    ordered = [k for k in head if k in keys] + sorted(k for k in keys if k not in head)
    lines = [f"| {window} (per chapter) | " + " | ".join(labels) + " |",
             "|---|" + "---:|" * len(labels)]
    for key in ordered:
        cells = [_fmt(results[label][window].get(key)) for label in labels]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", type=int, default=200)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--sentences", type=int, default=40, help="chapter length / 30 chars")
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE (= overflow)")
    parser.add_argument("--start-wait", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=3.0, help="idle window before the push")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--code", default=f"this={common.ROOT}",
                        help="LABEL=DIR,...: kgworker checkouts the worker runs on, in turn")
    parser.add_argument("--runs", type=int, default=1, help="runs of each code, interleaved")
    parser.add_argument("--statements", type=int, default=0,
                        help="print the N most frequent MySQL statement shapes of each run")
    parser.add_argument("--profile", default="", help="cProfile the worker into this file")
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    codes = [item.split("=", 1) for item in args.code.split(",")]
    base = common.base_settings()
    load_before = common.load()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {}

    async def run() -> str:
        with common.fake_llm("--latency", str(args.latency)) as fake:
            for run_no, (label, path) in enumerate(codes * args.runs):
                STATEMENTS.clear()
                runs.setdefault(label, []).append(await common.retried(
                    lambda p=path: measure(args, fake, base, p)))
                for shape, count in STATEMENTS.most_common(args.statements):
                    print(f"  {count / args.chapters:6.2f}/chapter  {shape}")
                steady = runs[label][-1]["steady"]
                print(f"run {run_no // len(codes) + 1} {label}: {steady['chapters/s']:.1f}"
                      " chapters/s, per chapter"
                      f" {steady['mysql statements']:.1f} MySQL statements,"
                      f" {steady['redis commands']:.1f} Redis commands,"
                      f" {steady.get('neo4j RUN', 0):.1f} Cypher statements,"
                      f" worker CPU {steady['worker CPU ms']:.1f} ms", flush=True)
        return await common.versions(base)

    versions = asyncio.run(run())
    results = {label: median_runs(found) for label, found in runs.items()}
    command = common.command_line()
    for label, path in sorted(codes, key=lambda c: -len(c[1])):  # no machine path in docs
        command = command.replace(path, f"<{label}>")
    lines = ["", f"## Store cost per chapter ({time.strftime('%Y-%m-%d %H:%M')} UTC)", "",
             f"`{command}`", "",
             f"{common.machine()}; {versions}. Machine load: {load_before} before,"
             f" {common.load()} after (other runs may share the servers: the `global` rows"
             " count every client; the others count this worker's connections only).", "",
             f"One node, {args.slots} slots, one book of {args.chapters} chapters, fake LLM at"
             f" {args.latency:g} s per call, `KG_LLM_MODE=single`, LLM cache off,"
             f" medians of {args.runs} interleaved run(s),"
             f" `DB_POOL_SIZE={args.pool_size}`. MySQL `query X`: statements by first keyword;"
             " `PING`: pings; Neo4j rows are Bolt messages (RUN = one Cypher statement).", ""]
    print("\n".join(lines + [line for window in ("steady", "whole", "idle/s")
                              for line in [*table(results, window), ""]]))
    for window in ("steady", "whole"):
        lines += [*table(results, window, brief=True), ""]
    report = "\n".join(lines)
    for label in results:
        s = results[label]["steady"]
        print(f"per chapter ({label}): MySQL {s['mysql statements']:.1f} statements"
              f" + {s.get('mysql PING', 0):.2f} pings, Redis {s['redis commands']:.1f}"
              f" commands, Cypher {s.get('neo4j RUN', 0):.1f} statements,"
              f" worker CPU {s['worker CPU ms']:.1f} ms")
    if args.append:
        common.append_doc(report)
    return 0
