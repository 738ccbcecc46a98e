"""chaishu's wall clock: naive timestamps in chaishu's zone (UTC+8 by default).

chaishu writes naive local datetimes into its MySQL columns and its Redis registry
(docs/chaishu-compat.md); kgworker writes them the same way so both can be compared.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

CHAISHU_TZ = timezone(timedelta(hours=8))


def chaishu_now() -> datetime:
    """Naive chaishu-local wall-clock time, the way chaishu writes its timestamps."""
    return datetime.now(CHAISHU_TZ).replace(tzinfo=None, microsecond=0)
