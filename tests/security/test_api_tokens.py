"""API token rules not covered by tests/ops/test_api.py: path tricks never reach a
protected route without the token, and a real ``kgworker run`` bound to a non-loopback
address without ``KG_API_TOKEN`` refuses to start (exit 2, no traceback)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr

from kgworker.api.server import start_api
from kgworker.config import Settings, settings_to_env
from kgworker.queue.connection import RedisClient
from tests.security.conftest import clean_env

TOKEN = "tok-" + "9" * 32
TRICKS = ["/status/", "//status", "/healthz/../status", "/%73tatus", "/./status",
          "/healthz%2F..%2Fstatus", "/metrics?x=/healthz", "/STATUS", "/healthz/../metrics"]


async def test_path_tricks_do_not_skip_the_token(settings: Settings, redis: RedisClient) -> None:
    handle = await start_api(settings.model_copy(update={
        "kg_api_host": "127.0.0.1", "kg_api_port": 0, "kg_api_token": SecretStr(TOKEN)}),
        redis=redis)
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            for path in TRICKS:
                response = await client.get(path)
                # ("//status" is a request of "/": the public redirect to the fleet page)
                redirect = response.status_code == 302 and response.headers["Location"] == "/fleet"
                assert response.status_code in (401, 404) or redirect, (path, response.status_code)
                assert TOKEN not in response.text
            ok = await client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
    finally:
        await handle.close()


async def test_run_on_all_interfaces_without_token_exits_2(settings: Settings,
                                                           tmp_path: Path) -> None:
    env = clean_env(**settings_to_env(settings))
    env.update({"KG_API_HOST": "0.0.0.0", "KG_API_TOKEN": "", "KG_API_PORT": "0"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", "run", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 2, text
    assert "KG_API_TOKEN" in text and "Traceback" not in text, text
