"""graph.html in a real headless Chromium: it draws offline, reads well at 800×600 and on a
phone, filters, and shows a node's aliases, relations and events.

Chromium is driven over its DevTools protocol (aiohttp's websocket client): the command
line cannot make a window narrower than 500 px, and a phone needs device emulation. The
page writes what it drew into ``data-*`` attributes of ``<body>`` once it is done; the
test waits for them with a promise in the page, not with sleeps. Screenshots go to
``artifacts/`` for people to look at.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
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
DESKTOP = {"width": 800, "height": 600, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
#: Resolves with the page's report (the body's data-* attributes) once it has drawn.
REPORT = """new Promise(resolve => {
  const read = () => Object.fromEntries([...document.body.attributes]
    .filter(a => a.name.startsWith("data-")).map(a => [a.name.slice(5), a.value]));
  const done = () => document.body && document.body.hasAttribute("data-rendered-nodes");
  if (done()) { resolve(JSON.stringify(read())); return; }
  new MutationObserver((_, observer) => {
    if (done()) { observer.disconnect(); resolve(JSON.stringify(read())); }
  }).observe(document.documentElement, { attributes: true, subtree: true });
})"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium: run scripts/browser (Debian's chromium package)")
    return found


def sample() -> BookGraph:
    graph = BookGraph("青石渡", chapter_titles={1: "雾", 2: "丝瓜架", 3: "火"})
    graph.nodes = [
        GraphNode("c1", "character", "沈青山", [1, 2, 3], mentions=30,
                  aliases=["沈三", "沈先生", "青山"]),
        GraphNode("c2", "character", "李明月", [2, 3], mentions=12, aliases=["明月"]),
        GraphNode("c4", "character", "李明", [1, 2, 3], mentions=20, aliases=["阿明"]),
        GraphNode("c5", "character", "赵铁生", [2, 3], mentions=15),
        GraphNode("c3", "character", HOSTILE, [3], mentions=1),
        GraphNode("l1", "location", "青石渡", [1, 2], mentions=8),
        GraphNode("o1", "organization", "永昌商行", [3], mentions=5),
        GraphNode("e1", "event", "３号货仓着火", [3]),
    ]
    graph.edges = [
        GraphEdge("c2", "c1", "LOVES", [2, 3], strength=0.8),
        GraphEdge("c1", "c4", "FRIEND", [1], strength=0.8),
        GraphEdge("c4", "c1", "ENEMY", [3], strength=0.4),  # the same two people again
        GraphEdge("c1", "c4", "KNOWS", [2], strength=0.6),
        GraphEdge("c4", "c5", "FOLLOWS", [2, 3], strength=0.6),
        GraphEdge("c1", "c5", "ENEMY", [3], strength=1.0),
        GraphEdge("c1", "e1", "PARTICIPATES_IN", [3], description="救火者"),
        GraphEdge("c5", "e1", "PARTICIPATES_IN", [3], description="纵火者"),
        GraphEdge("e1", "l1", "OCCURS_IN", [3]),
        GraphEdge("c1", "missing", "KNOWS", [1]),  # an end that is not a node: dropped
    ]
    return graph


async def _call(ws: Any, ids: list[int], method: str, **params: Any) -> dict[str, Any]:
    ids.append(len(ids) + 1)
    await ws.send_json({"id": ids[-1], "method": method, "params": params})
    async for message in ws:
        reply = json.loads(message.data)
        if reply.get("id") == ids[-1]:
            assert "error" not in reply, reply
            result = dict(reply.get("result", {}))
            assert "exceptionDetails" not in result, result["exceptionDetails"]
            return result
    raise AssertionError(f"Chromium closed the connection during {method}")


async def _event(ws: Any, method: str) -> None:
    async for message in ws:
        if json.loads(message.data).get("method") == method:
            return
    raise AssertionError(f"Chromium closed the connection before {method}")


async def _open(binary: str, profile: Path, url: str, device: dict[str, Any],
                shot: Path | None) -> tuple[dict[str, str], str]:
    """(the page's report, its DOM) after it has drawn; a screenshot to ``shot``."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "Chromium exited before it listened"
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = found and int(found.group(1))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids: list[int] = []
                await _call(ws, ids, "Emulation.setDeviceMetricsOverride", **device)
                await _call(ws, ids, "Page.enable")
                await _call(ws, ids, "Page.navigate", url=url)
                await _event(ws, "Page.loadEventFired")
                done = await _call(ws, ids, "Runtime.evaluate", expression=REPORT,
                                   awaitPromise=True, returnByValue=True)
                report = json.loads(done["result"]["value"])
                dom = await _call(ws, ids, "Runtime.evaluate", returnByValue=True,
                                  expression="document.documentElement.outerHTML")
                if shot is not None:
                    image = await _call(ws, ids, "Page.captureScreenshot", format="png")
                    shot.write_bytes(base64.b64decode(image["data"]))
                return report, str(dom["result"]["value"])
    finally:
        proc.terminate()
        await proc.wait()


async def view(binary: str, tmp: Path, page: Path, device: dict[str, Any], hash_: str = "",
               shot: str | None = None) -> tuple[dict[str, str], str]:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / shot if shot else None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return await asyncio.wait_for(
        _open(binary, profile, page.as_uri() + hash_, device, target), 120
    )


def test_page_is_self_contained_and_escapes_names() -> None:
    page = render_graph_html(sample())
    assert "<script src" not in page and "http://" not in page.split("<script>")[0]
    assert HOSTILE not in page, "names are JSON data with < and > escaped, never markup"
    assert page.count("</script>") == 3  # data, library, page script
    licence = LIBRARY.with_name("LICENSE-vis-network").read_text()
    assert "MIT" in licence and "vis-network" in licence


def test_a_name_cannot_fill_a_slot_of_the_page() -> None:
    graph = BookGraph("@@DATA@@", nodes=[GraphNode("c1", "character", "@@LIBRARY@@")])
    page = render_graph_html(graph)
    assert page.count("@version 10.1.5") == 1  # the library is in once, not once per name
    assert '"name":"@@LIBRARY@@"' in page and "<title>@@DATA@@ ·" in page


async def test_graph_reads_well_at_800_by_600(tmp_path: Path) -> None:
    binary = chromium()
    page = write_graph_html(sample(), tmp_path / "graph.html")
    report, dom = await view(binary, tmp_path, page, DESKTOP, shot="graph-page-800x600.png")
    assert report["rendered-nodes"] == "8" and int(report["ink-pixels"]) > 2000
    assert report["graph-width"] == "800", "no side panel takes width from the graph"
    assert report["nodes-outside"] == "0"
    assert report["symmetric-arrows"] == "0", "FRIEND, ENEMY and KNOWS have no arrowheads"
    assert report["labels"] == "0", "edge labels wait for the pointer or the toggle"
    assert "<img" not in dom.split('id="kg-data"')[0]
    legend = dom.split('id="legend"')[1].split("</nav>")[0]
    assert "人物 characters" in legend and "事件 events" in legend  # present types only
    assert re.search(r"ENEMY</span><span class=\"n\">2<", legend)  # with counts
    assert "LEADS" not in legend and "HATES" not in legend  # absent types: no filter
    labelled, dom = await view(binary, tmp_path, page, DESKTOP, "#labels=1",
                               shot="graph-page-800x600-labels.png")
    assert labelled["labels"] == "7", "one label per pair of nodes, not one per relation"
    assert int(labelled["label-gap"]) > 0, "no two labels at one point"


async def test_node_panel_lists_aliases_and_events_on_a_phone(tmp_path: Path) -> None:
    binary = chromium()
    page = write_graph_html(sample(), tmp_path / "graph.html")
    report, dom = await view(binary, tmp_path, page, PHONE, "#node=沈青山",
                             shot="graph-page-phone.png")
    assert report["window-width"] == "390" and report["graph-width"] == "390"
    assert report["panel"] == "open" and report["selected-visible"] == "true"
    panel = dom.split('id="detailsBody"')[1].split("</aside>")[0]
    assert all(f'class="alias">{a}<' in panel for a in ("沈三", "沈先生", "青山"))
    assert "relations (5)" in panel and "events (1)" in panel and "(救火者)" in panel
    closed, _ = await view(binary, tmp_path, page, PHONE)
    assert closed["panel"] == "closed" and closed["nodes-outside"] == "0"
    event, dom = await view(binary, tmp_path, page, DESKTOP, "#node=３号货仓着火")
    assert event["selected-visible"] == "true"
    panel = dom.split('id="detailsBody"')[1].split("</aside>")[0]
    assert "participants (2)" in panel and "(纵火者)" in panel and "where (1)" in panel


async def test_filters_from_the_link(tmp_path: Path) -> None:
    binary = chromium()
    page = write_graph_html(sample(), tmp_path / "graph.html")
    report, _ = await view(binary, tmp_path, page, DESKTOP, "#from=1&to=1&types=character,location")
    assert report["rendered-nodes"] == "3"  # 沈青山, 李明 and 青石渡 are in chapter 1
    found, _ = await view(binary, tmp_path, page, DESKTOP, "#q=阿明")
    assert found["rendered-nodes"] == "1"  # a name search finds aliases too
