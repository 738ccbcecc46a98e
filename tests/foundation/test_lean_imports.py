"""A ``kgworker run`` node imports only what its configuration uses.

A fresh interpreter goes the node's way: the CLI with every command registered, the run
command, the node, the LLM extractor ``build_handler`` imports, a composed handler and the
node's extras, and a simplified chapter through the name normalisation. What only other
commands, the rules extractor, the HTTP endpoint or a traditional-script text need must not
be loaded by then.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RUN_PATH = """
import json, sys
from kgworker.cli import app
from kgworker.cli.run import _run_async
from kgworker.chaishu.factory import compose_handler
from kgworker.chaishu.node import node_extras, run_worker
from kgworker.config import load_settings
from kgworker.domain.names import name_key
from kgworker.llm.extractor import create_llm_extractor
from kgworker.queue.connection import create_redis
from kgworker.store.graph import create_driver
from kgworker.store.mysql import create_engine

settings = load_settings({"kg_api_enabled": API, "kg_worker_providers": "deepseek",
                          "db_host": "127.0.0.1"})
handler = compose_handler(settings, engine=create_engine(settings), redis=create_redis(settings),
                          driver=create_driver(settings))
node_extras(settings, handler)
name_key("风吹过落霞镇，李长老与王虎并肩而立，良久无言。")
loaded = {m for m in sys.modules}
name_key("蘇晴")
print(json.dumps({"loaded": sorted(loaded), "after_traditional": sorted(sys.modules)}))
"""

#: Modules a node serving LLM providers never needs (or needs only on a rare text).
ABSENT = (
    "jieba", "opencc", "alembic", "rich", "click", "pygments", "webbrowser",
    "kgworker.rules.extractor", "kgworker.rules.text", "kgworker.eval", "kgworker.demo",
    "kgworker.store.migrate", "kgworker.cli.status_view",
)


def _modules(api: bool, cwd: Path) -> dict[str, list[str]]:
    """What the run path loaded; in ``cwd`` so no ``.env`` of a checkout is read."""
    out = subprocess.run(
        [sys.executable, "-c", RUN_PATH.replace("API", repr(api))],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    found: dict[str, list[str]] = json.loads(out.stdout.splitlines()[-1])
    return found


def test_an_llm_node_loads_no_rules_cli_extras_converter_or_http_server(tmp_path: Path) -> None:
    found = _modules(api=False, cwd=tmp_path)
    loaded = set(found["loaded"])
    assert "kgworker.chaishu.node" in loaded and "httpx" in loaded  # the path did run
    assert sorted(m for m in ABSENT if m in loaded) == []
    assert "aiohttp" not in loaded  # the HTTP endpoint is turned off
    assert "opencc" in found["after_traditional"]  # built by the first text that needs it


def test_the_http_endpoint_brings_aiohttp_only_when_enabled(tmp_path: Path) -> None:
    loaded = set(_modules(api=True, cwd=tmp_path)["loaded"])
    assert "aiohttp" in loaded
    assert sorted(m for m in ABSENT if m in loaded) == []
