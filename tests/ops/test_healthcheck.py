"""The endpoint record and ``kgworker healthcheck``: what the image's HEALTHCHECK relies on.

The end-to-end proofs (a real node given ``--api-port`` or a config file) are in
``test_deploy.py``; these pin down the edges: address formats, wildcards, a record that
belongs to a newer node, an unusable place, settings the check must not need.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import pytest
from aiohttp import web

from kgworker.api.server import start_api
from kgworker.cli.healthcheck import HEALTHY, UNHEALTHY, check
from kgworker.config import Settings
from kgworker.observe.endpoint_file import (
    default_path,
    parse_address,
    probe_url,
    publish_endpoint,
    read_endpoint,
    remove_endpoint,
    write_endpoint,
)


@pytest.mark.parametrize(
    ("host", "port"), [("127.0.0.1", 9108), ("::1", 1), ("0.0.0.0", 65535), ("localhost", 80)]
)
def test_address_round_trip(tmp_path: Path, host: str, port: int) -> None:
    write_endpoint(tmp_path / "endpoint", host, port)
    assert read_endpoint(tmp_path / "endpoint") == (host, port)


@pytest.mark.parametrize("text", ["", "9108", "host:", "host:port", "h:0", "h:70000", ":::"])
def test_malformed_records_are_no_record(text: str) -> None:
    assert parse_address(text) is None


def test_wildcard_binds_are_probed_on_loopback() -> None:
    assert probe_url("0.0.0.0", 9108) == "http://127.0.0.1:9108/healthz"
    assert probe_url("::", 9108) == "http://[::1]:9108/healthz"
    assert probe_url("10.0.0.5", 1) == "http://10.0.0.5:1/healthz"


def test_default_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_path() == tmp_path / "kgworker" / "endpoint"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_path() == Path(tempfile.gettempdir()) / f"kgworker-{os.getuid()}" / "endpoint"


def test_a_newer_nodes_record_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "endpoint"
    ours = write_endpoint(path, "127.0.0.1", 1000)
    write_endpoint(path, "127.0.0.1", 2000)  # another node started since
    remove_endpoint(path, ours)
    assert read_endpoint(path) == ("127.0.0.1", 2000)
    remove_endpoint(path, "127.0.0.1:2000\n")
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [], "no partial file is left"


async def test_an_unusable_place_does_not_stop_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        cleanup = publish_endpoint(blocker / "endpoint", "127.0.0.1", 1)
    await cleanup()
    assert "cannot record its address" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "kgworker-x"
    foreign.mkdir()
    os.chown(foreign, 12345, 12345)
    with pytest.raises(PermissionError):
        write_endpoint(foreign / "endpoint", "127.0.0.1", 1)
    assert not (foreign / "endpoint").exists()


async def test_check_needs_no_other_setting(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node configured by a file the check is not given: no DB_HOST here, still healthy."""
    record = tmp_path / "endpoint"
    handle = await start_api(settings.model_copy(update={"kg_api_state_file": record}))
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("DB_", "REDIS_", "NEO4J_", "KG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KG_API_STATE_FILE", str(record))
    try:
        code, message = await asyncio.to_thread(check, tmp_path / "missing.env", 4.0)
    finally:
        await handle.close()
    assert (code, message) == (HEALTHY, f"http://127.0.0.1:{handle.port}/healthz: ok")
    code, message = await asyncio.to_thread(check, None, 4.0)
    assert code == UNHEALTHY and "no endpoint recorded" in message


async def test_check_wants_an_ok_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def starting(_request: web.Request) -> web.Response:
        return web.json_response({"status": "starting"})

    app = web.Application()
    app.router.add_get("/healthz", starting)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    write_endpoint(tmp_path / "endpoint", "127.0.0.1", port)
    monkeypatch.setenv("KG_API_STATE_FILE", str(tmp_path / "endpoint"))
    monkeypatch.chdir(tmp_path)
    try:
        code, message = await asyncio.to_thread(check, None, 4.0)
    finally:
        await runner.cleanup()
    assert code == UNHEALTHY and "starting" in message


@pytest.mark.parametrize(("value", "expected"), [("false", HEALTHY), ("off", HEALTHY),
                                                 ("maybe", UNHEALTHY), ("true", UNHEALTHY)])
def test_turned_off_by_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    """No record: healthy only when the endpoint is really off (an invalid value is not)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KG_API_STATE_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("KG_API_ENABLED", value)
    assert check(None, 1.0)[0] == expected
