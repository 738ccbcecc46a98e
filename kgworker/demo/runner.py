"""``kgworker demo``: one book through the real worker on embedded stores, then a graph page.

Why the real runtime and pipeline instead of a loop over chapters: the demo is what a
newcomer trusts the product by, so it runs the code a deployment runs — the Redis queue
item, ``run_worker`` with its slots, leases and acks, ``ChaishuHandler`` with chapter
claims in (SQLite) chaishu tables — and swaps only the servers: Valkey on a unix socket,
SQLite for MySQL, :class:`SQLiteGraphStore` for Neo4j, the ``rules`` extractor (or an LLM
provider when one is configured) for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import CursorResult, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings, load_settings
from kgworker.demo.embedded import EmbeddedRedis, create_chaishu_sqlite
from kgworker.demo.graph_store import ENTITY_LABELS, SQLiteGraphStore
from kgworker.domain.clock import chaishu_now
from kgworker.domain.status import TaskStatus
from kgworker.observe.graph_html import BookGraph, top_nodes, write_graph_html
from kgworker.observe.graph_read import add_aliases
from kgworker.queue.connection import RedisClient, create_redis
from kgworker.store.schema.chaishu import Chapter, KnowledgeGraphConfig, KnowledgeGraphTask, Novel
from kgworker.store.sqlite import create_sqlite_engine

#: Where the demo stops waiting; ``paused`` = the provider was suspended (its breaker
#: opened): nobody resumes it here, so waiting longer would only hang.
FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PAUSED)
#: Sample novel inside an installed wheel, then in a source checkout.
PACKAGED_NOVEL = Path(__file__).resolve().parent / "novel"
CHECKOUT_NOVEL = Path(__file__).resolve().parents[2] / "examples" / "novel"


@dataclass(frozen=True)
class LLMChoice:
    """A provider the user configured (``KG_DEMO_PROVIDER`` / ``KG_DEMO_API_KEY``...)."""

    provider: str
    api_key: str
    base_url: str | None = None
    model: str | None = None


@dataclass
class DemoOptions:
    novel_dir: Path | None = None
    out: Path = Path("graph.html")
    data_dir: Path | None = None  #: keep the SQLite files here (default: a temp dir)
    llm: LLMChoice | None = None
    slots: int = 3
    timeout: float = 600.0


@dataclass(frozen=True)
class Book:
    title: str
    author: str | None
    chapters: list[tuple[int, str, str]]  #: (number, title, text)


@dataclass
class DemoResult:
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)


def default_novel_dir() -> Path:
    return PACKAGED_NOVEL if (PACKAGED_NOVEL / "book.json").is_file() else CHECKOUT_NOVEL


def load_book(directory: Path) -> Book:
    """``book.json`` (title, author, chapters[number, title, file]) and its UTF-8 files."""
    meta = json.loads((directory / "book.json").read_text(encoding="utf-8"))
    chapters = [
        (int(c["number"]), str(c.get("title") or ""),
         (directory / c["file"]).read_text(encoding="utf-8"))
        for c in meta["chapters"]
    ]
    if not chapters:
        raise ValueError(f"{directory / 'book.json'}: no chapters")
    return Book(str(meta["title"]), meta.get("author"), sorted(chapters))


def demo_settings(redis_url: str, options: DemoOptions, environ: dict[str, str]) -> Settings:
    """Defaults plus the embedded endpoints; the user's store variables are ignored on
    purpose (the demo must never touch a real deployment's Redis or MySQL)."""
    provider = options.llm.provider.lower() if options.llm else "rules"
    overrides: dict[str, Any] = {
        "redis_url": redis_url, "db_host": "embedded-sqlite",
        "kg_worker_providers": provider, "kg_api_enabled": False,
        "kg_worker_node_name": "demo", "kg_workers_per_provider": options.slots,
        "kg_shutdown_grace": 2, "kg_claim_block_seconds": 0.5, "kg_cancel_poll_interval": 0.5,
        "kg_llm_cache": False, "log_level": environ.get("LOG_LEVEL", "WARNING"),
    }
    if options.llm is not None:
        llm = options.llm
        overrides["kg_llm_providers"] = json.dumps([{
            "name": llm.provider, "api_key": llm.api_key, "base_url": llm.base_url,
            "models": [llm.model] if llm.model else [],
        }])
    passed = {k: v for k, v in environ.items() if k.upper().startswith("KG_LLM_")}
    return load_settings(overrides, environ=passed, dotenv_path=None)


async def seed(engine: AsyncEngine, book: Book, llm: LLMChoice | None) -> tuple[int, int]:
    """The book as chaishu rows: novel, chapters, a default config, a ``created`` task."""
    now = chaishu_now()
    async with engine.begin() as conn:
        novel_id = _pk(await conn.execute(
            insert(Novel).values(title=book.title, author=book.author)))
        for number, title, text in book.chapters:
            await conn.execute(insert(Chapter).values(
                novel_id=novel_id, title=title, content=text, chapter_number=number,
                word_count=len(text)))
        await conn.execute(insert(KnowledgeGraphConfig).values(
            name="demo", ai_provider=llm.provider if llm else None,
            ai_model=llm.model if llm else None, use_ai=llm is not None, is_default=True,
            max_content_length=max(4000, *(len(t) for _, _, t in book.chapters)),
        ))
        task_id = _pk(await conn.execute(insert(KnowledgeGraphTask).values(
            task_name=f"{book.title} demo", novel_id=novel_id, use_ai=llm is not None,
            status=TaskStatus.CREATED, total_chapters=len(book.chapters), created_at=now,
            updated_at=now)))
    return novel_id, task_id


def _pk(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@contextlib.contextmanager
def _work_dir(data_dir: Path | None) -> Iterator[Path]:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield data_dir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="kgdemo-") as tmp:
        yield Path(tmp)


async def run_demo(options: DemoOptions, console: Console,
                   environ: dict[str, str] | None = None) -> DemoResult:
    """Run the book end to end; the summary is also returned for ``--json``."""
    started = time.monotonic()
    novel_dir = options.novel_dir or default_novel_dir()
    book = load_book(novel_dir)
    with _work_dir(options.data_dir) as work:
        for name in ("chaishu.db", "graph.db"):
            for suffix in ("", "-wal", "-shm"):
                (work / f"{name}{suffix}").unlink(missing_ok=True)
        with EmbeddedRedis(work) as server:
            settings = demo_settings(server.url, options, dict(environ or {}))
            engine = await create_chaishu_sqlite(work / "chaishu.db")
            graph_engine = create_sqlite_engine(work / "graph.db")
            redis = create_redis(settings)
            try:
                store = SQLiteGraphStore(graph_engine)
                await store.ensure_schema()
                novel_id, task_id = await seed(engine, book, options.llm)
                console.print(f"[bold]{book.title}[/]: {len(book.chapters)} chapters · "
                              f"embedded {server.kind} · SQLite · "
                              f"extractor {settings.kg_worker_providers[0]}")
                status = await _work(settings, engine, redis, store, task_id, len(book.chapters),
                                     options, console)
                graph = await store.book_graph(novel_id, book.title)
                await add_aliases(engine, graph, novel_id)
                summary = await _summary(engine, store, graph, novel_id, task_id)
            finally:
                await redis.aclose()
                await engine.dispose()
                await graph_engine.dispose()
        summary.update(extractor=settings.kg_worker_providers[0], redis=server.kind,
                       status=status, novel_dir=str(novel_dir))
    page = write_graph_html(graph, options.out)
    summary["graph_html"] = str(page.resolve())
    summary["seconds"] = round(time.monotonic() - started, 2)
    return DemoResult(0 if status == TaskStatus.COMPLETED else 1, summary)


async def _work(settings: Settings, engine: AsyncEngine, redis: RedisClient,
                store: SQLiteGraphStore, task_id: int, total: int, options: DemoOptions,
                console: Console) -> str:
    """Queue the task, run the worker until the task is final, show progress; the status."""
    from kgworker.chaishu.factory import build_handler
    from kgworker.chaishu.node import run_worker
    from kgworker.queue.producer import push_task
    from kgworker.rules.extractor import ensure_jieba

    await ensure_jieba()  # the dictionary loads once, before the progress bar starts
    handler = await build_handler(settings, engine=engine, redis=redis, graph=store)
    stop = asyncio.Event()
    pubsub: Any = redis.pubsub()
    await pubsub.subscribe(settings.kg_progress_channel)
    worker = asyncio.create_task(run_worker(settings, handler=handler, stop=stop))
    status: str = TaskStatus.CREATED
    try:
        await push_task(redis, task_id, settings.kg_worker_providers[0])
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[note]}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            shown = bar.add_task("chapters", total=total, note="")
            deadline = time.monotonic() + options.timeout
            while not worker.done() and time.monotonic() < deadline:
                event = await _next_event(pubsub, task_id)
                done, failed, status = await _task_row(engine, task_id, event)
                note = f"[red]{failed} failed[/]" if failed else ""
                bar.update(shown, completed=done + failed, note=note)
                if status in FINAL:
                    break
    finally:
        stop_early = worker.done()
        stop.set()
        code = await worker
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        await handler.aclose()
    if status == TaskStatus.PAUSED:
        console.print(f"[red]task {task_id} paused: the provider was suspended "
                      "(see the log lines above)[/]")
    elif status not in FINAL:
        reason = f"timed out after {options.timeout:g} s" if code == 0 and not stop_early \
            else f"worker stopped (exit code {code})"
        console.print(f"[red]task {task_id} not finished: {reason}[/]")
    return status


async def _next_event(pubsub: Any, task_id: int) -> dict[str, Any] | None:
    """The next progress event of our task, or None after a short wait (then we poll)."""
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    if message is None or message.get("type") != "message":
        return None
    with contextlib.suppress(ValueError, TypeError):
        payload = json.loads(message["data"])
        if isinstance(payload, dict) and payload.get("task_id") == task_id:
            return payload
    return None


async def _task_row(engine: AsyncEngine, task_id: int,
                    event: dict[str, Any] | None) -> tuple[int, int, str]:
    """(completed, failed, status) from the event, else from the task row."""
    if event is not None:
        return (int(event["completed_chapters"]), int(event["failed_chapters"]),
                str(event["status"]))
    T = KnowledgeGraphTask
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(T.completed_chapters, T.failed_chapters, T.status).where(T.id == task_id)
        )).one()
    return int(row.completed_chapters), int(row.failed_chapters), str(row.status)


async def _summary(engine: AsyncEngine, store: SQLiteGraphStore, graph: BookGraph,
                   novel_id: int, task_id: int) -> dict[str, Any]:
    T = KnowledgeGraphTask
    async with engine.connect() as conn:
        task = (await conn.execute(select(T).where(T.id == task_id))).one()
    counts = await store.counts(novel_id)
    entities = {label.lower(): counts.get(label, 0) for label in (*ENTITY_LABELS, "Event")}
    relations = {k.removeprefix("edge:"): v for k, v in counts.items()
                 if k.startswith("edge:") and k != "edge:APPEARS_IN"}
    return {
        "title": graph.title, "task_id": task_id,
        "chapters": {"total": task.total_chapters, "completed": task.completed_chapters,
                     "failed": task.failed_chapters},
        "entities": {**entities, "total": sum(entities.values())},
        "relations": {**dict(sorted(relations.items())), "total": sum(relations.values())},
        "top_characters": [
            {"name": n.name, "mentions": n.mentions, "chapters": len(n.chapters)}
            for n in top_nodes(graph, "character", 8)
        ],
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The human-readable summary after the progress bar."""
    from rich.table import Table

    ch, ent, rel = summary["chapters"], summary["entities"], summary["relations"]
    console.print(
        f"chapters {ch['completed']}/{ch['total']} completed"
        + (f", [red]{ch['failed']} failed[/]" if ch["failed"] else "")
        + f" · entities {ent['total']} (characters {ent['character']}, places "
        f"{ent['location']}, organizations {ent['organization']}, events {ent['event']})"
        f" · relations {rel['total']} · {summary['seconds']} s"
    )
    table = Table(title="top characters by appearances", title_justify="left")
    for column in ("character", "mentions", "chapters"):
        table.add_column(column, justify="left" if column == "character" else "right")
    for row in summary["top_characters"]:
        table.add_row(row["name"], str(row["mentions"]), str(row["chapters"]))
    console.print(table)
    console.print(f"graph page: [bold]{summary['graph_html']}[/]")
