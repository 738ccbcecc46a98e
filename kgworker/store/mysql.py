"""The async SQLAlchemy engine for the chaishu MySQL database (asyncmy driver)."""

from __future__ import annotations

import ssl
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kgworker.config import Settings
from kgworker.store.pool_events import ping_when_idle, skip_reset_after_commit
from kgworker.store.txn import CONNECT_ISOLATION, READ_COMMITTED


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.db_tls:
        return None
    cafile = str(settings.db_tls_ca_file) if settings.db_tls_ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    if not settings.db_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.db_tls_cert_file is not None:
        key = str(settings.db_tls_key_file) if settings.db_tls_key_file else None
        context.load_cert_chain(str(settings.db_tls_cert_file), key)
    return context


def create_engine(
    settings: Settings, *, database: str | None = None, **overrides: Any
) -> AsyncEngine:
    """An engine with the chaishu pool settings (DB_POOL_*), recycle capped at 1800 s.

    Its connections are opened at READ COMMITTED (once each; see :mod:`kgworker.store.txn`)
    unless ``isolation_level`` says otherwise; the level is recorded as the
    :data:`~kgworker.store.txn.CONNECT_ISOLATION` execution option. DB_POOL_PRE_PING pings
    a pooled connection only after DB_POOL_PING_IDLE seconds idle, and a connection returned
    right after its COMMIT is not rolled back again (:mod:`kgworker.store.pool_events`).
    """
    connect_args: dict[str, Any] = {"connect_timeout": 10}
    context = _tls_context(settings)
    if context is not None:
        connect_args["ssl"] = context
    pre_ping = bool(overrides.pop("pool_pre_ping", settings.db_pool_pre_ping))
    isolation = overrides.pop("isolation_level", READ_COMMITTED)
    options = {**overrides.pop("execution_options", {}), CONNECT_ISOLATION: isolation}
    kwargs: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_pool_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": settings.effective_pool_recycle,
        "connect_args": connect_args,
        "isolation_level": isolation,
        "execution_options": options,
        "pool_reset_on_return": None,  # skip_reset_after_commit() resets instead
        **overrides,
    }
    engine = create_async_engine(settings.sqlalchemy_url(database), **kwargs)
    if kwargs["pool_reset_on_return"] is None:
        skip_reset_after_commit(engine)
    if pre_ping:
        ping_when_idle(engine, settings.db_pool_ping_idle)
    return engine
