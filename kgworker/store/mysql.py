"""The async SQLAlchemy engine for the chaishu MySQL database (asyncmy driver)."""

from __future__ import annotations

import ssl
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kgworker.config import Settings
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
    :data:`~kgworker.store.txn.CONNECT_ISOLATION` execution option.
    """
    connect_args: dict[str, Any] = {"connect_timeout": 10}
    context = _tls_context(settings)
    if context is not None:
        connect_args["ssl"] = context
    isolation = overrides.pop("isolation_level", READ_COMMITTED)
    options = {**overrides.pop("execution_options", {}), CONNECT_ISOLATION: isolation}
    kwargs: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_pool_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": settings.effective_pool_recycle,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "connect_args": connect_args,
        "isolation_level": isolation,
        "execution_options": options,
        **overrides,
    }
    return create_async_engine(settings.sqlalchemy_url(database), **kwargs)
