"""Shared pieces of the fleet benchmarks (versus, concurrency, recovery, ratelimit).

Servers come from REDIS_*/DB_*/NEO4J_* or ``scripts/services env``. Each run gets a
scratch MySQL database (migrated, seeded with books) and its own Redis database index,
and removes both, plus its Neo4j nodes, afterwards. Worker nodes run as subprocesses
(``python -m bench.node``) configured through the environment, as ``kgworker run`` is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil  # type: ignore[import-untyped]
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

import kgworker
from kgworker.config import Settings, load_settings
from kgworker.store.graph import create_driver
from kgworker.store.migrate import upgrade
from kgworker.store.mysql import create_engine
from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphConfig, KnowledgeGraphTask, Novel

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
PROVIDER = "deepseek"  # an OpenAI-style name; the base URL points at the fake server
MODEL = "fake-chat"
QUEUE = f"kg:ai_queue:{PROVIDER}"
#: The tests' lock on a Redis database (tests/conftest.py): a database whose lock key is
#: set belongs to someone else; the bench takes a free one the same way.
DB_LOCK = "kgtest:db-lock"

_PEOPLE = ("林风", "苏晴", "陈默", "赵雪", "王虎", "小青", "李长老", "白衣人", "孙有福", "沈青山")
_PLACES = ("长安城", "青云山", "落霞镇", "幽冥谷", "白鹿村", "临安府")
_ORGS = ("青云门", "天剑派", "铁掌帮", "明月宗")
_SAYS = ("说", "道", "问", "笑", "答", "喊")


def book_chapter(number: int, sentences: int = 40) -> str:
    """A chapter of about ``sentences`` × 30 characters the fake server's default answerer
    reads: speakers before 说/道/问…, places after 在/到/去…, sects after 加入."""
    rng = random.Random(number)
    out = []
    for _ in range(sentences):
        a, b = rng.sample(_PEOPLE, 2)
        say, place, org = rng.choice(_SAYS), rng.choice(_PLACES), rng.choice(_ORGS)
        out.append(rng.choice((
            f"。{a}{say}：“{b}，我们明日去{place}。”",
            f"。{a}{say}：“{b}已经加入{org}，此事当真？”",
            f"。{b}{say}：“{a}，我在{place}等你。”",
            f"。风吹过{place}，{a}与{b}并肩而立，良久无言",
        )))
    return "".join(out).lstrip("。") + "。"


# ----------------------------------------------------------------------- settings --
def service_environ() -> dict[str, str]:
    environ = dict(os.environ)
    if not all(environ.get(k) for k in ("REDIS_HOST", "DB_HOST", "NEO4J_URI")):
        out = subprocess.run([str(ROOT / "scripts" / "services"), "env"], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            environ[key.strip()] = (shlex.split(value) or [""])[0]
    return environ


def base_settings() -> Settings:
    return load_settings(environ=service_environ(), dotenv_path=None)


def provider_json(url: str) -> str:
    return json.dumps([{"name": PROVIDER, "base_url": url, "api_key": "bench-key",
                        "models": [MODEL]}])


# ------------------------------------------------------------------ machine facts --
def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 2**30
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({model}), {ram:.0f} GiB RAM"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"


async def versions(settings: Settings) -> str:
    from kgworker.queue.connection import create_redis

    redis = create_redis(settings)
    try:
        info = await redis.info("server")
        redis_v = str(info.get("redis_version", "?"))
    finally:
        await redis.aclose()
    engine = create_engine(settings, database="", pool_size=1)
    try:
        async with engine.connect() as conn:
            mariadb = str(await conn.scalar(text("SELECT VERSION()"))).split("-")[0]
    finally:
        await engine.dispose()
    driver = create_driver(settings)
    try:
        async with driver.session() as session:
            rec = await (await session.run(
                "CALL dbms.components() YIELD versions RETURN versions[0] AS v")).single()
            neo4j = str(rec["v"]) if rec else "?"
    finally:
        await driver.close()
    return (f"Python {platform.python_version()}, Redis {redis_v}, MariaDB {mariadb},"
            f" Neo4j {neo4j}, kgworker {kgworker.__version__}")


# ---------------------------------------------------------------------- statistics --
def med(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def span(values: Sequence[float], fmt: str = "{:,.1f}") -> str:
    """``median (min–max)`` of ``values``."""
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def tree_memory(pid: int, *, pss: bool = False) -> tuple[float, int]:
    """(bytes, processes): RSS (or PSS) summed over ``pid`` and its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total = 0.0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss if pss else proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, len(procs)


def append_doc(report: str) -> None:
    if not DOC.exists():
        DOC.write_text("# Benchmarks\n")
    with DOC.open("a", encoding="utf-8") as out:
        out.write(report)


def command_line() -> str:
    return "python -m " + " ".join(["bench", *sys.argv[0].split()[1:], *sys.argv[1:]])


# --------------------------------------------------------------------- scratch data --
@dataclass
class Scratch:
    """A scratch MySQL database with ``books`` tasks and its Redis DB index."""

    base: Settings
    name: str = field(default_factory=lambda: f"kgbench_{uuid.uuid4().hex[:10]}")
    novels: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)
    chapters: dict[int, list[int]] = field(default_factory=dict)  # task id → chapter ids
    engine: AsyncEngine | None = None
    redis_db: int = 0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def settings(self) -> Settings:
        return self.base.model_copy(update={
            "db_name": self.name, "database_url": None, "redis_db": self.redis_db})

    async def _take_redis_db(self) -> None:
        from kgworker.queue.connection import create_redis

        for _ in range(20):
            for db in random.sample(range(1, 16), 15):
                redis = create_redis(self.base.model_copy(update={"redis_db": db}))
                try:
                    if await redis.set(DB_LOCK, self.token, nx=True, ex=1800):
                        await redis.flushdb()
                        await redis.set(DB_LOCK, self.token, ex=1800)
                        self.redis_db = db
                        return
                finally:
                    await redis.aclose()
            await asyncio.sleep(1.0)
        raise RuntimeError("no free Redis database (1-15)")

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a worker process on this scratch database."""
        s = self.base
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KG_", "DB_", "REDIS_", "NEO4J_", "DATABASE_"))}
        env.update({k: v for k, v in service_environ().items()
                    if k.startswith(("DB_", "REDIS_", "NEO4J_"))})
        env.update({"DB_NAME": self.name, "REDIS_DB": str(self.redis_db),
                    "DB_HOST": s.db_host or "", "DB_PORT": str(s.db_port), "PYTHONPATH": str(ROOT),
                    "KG_LOG_LEVEL": "WARNING", "KG_API_ENABLED": "false"})
        env.update(extra)
        return env

    async def create(self, books: int, chapters: int, *, sentences: int = 40) -> None:
        await self._take_redis_db()
        admin = create_engine(self.base, database="", pool_size=1)
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4"))
        finally:
            await admin.dispose()
        self.engine = create_engine(self.settings, pool_size=2)
        await upgrade(self.engine)
        texts = [book_chapter(n, sentences) for n in range(1, chapters + 1)]
        async with self.engine.begin() as conn:
            await conn.execute(insert(KnowledgeGraphConfig).values(
                name="bench", ai_provider=PROVIDER, use_ai=True, max_content_length=4000,
                enable_entity_extraction=True, enable_relation_extraction=True,
                is_default=True, is_system=True))
            for _ in range(books):
                novel_id = random.randrange(10**9, 2 * 10**9)
                self.novels.append(novel_id)
                await conn.execute(insert(Novel).values(id=novel_id, title="bench", author="-"))
                rows = [{"novel_id": novel_id, "title": f"第{n}章", "content": texts[n - 1],
                         "chapter_number": n, "word_count": len(texts[n - 1])}
                        for n in range(1, chapters + 1)]
                await conn.execute(insert(Chapter), rows)
                task = await conn.execute(insert(KnowledgeGraphTask).values(
                    task_name="bench", novel_id=novel_id, use_ai=True, status="created",
                    total_chapters=0, completed_chapters=0, failed_chapters=0,
                    skipped_chapters=0, total_entities=0, total_relations=0,
                    auto_retry_enabled=False, retry_interval_minutes=10, retry_count=0))
                self.tasks.append(int(task.inserted_primary_key[0]))  # type: ignore[index]

    async def enqueue(self, tasks: Sequence[int] | None = None) -> None:
        from kgworker.queue.connection import create_redis

        redis = create_redis(self.settings)
        try:
            for task_id in tasks if tasks is not None else self.tasks:
                await redis.rpush(QUEUE, json.dumps({"task_id": task_id, "provider": PROVIDER}))
        finally:
            await redis.aclose()

    async def scalar(self, sql: str, **params: Any) -> Any:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            return await conn.scalar(text(sql), params)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            return list(await conn.execute(text(sql), params))

    async def completed(self) -> int:
        return int(await self.scalar(
            "SELECT COUNT(*) FROM knowledge_graph_chapter_status WHERE status = 'completed'"))

    async def drop(self) -> None:
        from kgworker.queue.connection import create_redis

        if self.engine is not None:
            await self.engine.dispose()
        admin = create_engine(self.base, database="", pool_size=1)
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
        finally:
            await admin.dispose()
        redis = create_redis(self.settings)
        try:
            if await redis.get(DB_LOCK) == self.token.encode():
                await redis.flushdb()  # our keys and the lock
        finally:
            await redis.aclose()
        for attempt in range(10):  # Neo4j may refuse logins for a while (auth rate limit)
            driver = create_driver(self.base)
            try:
                async with driver.session() as session:
                    for novel_id in self.novels:
                        await (await session.run(
                            "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id)"
                            " CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS",
                            id=novel_id)).consume()
                return
            except Exception as exc:
                print(f"graph cleanup failed ({exc.__class__.__name__}), attempt {attempt + 1}",
                      file=sys.stderr)
                await asyncio.sleep(3.0)
            finally:
                await driver.close()


async def retried(make: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    """``await make()``, again (up to ``attempts`` times) when a run fails: the servers are
    shared with other engineers' tests (e.g. Neo4j refusing logins for a few seconds)."""
    for attempt in range(1, attempts + 1):
        try:
            return await make()
        except Exception as exc:
            if attempt == attempts:
                raise
            print(f"run failed ({exc!r}); retrying", file=sys.stderr, flush=True)
            await asyncio.sleep(5.0)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------ processes --
def log_path(name: str) -> Path:
    """Where a worker subprocess's output goes (the system's temporary directory)."""
    return Path(tempfile.gettempdir()) / f"kgbench-{name}.log"


def spawn(args: Sequence[str], env: dict[str, str], name: str = "worker",
          cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """``python ARGS`` in ``cwd`` (``-m`` imports from there first, whatever PYTHONPATH)."""
    with log_path(name).open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process (and its children), SIGKILL what is left after ``timeout``."""
    stop_all([proc], timeout)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after ``timeout``)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _reap(proc, timeout)


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


@contextmanager
def fake_llm(*args: str) -> Iterator[Any]:
    from tests.fakellm import FakeLLMProcess

    with FakeLLMProcess(*args) as fake:
        yield fake


async def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False


def node_env(scratch: Scratch, url: str, slots: int, **extra: str) -> dict[str, str]:
    """Environment of one kgworker node with ``slots`` slots against the fake provider."""
    return scratch.env(
        KG_WORKER_PROVIDERS=PROVIDER, KG_WORKERS_PER_PROVIDER=str(slots),
        KG_MAX_PROCESSES_PER_PROVIDER=str(slots), KG_MAX_TOTAL_PROCESSES=str(slots),
        KG_LLM_PROVIDERS=provider_json(url), KG_LLM_CACHE="false",
        KG_SHUTDOWN_GRACE="1",  # measurements end before the stop; no need to drain
        **extra,
    )
