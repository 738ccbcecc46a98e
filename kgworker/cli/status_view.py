"""The tables of ``kgworker status`` (rich): imported by that command only, so no other
command (``kgworker run`` above all) loads rich."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _used(used: int, limit: int) -> str:
    return f"{used}/{limit}" if limit else f"{used}/∞"


def render(data: dict[str, Any]) -> Group:
    """Three tables; a half that could not be read shows its reason instead."""
    nodes = Table(title="Nodes", title_justify="left", expand=False)
    for column in ("node", "alive", "last heartbeat", "version", "slots busy/total", "providers"):
        nodes.add_column(column)
    for n in data["nodes"]:
        served = ", ".join(f"{p}:{c}" for p, c in sorted(n["providers"].items()))
        nodes.add_row(
            n["name"],
            "[green]yes[/]" if n["alive"] else "[red]no[/]",
            str(n["last_heartbeat"])[:19].replace("T", " "),
            str(n["version"] or "?"),
            f"{n['busy']}/{n['slots']}" + (f" (max {n['limit']})" if n.get("limit") else ""),
            served or "—",
        )
    providers = Table(title="Providers", title_justify="left")
    for column in ("provider", "queued", "in flight", "DLQ", "slots busy/live", "paused",
                   "requests/window", "tokens/window"):
        providers.add_column(column, justify="left" if column == "provider" else "right")
    for p in data["providers"]:
        paused = "—"
        if p["paused"]:
            paused = f"[red]{_duration(p['paused_for_seconds'])} left[/]"
        providers.add_row(
            p["provider"],
            str(p["queued"]),
            str(p["claimed"]),
            f"[red]{p['dead']}[/]" if p["dead"] else "0",
            f"{p['busy_slots']}/{p['live_slots']}",
            paused,
            _used(p["requests_used"], p["rpm_limit"]),
            _used(p["tokens_used"], p["tpm_limit"]),
        )
    tasks = Table(title="Tasks", title_justify="left")
    for column in ("task", "book", "status", "done/total", "failed", "chapters/min", "ETA"):
        right = column in ("failed", "chapters/min")
        tasks.add_column(column, justify="right" if right else "left")
    for t in data["tasks"]:
        tasks.add_row(
            str(t["task_id"]),
            str(t["book"]),
            t["status"],
            f"{t['done']}/{t['total']}",
            str(t["failed"]),
            f"{t['rate_per_min']:.1f}",
            _duration(t["eta_seconds"]),
        )
    parts: list[Any] = [nodes, providers, *_flow_tables(data), tasks]
    for store, reason in data.get("errors", {}).items():
        parts.append(f"[red]{store} unreadable: {reason}[/]")
    parts.append(f"[dim]{data['generated_at']}[/]")
    return Group(*parts)


def _flow_tables(data: dict[str, Any]) -> list[Table]:
    """Adaptive targets and their recent changes; fallback chains and moved tasks."""
    tables: list[Table] = []
    if data.get("adaptive"):
        adaptive = Table(title="Adaptive concurrency", title_justify="left")
        for column in ("provider", "mode", "target", "in flight", "floor ms", "last change",
                       "recent targets"):
            adaptive.add_column(column, justify="right" if column in ("target", "in flight",
                                                                      "floor ms") else "left")
        now = time.time()
        for a in data["adaptive"]:
            changed = a.get("changed_at")
            last = f"{a.get('reason') or '—'} ({_duration(now - changed)} ago)" if changed else "—"
            recent = " ← ".join(str(h["new"]) for h in a.get("history", [])[:8])
            floor = a.get("floor_ms")
            adaptive.add_row(a["provider"], a["mode"], str(a["target"]), str(a["in_flight"]),
                             "—" if floor is None else f"{floor:.0f}", last, recent or "—")
        tables.append(adaptive)
    if data.get("fallback") or data.get("moves"):
        moves = Table(title="Fallback", title_justify="left")
        for column in ("provider / task", "backups / moved", "state", "chapters by producer"):
            moves.add_column(column)
        for f in data.get("fallback", []):
            state = "on" if f["enabled"] else "off"
            if f["enabled"] and f["suspended"]:
                state = f"[yellow]moving to {f['target_now'] or 'nothing healthy'}[/]"
            moves.add_row(f["provider"], " → ".join(f["backups"]), state, "")
        for m in data.get("moves", []):
            producers = ", ".join(f"{k}: {v}" for k, v in m["chapters_by_producer"].items())
            moves.add_row(f"task {m['task_id']}", f"{m['from']} → {m['to']}",
                          str(m["moved_at"] or "")[:19].replace("T", " "), producers or "—")
        tables.append(moves)
    return tables
