"""Canonical fingerprint of one novel's graph: sorted nodes and edges, minus timestamps.

With ``normalize`` the novel id, chapter ids and task ids are replaced by stable names
(``N``, ``ch{number}``, ``T{rank}``), so two books with the same text, or two runs under
different task ids, can be compared.
"""

from __future__ import annotations

import json
from typing import Any

from neo4j import AsyncDriver

SKIP = {"created_at", "updated_at"}


async def fingerprint(driver: AsyncDriver, novel_id: int, *, normalize: bool = False) -> str:
    records, _, _ = await driver.execute_query(
        "MATCH (n) WHERE n.novel_id = $id OR (n:Novel AND n.id = $id)"
        " RETURN labels(n) AS labels, properties(n) AS props", id=novel_id)
    nodes = [(r["labels"], dict(r["props"])) for r in records]
    edges, _, _ = await driver.execute_query(
        "MATCH (a)-[r]->(b) WHERE r.novel_id = $id OR a.novel_id = $id"
        " RETURN labels(a) AS la, properties(a) AS pa, type(r) AS t, properties(r) AS pr,"
        " labels(b) AS lb, properties(b) AS pb", id=novel_id)
    chapters = {p["id"]: p["chapter_number"] for labels, p in nodes if "Chapter" in labels}
    tasks = sorted({t for _, p in nodes for t in p.get("task_id", [])})

    def norm(value: Any, field: str = "") -> Any:
        if not normalize:
            return value
        if field == "task_id":
            return [f"T{tasks.index(t)}" for t in value]
        if field == "chapter_ids":
            return [f"ch{chapters.get(c, c)}" for c in value]
        if field in ("novel_id",) and value == novel_id:
            return "N"
        if field in ("id", "chapter_id") and value in chapters:
            return f"ch{chapters[value]}"
        if field == "id" and value == novel_id:
            return "N"
        if field == "id" and isinstance(value, str) and value.startswith(f"{novel_id}_"):
            _, chapter, digest = value.split("_")
            return f"N_ch{chapters.get(int(chapter), chapter)}_{digest}"
        return value

    def clean(props: dict[str, Any]) -> dict[str, Any]:
        return {k: norm(v, k) for k, v in sorted(props.items()) if k not in SKIP}

    out = {
        "nodes": sorted(json.dumps([sorted(labels), clean(p)], ensure_ascii=False,
                                   sort_keys=True) for labels, p in nodes),
        "edges": sorted(
            json.dumps([norm_key(r["la"], r["pa"], norm), r["t"], clean(dict(r["pr"])),
                        norm_key(r["lb"], r["pb"], norm)], ensure_ascii=False, sort_keys=True)
            for r in edges),
    }
    return json.dumps(out, ensure_ascii=False, indent=0)


def norm_key(labels: list[str], props: dict[str, Any], norm: Any) -> str:
    label = sorted(labels)[0]
    if label in ("Character", "Location", "Organization"):
        return f"{label}:{props['name']}"
    return f"{label}:{norm(props['id'], 'id')}"
