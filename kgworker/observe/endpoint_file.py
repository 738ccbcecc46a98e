"""The address a node's HTTP endpoint really bound, recorded for ``kgworker healthcheck``.

The port comes from flags, the environment, a ``--config`` file or the kernel (port 0), so
a health check that reads only the environment asks the wrong port. The node writes
``host:port`` to a small file when the endpoint listens and removes it on close; the check
reads the file. Default place: ``$XDG_RUNTIME_DIR/kgworker/endpoint``, else
``<temp dir>/kgworker-<uid>/endpoint`` (one per user; ``KG_API_STATE_FILE`` moves it, e.g.
for several nodes under one user on one host).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "endpoint"
#: Wildcard binds are probed on the loopback address of their family.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


def _user() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else os.environ.get("USERNAME", "user")


def default_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return Path(runtime) / "kgworker" / FILE_NAME
    return Path(tempfile.gettempdir()) / f"kgworker-{_user()}" / FILE_NAME


def state_path(configured: Path | None) -> Path:
    """``KG_API_STATE_FILE`` when set, else the per-user default."""
    return configured if configured is not None else default_path()


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` back to its parts; None when malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def probe_url(host: str, port: int, path: str = "/healthz") -> str:
    """Where a local client reaches an endpoint bound to ``host`` (wildcards: loopback)."""
    target = _WILDCARDS.get(host, host)
    return f"http://{format_address(target, port)}{path}"


def write_endpoint(path: Path, host: str, port: int) -> str:
    """Atomically replace ``path`` with ``host:port``; returns the text written.

    The directory is made private to this user; one owned by someone else is refused, so
    another local user cannot point the health check elsewhere.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    getuid = getattr(os, "getuid", None)
    if getuid is not None and path.parent.stat().st_uid != getuid():
        raise PermissionError(f"{path.parent} belongs to another user")
    text = format_address(host, port) + "\n"
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return text


def read_endpoint(path: Path) -> tuple[str, int] | None:
    """The recorded address, or None when there is no (readable, well-formed) record."""
    try:
        return parse_address(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def remove_endpoint(path: Path, written: str) -> None:
    """Remove the record if it is still the one we wrote (a newer node may own it now)."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == written:
            path.unlink()


def publish_endpoint(
    configured: Path | None, host: str, port: int
) -> Callable[[], Awaitable[None]]:
    """Record the bound address; returns the cleanup that removes it.

    Never raises: a node whose record cannot be written still serves (its health check
    then fails, and this warning says why).
    """
    path = state_path(configured)
    try:
        written = write_endpoint(path, host, port)
    except OSError as exc:
        log.warning("HTTP endpoint: cannot record its address in %s (%s)", path, exc)

        async def nothing() -> None:
            return None

        return nothing

    async def remove() -> None:
        remove_endpoint(path, written)

    return remove
