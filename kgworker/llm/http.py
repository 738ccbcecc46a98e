"""``httpx`` without its command line client.

Why: ``import httpx`` also imports ``httpx._main`` (its ``httpx`` command) whenever click,
pygments and rich are installed, as they are beside kgworker's own CLI: about 100 modules,
60 ms and 6 MiB of a worker's memory for a command it never runs. Marking that module as
absent before the import makes httpx define its usual stand-in for a missing CLI instead.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx

__all__ = ["httpx"]
