"""``kgworker demo``: the sample novel end to end with no servers, and SQLite claims.

The demo runs as a subprocess whose environment has no REDIS_*/DB_*/NEO4J_* variable, so
it can only use its embedded stores; its JSON summary is checked against those stores
(kept with ``--data-dir``). No fixture here touches the test services.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import venv
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from kgworker.domain.clock import chaishu_now
from kgworker.domain.names import name_key
from kgworker.store import chapters as chapter_store
from kgworker.store import claims
from kgworker.store.schema.base import Base
from kgworker.store.schema.chaishu import (
    Chapter,
    KnowledgeGraphChapterStatus,
    KnowledgeGraphTask,
    Novel,
)
from kgworker.store.schema.ours import ChapterRun
from kgworker.store.sqlite import create_sqlite_engine
from kgworker.store.tasks import start_task

ROOT = Path(__file__).resolve().parents[2]
NOVEL = ROOT / "examples" / "novel"
GOLD = json.loads((NOVEL / "gold.json").read_text(encoding="utf-8"))
MAIN_CHARACTERS = GOLD["main_characters"]
STORE_PREFIXES = ("REDIS_", "DB_", "NEO4J_", "DATABASE_URL", "KG_DEMO_")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(STORE_PREFIXES)}


def _check_page_and_stores(summary: dict, page: Path, state: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = [name for name in MAIN_CHARACTERS if f'"name":"{name}"' not in text]
    assert missing == [], f"graph.html lacks main characters {missing}"
    _check_people_and_aliases(text)
    assert summary["status"] == "completed"
    assert summary["redis"] in ("valkey", "redis")

    with sqlite3.connect(state / "chaishu.db") as db:
        rows = dict(db.execute(
            "SELECT status, COUNT(*) FROM knowledge_graph_chapter_status GROUP BY status"))
        (chapters_in_book,) = db.execute("SELECT COUNT(*) FROM chapters").fetchone()
    assert summary["chapters"] == {"total": chapters_in_book, "completed": rows["completed"],
                                   "failed": rows.get("failed", 0)}
    assert rows == {"completed": chapters_in_book}

    with sqlite3.connect(state / "graph.db") as db:
        labels = dict(db.execute("SELECT label, COUNT(*) FROM demo_graph_nodes GROUP BY label"))
        types = dict(db.execute("SELECT type, COUNT(*) FROM demo_graph_edges GROUP BY type"))
        appears = Counter()
        for key, props in db.execute(
            "SELECT src_key, props FROM demo_graph_edges"
            " WHERE type = 'APPEARS_IN' AND src_label = 'Character'"
        ):
            appears[key] += json.loads(props)["count"]
        chars = [r[0] for r in db.execute(
            "SELECT key FROM demo_graph_nodes WHERE label = 'Character'")]
    entities = summary["entities"]
    for label in ("Character", "Location", "Organization", "Event"):
        assert entities[label.lower()] == labels.get(label, 0), label
    assert entities["total"] == sum(labels.get(x, 0) for x in
                                    ("Character", "Location", "Organization", "Event"))
    relations = {k: v for k, v in types.items() if k != "APPEARS_IN"}
    assert summary["relations"]["total"] == sum(relations.values()) > 0
    expected_top = sorted(chars, key=lambda n: (-appears[n], n))[: len(summary["top_characters"])]
    assert [c["name"] for c in summary["top_characters"]] == expected_top
    assert all(c["mentions"] == appears[c["name"]] for c in summary["top_characters"])
    assert summary["top_characters"][0]["name"] == "沈青山"  # the protagonist


def _check_people_and_aliases(page: str) -> None:
    """Every character node is one of the book's people, and the gold aliases are merged:
    listed under their person's node (the page's panel shows them), never another's."""
    data = json.loads(page.split('id="kg-data" type="application/json">')[1].split("</script>")[0])
    people = {n["name"]: set(n["aliases"]) for n in data["nodes"] if n["type"] == "character"}
    cast = GOLD["entities"]["character"]
    assert set(people) <= set(cast), f"not people: {set(people) - set(cast)}"
    text = "".join((NOVEL / f"{c['number']:02d}.txt").read_text(encoding="utf-8")
                   for c in GOLD["chapters"])
    owners = Counter(a for entry in cast.values() for a in entry["aliases"])
    gold = [(name, alias) for name, entry in cast.items() for alias in entry["aliases"]
            if owners[alias] == 1 and alias not in cast and alias in text
            and name_key(alias) != name_key(name)]  # 趙鐵生 is a spelling of 赵铁生
    merged = [(name, alias) for name, alias in gold if alias in people.get(name, set())]
    assert len(merged) >= 0.8 * len(gold), sorted(set(gold) - set(merged))
    wrong = [(alias, node) for node, aliases in people.items() for name, alias in gold
             if alias in aliases and name != node]
    assert wrong == []


def test_demo_runs_without_servers(tmp_path: Path) -> None:
    """Exit 0, graph.html with the main characters, summary == the embedded stores."""
    page, state = tmp_path / "out" / "graph.html", tmp_path / "state"
    page.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "kgworker", "demo", "--json", "--out", str(page),
         "--data-dir", str(state)],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert Path(summary["graph_html"]) == page.resolve()
    assert summary["chapters"]["total"] == len(
        json.loads((NOVEL / "book.json").read_text(encoding="utf-8"))["chapters"])
    _check_page_and_stores(summary, page, state)
    if summary["redis"] == "valkey":  # a real server served the run and was stopped
        log = (state / "valkey" / "valkey.log").read_text(encoding="utf-8", errors="replace")
        assert "Ready to accept connections" in log and "bye bye" in log, log[-2000:]


# ------------------------------------------------------------------ SQLite claims --
async def _book(path: Path, chapters: int) -> tuple[int, list[int]]:
    engine = create_sqlite_engine(path)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        novel_id = (await conn.execute(insert(Novel).values(title="t"))).inserted_primary_key[0]
        ids = [
            (await conn.execute(insert(Chapter).values(
                novel_id=novel_id, title=f"{n}", content="x", chapter_number=n,
            ))).inserted_primary_key[0]
            for n in range(1, chapters + 1)
        ]
        now = chaishu_now()
        task_id = (await conn.execute(insert(KnowledgeGraphTask).values(
            novel_id=novel_id, use_ai=False, status="created", created_at=now, updated_at=now,
        ))).inserted_primary_key[0]
    await start_task(engine, task_id)
    await engine.dispose()
    return task_id, ids


async def test_sqlite_claims_never_doubled(tmp_path: Path) -> None:
    """Two engines (two "nodes") with four claimers each drain a book: every chapter is
    claimed exactly once, and the finish commits (with its run row) the task."""
    db = tmp_path / "claims.db"
    task_id, ids = await _book(db, 40)
    engines = [create_sqlite_engine(db), create_sqlite_engine(db)]
    got: list[tuple[str, int]] = []

    async def claimer(engine, owner: str) -> None:
        while (claim := await claims.claim_chapter(engine, task_id, owner, 30)) is not None:
            got.append((owner, claim.chapter_id))
            await asyncio.sleep(0)
            finished = await chapter_store.finish_chapter(
                engine, claim, entities=1, relations=0, run={"total_ms": 1})
            assert not finished.lost

    await asyncio.gather(*(claimer(e, f"node{i}-{s}") for i, e in enumerate(engines)
                           for s in range(4)))
    claimed = [cid for _, cid in got]
    assert sorted(claimed) == sorted(ids), "a chapter was claimed twice or never"
    assert len({o for o, _ in got}) > 1, "claimers did not run concurrently"
    async with engines[0].connect() as conn:
        status = await conn.scalar(select(KnowledgeGraphTask.status))
        runs = await conn.scalar(select(ChapterRun.task_id).limit(1))
    assert status == "completed" and runs == task_id
    for engine in engines:
        await engine.dispose()


async def test_sqlite_lease_expiry_and_fencing(tmp_path: Path) -> None:
    """Python-clock leases on SQLite: renew keeps a claim, expiry lets the reaper hand the
    chapter to another claimer, and the old holder's finish is refused (fencing)."""
    db = tmp_path / "lease.db"
    task_id, ids = await _book(db, 1)
    engine = create_sqlite_engine(db)
    first = await claims.claim_chapter(engine, task_id, "a", 0.3)
    assert first is not None
    assert await chapter_store.renew_claims(engine, "a", [first.token], 0.3) == set()
    assert await chapter_store.live_claims(engine, task_id) == 1
    assert await chapter_store.reap_expired(engine, task_id=task_id) == []
    await asyncio.sleep(0.4)
    assert await chapter_store.live_claims(engine, task_id) == 0
    assert await chapter_store.reap_expired(engine, task_id=task_id) == [(task_id, ids[0])]
    second = await claims.claim_chapter(engine, task_id, "b", 30)
    assert second is not None and second.attempts == 2 and second.token != first.token
    assert await chapter_store.renew_claims(engine, "a", [first.token], 30) == {first.token}
    assert (await chapter_store.finish_chapter(engine, first)).lost
    assert not (await chapter_store.finish_chapter(engine, second)).lost
    async with engine.connect() as conn:
        rows = (await conn.execute(select(KnowledgeGraphChapterStatus.status))).scalars().all()
    assert rows == ["completed"]
    await engine.dispose()


# ---------------------------------------------------------------- clean install --
_OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
            "No matching distribution found", "Could not find a version", "ProxyError",
            "ConnectTimeoutError", "Max retries exceeded")


@pytest.mark.slow
def test_demo_in_clean_virtualenv(tmp_path: Path) -> None:
    """``pip install`` of the checkout into a fresh venv, then ``kgworker demo`` from an
    empty directory: the dependencies and the packaged sample novel are enough."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = _clean_env()
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)  # it would put a checkout before the installed package
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(ROOT)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if install.returncode != 0:
        if any(marker in install.stderr for marker in _OFFLINE):
            pytest.skip(f"pip cannot reach the package registry: {install.stderr[-300:]}")
        pytest.fail(f"pip install failed:\n{install.stderr[-3000:]}")
    work = tmp_path / "empty"
    work.mkdir()
    done = subprocess.run(
        [str(env_dir / "bin" / "kgworker"), "demo", "--json", "--data-dir", "state"],
        cwd=work, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert Path(summary["novel_dir"]).is_relative_to(env_dir.resolve()), "sample novel not packaged"
    _check_page_and_stores(summary, work / "graph.html", work / "state")
