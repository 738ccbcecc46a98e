"""Migrations: an empty database gets every table; a live chaishu database keeps its own
tables byte for byte (definition and data) and only gains the kgworker_* tables."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.config import Settings
from kgworker.store.migrate import current_revision, head_revision, upgrade
from kgworker.store.schema.base import CHAISHU_TABLES, VERSION_TABLE, Base

OURS = {"kgworker_chapter_claims", "kgworker_chapter_runs", "kgworker_llm_calls",
        "kgworker_llm_cache", "kgworker_entity_aliases", "kgworker_task_moves",
        "kgworker_task_queues", "kgworker_pending_chapters", VERSION_TABLE}

#: Chaishu's tables as the Flask app might have made them: other types, extra columns.
CHAISHU_DDL = (
    "CREATE TABLE novels (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200) NOT NULL,"
    " author VARCHAR(100), summary TEXT, created_at DATETIME)",
    "CREATE TABLE chapters (id INT AUTO_INCREMENT PRIMARY KEY, novel_id INT NOT NULL,"
    " title VARCHAR(200), content LONGTEXT, chapter_number INT, word_count INT,"
    " KEY idx_novel (novel_id))",
    "CREATE TABLE ai_providers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100),"
    " display_name VARCHAR(100), api_key TEXT, base_url VARCHAR(255), models JSON,"
    " is_active TINYINT(1) DEFAULT 1, created_at DATETIME, updated_at DATETIME)",
    "CREATE TABLE knowledge_graph_configs (id INT AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(100), ai_provider VARCHAR(50), ai_model VARCHAR(100), use_ai TINYINT(1),"
    " max_content_length INT DEFAULT 4000, enable_entity_extraction TINYINT(1),"
    " enable_relation_extraction TINYINT(1), entity_types JSON, relation_types JSON,"
    " rule_config JSON, is_default TINYINT(1), is_system TINYINT(1))",
    "CREATE TABLE knowledge_graph_tasks (id INT AUTO_INCREMENT PRIMARY KEY,"
    " task_name VARCHAR(200), novel_id INT, chapter_ids JSON, use_ai TINYINT(1),"
    " status VARCHAR(20) DEFAULT 'created', total_chapters INT DEFAULT 0,"
    " completed_chapters INT DEFAULT 0, failed_chapters INT DEFAULT 0,"
    " skipped_chapters INT DEFAULT 0, current_chapter_id INT, total_entities INT DEFAULT 0,"
    " total_relations INT DEFAULT 0, error_message TEXT, last_error_chapter_id INT,"
    " auto_retry_enabled TINYINT(1) DEFAULT 0, retry_interval_minutes INT DEFAULT 10,"
    " failed_at DATETIME, retry_scheduled_at DATETIME, retry_count INT DEFAULT 0,"
    " created_at DATETIME, started_at DATETIME, completed_at DATETIME, paused_at DATETIME,"
    " updated_at DATETIME, created_by INT)",
    "CREATE TABLE knowledge_graph_chapter_status (id INT AUTO_INCREMENT PRIMARY KEY,"
    " kg_task_id INT, chapter_id INT, status VARCHAR(20), entities_extracted INT DEFAULT 0,"
    " relations_extracted INT DEFAULT 0, error_message TEXT, created_at DATETIME,"
    " updated_at DATETIME, started_at DATETIME, completed_at DATETIME,"
    " KEY idx_task (kg_task_id), KEY idx_chapter (chapter_id), KEY idx_status (status),"
    " KEY idx_task_chapter (kg_task_id, chapter_id))",
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
)
CHAISHU_DATA = (
    "INSERT INTO novels (id, title, author, summary) VALUES (1, '红楼梦', '曹雪芹', '…')",
    "INSERT INTO chapters VALUES (10, 1, '第一回', '甄士隐梦幻识通灵', 1, 8)",
    "INSERT INTO knowledge_graph_tasks (id, novel_id, status, chapter_ids)"
    " VALUES (5, 1, 'completed', '[10]')",
    "INSERT INTO knowledge_graph_chapter_status (kg_task_id, chapter_id, status)"
    " VALUES (5, 10, 'completed')",
    "INSERT INTO alembic_version VALUES ('chaishu_head_1234')",
)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text("SHOW TABLES"))}


async def _snapshot(engine: AsyncEngine, tables: set[str]) -> dict[str, object]:
    snap: dict[str, object] = {}
    async with engine.connect() as conn:
        for table in sorted(tables):
            ddl = (await conn.execute(text(f"SHOW CREATE TABLE `{table}`"))).one()[1]
            rows = (await conn.execute(text(f"SELECT * FROM `{table}` ORDER BY 1"))).all()
            snap[table] = (ddl, [tuple(r) for r in rows])
    return snap


async def test_upgrade_empty_database_creates_every_table(mysql_engine: AsyncEngine) -> None:
    assert await current_revision(mysql_engine) is None
    await upgrade(mysql_engine)
    assert await _tables(mysql_engine) == set(CHAISHU_TABLES) | OURS
    assert await current_revision(mysql_engine) == head_revision()
    await upgrade(mysql_engine)  # a second run is a no-op

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        return [d for d in compare_metadata(context, Base.metadata)
                if not (isinstance(d, tuple) and d[0] in ("remove_table",)
                        and getattr(d[1], "name", "") == VERSION_TABLE)]

    async with mysql_engine.connect() as conn:
        assert await conn.run_sync(diff) == []  # models and migrations agree


async def test_upgrade_existing_chaishu_database_adds_only_ours(
    mysql_engine: AsyncEngine,
) -> None:
    async with mysql_engine.begin() as conn:
        for statement in (*CHAISHU_DDL, *CHAISHU_DATA):
            await conn.execute(text(statement))
    theirs = set(CHAISHU_TABLES) | {"alembic_version"}
    before = await _snapshot(mysql_engine, theirs)
    await upgrade(mysql_engine)
    assert await _tables(mysql_engine) == theirs | OURS
    assert await _snapshot(mysql_engine, theirs) == before


def test_db_upgrade_command(settings: Settings, worker_env: dict[str, str]) -> None:
    env = {**os.environ, **worker_env}
    run = subprocess.run([sys.executable, "-m", "kgworker", "db", "upgrade"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert f"-> {head_revision()}" in run.stdout
    again = subprocess.run([sys.executable, "-m", "kgworker", "db", "current"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.stdout.strip() == head_revision()
