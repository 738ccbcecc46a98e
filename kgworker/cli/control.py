"""Control commands: ``enqueue``, ``task``, ``provider`` and ``dlq``.

Each prints what it did in one line; a refused action (wrong id or name, wrong state) is
one ``error:`` line on stderr and exit code 1, as is a store that cannot be reached; a
wrong combination of arguments is a usage error, exit code 2.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kgworker.cli.help import usage_error

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from kgworker.config import Settings
    from kgworker.queue.connection import RedisClient

R = TypeVar("R")
Work = Callable[["Settings", "RedisClient", "AsyncEngine | None"], Awaitable[R]]


def run(work: Work[R], *, mysql: bool = True) -> R:
    """Load settings, open the stores, run ``work``; errors become one line and exit 1."""
    from kgworker.cli import settings_or_exit

    settings = settings_or_exit()

    async def main() -> R:
        from kgworker.queue.connection import create_redis
        from kgworker.store.mysql import create_engine

        redis = create_redis(settings, socket_timeout=10)
        engine = create_engine(settings, pool_size=1, max_overflow=0) if mysql else None
        try:
            return await work(settings, redis, engine)
        finally:
            await redis.aclose()
            if engine is not None:
                await engine.dispose()

    from kgworker.control.errors import ControlError
    from kgworker.store.errors import classify, describe, store_of

    try:
        return asyncio.run(main())
    except ControlError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        store = store_of(exc)
        if store is None and not isinstance(exc, OSError):
            raise  # not a store's error: a bug, with its traceback
        reason = describe(settings, store, exc) if store else classify(exc).reason
        typer.echo(f"error: store unreachable or refused: {reason}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    _register_enqueue(app)
    _register_task(app)
    _register_provider(app)
    _register_dlq(app)


def _register_enqueue(app: typer.Typer) -> None:
    @app.command()
    def enqueue(
        ctx: typer.Context,
        task_id: Annotated[int | None, typer.Argument(help="knowledge_graph_tasks.id")] = None,
        provider: Annotated[
            str | None, typer.Option("--provider", help="Queue (default: the task's own)")
        ] = None,
        novel: Annotated[
            int | None, typer.Option("--novel", help="Create a task for this novel first")
        ] = None,
    ) -> None:
        """Push a task onto its provider queue, as the chaishu producer does."""
        from kgworker.control.enqueue import enqueue_task

        if task_id is None and novel is None:
            usage_error(ctx, "give TASK_ID or --novel N")

        async def work(settings: Settings, redis: RedisClient, engine: AsyncEngine | None) -> Any:
            return await enqueue_task(redis, engine, task_id, provider=provider, novel_id=novel)

        done = run(work)
        made = f"created task {done.task_id} for novel {novel}; " if done.created else ""
        typer.echo(
            f"{made}enqueued task {done.task_id} on {done.queue} "
            f"(provider {done.provider}, {done.queue_length} waiting)"
        )


def _register_task(app: typer.Typer) -> None:
    task_app = typer.Typer(help="Retry, cancel or restart one task.", no_args_is_help=True)
    app.add_typer(task_app, name="task")

    def report(change: Any) -> None:
        queued = f", queued on {change.provider}" if change.provider else ""
        detail = f" ({change.detail})" if change.detail else ""
        typer.echo(f"task {change.task_id}: {change.before} → {change.after}{queued}{detail}")

    @task_app.command("retry")
    def retry(task_id: int) -> None:
        """failed or paused → created: failed chapters pending again, re-queued."""
        from kgworker.control.tasks import retry_task

        async def work(settings: Settings, redis: RedisClient, engine: AsyncEngine | None) -> Any:
            assert engine is not None
            return await retry_task(engine, redis, task_id)

        report(run(work))

    @task_app.command("cancel")
    def cancel(task_id: int) -> None:
        """→ cancelled: workers stop it between chapters."""
        from kgworker.control.tasks import cancel_task

        async def work(settings: Settings, redis: RedisClient, engine: AsyncEngine | None) -> Any:
            assert engine is not None
            return await cancel_task(engine, task_id)

        report(run(work))

    @task_app.command("restart")
    def restart(task_id: int) -> None:
        """completed, failed or cancelled → created: graph data removed, all chapters again."""
        from kgworker.control.tasks import restart_task
        from kgworker.store.graph import create_driver
        from kgworker.store.graph_writer import GraphWriter

        async def work(settings: Settings, redis: RedisClient, engine: AsyncEngine | None) -> Any:
            assert engine is not None
            driver = create_driver(settings)
            try:
                graph = GraphWriter(driver, database=settings.neo4j_database)
                return await restart_task(engine, redis, graph, task_id)
            finally:
                await driver.close()

        report(run(work))


def _register_provider(app: typer.Typer) -> None:
    provider_app = typer.Typer(
        help="Pause, resume, scale or fall back a provider.", no_args_is_help=True
    )
    app.add_typer(provider_app, name="provider")

    def resolve_then(
        name: str, act: Callable[[Settings, RedisClient, str], Awaitable[Any]]
    ) -> None:
        from kgworker.control.providers import resolve_provider

        async def work(settings: Settings, redis: RedisClient, engine: AsyncEngine | None) -> Any:
            provider = await resolve_provider(settings, redis, engine, name)
            return await act(settings, redis, provider)

        change = run(work)
        typer.echo(f"provider {change.provider}: {change.action} — {change.detail}")

    @provider_app.command("pause")
    def pause(
        name: str,
        seconds: Annotated[
            int | None, typer.Option("--for", help="Seconds (default: until resumed)", min=1)
        ] = None,
    ) -> None:
        """Stop every node claiming from NAME (the chaishu suspend key)."""
        from kgworker.control import providers as pc

        resolve_then(name, lambda s, r, p: pc.pause(r, p, seconds))

    @provider_app.command("resume")
    def resume(name: str) -> None:
        """Lift a pause or breaker suspension of NAME now."""
        from kgworker.control import providers as pc

        resolve_then(name, lambda s, r, p: pc.resume(r, p))

    @provider_app.command("scale")
    def scale(
        ctx: typer.Context,
        name: str,
        slots: Annotated[
            str | None, typer.Argument(help="Slots per node, or 'auto'; omit with --reset")
        ] = None,
        reset: Annotated[
            bool, typer.Option("--reset", help="Back to KG_WORKERS_PER_PROVIDER")
        ] = False,
    ) -> None:
        """Change NAME's slot limit on every node, live (no restart); 'auto' = adaptive."""
        from kgworker.control import providers as pc

        if (slots is None) == (not reset):
            usage_error(ctx, "give a slot count N, 'auto', or --reset")
        wanted: int | str | None = None if reset else slots
        if isinstance(wanted, str) and wanted != "auto":
            if not wanted.isdigit():
                raise typer.BadParameter(
                    f"expected a slot count (0 or more) or 'auto', got {wanted!r}",
                    param_hint="SLOTS",
                )
            wanted = int(wanted)
        resolve_then(name, lambda s, r, p: pc.scale(s, r, p, wanted))

    @provider_app.command("fallback")
    def fallback(
        name: str,
        state: Annotated[str, typer.Argument(help="on or off")],
    ) -> None:
        """Move NAME's waiting tasks to its backups (KG_PROVIDER_FALLBACK) while suspended."""
        from kgworker.control import providers as pc

        if state not in ("on", "off"):
            raise typer.BadParameter(f"expected 'on' or 'off', got {state!r}", param_hint="STATE")
        resolve_then(name, lambda s, r, p: pc.fallback(s, r, p, state == "on"))


def _register_dlq(app: typer.Typer) -> None:
    dlq_app = typer.Typer(help="Inspect and requeue dead-lettered items.", no_args_is_help=True)
    app.add_typer(dlq_app, name="dlq")

    def resolved(name: str) -> Callable[[Settings, RedisClient, AsyncEngine | None], Any]:
        async def provider(settings: Settings, redis: RedisClient, engine: Any) -> str:
            from kgworker.control.providers import resolve_provider

            return await resolve_provider(settings, redis, engine, name)

        return provider

    @dlq_app.command("list")
    def list_(
        provider: Annotated[str | None, typer.Argument(help="Default: every provider")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Entries with their reason, node and time."""
        from kgworker.control import dlq
        from kgworker.observe.fleet import discover_providers

        async def work(settings: Settings, redis: RedisClient, engine: Any) -> Any:
            names = (
                [await resolved(provider)(settings, redis, engine)]
                if provider
                else await discover_providers(redis)
            )
            return {name: await dlq.list_entries(redis, name) for name in names}

        found = run(work)
        if as_json:
            data = {p: [e.summary() for e in entries] for p, entries in found.items()}
            typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
            return
        total = 0
        for name, entries in found.items():
            for e in entries:
                total += 1
                f = e.fields
                typer.echo(
                    f"{name}\t{e.index}\t{f.get('at', '?')}\t{f.get('node', '?')}\t"
                    f"{f.get('reason', '?')}\t{str(f.get('raw', ''))[:60]}"
                )
        typer.echo(f"{total} dead-lettered item(s)")

    @dlq_app.command("show")
    def show(provider: str, index: int) -> None:
        """One entry in full (JSON)."""
        from kgworker.control import dlq

        async def work(settings: Settings, redis: RedisClient, engine: Any) -> Any:
            name = await resolved(provider)(settings, redis, engine)
            return await dlq.get_entry(redis, name, index)

        typer.echo(json.dumps(run(work).summary(), ensure_ascii=False, indent=2))

    @dlq_app.command("requeue")
    def requeue(
        ctx: typer.Context,
        provider: str,
        index: Annotated[int | None, typer.Argument(help="Entry index; omit with --all")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every entry")] = False,
    ) -> None:
        """Put entries back at the tail of the provider's queue."""
        from kgworker.control import dlq

        if (index is None) == (not all_):
            usage_error(ctx, "give an entry INDEX, or --all")

        async def work(settings: Settings, redis: RedisClient, engine: Any) -> Any:
            name = await resolved(provider)(settings, redis, engine)
            return name, await dlq.requeue(redis, name, None if all_ else index)

        name, done = run(work)
        typer.echo(f"requeued {len(done)} item(s) onto kg:ai_queue:{name}")

    @dlq_app.command("purge")
    def purge(
        provider: str,
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    ) -> None:
        """Delete every entry of the provider's dead-letter queue."""
        from kgworker.control import dlq

        if not yes and not typer.confirm(f"delete the {provider} dead-letter queue?"):
            raise typer.Exit(1)

        async def work(settings: Settings, redis: RedisClient, engine: Any) -> Any:
            name = await resolved(provider)(settings, redis, engine)
            return name, await dlq.purge(redis, name)

        name, count = run(work)
        typer.echo(f"purged {count} item(s) from the {name} dead-letter queue")
