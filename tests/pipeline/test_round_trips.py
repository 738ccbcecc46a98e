"""What the store's MySQL connections cost per transaction, counted by the real MariaDB.

Each transaction path of the store (``in_transaction`` and ``connect`` through
``read_committed``) must run at READ COMMITTED, and the level must be set once when a
connection is opened, not by a ``SET`` plus ``COMMIT`` around every transaction. The
server's per-session counters (``SHOW SESSION STATUS``) see every statement a connection
sends, including those the driver sends behind SQLAlchemy's back; a ping is no statement
but counts as an admin command (``Com_admin_commands``).

DB_POOL_PRE_PING pings only a connection that sat idle (DB_POOL_PING_IDLE): back-to-back
transactions send no ping, and a connection the server killed while it sat in the pool is
replaced without the caller seeing an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kgworker.config import Settings
from kgworker.store.mysql import create_engine
from kgworker.store.txn import READ_COMMITTED, in_transaction, read_committed

ROUNDS = 5


async def session_facts(conn: AsyncConnection) -> dict[str, Any]:
    """The connection's id, its isolation level and its statement counters so far."""
    rows = await conn.execute(text(
        "SHOW SESSION STATUS WHERE Variable_name IN"
        " ('Com_set_option', 'Com_commit', 'Com_rollback', 'Com_admin_commands')"))
    facts: dict[str, Any] = {name: int(value) for name, value in rows}
    facts["id"] = await conn.scalar(text("SELECT CONNECTION_ID()"))
    facts["level"] = await conn.get_isolation_level()  # @@transaction_isolation / @@tx_isolation
    return facts


async def per_transaction(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Facts seen inside ROUNDS transactions, alternating the store's two paths."""
    seen: list[dict[str, Any]] = []
    for round_no in range(ROUNDS):
        store_engine = read_committed(engine)
        if round_no % 2:
            async with store_engine.connect() as conn:
                seen.append(await session_facts(conn))
        else:
            seen.append(await in_transaction(store_engine, session_facts))
    return seen


@pytest.fixture
async def one_connection(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The store's engine with a pool of one, so every transaction reuses one session."""
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_store_engine_runs_read_committed_without_a_set_per_transaction(
    one_connection: AsyncEngine,
) -> None:
    assert read_committed(one_connection) is one_connection
    seen = await per_transaction(one_connection)
    assert {s["id"] for s in seen} == {seen[0]["id"]}, "the pool of one reused its connection"
    assert [s["level"] for s in seen] == [READ_COMMITTED] * ROUNDS
    # no SET after the one made when the connection was opened
    assert [s["Com_set_option"] for s in seen] == [seen[0]["Com_set_option"]] * ROUNDS
    # one COMMIT per in_transaction (rounds 0, 2, 4), none around the reads
    commits = [s["Com_commit"] - seen[0]["Com_commit"] for s in seen]
    assert commits == [0, 1, 1, 2, 2]
    # reset-on-return adds nothing after a COMMIT; a read ends its transaction with a ROLLBACK
    rollbacks = [s["Com_rollback"] - seen[0]["Com_rollback"] for s in seen]
    assert rollbacks == [0, 0, 1, 1, 2]
    # back to back: no ping on any checkout
    assert [s["Com_admin_commands"] for s in seen] == [seen[0]["Com_admin_commands"]] * ROUNDS


async def test_ping_counter_sees_pings(settings: Settings) -> None:
    """DB_POOL_PING_IDLE=0 pings every reuse: the counter the test above relies on moves."""
    engine = create_engine(settings.model_copy(update={"db_pool_ping_idle": 0.0}),
                           pool_size=1, max_overflow=0)
    try:
        pings = [s["Com_admin_commands"] for s in await per_transaction(engine)]
        assert pings == [pings[0] + n for n in range(ROUNDS)]
    finally:
        await engine.dispose()


async def kill_while_idle(settings: Settings, engine: AsyncEngine) -> tuple[int, Any]:
    """Use ``engine``'s one connection, KILL it server-side while it sits in the pool, wait
    past DB_POOL_PING_IDLE, then run a store transaction: (killed id, outcome)."""
    killed = (await in_transaction(read_committed(engine), session_facts))["id"]
    returned = time.monotonic()
    admin = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"KILL {int(killed)}"))
            deadline = time.monotonic() + 10
            while await conn.scalar(text(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id"),
                    {"id": killed}):
                assert time.monotonic() < deadline, "the server did not end the connection"
                await asyncio.sleep(0.05)
    finally:
        await admin.dispose()
    while time.monotonic() - returned <= settings.db_pool_ping_idle:
        await asyncio.sleep(0.05)  # the connection must have been idle past the threshold
    try:
        return killed, await in_transaction(read_committed(engine), session_facts)
    except Exception as exc:
        return killed, exc


async def test_connection_killed_while_idle_is_replaced(settings: Settings) -> None:
    idle = settings.model_copy(update={"db_pool_ping_idle": 0.2})
    engine = create_engine(idle, pool_size=1, max_overflow=0)
    try:
        killed, outcome = await kill_while_idle(idle, engine)
        assert isinstance(outcome, dict), f"the caller saw {outcome!r}"
        assert outcome["id"] != killed
        assert outcome["level"] == READ_COMMITTED
    finally:
        await engine.dispose()


async def test_without_pre_ping_the_killed_connection_fails(settings: Settings) -> None:
    """The control: with DB_POOL_PRE_PING off the same kill reaches the caller."""
    off = settings.model_copy(update={"db_pool_pre_ping": False, "db_pool_ping_idle": 0.2})
    engine = create_engine(off, pool_size=1, max_overflow=0)
    try:
        _, outcome = await kill_while_idle(off, engine)
        assert isinstance(outcome, Exception)
    finally:
        await engine.dispose()


async def test_chaishu_factory_spelling_is_recognised(settings: Settings) -> None:
    """The pipeline's engine names the level itself; still no view, still READ COMMITTED."""
    engine = create_engine(settings, isolation_level="READ COMMITTED", pool_size=1)
    try:
        assert read_committed(engine) is engine
        seen = await per_transaction(engine)
        assert [s["level"] for s in seen] == [READ_COMMITTED] * ROUNDS
    finally:
        await engine.dispose()


async def test_engine_made_elsewhere_still_gets_read_committed(settings: Settings) -> None:
    """An engine at the server's default level gets the per-transaction view: correct,
    only dearer. The server default here is not READ COMMITTED, else this proves nothing."""
    engine = create_async_engine(settings.sqlalchemy_url(), pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            assert await conn.get_isolation_level() != READ_COMMITTED
        assert read_committed(engine) is not engine
        seen = await per_transaction(engine)
        assert [s["level"] for s in seen] == [READ_COMMITTED] * ROUNDS
    finally:
        await engine.dispose()


async def test_another_level_asked_for_is_kept(settings: Settings) -> None:
    engine = create_engine(settings, isolation_level="REPEATABLE READ", pool_size=1)
    try:
        async with engine.connect() as conn:
            assert await conn.get_isolation_level() == "REPEATABLE READ"
        assert read_committed(engine) is not engine
        assert await in_transaction(read_committed(engine), session_facts)
    finally:
        await engine.dispose()


async def test_a_transaction_left_open_is_still_rolled_back_on_return(
    one_connection: AsyncEngine,
) -> None:
    """Only a return right after in_transaction's COMMIT skips the pool's ROLLBACK: a
    transaction opened behind SQLAlchemy's back is rolled back when the connection returns."""

    async def create(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TABLE kept (id INT PRIMARY KEY) ENGINE=InnoDB"))
        await conn.execute(text("INSERT INTO kept VALUES (1)"))

    await in_transaction(one_connection, create)

    def insert_raw(sync_conn: Any) -> None:
        cursor = sync_conn.connection.dbapi_connection.cursor()
        cursor.execute("INSERT INTO kept VALUES (2)")
        cursor.close()

    async with one_connection.connect() as conn:
        await conn.run_sync(insert_raw)
    async with one_connection.connect() as conn:
        assert (await session_facts(conn))["Com_rollback"] >= 1
        assert list(await conn.execute(text("SELECT id FROM kept"))) == [(1,)]
