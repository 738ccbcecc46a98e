"""The operator commands against the real servers: what they print, what they change, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.clock import chaishu_now
from kgworker.keys import PROVIDER_SLOTS_KEY, ProviderKeys
from kgworker.observe.fleet import read_providers
from kgworker.queue.connection import RedisClient
from kgworker.store.schema.chaishu import KnowledgeGraphChapterStatus as CS
from kgworker.store.schema.chaishu import KnowledgeGraphTask as T

from .conftest import Book


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_json_shows_nodes_providers_and_tasks(
    worker_env: dict[str, str], redis: RedisClient, mysql_engine: AsyncEngine, chaishu: Book
) -> None:
    await redis.hset("kg:nodes:node-a", mapping={
        "node_id": '"node-a"', "node_type": '"worker"', "last_heartbeat": '"2030-01-01T00:00:00"',
        "version": '"9.9"', "providers": '["deepseek"]', "max_total": "50",
    })
    await redis.expire("kg:nodes:node-a", 180)
    await redis.hset("kg:worker:node-a-1", mapping={
        "provider": '"deepseek"', "node_name": '"node-a"', "task_id": str(chaishu.task_id),
    })
    await redis.hset(
        "kg:worker:node-a-2", mapping={"provider": '"deepseek"', "node_name": '"node-a"'}
    )
    await redis.rpush("kg:ai_queue:deepseek", b'{"task_id": 1, "provider": "deepseek"}')
    await redis.rpush("{kg:ai_queue:deepseek}:dlq", b'{"raw": "x", "reason": "not JSON"}')
    until = json.dumps({"until": int(time.time()) + 300})
    await redis.set("ai:provider:suspend:zhipu", until, ex=300)
    now = chaishu_now()
    async with mysql_engine.begin() as conn:
        await conn.execute(update(T).where(T.id == chaishu.task_id).values(
            status="running", completed_chapters=1, started_at=now))
        rows = [{"kg_task_id": chaishu.task_id, "chapter_id": c, "status": "pending",
                 "completed_at": None} for c in chaishu.chapter_ids]
        rows[0].update(status="completed", completed_at=now)
        await conn.execute(insert(CS), rows)
    code, out, err = await cli(worker_env, "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    # (other suites may share this Redis database while they run: look only at ours)
    node = next(n for n in data["nodes"] if n["name"] == "node-a")
    assert node["alive"] and node["version"] == "9.9" and node["busy"] == 1 and node["slots"] == 2
    providers = {p["provider"]: p for p in data["providers"]}
    assert providers["deepseek"]["queued"] == 1 and providers["deepseek"]["dead"] == 1
    assert providers["deepseek"]["live_slots"] == 2 and providers["deepseek"]["busy_slots"] == 1
    assert providers["zhipu"]["paused"] and 290 <= providers["zhipu"]["paused_for_seconds"] <= 300
    (task,) = data["tasks"]
    assert task["task_id"] == chaishu.task_id and task["book"] == "测试之书"
    assert (task["done"], task["total"], task["status"]) == (1, 3, "running")
    assert task["rate_per_min"] == 0.1 and task["eta_seconds"] == 1200  # 2 left at 0.1/min
    code, out, _ = await cli(worker_env, "status")
    assert code == 0 and "node-a" in out and "deepseek" in out and "测试之书" in out


async def test_enqueue(worker_env: dict[str, str], redis: RedisClient, chaishu: Book) -> None:
    code, out, _ = await cli(worker_env, "enqueue", str(chaishu.task_id))
    assert code == 0 and "kg:ai_queue:deepseek" in out and "1 waiting" in out
    code, out, _ = await cli(worker_env, "enqueue", str(chaishu.task_id), "--provider", "rules")
    assert code == 0 and "kg:ai_queue:rules" in out
    assert json.loads(await redis.lpop("kg:ai_queue:rules")) == {
        "task_id": chaishu.task_id, "provider": "rules"}
    code, out, _ = await cli(worker_env, "enqueue", "--novel", str(chaishu.novel_id))
    assert code == 0 and "created task" in out
    assert await redis.llen("kg:ai_queue:deepseek") == 2
    for args, message in [
        (("enqueue", "99999"), "task 99999 does not exist"),
        (("enqueue", str(chaishu.task_id), "--provider", "nosuch"), "unknown provider"),
        (("enqueue", "--novel", "99999"), "novel 99999 does not exist"),
    ]:
        code, out, err = await cli(worker_env, *args)
        assert code == 1 and message in err, (args, err)
    code, _, err = await cli(worker_env, "enqueue")  # a usage error
    assert code == 2 and "give TASK_ID or --novel" in err, err


async def test_task_cancel_retry_restart(
    worker_env: dict[str, str], redis: RedisClient, mysql_engine: AsyncEngine, chaishu: Book
) -> None:
    tid = str(chaishu.task_id)
    code, out, err = await cli(worker_env, "task", "retry", tid)
    assert code == 1 and "only a failed or paused task" in err
    code, out, _ = await cli(worker_env, "task", "cancel", tid)
    assert code == 0 and "created → cancelled" in out
    code, _, err = await cli(worker_env, "task", "cancel", tid)
    assert code == 1 and "is cancelled" in err
    code, out, err = await cli(worker_env, "task", "restart", tid)
    assert code == 0, err
    assert "cancelled → created" in out
    assert json.loads(await redis.lpop("kg:ai_queue:deepseek"))["task_id"] == chaishu.task_id
    async with mysql_engine.begin() as conn:
        await conn.execute(update(T).where(T.id == chaishu.task_id).values(
            status="failed", error_message="boom", failed_chapters=1))
        await conn.execute(insert(CS), [
            {"kg_task_id": chaishu.task_id, "chapter_id": c, "status": status,
             "error_message": "boom" if status == "failed" else None}
            for c, status in zip(
                chaishu.chapter_ids, ("failed", "completed", "completed"), strict=True
            )
        ])
    code, out, err = await cli(worker_env, "task", "retry", tid)
    assert code == 0, err
    assert "failed → created" in out and "queued on deepseek" in out
    async with mysql_engine.connect() as conn:
        task = (await conn.execute(select(T).where(T.id == chaishu.task_id))).one()
        statuses = (await conn.execute(select(CS.status).where(
            CS.kg_task_id == chaishu.task_id))).scalars().all()
    assert task.status == "created" and task.error_message is None
    assert (task.failed_chapters, task.completed_chapters) == (0, 2)
    assert sorted(statuses) == ["completed", "completed", "pending"]
    for verb in ("retry", "cancel", "restart"):
        code, _, err = await cli(worker_env, "task", verb, "424242")
        assert code == 1 and "task 424242 does not exist" in err


async def test_provider_pause_resume_scale(
    worker_env: dict[str, str], redis: RedisClient, chaishu: Book
) -> None:
    code, out, _ = await cli(worker_env, "provider", "pause", "deepseek", "--for", "120")
    assert code == 0 and "paused" in out
    assert 0 < await redis.ttl("ai:provider:suspend:deepseek") <= 120
    code, out, _ = await cli(worker_env, "provider", "resume", "deepseek")
    assert code == 0 and "resumed" in out
    assert not await redis.exists("ai:provider:suspend:deepseek")
    code, out, _ = await cli(worker_env, "provider", "scale", "deepseek", "7")
    assert code == 0 and "7 slots per node" in out
    assert await redis.hget(PROVIDER_SLOTS_KEY, "deepseek") == b"7"
    code, out, _ = await cli(worker_env, "provider", "scale", "deepseek", "--reset")
    assert code == 0 and not await redis.hexists(PROVIDER_SLOTS_KEY, "deepseek")
    for args in (("pause", "nosuch"), ("resume", "nosuch"), ("scale", "nosuch", "2")):
        code, _, err = await cli(worker_env, "provider", *args)
        assert code == 1 and "unknown provider 'nosuch'" in err, err


async def test_dlq_list_show_requeue_purge(
    worker_env: dict[str, str], redis: RedisClient, chaishu: Book
) -> None:
    keys = ProviderKeys.for_provider("deepseek")
    good = json.dumps({"task_id": chaishu.task_id, "provider": "deepseek"})
    for raw, reason in ((good, "stalled 4 times"), ("garbage", "not JSON"), ("x", "no task_id")):
        await redis.rpush(keys.dlq, json.dumps(
            {"raw": raw, "reason": reason, "node": "n1", "provider": "deepseek", "at": 1}))
    code, out, _ = await cli(worker_env, "dlq", "list")
    assert code == 0 and "stalled 4 times" in out and "3 dead-lettered item(s)" in out
    code, out, _ = await cli(worker_env, "dlq", "show", "deepseek", "1")
    assert code == 0 and json.loads(out)["reason"] == "not JSON"
    code, _, err = await cli(worker_env, "dlq", "show", "deepseek", "9")
    assert code == 1 and "no entry 9" in err
    code, out, _ = await cli(worker_env, "dlq", "requeue", "deepseek", "0")
    assert code == 0 and "requeued 1 item(s)" in out
    assert await redis.lrange(keys.queue, 0, -1) == [good.encode()]
    code, out, _ = await cli(worker_env, "dlq", "purge", "deepseek", "--yes")
    assert code == 0 and "purged 2 item(s)" in out
    assert await redis.llen(keys.dlq) == 0
    code, _, err = await cli(worker_env, "dlq", "list", "nosuch")
    assert code == 1 and "unknown provider" in err


async def test_doctor_finds_stuck_claims(
    worker_env: dict[str, str], redis: RedisClient, chaishu: Book
) -> None:
    code, out, err = await cli(worker_env, "doctor")
    assert code == 0, out + err
    assert "OK    chapters" in out
    keys = ProviderKeys.for_provider("deepseek")
    server = await redis.time()
    long_ago = server[0] * 1000 - 600_000
    await redis.hset(keys.claims, "c1", json.dumps({"raw": "{}", "token": "t", "node": "gone"}))
    await redis.zadd(keys.leases, {"c1": long_ago})
    await redis.hset(keys.claims, "c2", json.dumps({"raw": "{}", "token": "t", "node": "gone"}))
    await redis.rpush(keys.queue, b'{"task_id": 5}')
    code, out, _ = await cli(worker_env, "doctor")
    assert code == 1
    assert "1 claim(s) expired and not reaped" in out
    assert "1 claim(s) without a lease" in out
    assert "no slot serves it" in out
    states = await read_providers(redis, _settings_from(worker_env), ["deepseek"])
    assert states[0].claimed == 2


def _settings_from(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from kgworker.config import load_settings

    return load_settings(environ=env, dotenv_path=None)
