"""A self-contained ``graph.html`` of one book's knowledge graph, for any browser, offline.

The page carries its own JavaScript (vis-network, vendored under ``vendor/`` with its
licence) and its data as inert JSON, so it opens from a file with no network and no
server. Names come from a novel or an LLM: they are only ever JSON data drawn on a canvas
or set as ``textContent``, never HTML. Filters: chapter range, entity types, relation
types and a name search; clicking a node lists its chapters and relations.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

VENDOR = Path(__file__).with_name("vendor")
LIBRARY = VENDOR / "vis-network.min.js"

#: Node types, their colours and legend labels.
NODE_TYPES: dict[str, tuple[str, str]] = {
    "character": ("#e4572e", "人物 characters"),
    "location": ("#29a19c", "地点 places"),
    "organization": ("#6c5ce7", "组织 organizations"),
    "event": ("#f2a541", "事件 events"),
}


@dataclass
class GraphNode:
    id: str
    type: str  #: one of NODE_TYPES
    name: str
    chapters: list[int] = field(default_factory=list)  #: chapter numbers it appears in
    description: str = ""
    mentions: int = 1


@dataclass
class GraphEdge:
    source: str
    target: str
    type: str  #: FRIEND, KNOWS, PARTICIPATES_IN, OCCURS_IN, ...
    chapters: list[int] = field(default_factory=list)
    description: str = ""
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
        "nodes": [asdict(n) for n in graph.nodes],
        "edges": [asdict(e) for e in graph.edges if e.source in known and e.target in known],
    }
    return (
        PAGE.replace("@@TITLE@@", html.escape(graph.title))
        .replace("@@LIBRARY@@", library)
        .replace("@@DATA@@", _json_for_script(data))
    )


def write_graph_html(graph: BookGraph, path: Path | str) -> Path:
    target = Path(path)
    target.write_text(render_graph_html(graph), encoding="utf-8")
    return target


def top_nodes(graph: BookGraph, kind: str, limit: int = 5) -> list[GraphNode]:
    """The most mentioned nodes of a type (ties by name), for summaries."""
    chosen: Iterable[GraphNode] = (n for n in graph.nodes if n.type == kind)
    return sorted(chosen, key=lambda n: (-n.mentions, n.name))[:limit]


PAGE = """<!DOCTYPE html>
<html lang="zh">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@ · knowledge graph</title>
<style>
  html, body { margin: 0; height: 100%; color: #222; font: 14px/1.4 "Noto Sans CJK SC",
               "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", system-ui, sans-serif; }
  body { display: flex; flex-direction: column; }
  header { padding: 8px 14px; background: #f5f5f2; border-bottom: 1px solid #ddd;
           display: flex; flex-wrap: wrap; gap: 8px 22px; align-items: center; }
  header h1 { font-size: 17px; margin: 0 8px 0 0; }
  fieldset { border: 0; margin: 0; padding: 0; display: flex; gap: 10px; align-items: center; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; }
  main { flex: 1; display: flex; min-height: 0; }
  #graph { flex: 1; min-width: 0; background: #fff; }
  aside { width: 280px; overflow: auto; padding: 10px 14px; border-left: 1px solid #ddd;
          background: #fafafa; }
  aside h2 { font-size: 15px; margin: 4px 0; }
  #counts { color: #555; }
  input[type=range] { width: 120px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <fieldset><legend>chapters</legend>
    <input id="from" type="range" step="1"> <span id="fromLabel"></span> –
    <input id="to" type="range" step="1"> <span id="toLabel"></span>
  </fieldset>
  <fieldset id="typeFilters"></fieldset>
  <fieldset id="relationFilters"></fieldset>
  <input id="search" type="search" placeholder="name…">
  <span id="counts"></span>
</header>
<main>
  <div id="graph"></div>
  <aside id="details"><h2>Click a node</h2><p>Its chapters and relations show here.</p></aside>
</main>
<script id="kg-data" type="application/json">@@DATA@@</script>
<script>@@LIBRARY@@</script>
<script>
(function () {
  "use strict";
  var FONTS = "'Noto Sans CJK SC', 'WenQuanYi Micro Hei', 'PingFang SC', 'Microsoft YaHei', " +
    "system-ui, sans-serif";
  var data = JSON.parse(document.getElementById("kg-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  $("title").textContent = data.title;
  var chapters = data.chapters, first = chapters[0], last = chapters[chapters.length - 1];
  [$("from"), $("to")].forEach(function (el) { el.min = first; el.max = last; });
  $("from").value = first; $("to").value = last;
  var state = { types: {}, relations: {}, query: "" };
  // A view can be shared as a link: #from=2&to=5&types=character,location&q=name
  var wanted = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
    var kv = pair.split("=");
    if (kv[0]) { wanted[kv[0]] = decodeURIComponent(kv[1] || ""); }
  });
  if (wanted.from) { $("from").value = wanted.from; }
  if (wanted.to) { $("to").value = wanted.to; }
  if (wanted.q) { state.query = wanted.q; $("search").value = wanted.q; }
  var onlyTypes = wanted.types ? wanted.types.split(",") : null;

  function checkbox(parent, key, label, color, store) {
    var wrap = document.createElement("label"), box = document.createElement("input");
    box.type = "checkbox"; box.checked = true; store[key] = true;
    box.addEventListener("change", function () { store[key] = box.checked; refresh(); });
    wrap.appendChild(box);
    if (color) {
      var dot = document.createElement("span");
      dot.className = "swatch"; dot.style.background = color; wrap.appendChild(dot);
    }
    wrap.appendChild(document.createTextNode(" " + label));
    parent.appendChild(wrap);
  }
  Object.keys(data.types).forEach(function (t) {
    checkbox($("typeFilters"), t, data.types[t].label, data.types[t].color, state.types);
    if (onlyTypes && onlyTypes.indexOf(t) < 0) {
      state.types[t] = false;
      $("typeFilters").lastChild.firstChild.checked = false;
    }
  });
  Array.from(new Set(data.edges.map(function (e) { return e.type; }))).sort()
    .forEach(function (r) { checkbox($("relationFilters"), r, r, null, state.relations); });

  var byId = {};
  var nodes = new vis.DataSet(data.nodes.map(function (n) {
    byId[n.id] = n;
    var type = data.types[n.type] || { color: "#999" };
    return { id: n.id, label: n.name, title: n.name + " · " + n.type,
             value: n.mentions, color: type.color,
             shape: n.type === "event" ? "diamond" : "dot" };
  }));
  var edges = new vis.DataSet(data.edges.map(function (e, i) {
    return { id: i, from: e.source, to: e.target, label: e.type, title: e.description || e.type,
             width: 1 + 3 * (e.strength || 0), arrows: "to" };
  }));
  function inRange(list) {
    var lo = +$("from").value, hi = +$("to").value;
    return list.length === 0 || list.some(function (c) { return c >= lo && c <= hi; });
  }
  function nodeShown(n) {
    var q = state.query;
    return state.types[n.type] !== false && inRange(n.chapters) &&
      (!q || n.name.indexOf(q) >= 0);
  }
  var nodeView = new vis.DataView(nodes, { filter: function (item) {
    return nodeShown(byId[item.id]); } });
  var edgeView = new vis.DataView(edges, { filter: function (item) {
    var e = data.edges[item.id];
    return state.relations[e.type] !== false && inRange(e.chapters) &&
      nodeShown(byId[e.source]) && nodeShown(byId[e.target]);
  } });
  var network = new vis.Network($("graph"), { nodes: nodeView, edges: edgeView }, {
    nodes: { scaling: { min: 8, max: 40, label: { enabled: true, min: 12, max: 26 } },
             font: { face: FONTS } },
    edges: { font: { size: 10, color: "#666", strokeWidth: 0 }, color: { color: "#bbb" },
             smooth: { type: "continuous" } },
    physics: { solver: "forceAtlas2Based", stabilization: { iterations: 250 } },
    interaction: { hover: true, tooltipDelay: 150 }
  });

  function refresh() {
    $("fromLabel").textContent = $("from").value;
    $("toLabel").textContent = $("to").value;
    nodeView.refresh(); edgeView.refresh();
    $("counts").textContent = nodeView.length + " entities · " + edgeView.length + " relations";
  }
  $("from").addEventListener("input", function () {
    if (+$("from").value > +$("to").value) { $("to").value = $("from").value; } refresh(); });
  $("to").addEventListener("input", function () {
    if (+$("to").value < +$("from").value) { $("from").value = $("to").value; } refresh(); });
  $("search").addEventListener("input", function () {
    state.query = this.value.trim(); refresh(); });

  network.on("click", function (params) {
    if (!params.nodes.length) { return; }
    var n = byId[params.nodes[0]], box = $("details");
    box.textContent = "";
    var h = document.createElement("h2"); h.textContent = n.name; box.appendChild(h);
    var p = document.createElement("p");
    p.textContent = n.type + " · chapters " + n.chapters.join(", ") +
      (n.description ? " · " + n.description : "");
    box.appendChild(p);
    var ul = document.createElement("ul");
    data.edges.forEach(function (e) {
      if (e.source !== n.id && e.target !== n.id) { return; }
      var other = byId[e.source === n.id ? e.target : e.source];
      var li = document.createElement("li");
      li.textContent = e.type + " " + (e.source === n.id ? "→ " : "← ") + other.name +
        " (ch. " + e.chapters.join(", ") + ")";
      ul.appendChild(li);
    });
    box.appendChild(ul);
  });

  function markRendered() {
    // For people: nothing. For tests: how much of the canvas was drawn on.
    var canvas = document.querySelector("#graph canvas"), inked = 0;
    if (canvas) {
      var pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      for (var i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { inked++; } }
    }
    document.body.setAttribute("data-rendered-nodes", String(nodeView.length));
    document.body.setAttribute("data-ink-pixels", String(inked));
  }
  network.once("stabilizationIterationsDone", function () {
    network.setOptions({ physics: false });
    network.fit();
    network.once("afterDrawing", markRendered);
    network.redraw();
  });
  refresh();
})();
</script>
</body>
</html>
"""
