"""The command line as a new operator meets it: help that explains, exit codes that mean
something, a version flag, shell completion, config show before anything is configured,
and ``status --node`` for a node that is not there, or is (``--check``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from kgworker.cli import app
from kgworker.config import Settings
from kgworker.queue.connection import RedisClient
from kgworker.runtime.handler import Job, SimpleHandler
from kgworker.runtime.worker import WorkerNode
from kgworker.version import __version__

from .test_cli import cli

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
#: Flags of ``kgworker run`` that set one setting each, and that setting's variable.
RUN_SETTINGS = {
    "--node-name": "KG_WORKER_NODE_NAME", "--providers": "KG_WORKER_PROVIDERS",
    "--workers-per-provider": "KG_WORKERS_PER_PROVIDER", "--max-total": "KG_MAX_TOTAL_PROCESSES",
    "--max-per-provider": "KG_MAX_PROCESSES_PER_PROVIDER",
    "--heartbeat-interval": "KG_HEARTBEAT_INTERVAL", "--log-level": "LOG_LEVEL",
    "--log-file": "LOG_FILE", "--log-format": "LOG_FORMAT", "--api": "KG_API_ENABLED",
    "--api-host": "KG_API_HOST", "--api-port": "KG_API_PORT", "--api-token": "KG_API_TOKEN",
}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def _help(*path: str) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="kgworker", env=WIDE)
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_help_has_no_type_for_flags_and_explains_every_setting_flag() -> None:
    paths = list(_commands(typer.main.get_command(app)))
    assert ("run",) in paths and ("task", "retry") in paths and len(paths) > 20
    for path in paths:
        text = _help(*path)
        assert "<bool>" not in text, f"kgworker {' '.join(path)} --help:\n{text}"
    run = re.sub(r"[│\s]+", " ", _help("run"))
    for flag, variable in RUN_SETTINGS.items():
        described = re.search(re.escape(flag) + r"\b.*?\[" + variable + r"; default: ([^\]]+)\]",
                              run)
        assert described, f"{flag} does not name {variable} and its default:\n{run}"
        meaning = run.split(flag, 1)[1].split(f"[{variable};", 1)[0]
        assert re.search(r"[a-z]{3,}", meaning), f"{flag} is described only by its variable"
    assert "[KG_WORKER_NODE_NAME; default: worker-node]" in run
    assert "[KG_API_PORT; default: 9108]" in run and "--burst" in run


def test_version_completion_and_usage_errors_exit_2(worker_env: dict[str, str]) -> None:
    runner = CliRunner()
    for flag in ("-V", "--version"):
        done = runner.invoke(app, [flag], prog_name="kgworker")
        assert (done.exit_code, done.output.strip()) == (0, f"kgworker {__version__}")
    shown = runner.invoke(app, ["--show-completion", "bash"], prog_name="kgworker",
                          env={"SHELL": "/bin/bash"})
    assert shown.exit_code == 0 and "_KGWORKER_COMPLETE" in shown.output, shown.output
    env = {**os.environ, **worker_env}
    usage = [
        ["--bogus"], ["status", "--bogus"], ["nosuch"], ["task", "retry", "abc"],
        ["task", "retry"], ["enqueue"], ["provider", "scale", "rules"],
        ["provider", "scale", "rules", "x"], ["provider", "fallback", "rules", "maybe"],
        ["dlq", "requeue", "rules"], ["status", "--check"], ["eval", "--suite", "nosuch"],
    ]
    for args in usage:
        done = runner.invoke(app, args, prog_name="kgworker", env=env)
        assert done.exit_code == 2, (args, done.exit_code, done.output)


async def test_config_show_before_anything_is_configured(tmp_cwd: object) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "DB_", "NEO4J_", "DATABASE_URL", "KG_", "LOG_"))}
    env["DB_PASSWORD"] = "visible-nowhere-42"
    code, out, err = await cli(env, "config", "show")
    assert code == 2, out + err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert set(rows) == {name.upper() for name in Settings.model_fields}
    assert rows["REDIS_PORT"] == ["6379", "default"]
    assert rows["DB_PASSWORD"] == ["********", "environment"]
    assert "visible-nowhere-42" not in out + err
    assert "config error: DB_HOST: required (or set DATABASE_URL)" in err
    code, out, err = await cli(env, "config", "show", "--json")
    assert code == 2 and json.loads(out)["DB_HOST"] == {"value": "", "source": "default"}


async def test_status_of_a_node_that_is_not_there(worker_env: dict[str, str]) -> None:
    code, out, err = await cli(worker_env, "status", "--node", "nosuch")
    assert code == 1 and out == "", out
    assert "no node named 'nosuch' is registered" in err
    code, out, err = await cli(worker_env, "status", "--node", "nosuch", "--json")
    assert code == 1 and "no node named 'nosuch'" in err


async def test_status_check_of_a_live_a_stopped_and_a_silent_node(
    settings: Settings, worker_env: dict[str, str], redis: RedisClient
) -> None:
    name = "check-node"
    node_settings = settings.model_copy(update={
        "kg_worker_providers": ["rules"], "kg_worker_node_name": name,
        "kg_heartbeat_interval": 1.0, "kg_api_enabled": False,
    })

    async def work(job: Job) -> None:  # pragma: no cover - no job is queued
        raise AssertionError(job)

    node = WorkerNode(node_settings, SimpleHandler(work))
    stop = asyncio.Event()
    running = asyncio.create_task(node.run(stop))
    try:
        deadline = time.monotonic() + 20
        while not await redis.exists(f"kg:nodes:{name}"):
            assert time.monotonic() < deadline, "the node never registered"
            await asyncio.sleep(0.05)
        code, out, err = await cli(worker_env, "status", "--node", name, "--check")
        assert code == 0, err
        assert re.fullmatch(rf"node {name}: alive, heartbeat \d+ s ago \(pid \d+, version .+\)\n",
                            out), out
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 30) == 0
    code, out, err = await cli(worker_env, "status", "--node", name, "--check")
    assert code == 1 and out == "" and f"node {name}: not registered" in err
    await redis.hset("kg:nodes:silent", mapping={"node_id": '"silent"', "pid": "7"})
    await redis.expire("kg:nodes:silent", 100)  # refreshed 80 s ago, TTL 180 s
    code, out, err = await cli(worker_env, "status", "--node", "silent", "--check")
    assert code == 1 and re.search(r"last heartbeat 8\d s ago \(limit 45 s\)", err), err
    code, out, _ = await cli(worker_env, "status", "--node", "silent", "--check",
                             "--max-age", "120")
    assert code == 0 and "alive" in out
