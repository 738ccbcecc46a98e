"""Configuration rules: precedence, redaction, URL forms and the exit-2 errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kgworker.config import (
    SOURCE_CLI,
    SOURCE_DEFAULT,
    SOURCE_DOTENV,
    SOURCE_ENV,
    ConfigError,
    describe_settings,
    load_settings,
    settings_to_env,
)

REQUIRED = {"DB_HOST": "db.example"}


def test_contract_defaults() -> None:
    s = load_settings(environ=REQUIRED, dotenv_path=None)
    assert (s.redis_host, s.redis_port, s.redis_db) == ("localhost", 6379, 0)
    assert (s.db_port, s.db_user, s.db_name, s.db_charset) == (3306, "root", "chaishu", "utf8mb4")
    assert (s.db_pool_size, s.db_pool_max_overflow, s.db_pool_timeout) == (2, 3, 30)
    assert s.db_pool_recycle == 3600 and s.effective_pool_recycle == 1800
    assert s.db_pool_pre_ping is True
    assert (s.neo4j_uri, s.neo4j_user) == ("neo4j://localhost:7687", "neo4j")
    assert s.kg_worker_node_name == "worker-node"
    assert (s.kg_workers_per_provider, s.kg_max_total_processes) == (2, 50)
    assert (s.kg_max_processes_per_provider, s.kg_worker_guard_interval) == (10, 30)
    assert s.kg_worker_providers == [] and s.log_level == "INFO"
    assert s.sources["redis_host"] == SOURCE_DEFAULT


def test_precedence_cli_over_env_over_config_file_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DB_HOST=from-dotenv\nREDIS_PORT=1001\nREDIS_DB=1\nDB_USER=u1\nLOG_LEVEL=debug\n")
    config = tmp_path / "kg.conf"
    config.write_text("REDIS_PORT=1002\nREDIS_DB=2\nDB_USER=u2\n")
    environ = {"REDIS_PORT": "1003", "REDIS_DB": "3"}
    s = load_settings(
        {"redis_port": 1004, "kg_worker_node_name": None},
        config_file=config,
        environ=environ,
        dotenv_path=dotenv,
    )
    assert s.redis_port == 1004 and s.sources["redis_port"] == SOURCE_CLI
    assert s.redis_db == 3 and s.sources["redis_db"] == SOURCE_ENV
    assert s.db_user == "u2" and s.sources["db_user"].startswith("--config file")
    assert s.db_host == "from-dotenv" and s.sources["db_host"] == SOURCE_DOTENV
    assert s.log_level == "DEBUG"
    # a None CLI value means "flag not given": the lower source stays in force
    assert s.kg_worker_node_name == "worker-node"


def test_lists_and_aliases() -> None:
    s = load_settings(
        environ={
            **REQUIRED,
            "KG_WORKER_PROVIDERS": "DeepSeek, rules,,deepseek",
            "WORKER_NODE_NAME": "edge-1",
            "REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
        },
        dotenv_path=None,
    )
    assert s.kg_worker_providers == ["deepseek", "rules"]
    assert s.kg_worker_node_name == "edge-1"
    assert s.redis_sentinels == ["127.0.0.1:26379", "127.0.0.1:26380"]
    both = load_settings(
        environ={**REQUIRED, "WORKER_NODE_NAME": "alias", "KG_WORKER_NODE_NAME": "canonical"},
        dotenv_path=None,
    )
    assert both.kg_worker_node_name == "canonical"


def test_url_forms() -> None:
    s = load_settings(
        environ={
            "DATABASE_URL": "mysql://app:p%40ss@db.internal:3307/books",
            "REDIS_URL": "rediss://:redispw@cache:6380/4",
            "NEO4J_URI": "neo4j+s://graph:7687",
        },
        dotenv_path=None,
    )
    parts = s.mysql_parts()
    assert (parts.host, parts.port, parts.user, parts.password, parts.database) == (
        "db.internal",
        3307,
        "app",
        "p@ss",
        "books",
    )
    assert s.sqlalchemy_url().startswith("mysql+asyncmy://app:p%40ss@db.internal:3307/books")
    endpoints = s.endpoints()
    assert "redispw" not in endpoints["redis"] and "***" in endpoints["redis"]
    assert "p@ss" not in str(endpoints)


def test_every_problem_named_once_per_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"DB_HOST": "h", "DB_PORT": "abc", "KG_MAX_TOTAL_PROCESSES": "0"},
            dotenv_path=None,
        )
    problems = info.value.problems
    assert len(problems) == 2
    assert any(p.startswith("DB_PORT:") and "'abc'" in p for p in problems)
    assert any(p.startswith("KG_MAX_TOTAL_PROCESSES:") for p in problems)


def test_missing_required_and_bad_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, dotenv_path=None)
    assert info.value.problems == ["DB_HOST: required (or set DATABASE_URL)"]
    for variable, value in [
        ("NEO4J_URI", "http://x"),
        ("REDIS_SENTINELS", "nohostport"),
        ("LOG_LEVEL", "LOUD"),
        ("NODE_ROLE", "boss"),
        ("DB_POOL_PRE_PING", "perhaps"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_settings(environ={**REQUIRED, variable: value}, dotenv_path=None)
        assert info.value.problems[0].startswith(f"{variable}:"), info.value.problems


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=REQUIRED, config_file=tmp_path / "nope.env", dotenv_path=None)
    assert "--config" in info.value.problems[0]


def test_secrets_are_secret_and_redacted() -> None:
    s = load_settings(
        environ={**REQUIRED, "DB_PASSWORD": "hunter22", "NEO4J_PASSWORD": "n3o-secret"},
        dotenv_path=None,
    )
    assert "hunter22" not in repr(s) and "n3o-secret" not in str(s.model_dump())
    shown = {name: value for name, value, _ in describe_settings(s)}
    assert shown["DB_PASSWORD"] == "********" and shown["NEO4J_PASSWORD"] == "********"
    assert shown["REDIS_PASSWORD"] == ""
    assert settings_to_env(s)["DB_PASSWORD"] == "hunter22"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.upper() not in _all_variables()}
    return subprocess.run(
        [sys.executable, "-m", "kgworker", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _all_variables() -> set[str]:
    from kgworker.config import ENV_ALIASES, Settings

    return {name.upper() for name in Settings.model_fields} | set(ENV_ALIASES)


def test_cli_bad_value_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = _cli("config", "show", env={"DB_HOST": "h", "DB_PORT": "abc"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "DB_PORT" in result.stderr and "Traceback" not in result.stderr


def test_cli_config_show_sources_and_redaction(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB_HOST=dotenv-host\nDB_PASSWORD=s3cret-pw\n")
    conf = tmp_path / "node.conf"
    conf.write_text("KG_WORKER_NODE_NAME=from-file\n")
    result = _cli(
        "--config", str(conf), "config", "show", env={"REDIS_PORT": "7777"}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "dotenv-host" in lines["DB_HOST"] and lines["DB_HOST"].endswith(".env")
    assert "7777" in lines["REDIS_PORT"] and lines["REDIS_PORT"].endswith("environment")
    assert "from-file" in lines["KG_WORKER_NODE_NAME"] and "--config file" in lines[
        "KG_WORKER_NODE_NAME"
    ]
    assert "s3cret-pw" not in result.stdout and "********" in lines["DB_PASSWORD"]


def test_cli_version(tmp_path: Path) -> None:
    from kgworker import __version__

    result = _cli("--version", env={}, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"kgworker {__version__}"
