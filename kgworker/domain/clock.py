"""chaishu's wall clock: naive timestamps in chaishu's zone (UTC+8 unless configured).

chaishu writes naive local datetimes into its MySQL columns and its Redis registry
(docs/chaishu-compat.md §1, §7); kgworker writes them the same way so both sides compare
them without a TypeError or an eight-hour error. The zone is process-wide configuration
(``KG_CHAISHU_UTC_OFFSET``), set once at start by :func:`configure`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kgworker.config.specs import parse_offset

CHAISHU_TZ = timezone(timedelta(hours=8))


def configure(offset: str) -> None:
    """Use ``offset`` for every chaishu timestamp this process writes from now on."""
    global CHAISHU_TZ
    CHAISHU_TZ = parse_offset(offset)


def chaishu_now() -> datetime:
    """Naive chaishu-local wall-clock time, the way chaishu writes its timestamps."""
    return datetime.now(CHAISHU_TZ).replace(tzinfo=None, microsecond=0)
