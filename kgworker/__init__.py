"""kgworker: a distributed knowledge-graph worker for chaishu-style novel analysis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgworker.version import __version__

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kgworker.config import Settings


async def run_worker(settings: Settings | None = None, **kwargs: Any) -> int:
    """Run one worker node until stopped; see :func:`kgworker.chaishu.node.run_worker`.

    Imported lazily so that ``import kgworker`` stays cheap (the CLI's ``--version`` and
    ``config show`` must not pay for the store drivers).
    """
    from kgworker.chaishu.node import run_worker as _run_worker

    return await _run_worker(settings, **kwargs)


__all__ = ["__version__", "run_worker"]
