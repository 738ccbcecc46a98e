"""One chaos run: a book processed by three worker processes while a driver kills workers
with SIGKILL and restarts Redis, MariaDB and Neo4j; and the same book processed without
chaos, for the graph fingerprint to compare.

Used by ``tests/chaos/test_chaos.py`` (the reduced run in the default test command and the
full 300-chapter run under ``-m chaos``).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neo4j import AsyncGraphDatabase
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, load_settings, settings_to_env
from kgworker.domain.clock import chaishu_now
from kgworker.queue.connection import create_redis
from kgworker.store.migrate import upgrade
from kgworker.store.mysql import create_engine
from kgworker.store.schema.chaishu import (
    Chapter,
    KnowledgeGraphChapterStatus,
    KnowledgeGraphConfig,
    KnowledgeGraphTask,
    Novel,
)
from tests.chaos.servers import (
    DB_PASSWORD,
    DB_USER,
    HOST,
    NEO4J_PASSWORD,
    MariaDBServer,
    Neo4jServer,
    RedisServer,
)
from tests.fakellm import FakeLLMProcess
from tests.pipeline.graphprint import fingerprint

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "deepseek"
MODEL = "fake-chat"

NAMES = ["张三", "李四", "王五", "赵六", "孙七", "周八", "吴九", "郑十", "冯远", "陈默",
         "褚英", "卫青", "蒋干", "沈炼", "韩信", "杨戬", "朱雀", "秦琼", "尤拔", "许褚"]
PLACES = ["长安城", "洛阳城", "青云山", "落霞镇", "桃花村", "白帝城", "天龙寺", "洞庭湖"]
ORGS = ["青云门", "天山派", "丐帮", "明教", "全真教", "铁掌帮"]
TIMES = ["清晨", "黄昏", "夜里", "正午", "次日"]


def chapter_text(number: int) -> str:
    """A chapter the fake model's default answerer reads (names before speech verbs)."""
    rng = random.Random(number)
    lines = []
    for _ in range(rng.randint(2, 4)):
        a, b, c = rng.sample(NAMES, 3)
        place, org, when = rng.choice(PLACES), rng.choice(ORGS), rng.choice(TIMES)
        lines.append(f"{when}，{a}说：“{b}，我们今天去{place}。”\n"
                     f"{b}笑道：“好，{c}也一起去。”\n"
                     f"{c}问：“{a}，你真的要加入{org}吗？”")
    return "\n".join(lines)


def faults_args(full: bool) -> list[str]:
    rates = ({"http_429": 0.20, "http_500": 0.03, "http_503": 0.02, "empty": 0.05} if full
             else {"http_429": 0.10, "http_500": 0.02, "http_503": 0.01, "empty": 0.02})
    args = []
    for name, rate in rates.items():
        args += ["--fault", f"{name}={rate}"]
    return args


@dataclass
class Stores:
    redis: RedisServer
    mariadb: MariaDBServer
    neo4j: Neo4jServer

    def settings(self, database: str, llm_url: str, **overrides: Any) -> Settings:
        providers = json.dumps([{"name": PROVIDER, "base_url": llm_url,
                                 "api_key": "chaos-key", "models": [MODEL]}])
        values: dict[str, Any] = {
            "redis_host": HOST, "redis_port": self.redis.port, "redis_db": 0,
            "redis_password": SecretStr(""),
            "db_host": HOST, "db_port": self.mariadb.port, "db_user": DB_USER,
            "db_password": SecretStr(DB_PASSWORD), "db_name": database,
            "neo4j_uri": f"bolt://{HOST}:{self.neo4j.port}", "neo4j_user": "neo4j",
            "neo4j_password": SecretStr(NEO4J_PASSWORD),
            "kg_worker_providers": [PROVIDER],
            "kg_llm_providers": SecretStr(providers),
            "kg_workers_per_provider": 4,
            "kg_lease_seconds": 3.0, "kg_reaper_interval": 0.5, "kg_heartbeat_interval": 1.0,
            "kg_claim_block_seconds": 0.5, "kg_retry_delay": 0.1, "kg_shutdown_grace": 3.0,
            "kg_duty_interval": 1.0, "kg_recovery_grace": 4.0, "kg_cancel_poll_interval": 0.5,
            "kg_max_stalls": 50, "kg_chapter_max_attempts": 50,
            "kg_llm_timeout": 5.0, "kg_llm_compatible_timeout": 5.0,
            "kg_llm_max_attempts": 8, "kg_llm_backoff_base": 0.05, "kg_llm_backoff_cap": 0.5,
            "kg_llm_parse_retries": 3, "kg_rate_cooldown_seconds": 0.1,
            "kg_breaker_threshold": 1000, "kg_api_enabled": False,
            "db_pool_timeout": 10, "kg_store_deadline": 10,
        }
        values.update(overrides)
        base = load_settings({"redis_host": HOST, "db_host": HOST}, environ={},
                             dotenv_path=None)
        return base.model_copy(update=values)


async def prepare_book(stores: Stores, database: str, novel_id: int, chapters: int) -> int:
    """A fresh database with the schema, a default config, the book and a task; the task id."""
    root = load_settings({"db_host": HOST, "db_port": stores.mariadb.port, "db_user": DB_USER,
                          "db_password": DB_PASSWORD, "db_name": ""}, environ={},
                         dotenv_path=None)
    engine = create_engine(root, database="")
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
        await conn.execute(text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
    await engine.dispose()
    engine = create_engine(root, database=database)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(KnowledgeGraphConfig).values(
                name="默认配置", ai_provider=PROVIDER, ai_model=MODEL, use_ai=True,
                max_content_length=4000, enable_entity_extraction=True,
                enable_relation_extraction=True, entity_types=[], relation_types=[],
                rule_config={}, is_default=True, is_system=True))
            await conn.execute(insert(Novel).values(id=novel_id, title="混沌测试", author="佚名"))
            await conn.execute(insert(Chapter), [
                {"id": novel_id + n, "novel_id": novel_id, "title": f"第{n}章",
                 "content": chapter_text(n), "chapter_number": n,
                 "word_count": len(chapter_text(n))} for n in range(1, chapters + 1)])
            result = await conn.execute(insert(KnowledgeGraphTask).values(
                task_name="chaos", novel_id=novel_id, use_ai=True, status="created",
                total_chapters=0, completed_chapters=0, failed_chapters=0, skipped_chapters=0,
                total_entities=0, total_relations=0, auto_retry_enabled=False,
                retry_interval_minutes=10, retry_count=0, created_at=chaishu_now()))
            return int(result.inserted_primary_key[0])  # type: ignore[index]
    finally:
        await engine.dispose()


class Workers:
    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.self_exits: list[tuple[str, int]] = []

    def start(self, node: str) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REDIS_", "DB_", "NEO4J_", "KG_", "DATABASE_"))}
        env.update(settings_to_env(self.settings))
        env.update({"KG_WORKER_NODE_NAME": node, "PYTHONPATH": str(ROOT)})
        log = open(self.logs / f"{node}.log", "ab")  # noqa: SIM115
        self.procs[node] = subprocess.Popen([sys.executable, "-m", "tests.chaos.worker_app"],
                                            cwd=ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        log.close()
        self.started += 1

    def kill(self, node: str) -> None:
        proc = self.procs[node]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def revive_dead(self) -> None:
        """Restart a worker that exited on its own (counted: the worker should not die)."""
        for node, proc in list(self.procs.items()):
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                self.self_exits.append((node, proc.returncode))
                self.start(node)

    def stop_all(self, timeout: float = 20) -> list[int | None]:
        """SIGTERM the live workers; their exit codes (a graceful stop is 0)."""
        live = [proc for proc in self.procs.values() if proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in live:
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(5))
        return codes


@dataclass
class Outcome:
    chapters: int
    seconds: float = 0.0
    kills: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    self_exits: list[tuple[str, int]] = field(default_factory=list)
    fake_requests: int = 0
    fake_faults: dict[str, int] = field(default_factory=dict)
    status: str = ""
    counters: tuple[int, int, int, int] = (0, 0, 0, 0)
    chapter_states: dict[str, int] = field(default_factory=dict)
    status_rows: int = 0
    fingerprint: str = ""
    entities: int = 0
    relations: int = 0
    leftovers: dict[str, int] = field(default_factory=dict)
    redone: int = 0  #: chapters claimed more than once (a kill or a store outage hit them)


async def read_task(engine: AsyncEngine, task_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(KnowledgeGraphTask)
                                   .where(KnowledgeGraphTask.id == task_id))).one()


async def collect(outcome: Outcome, settings: Settings, task_id: int, novel_id: int) -> None:
    engine = create_engine(settings)
    try:
        task = await read_task(engine, task_id)
        outcome.status = task.status
        outcome.counters = (task.total_chapters, task.completed_chapters, task.failed_chapters,
                            task.skipped_chapters)
        outcome.entities, outcome.relations = task.total_entities, task.total_relations
        CS = KnowledgeGraphChapterStatus
        async with engine.connect() as conn:
            rows = (await conn.execute(select(CS.status, func.count()).where(
                CS.kg_task_id == task_id).group_by(CS.status))).all()
            outcome.chapter_states = {r[0]: int(r[1]) for r in rows}
            outcome.status_rows = int((await conn.execute(select(func.count()).select_from(CS)
                                       .where(CS.kg_task_id == task_id))).scalar_one())
            held = (await conn.execute(text(
                "SELECT COUNT(*) FROM kgworker_chapter_claims WHERE token IS NOT NULL"))).scalar()
            redone = (await conn.execute(text(
                "SELECT COUNT(*) FROM kgworker_chapter_runs WHERE task_id = :t AND attempts > 1"),
                {"t": task_id})).scalar()
        outcome.leftovers["held_claims"] = int(held or 0)
        outcome.redone = int(redone or 0)
    finally:
        await engine.dispose()
    redis = create_redis(settings)
    try:
        outcome.leftovers["queue"] = int(await redis.llen(f"kg:ai_queue:{PROVIDER}"))
        dlq = 0
        async for key in redis.scan_iter(match="*dlq*"):
            kind = await redis.type(key)
            dlq += int(await redis.llen(key)) if kind in (b"list", "list") else 0
        outcome.leftovers["dlq"] = dlq
    finally:
        await redis.aclose()
    driver = AsyncGraphDatabase.driver(settings.neo4j_uri, auth=(
        settings.neo4j_user, settings.neo4j_password.get_secret_value()))
    try:
        outcome.fingerprint = await fingerprint(driver, novel_id, normalize=True)
    finally:
        await driver.close()


async def wait_done(settings: Settings, task_id: int, timeout: float,
                    tick: Any = None) -> None:
    """Poll the task row (riding out store outages) until it is completed or failed."""
    deadline = time.monotonic() + timeout
    engine = create_engine(settings, pool_pre_ping=True)
    try:
        while time.monotonic() < deadline:
            try:
                task = await read_task(engine, task_id)
                if task.status in ("completed", "failed"):
                    return
                done = task.completed_chapters
            except Exception:
                done = None
            if tick is not None:
                await tick(done)
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    raise AssertionError(f"task {task_id} not finished after {timeout} s")


async def push(settings: Settings, task_id: int) -> None:
    redis = create_redis(settings)
    try:
        await redis.rpush(f"kg:ai_queue:{PROVIDER}",
                          json.dumps({"task_id": task_id, "provider": PROVIDER}))
    finally:
        await redis.aclose()


async def baseline(stores: Stores, home: Path, chapters: int, novel_id: int) -> Outcome:
    """The book through one worker, no faults, no chaos."""
    outcome = Outcome(chapters)
    task_id = await prepare_book(stores, "chaos_base", novel_id, chapters)
    with FakeLLMProcess() as fake:
        settings = stores.settings("chaos_base", fake.url)
        workers = Workers(settings, home)
        workers.start("base-1")
        t0 = time.monotonic()
        try:
            await push(settings, task_id)
            await wait_done(settings, task_id, 240)
        finally:
            workers.stop_all()
        outcome.seconds = time.monotonic() - t0
    await collect(outcome, settings, task_id, novel_id)
    return outcome


async def chaos(stores: Stores, home: Path, chapters: int, novel_id: int, *, full: bool,
                seed: int = 8, timeout: float = 1500) -> Outcome:
    """The book through three workers under faults, kills and store restarts."""
    rng = random.Random(seed)
    outcome = Outcome(chapters)
    task_id = await prepare_book(stores, "chaos_run", novel_id, chapters)
    # store restarts at these fractions of the book (each once), in this order
    plan = [(0.15, stores.redis), (0.35, stores.mariadb), (0.55, stores.neo4j)]
    if full:
        plan += [(0.7, stores.redis), (0.8, stores.mariadb), (0.9, stores.neo4j)]
    kill_every = (1.5, 4.0) if full else (2.0, 5.0)
    with FakeLLMProcess("--seed", str(seed), "--retry-after", "0.2",
                        *faults_args(full)) as fake:
        settings = stores.settings("chaos_run", fake.url)
        workers = Workers(settings, home)
        nodes = ["chaos-1", "chaos-2", "chaos-3"]
        for node in nodes:
            workers.start(node)
        t0 = time.monotonic()
        next_kill = t0 + rng.uniform(*kill_every)
        pending_revive: list[tuple[float, str]] = []
        restarting: list[asyncio.Future[float]] = []
        loop = asyncio.get_running_loop()

        async def tick(done: int | None) -> None:
            nonlocal next_kill
            now = time.monotonic()
            for when, node in list(pending_revive):
                if now >= when:
                    pending_revive.remove((when, node))
                    workers.start(node)
            workers.revive_dead()
            if now >= next_kill:
                victim = rng.choice([n for n in nodes if n not in {v for _, v in pending_revive}]
                                    or nodes)
                workers.kill(victim)
                outcome.kills += 1
                pending_revive.append((now + rng.uniform(0.2, 2.0), victim))
                next_kill = now + rng.uniform(*kill_every)
            busy = restarting and not restarting[-1].done()
            if done is not None and plan and not busy and done >= plan[0][0] * chapters:
                _, server = plan.pop(0)  # restarted in a thread: kills go on meanwhile
                restarting.append(loop.run_in_executor(None, server.restart))
                outcome.restarts[server.name] = outcome.restarts.get(server.name, 0) + 1

        try:
            await push(settings, task_id)
            await wait_done(settings, task_id, timeout, tick)
            await asyncio.gather(*restarting)
            await asyncio.sleep(4)  # a worker revived last has installed its signal handlers
        finally:
            codes = workers.stop_all()
        outcome.seconds = time.monotonic() - t0
        outcome.self_exits = workers.self_exits
        log = fake.log()
    outcome.fake_requests = int(log.get("count", len(log.get("requests", []))))
    faults: dict[str, int] = {}
    for record in log.get("requests", []):
        for fault in record.get("faults", []):
            faults[fault] = faults.get(fault, 0) + 1
    outcome.fake_faults = faults
    outcome.leftovers["unclean_exits"] = sum(1 for c in codes if c not in (0, None))
    await collect(outcome, settings, task_id, novel_id)
    return outcome


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0.0
    return (f"{platform.machine()}, {cpus} CPUs, {mem:.0f} GB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
