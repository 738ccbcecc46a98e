"""The HTTP endpoint: auth on every protected route, the bind rule, probes, enqueue."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from kgworker.api.server import ApiConfigError, ApiHandle, is_loopback, start_api
from kgworker.config import Settings
from kgworker.queue.connection import RedisClient

from .conftest import Book

TOKEN = "s3cret-token-for-tests"
PROTECTED = [("GET", "/metrics"), ("GET", "/readyz"), ("GET", "/status"), ("POST", "/tasks")]


def api_settings(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"kg_api_host": "127.0.0.1", "kg_api_port": 0, **update})


@pytest.fixture
async def open_api(settings: Settings, redis: RedisClient) -> AsyncIterator[ApiHandle]:
    handle = await start_api(api_settings(settings), redis=redis)
    yield handle
    await handle.close()


@pytest.fixture
async def token_api(settings: Settings, redis: RedisClient) -> AsyncIterator[ApiHandle]:
    handle = await start_api(api_settings(settings, kg_api_token=SecretStr(TOKEN)), redis=redis)
    yield handle
    await handle.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


async def test_every_protected_route_needs_the_token(token_api: ApiHandle, chaishu: Book) -> None:
    async with httpx.AsyncClient(base_url=token_api.url, timeout=30) as client:
        for method, path in PROTECTED:
            body = {"task_id": chaishu.task_id} if method == "POST" else None
            missing = await client.request(method, path, json=body)
            assert missing.status_code == 401, path
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = await client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}x"}
            )
            assert wrong.status_code == 401, path
            basic = await client.request(
                method, path, json=body, headers={"Authorization": f"Basic {TOKEN}"}
            )
            assert basic.status_code == 401, path
            good = await client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert good.status_code in (200, 202), (path, good.text)
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"


async def test_loopback_without_token_serves_everything(
    open_api: ApiHandle, chaishu: Book, redis: RedisClient
) -> None:
    async with httpx.AsyncClient(base_url=open_api.url, timeout=30) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"redis", "mysql", "neo4j"}
        status = await client.get("/status")
        assert status.status_code == 200
        assert [t["task_id"] for t in status.json()["tasks"]] == [chaishu.task_id]
        posted = await client.post("/tasks", json={"task_id": chaishu.task_id})
        assert posted.status_code == 202, posted.text
        assert posted.json()["provider"] == "deepseek"
    item = await redis.lpop("kg:ai_queue:deepseek")
    assert json.loads(item) == {"task_id": chaishu.task_id, "provider": "deepseek"}


async def test_post_tasks_rejects_bad_requests(open_api: ApiHandle, chaishu: Book) -> None:
    async with httpx.AsyncClient(base_url=open_api.url, timeout=30) as client:
        assert (await client.post("/tasks", content=b"{nope")).status_code == 400
        assert (await client.post("/tasks", json={"task_id": "7"})).status_code == 400
        assert (await client.post("/tasks", json={"task_id": 987654})).status_code == 404
        unknown = await client.post(
            "/tasks", json={"task_id": chaishu.task_id, "provider": "nosuch"}
        )
        assert unknown.status_code == 404
        assert "unknown provider" in unknown.json()["error"]


async def test_non_loopback_without_token_refuses_to_start(settings: Settings) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "worker.example"):
        with pytest.raises(ApiConfigError, match="KG_API_TOKEN"):
            await start_api(api_settings(settings, kg_api_host=host))
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")


async def test_readyz_is_503_when_a_store_is_unreachable(
    settings: Settings, redis: RedisClient
) -> None:
    broken = api_settings(settings, db_port=closed_port())
    handle = await start_api(broken, redis=redis)
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=60) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["mysql"]["ok"] is False and checks["mysql"]["error"]
            assert checks["redis"]["ok"] is True
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await handle.close()


async def test_metrics_parse_and_show_queues(open_api: ApiHandle, redis: RedisClient) -> None:
    await redis.rpush("kg:ai_queue:openai", json.dumps({"task_id": 1, "provider": "openai"}))
    await redis.rpush("kg:ai_queue:openai", json.dumps({"task_id": 2, "provider": "openai"}))
    async with httpx.AsyncClient(base_url=open_api.url, timeout=30) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("kgworker_queue_length", (("provider", "openai"),))] == 2
    assert samples[("kgworker_fleet_read_ok", ())] == 1
