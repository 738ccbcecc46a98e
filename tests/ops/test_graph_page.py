"""graph.html in a real headless Chromium: it draws the graph offline and filters it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kgworker.observe.graph_html import (
    LIBRARY,
    BookGraph,
    GraphEdge,
    GraphNode,
    render_graph_html,
    write_graph_html,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
HOSTILE = "</script><img src=x onerror=alert(1)>"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium: run scripts/browser (Debian's chromium package)")
    return found


def sample() -> BookGraph:
    graph = BookGraph("青石渡", chapter_titles={1: "雾", 2: "丝瓜架", 3: "火"})
    graph.nodes = [
        GraphNode("c1", "character", "沈青山", [1, 2, 3], mentions=30),
        GraphNode("c2", "character", "李明月", [2, 3], mentions=12),
        GraphNode("c3", "character", HOSTILE, [3], mentions=1),
        GraphNode("l1", "location", "青石渡", [1, 2], mentions=8),
        GraphNode("o1", "organization", "永昌商行", [3], mentions=5),
        GraphNode("e1", "event", "３号货仓着火", [3]),
    ]
    graph.edges = [
        GraphEdge("c1", "c2", "LOVES", [2, 3], strength=0.8),
        GraphEdge("c1", "e1", "PARTICIPATES_IN", [3]),
        GraphEdge("e1", "l1", "OCCURS_IN", [3]),
        GraphEdge("c1", "missing", "KNOWS", [1]),  # an end that is not a node: dropped
    ]
    return graph


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
            "--window-size=1280,800", *args,
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rendered(dom: str) -> tuple[int, int]:
    match = re.search(r'data-rendered-nodes="(\d+)" data-ink-pixels="(\d+)"', dom)
    assert match, "the page's script did not finish drawing"
    return int(match.group(1)), int(match.group(2))


def test_page_is_self_contained_and_escapes_names() -> None:
    page = render_graph_html(sample())
    assert "<script src" not in page and "http://" not in page.split("<script>")[0]
    assert HOSTILE not in page, "names are JSON data with < and > escaped, never markup"
    assert page.count("</script>") == 3  # data, library, page script
    licence = LIBRARY.with_name("LICENSE-vis-network").read_text()
    assert "MIT" in licence and "vis-network" in licence


def test_graph_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    page = write_graph_html(sample(), tmp_path / "graph.html")
    dom = run_chromium(binary, tmp_path / "profile-1", "--dump-dom", page.as_uri())
    nodes, ink = rendered(dom)
    assert nodes == 6
    assert ink > 2000, "the canvas has drawn nodes and labels"
    assert "<img" not in dom.split('id="kg-data"')[0]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "graph-page.png"
    run_chromium(binary, tmp_path / "profile-2", f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 10_000
    filtered = page.as_uri() + "#from=1&to=1&types=character,location"
    nodes, ink = rendered(run_chromium(binary, tmp_path / "profile-3", "--dump-dom", filtered))
    assert nodes == 2  # 沈青山 and 青石渡 are the chapter-1 characters and places
    assert ink > 500
