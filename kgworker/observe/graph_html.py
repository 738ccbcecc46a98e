"""A self-contained ``graph.html`` of one book's knowledge graph, for any browser, offline.

The page (``graph_page.html`` next to this module) carries its own JavaScript (vis-network,
vendored under ``vendor/`` with its licence) and its data as inert JSON, so it opens from a
file with no network and no server. Names come from a novel or an LLM: they are only ever
JSON data drawn on a canvas or set as ``textContent``, never HTML.

What it shows and why: node size follows mentions and edge width the relation's strength,
so the cast's centre is visible at a glance; FRIEND, ENEMY and KNOWS are two-way and drawn
without arrowheads, the others with one; edge labels appear for the edge under the pointer
(or for all with the "labels" toggle), and parallel edges between two people bend apart, so
labels never lie on top of each other. A legend with counts doubles as the filters (types
present only); a node's panel lists its aliases, relations, events and their participants.
The panel and the legend float over the graph, so at 800×600 or on a phone the graph keeps
the whole width. Link parameters: ``#from=2&to=5&types=character&q=陈&node=沈青山&labels=1``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
VENDOR = HERE / "vendor"
LIBRARY = VENDOR / "vis-network.min.js"
TEMPLATE = HERE / "graph_page.html"
_SLOT = re.compile(r"@@(TITLE|LIBRARY|DATA)@@")

#: Node types, their colours and legend labels.
NODE_TYPES: dict[str, tuple[str, str]] = {
    "character": ("#e4572e", "人物 characters"),
    "location": ("#29a19c", "地点 places"),
    "organization": ("#6c5ce7", "组织 organizations"),
    "event": ("#f2a541", "事件 events"),
}
#: Edge types: colour, legend label, two-way (no arrowhead), dashed.
RELATION_TYPES: dict[str, tuple[str, str, bool, bool]] = {
    "FRIEND": ("#2e9e5b", "朋友 friends", True, False),
    "ENEMY": ("#d62f2f", "敌对 enemies", True, False),
    "KNOWS": ("#8a8f98", "相识 know each other", True, False),
    "LOVES": ("#e05aa3", "爱慕 loves", False, False),
    "HATES": ("#8e2a58", "憎恨 hates", False, False),
    "LEADS": ("#2f6fd6", "领导 leads", False, False),
    "FOLLOWS": ("#5aa9e6", "追随 follows", False, False),
    "PARTICIPATES_IN": ("#e0a030", "参与 takes part in", False, True),
    "OCCURS_IN": ("#29a19c", "发生于 happens at", False, True),
}
SYMMETRIC_TYPES = frozenset(k for k, (_, _, two_way, _) in RELATION_TYPES.items() if two_way)


@dataclass
class GraphNode:
    id: str
    type: str  #: one of NODE_TYPES
    name: str
    chapters: list[int] = field(default_factory=list)  #: chapter numbers it appears in
    description: str = ""
    mentions: int = 1
    aliases: list[str] = field(default_factory=list)  #: other names it is known by


@dataclass
class GraphEdge:
    source: str
    target: str
    type: str  #: FRIEND, KNOWS, PARTICIPATES_IN, OCCURS_IN, ...
    chapters: list[int] = field(default_factory=list)
    description: str = ""  #: for PARTICIPATES_IN: the participant's role
    strength: float = 0.5


@dataclass
class BookGraph:
    title: str
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    chapter_titles: dict[int, str] = field(default_factory=dict)

    def chapter_numbers(self) -> list[int]:
        found = set(self.chapter_titles)
        for node in self.nodes:
            found.update(node.chapters)
        for edge in self.edges:
            found.update(edge.chapters)
        return sorted(found) or [1]


def _json_for_script(value: object) -> str:
    """JSON that cannot end its ``<script>`` element or open a comment inside it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_graph_html(graph: BookGraph) -> str:
    """The whole page as one string (library, data, styles and script inlined)."""
    library = LIBRARY.read_text(encoding="utf-8").replace("</script", "<\\/script")
    known = {n.id for n in graph.nodes}
    data = {
        "title": graph.title,
        "chapters": graph.chapter_numbers(),
        "chapterTitles": {str(k): v for k, v in graph.chapter_titles.items()},
        "types": {k: {"color": c, "label": label} for k, (c, label) in NODE_TYPES.items()},
        "relations": {
            k: {"color": c, "label": label, "symmetric": two_way, "dashed": dashed}
            for k, (c, label, two_way, dashed) in RELATION_TYPES.items()
        },
        "nodes": [asdict(n) for n in graph.nodes],
        "edges": [asdict(e) for e in graph.edges if e.source in known and e.target in known],
    }
    parts = {
        "TITLE": html.escape(graph.title),
        "LIBRARY": library,
        "DATA": _json_for_script(data),
    }
    # One pass: a name that reads "@@LIBRARY@@" stays a name.
    return _SLOT.sub(lambda m: parts[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def write_graph_html(graph: BookGraph, path: Path | str) -> Path:
    target = Path(path)
    target.write_text(render_graph_html(graph), encoding="utf-8")
    return target


def top_nodes(graph: BookGraph, kind: str, limit: int = 5) -> list[GraphNode]:
    """The most mentioned nodes of a type (ties by name), for summaries."""
    chosen: Iterable[GraphNode] = (n for n in graph.nodes if n.type == kind)
    return sorted(chosen, key=lambda n: (-n.mentions, n.name))[:limit]
