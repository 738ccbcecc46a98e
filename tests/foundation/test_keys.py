"""One home for Redis keys and scripts: the keys module, the Lua folder and their docs agree.

The runtime half of "complete" is in ``tests/conftest.py``: every test's Redis database is
scanned at teardown and a key of ours that no :data:`kgworker.keys.KEY_SPECS` row matches
fails the test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from kgworker import keys
from kgworker.queue import scripts

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kgworker"
LUA = PACKAGE / "queue" / "lua"
#: How a Redis key of ours or of chaishu's starts (a literal that does is a key literal).
KEY_START = re.compile(r"^\{?(kg:|kgw:|ai:provider:)")


def _literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_key_literals_and_lua_only_in_their_homes() -> None:
    stray: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "keys.py":
            continue
        for line, value in _literals(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if KEY_START.match(value):
                stray.append(f"{where}: key literal {value!r}")
            if "redis.call(" in value:
                stray.append(f"{where}: Lua text")
    assert stray == []


def test_redis_keys_doc_is_generated_from_the_code() -> None:
    text = (ROOT / "docs" / "redis-keys.md").read_text(encoding="utf-8")
    for marker, body in (("keys", keys.render_markdown()), ("scripts", scripts.render_markdown())):
        section = text.split(f"<!-- {marker}:start -->\n", 1)[1].split(f"<!-- {marker}:end -->")[0]
        assert section == body, f"docs/redis-keys.md {marker} table is stale: run scripts/sync-docs"


@pytest.mark.parametrize("name", scripts.SCRIPT_NAMES)
def test_every_script_is_headed_and_names_documented_keys(name: str) -> None:
    source = (LUA / f"{name}.lua").read_text(encoding="utf-8")
    header = [line for line in source.splitlines() if line.startswith("--")]
    assert header[0].startswith(f"-- {name}.lua: "), "first line names the script"
    assert any(line.startswith("-- KEYS") for line in header)
    assert any(line.startswith("-- ARGV") for line in header)
    assert any(line.startswith("-- Returns") for line in header)
    for line in header:
        for key in re.findall(r"\{?k(?:g|gw):[\w:{}<>.-]+|ai:provider:\w+:P", line):
            sample = re.sub(r"\bP\b", "deepseek", key.rstrip(".,)"))
            assert keys.spec_for(sample) is not None, f"{name}.lua names {key}, not in keys.py"


def test_includes_are_expanded_and_shared() -> None:
    users = [n for n in scripts.SCRIPT_NAMES
             if "--#include fenced_claim" in (LUA / f"{n}.lua").read_text(encoding="utf-8")]
    assert set(users) >= {"ack", "dead_letter", "open", "release", "renew"}
    for name in scripts.SCRIPT_NAMES:
        expanded = scripts.script(name).source
        assert scripts.INCLUDE not in expanded
        assert expanded.count("local function fenced_claim") <= 1


def test_spec_patterns_match_what_the_builders_build() -> None:
    provider = keys.ProviderKeys.for_provider("DeepSeek")
    llm = keys.LlmKeys.for_provider("deepseek")
    built = [
        keys.queue_key("deepseek"), keys.node_key("box-1"), keys.worker_key("17"),
        keys.suspend_key("deepseek"), keys.fail_key("deepseek"), keys.reaper_lock_key("x"),
        keys.LIVENESS_KEY, keys.EPOCH_KEY, keys.PROVIDER_SLOTS_KEY, keys.FALLBACK_KEY,
        keys.WORKER_SEQ_KEY, keys.kgw_node_key("node"),
        keys.DUTIES_LOCK_KEY, keys.PROGRESS_CHANNEL,
        *(getattr(provider, f) for f in provider.__slots__ if f != "provider"),
        *(getattr(llm, f) for f in llm.__slots__),
    ]
    assert [k for k in built if keys.spec_for(k) is None] == []
    assert keys.spec_for("kgw:nothing:here") is None
