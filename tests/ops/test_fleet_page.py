"""The live fleet page in headless Chromium, against a running node with a token.

A node works a book (its extractor holds every chapter until the test lets it go), a second
book waits, the DLQ holds an entry and a chapter has failed. The page must show those live
numbers, take its token from the link and drop it from the address bar, refresh itself,
read well at 1280×800 and at 800×600 (screenshots in ``artifacts/``), and fetch a book's
graph page with the token. The routes keep the endpoint's token rule.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
from neo4j import AsyncDriver
from pydantic import SecretStr
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.api.server import start_api
from kgworker.config import Settings
from kgworker.domain.clock import chaishu_now
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus as CS
from kgworker.store.schema.chaishu import KnowledgeGraphTask as T
from tests.support.fixed import sample_chapter

from .browser import browser
from .conftest import Book, rules_book
from .live import LiveNode, live_node, until
from .test_graph_page import chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
TOKEN = "fleet-page-token-1234"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FAILURE = "deepseek: HTTP 401 invalid API key"
#: What the page reports about itself (its body's data-* attributes).
DATASET = "Object.assign({}, document.body.dataset)"
#: The sections an operator looks at first, inside the first screen at 1280×800.
ABOVE_THE_FOLD = "['cards', 'tasks', 'providers', 'nodes'].every(id => " \
    "document.getElementById(id).getBoundingClientRect().top < innerHeight - 40)"


def _item(task_id: int) -> str:
    return json.dumps({"task_id": task_id, "provider": "rules"})


async def _seed_failure(engine: AsyncEngine, book: Book) -> None:
    """The chaishu book's task failed on its first chapter with a provider error."""
    now = chaishu_now()
    async with engine.begin() as conn:
        await conn.execute(update(T).where(T.id == book.task_id).values(
            status="failed", error_message=FAILURE, failed_chapters=1))
        await conn.execute(insert(CS).values(
            kg_task_id=book.task_id, chapter_id=book.chapter_ids[0], status="failed",
            error_message=FAILURE, updated_at=now, created_at=now))


async def _routes(live: LiveNode, novel_id: int) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        page = await client.get("/fleet")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert TOKEN not in page.text and "live-node" not in page.text  # no data in it
        assert (await client.get("/", follow_redirects=False)).headers["Location"] == "/fleet"
        assert (await client.get("/fleet/data")).status_code == 401
        assert (await client.get(f"/graph/{novel_id}")).status_code == 401
        graph = await client.get(f"/graph/{novel_id}", headers=BEARER)
        assert graph.status_code == 200 and "<title>" in graph.text, graph.text[:300]
        missing = await client.get(f"/graph/{3 * 10**9 + random.randrange(10**6)}",
                                   headers=BEARER)
        assert missing.status_code == 404
        assert (await client.get("/graph/1%20OR%201=1", headers=BEARER)).status_code == 404


async def test_fleet_page_shows_the_live_fleet(
    settings: Settings, redis: RedisClient, mysql_engine: AsyncEngine, neo4j_driver: AsyncDriver,
    chaishu: Book, novel_ids: list[int], tmp_path: Path,
) -> None:
    binary = chromium()
    texts = [sample_chapter(n) for n in range(1, 7)]
    working = await rules_book(mysql_engine, novel_ids[0], 6, "青石渡", texts)
    waiting = await rules_book(mysql_engine, novel_ids[1], 4, "长安夜话")
    await _seed_failure(mysql_engine, chaishu)
    await redis.rpush("{kg:ai_queue:rules}:dlq", json.dumps({
        "raw": _item(999_999), "reason": "stalled 4 times", "node": "gone-node",
        "provider": "rules", "at": time.time() - 120}))
    await redis.rpush("kg:ai_queue:rules", _item(working))
    async with live_node(settings, mysql_engine, redis, neo4j_driver,
                         kg_api_token=SecretStr(TOKEN)) as live:
        await until(lambda: _running(live, 2), "two chapters being extracted")
        await redis.rpush("kg:ai_queue:rules", _item(waiting))
        async with browser(binary, tmp_path / "profile") as page:
            await page.goto(f"{live.url}/fleet#token={TOKEN}&every=1", 1280, 800)
            report = await page.until(
                "document.body.dataset.slots === '2/2' && JSON.parse(document.body.dataset"
                f".backlog).rules === 10 && {DATASET}")
            assert json.loads(report["tasks"])[str(working)] == "0/6"
            assert json.loads(report["tasks"])[str(waiting)] == "0/4"
            assert (report["nodes"], report["dlq"], report["errors"]) == ("1", "1", "1")
            assert report["hscroll"] == "0"
            assert await page.evaluate("location.hash") == "#every=1", "the token left the URL"
            assert await page.evaluate("sessionStorage.getItem('kgworker-token')") == TOKEN
            assert await page.evaluate(ABOVE_THE_FOLD)
            text = await page.evaluate("document.body.innerText")
            for shown in ("live-node", "青石渡", "长安夜话", "stalled 4 times", FAILURE, "rules"):
                assert shown in text, shown
            await page.shot(ARTIFACTS / "fleet-page-1280x800.png")
            live.extractor.release(3)  # three chapters finish: the page follows by itself
            report = await page.until(  # (the backlog is counted at most every 5 s)
                f"JSON.parse(document.body.dataset.tasks || '{{}}')[{working}] === '3/6' "
                f"&& JSON.parse(document.body.dataset.backlog).rules === 3 + 4 && {DATASET}")
            await page.resize(800, 600)
            seen = int(report["refreshes"])
            report = await page.until(
                f"Number(document.body.dataset.refreshes) > {seen} && {DATASET}")
            assert report["hscroll"] == "0", "no sideways scrolling at 800×600"
            await page.shot(ARTIFACTS / "fleet-page-800x600.png")
            graph = await page.evaluate(f"kgFleet.graphHtml({novel_ids[0]})")
            assert "<title>青石渡 · knowledge graph</title>" in graph
            assert any(f'"name":"{name}"' in graph for name in ("林风", "苏晴", "王虎"))
            (tmp_path / "graph.html").write_text(graph, encoding="utf-8")
            await page.goto((tmp_path / "graph.html").as_uri(), 800, 600)
            drawn = await page.until("Number(document.body.dataset.renderedNodes)")
            assert drawn >= 3, "the book's graph page draws what the workers wrote"
            await page.shot(ARTIFACTS / "fleet-graph-page-800x600.png")
            await page.goto(f"{live.url}/fleet?again#token=wrong", 800, 600)
            assert await page.until("document.body.dataset.state") == "unauthorized"
        await _routes(live, novel_ids[0])


async def _running(live: LiveNode, n: int) -> bool:
    return live.extractor.waiting == n


async def test_without_a_token_the_page_and_its_data_are_open(
    settings: Settings, redis: RedisClient, chaishu: Book,
) -> None:
    """Loopback, no token, no node (``start_api`` alone): the same routes, no bearer."""
    handle = await start_api(settings.model_copy(update={"kg_api_port": 0}), redis=redis)
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            assert (await client.get("/fleet")).status_code == 200
            data = (await client.get("/fleet/data")).json()
    finally:
        await handle.close()
    assert data["node"]["runtime"] is None and data["errors"] == {}
    assert [t["task_id"] for t in data["tasks"]] == [chaishu.task_id]
    assert set(data) >= {"nodes", "providers", "tasks", "backlog", "dlq", "recent_errors"}
