"""What the store's MySQL connections cost per transaction, counted by the real MariaDB.

Each transaction path of the store (``in_transaction`` and ``connect`` through
``read_committed``) must run at READ COMMITTED, and the level must be set once when a
connection is opened, not by a ``SET`` plus ``COMMIT`` around every transaction. The
server's per-session counters (``SHOW SESSION STATUS``) see every statement a connection
sends, including those the driver sends behind SQLAlchemy's back.
"""

from __future__ import annotations

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
        "SHOW SESSION STATUS WHERE Variable_name IN ('Com_set_option', 'Com_commit')"))
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
