"""The official Neo4j async driver, configured from settings."""

from __future__ import annotations

from typing import Any

from neo4j import AsyncDriver, AsyncGraphDatabase, TrustAll, TrustCustomCAs, TrustSystemCAs

from kgworker.config import Settings


def create_driver(settings: Settings, **overrides: Any) -> AsyncDriver:
    """A driver for NEO4J_URI. TLS comes from a ``+s`` URI or from NEO4J_TLS."""
    kwargs: dict[str, Any] = {"connection_timeout": 10, "max_connection_pool_size": 50}
    scheme = settings.neo4j_uri.split("://", 1)[0]
    if settings.neo4j_tls and "+" not in scheme:
        kwargs["encrypted"] = True
        if not settings.neo4j_tls_verify:
            kwargs["trusted_certificates"] = TrustAll()
        elif settings.neo4j_tls_ca_file is not None:
            kwargs["trusted_certificates"] = TrustCustomCAs(str(settings.neo4j_tls_ca_file))
        else:
            kwargs["trusted_certificates"] = TrustSystemCAs()
    kwargs.update(overrides)
    auth = (settings.neo4j_user, settings.neo4j_password.get_secret_value())
    return AsyncGraphDatabase.driver(settings.neo4j_uri, auth=auth, **kwargs)
