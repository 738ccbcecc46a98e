"""`kgworker db upgrade` run by several pods at once (init containers): one migrates at a
time under a MySQL named lock, the others wait for it and find the schema at head."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kgworker.config import Settings
from kgworker.store.migrate import (
    MigrationLockTimeout,
    current_revision,
    head_revision,
    lock_name,
    upgrade,
)
from kgworker.store.mysql import create_engine
from kgworker.store.schema.base import VERSION_TABLE


async def kgworker(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_concurrent_upgrades_both_succeed(
    worker_env: dict[str, str], mysql_engine: AsyncEngine
) -> None:
    """Two `kgworker db upgrade` processes on one empty database, like two pods starting."""
    env = {**os.environ, **worker_env}
    results = await asyncio.gather(*(kgworker(env, "db", "upgrade") for _ in range(2)))
    for code, output in results:
        assert code == 0, output
        assert f"-> {head_revision()}" in output
    assert await current_revision(mysql_engine) == head_revision()
    async with mysql_engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
    assert [row[0] for row in rows] == [head_revision()], "one version row, at head"


@pytest.fixture
async def lock_holder(
    settings: Settings, mysql_engine: AsyncEngine
) -> AsyncIterator[AsyncConnection]:
    """A connection of "another pod" that holds this database's migration lock."""
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            name = lock_name(settings.mysql_parts().database)
            got = (await conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name})).scalar()
            assert got == 1
            yield conn
            await conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        await engine.dispose()


async def waiting_for_the_lock(engine: AsyncEngine, database: str) -> bool:
    """Whether some session of this user is blocked in GET_LOCK on that database's lock."""
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            " WHERE INFO LIKE '%GET_LOCK%' AND INFO LIKE :name AND ID <> CONNECTION_ID()"
        ), {"name": f"%{lock_name(database)}%"})
        return bool(rows.scalar())


async def test_upgrade_waits_for_the_lock_holder(
    settings: Settings, mysql_engine: AsyncEngine, lock_holder: AsyncConnection
) -> None:
    database = settings.mysql_parts().database
    running = asyncio.create_task(upgrade(mysql_engine))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    # until the upgrade's session is seen blocked in GET_LOCK (or it ran without waiting)
    while not await waiting_for_the_lock(mysql_engine, database):
        assert not running.done(), "upgrade ran while another upgrade held the lock"
        assert loop.time() < deadline, "upgrade never asked for the lock"
        await asyncio.sleep(0.05)
    assert await current_revision(mysql_engine) is None, "nothing migrated while waiting"
    await lock_holder.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name(database)})
    await asyncio.wait_for(running, 60)
    assert await current_revision(mysql_engine) == head_revision()


async def test_upgrade_gives_up_after_its_timeout(
    mysql_engine: AsyncEngine, lock_holder: AsyncConnection
) -> None:
    with pytest.raises(MigrationLockTimeout, match="held"):
        await upgrade(mysql_engine, lock_timeout=0)
    assert await current_revision(mysql_engine) is None


def test_lock_name_fits_mysql() -> None:
    assert len(lock_name("d" * 64)) == 64
    assert lock_name("chaishu") == "kgworker_migrate:chaishu"
