"""The settings model: every chaishu variable (docs/chaishu-compat.md §5) plus kgworker's own.

Variable names and defaults are the chaishu worker's, so an operator can point kgworker at
the same environment. Field ``foo_bar`` is variable ``FOO_BAR``; how sources are layered
lives in :mod:`kgworker.config.loading`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kgworker.config.redact import redact_url
from kgworker.config.specs import DEFAULT_OFFSET, parse_offset
from kgworker.keys import PROGRESS_CHANNEL

SOURCE_DEFAULT = "default"
SOURCE_DOTENV = ".env"
SOURCE_CONFIG_FILE = "--config file"
SOURCE_ENV = "environment"
SOURCE_CLI = "command line"

#: Alternative variable names accepted from the EasySight worker node (docs/chaishu-compat.md §6).
#: The kgworker/chaishu name wins when both are set in the same source.
ENV_ALIASES: dict[str, str] = {
    "WORKER_NODE_NAME": "kg_worker_node_name",
    "WORKER_POOL_SIZE": "kg_workers_per_provider",
    "WORKER_MAX_CONCURRENT_TASKS": "kg_max_total_processes",
    "WORKER_HEARTBEAT_INTERVAL": "kg_heartbeat_interval",
    "WORKER_LOG_LEVEL": "log_level",
    "WORKER_LOG_FILE": "log_file",
    "WORKER_API_TOKEN": "kg_api_token",
}

#: Cap applied to DB_POOL_RECYCLE, as the chaishu worker did (MySQL's wait_timeout is often 1 h).
POOL_RECYCLE_CAP = 1800

NEO4J_SCHEMES = frozenset({"neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"})
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
CommaList = Annotated[list[str], NoDecode]


class ConfigError(Exception):
    """Invalid configuration: ``problems`` holds one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _split_comma(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseSettings):
    """Effective settings of one node. Field ``foo_bar`` is variable ``FOO_BAR``."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", env_file=None, validate_default=True
    )

    # --- Redis (chaishu) -------------------------------------------------------------
    redis_host: str = Field("localhost", description="Redis host")
    redis_port: int = Field(6379, ge=1, le=65535, description="Redis port")
    redis_password: SecretStr = Field(SecretStr(""), description="Redis password")
    redis_db: int = Field(0, ge=0, description="Redis database number")
    # --- Redis (kgworker) ------------------------------------------------------------
    redis_url: SecretStr | None = Field(
        None, description="redis:// or rediss:// URL; overrides REDIS_HOST/PORT/PASSWORD/DB"
    )
    redis_username: str | None = Field(None, description="Redis ACL user name")
    redis_tls: bool = Field(False, description="Connect to Redis with TLS")
    redis_tls_ca_file: Path | None = Field(None, description="CA bundle for Redis TLS")
    redis_tls_cert_file: Path | None = Field(None, description="Client certificate for Redis")
    redis_tls_key_file: Path | None = Field(None, description="Client key for Redis")
    redis_tls_verify: bool = Field(True, description="Verify the Redis server certificate")
    redis_sentinels: CommaList = Field(
        default_factory=list, description="Sentinel mode: host:port,host:port,..."
    )
    redis_sentinel_master: str = Field("mymaster", description="Sentinel master group name")
    redis_sentinel_password: SecretStr = Field(SecretStr(""), description="Sentinel password")
    redis_cluster: bool = Field(False, description="Redis Cluster mode")

    # --- MySQL (chaishu) -------------------------------------------------------------
    db_host: str | None = Field(None, description="MySQL host (required unless DATABASE_URL)")
    db_port: int = Field(3306, ge=1, le=65535, description="MySQL port")
    db_user: str = Field("root", description="MySQL user")
    db_password: SecretStr = Field(SecretStr(""), description="MySQL password")
    db_name: str = Field("chaishu", description="MySQL database")
    db_charset: str = Field("utf8mb4", description="MySQL connection charset")
    db_pool_size: int = Field(2, ge=1, description="Connection pool size")
    db_pool_max_overflow: int = Field(3, ge=0, description="Connections above the pool size")
    db_pool_timeout: float = Field(30, gt=0, description="Seconds to wait for a pooled connection")
    db_pool_recycle: int = Field(
        3600, ge=-1, description=f"Recycle connections after N s (capped at {POOL_RECYCLE_CAP})"
    )
    db_pool_pre_ping: bool = Field(
        True, description="Ping a pooled connection before use (once idle, DB_POOL_PING_IDLE)"
    )
    # --- MySQL (kgworker) ------------------------------------------------------------
    database_url: SecretStr | None = Field(
        None, description="mysql://user:pass@host:port/db; overrides DB_HOST/PORT/USER/..."
    )
    db_pool_ping_idle: float = Field(
        5.0, ge=0, description="DB_POOL_PRE_PING pings a connection idle longer than N s"
    )
    db_tls: bool = Field(False, description="Connect to MySQL with TLS")
    db_tls_ca_file: Path | None = Field(None, description="CA bundle for MySQL TLS")
    db_tls_cert_file: Path | None = Field(None, description="Client certificate for MySQL")
    db_tls_key_file: Path | None = Field(None, description="Client key for MySQL")
    db_tls_verify: bool = Field(True, description="Verify the MySQL server certificate")

    # --- Neo4j -----------------------------------------------------------------------
    neo4j_uri: str = Field("neo4j://localhost:7687", description="Neo4j URI (neo4j+s:// for TLS)")
    neo4j_user: str = Field("neo4j", description="Neo4j user")
    neo4j_password: SecretStr = Field(SecretStr(""), description="Neo4j password")
    neo4j_database: str | None = Field(None, description="Neo4j database (server default if unset)")
    neo4j_tls: bool = Field(False, description="Encrypt Bolt (alternative to a +s URI)")
    neo4j_tls_ca_file: Path | None = Field(None, description="CA bundle for Neo4j TLS")
    neo4j_tls_verify: bool = Field(True, description="Verify the Neo4j server certificate")

    # --- Worker (chaishu) ------------------------------------------------------------
    kg_worker_node_name: str = Field("worker-node", min_length=1, description="This node's name")
    kg_workers_per_provider: int = Field(2, ge=1, description="Slots per provider on this node")
    kg_worker_providers: CommaList = Field(
        default_factory=list, description="Providers to serve; empty = active ai_providers + rules"
    )
    kg_max_total_processes: int = Field(50, ge=1, description="Slots on this node, all providers")
    kg_max_processes_per_provider: int = Field(10, ge=1, description="Hard cap of slots a provider")
    kg_worker_guard_interval: float = Field(
        30, gt=0, description="Seconds between provider re-reads"
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    node_role: Literal["all", "web", "worker"] = Field("all", description="all, web or worker")

    # --- Worker (kgworker) -----------------------------------------------------------
    kg_lease_seconds: float = Field(30, gt=0, description="Lease of a claim; renewed while held")
    kg_reaper_interval: float = Field(
        1, gt=0, description="Seconds between sweeps returning stalled and dead nodes' claims"
    )
    kg_max_stalls: int = Field(3, ge=0, description="Stalls before a task goes to the DLQ")
    kg_shutdown_grace: float = Field(15, ge=0, description="Seconds in-flight work may finish")
    kg_heartbeat_interval: float = Field(15, gt=0, description="Node registry refresh, seconds")
    kg_store_deadline: float = Field(
        900, gt=0,
        description="Exit non-zero when a store stays unreachable this long (shorter outages "
        "are waited out: claims held back, chapters kept)",
    )
    kg_claim_block_seconds: float = Field(
        1.0, gt=0, le=30, description="Blocking claim timeout: how often idle consumers re-check"
    )
    kg_retry_delay: float = Field(
        2.0, ge=0, description="Delay before a failed task is retried; doubles, capped at 60 s"
    )
    kg_burst: bool = Field(
        False, description="Stop (exit 0) once the served queues and their open tasks are empty"
    )
    kg_progress_channel: str = Field(PROGRESS_CHANNEL, description="Progress pub/sub channel")
    kg_chaishu_utc_offset: str = Field(
        DEFAULT_OFFSET,
        description="Zone of chaishu's naive timestamps (MySQL columns, kg:nodes), e.g. +08:00",
    )
    log_format: Literal["text", "json"] = Field("text", description="text or json log lines")
    log_file: Path | None = Field(None, description="Also log to this file (size-rotated)")
    log_max_bytes: int = Field(10_000_000, ge=1024, description="Rotate the log file at this size")
    log_backup_count: int = Field(5, ge=0, description="Rotated log files kept")
    kg_api_enabled: bool = Field(True, description="Serve /metrics, /healthz, /readyz, /status")
    kg_api_host: str = Field("127.0.0.1", description="Bind address of the HTTP endpoint")
    kg_api_port: int = Field(9108, ge=0, le=65535, description="Port of the HTTP endpoint")
    kg_api_token: SecretStr = Field(SecretStr(""), description="Bearer token for the HTTP API")
    kg_api_state_file: Path | None = Field(
        None,
        description="Where the node records the host:port its HTTP endpoint bound, for "
        "kgworker healthcheck (unset: $XDG_RUNTIME_DIR/kgworker/endpoint, else "
        "/tmp/kgworker-UID/endpoint)",
    )
    # --- Pipeline (kgworker) ---------------------------------------------------------
    kg_chapter_max_attempts: int = Field(
        3, ge=1, description="Claims of one chapter (crashes, retryable errors) before it fails"
    )
    kg_duty_interval: float = Field(
        10, gt=0, description="Seconds between runs of the fleet duties (retry, recovery, "
        "reconciliation, counter audit, cleanup)"
    )
    kg_recovery_grace: float = Field(
        60, gt=0, description="A running task idle this long with no live claim is re-queued"
    )
    kg_cancel_poll_interval: float = Field(
        2, gt=0, description="Seconds between task-status checks while a chapter is extracted"
    )
    kg_graph_batch_size: int = Field(
        1000, ge=1, description="Rows per UNWIND statement in a chapter's Neo4j transaction"
    )

    # --- LLM providers (kgworker) ----------------------------------------------------
    kg_llm_providers: SecretStr = Field(
        SecretStr(""),
        description='Providers without an ai_providers table: JSON list of {"name", "base_url", '
        '"api_key", "models"}; rows of the table win on equal names',
    )
    kg_llm_mode: Literal["single", "three"] = Field(
        "single", description="single: one call per chunk; three: chaishu's three-call flow"
    )
    kg_llm_max_tokens: int = Field(2000, ge=1, description="max_tokens of each LLM call")
    kg_llm_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature")
    kg_llm_timeout: float = Field(60, gt=0, description="Read timeout of an LLM call, seconds")
    kg_llm_compatible_timeout: float = Field(
        120, gt=0, description="Read timeout for openai-compatible/localai/ollama/unknown names"
    )
    kg_llm_connect_timeout: float = Field(10, gt=0, description="Connect timeout, seconds")
    kg_llm_max_attempts: int = Field(5, ge=1, description="Attempts per call (429/5xx/timeouts)")
    kg_llm_backoff_base: float = Field(1.0, gt=0, description="Backoff base, seconds (full jitter)")
    kg_llm_backoff_cap: float = Field(60, gt=0, description="Longest backoff sleep, seconds")
    kg_llm_parse_retries: int = Field(1, ge=0, description="Re-asks after an unrepairable answer")
    kg_llm_cache: bool = Field(True, description="Answer repeated LLM calls from the cache")
    kg_llm_prices: str = Field(
        "",
        description="USD per million tokens, model=input/output;...: "
        "'deepseek-chat=0.27/1.10;gpt-4o=2.5/10' ('*' matches any model)",
    )
    kg_provider_limits: str = Field(
        "",
        description="Shared per-provider limits, name:rpm=N,tpm=N;...: "
        "'deepseek:rpm=60,tpm=100000;zhipu:rpm=30' (unset = unlimited)",
    )
    kg_rate_window_seconds: float = Field(
        60, gt=0, description="Window of the RPM/TPM limits (60 = per minute)"
    )
    kg_rate_cooldown_seconds: float = Field(
        5, ge=0, description="Provider-wide pause after a 429 without Retry-After"
    )
    kg_breaker_threshold: int = Field(3, ge=1, description="Consecutive failures → suspend")
    kg_breaker_suspend_seconds: int = Field(600, ge=1, description="Suspension length, seconds")
    kg_chunk_tokens: int = Field(1500, ge=100, description="Token budget of one extraction chunk")

    # --- Flow control: adaptive concurrency and fallback (kgworker) ----------------------
    kg_adaptive_providers: str = Field(
        "", description="Providers whose fleet-wide LLM concurrency is tuned (AIMD), comma list; "
        "also 'kgworker provider scale NAME auto'"
    )
    kg_adaptive_min: int = Field(1, ge=1, description="Lowest adaptive target (requests in flight)")
    kg_adaptive_max: int = Field(
        64, ge=1, description="Highest adaptive target: LLM requests in flight, whole fleet"
    )
    kg_adaptive_initial: int = Field(4, ge=1, description="Adaptive target of a new provider")
    kg_adaptive_period: float = Field(
        2.0, gt=0, description="Seconds between two steps of the adaptive control loop"
    )
    kg_adaptive_floor_periods: int = Field(
        30, ge=2, description="Periods over which the latency floor (best period) is kept"
    )
    kg_adaptive_latency_tolerance: float = Field(
        1.0, gt=0, description="Latency above floor x (1 + this) counts as congestion"
    )
    kg_adaptive_decrease: float = Field(
        0.85, gt=0, lt=1, description="Multiplicative decrease of the target on 429s/timeouts"
    )
    kg_adaptive_permit_lease: float = Field(
        30, gt=0, description="Seconds an in-flight permit lives unless renewed (dead nodes)"
    )
    kg_provider_fallback: str = Field(
        "", description="Backups per provider, name:backup,backup;...: "
        "'deepseek:qwen-local,rules' (used once enabled: 'kgworker provider fallback NAME on')"
    )

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    _blank_optional = field_validator(
        "redis_url",
        "redis_username",
        "redis_tls_ca_file",
        "redis_tls_cert_file",
        "redis_tls_key_file",
        "db_host",
        "database_url",
        "db_tls_ca_file",
        "db_tls_cert_file",
        "db_tls_key_file",
        "neo4j_database",
        "neo4j_tls_ca_file",
        "log_file",
        "kg_api_state_file",
        mode="before",
    )(_blank_to_none)
    _comma_lists = field_validator("redis_sentinels", "kg_worker_providers", mode="before")(
        _split_comma
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("kg_worker_providers")
    @classmethod
    def _lower_providers(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(name.lower() for name in value))

    @field_validator("kg_chaishu_utc_offset")
    @classmethod
    def _check_offset(cls, value: str) -> str:
        parse_offset(value)
        return value.strip()

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {entry!r}")
        return value

    @field_validator("kg_llm_providers")
    @classmethod
    def _check_llm_providers(cls, value: SecretStr) -> SecretStr:
        # checked here so a bad list stops the start with exit 2, not a traceback later;
        # the messages never quote the value (it holds API keys)
        raw = value.get_secret_value().strip()
        if not raw:
            return value
        try:
            items = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc.__class__.__name__} at char "
                             f"{getattr(exc, 'pos', '?')})") from None
        if not isinstance(items, list):
            raise ValueError("expected a JSON list of provider objects")
        for number, item in enumerate(items, 1):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not item["name"].strip():
                raise ValueError(f"provider {number}: expected an object with a \"name\"")
        return value

    @field_validator("kg_provider_limits", "kg_llm_prices")
    @classmethod
    def _check_llm_specs(cls, value: str, info: ValidationInfo) -> str:
        from kgworker.config.specs import PriceTable, parse_limits

        try:
            if info.field_name == "kg_provider_limits":
                parse_limits(value)
            else:
                PriceTable.parse(value)
        except ValueError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.db_host is None and self.database_url is None:
            raise ValueError("DB_HOST: required (or set DATABASE_URL)")
        if self.database_url is not None:
            scheme = urlsplit(self.database_url.get_secret_value()).scheme
            if not scheme.startswith("mysql") and not scheme.startswith("mariadb"):
                raise ValueError(f"DATABASE_URL: expected a mysql:// URL, got scheme {scheme!r}")
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url.get_secret_value()).scheme
            if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster", "unix"):
                raise ValueError(f"REDIS_URL: expected redis:// or rediss://, got {scheme!r}")
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("REDIS_CLUSTER: cannot be combined with REDIS_SENTINELS")
        if self.neo4j_uri.split("://", 1)[0] not in NEO4J_SCHEMES:
            raise ValueError(f"NEO4J_URI: expected neo4j:// or bolt://, got {self.neo4j_uri!r}")
        return self

    # --- derived values --------------------------------------------------------------
    @property
    def sources(self) -> dict[str, str]:
        """Where each field's value came from (filled by :func:`load_settings`)."""
        return dict(self._sources)

    @property
    def provider_slot_limit(self) -> int:
        """Slots one provider may use on this node (the old per-provider process caps)."""
        return min(self.kg_workers_per_provider, self.kg_max_processes_per_provider)

    @property
    def effective_pool_recycle(self) -> int:
        return min(self.db_pool_recycle, POOL_RECYCLE_CAP)

    @property
    def redis_is_cluster(self) -> bool:
        if self.redis_cluster:
            return True
        return (
            self.redis_url is not None
            and "+cluster" in urlsplit(self.redis_url.get_secret_value()).scheme
        )

    def mysql_parts(self) -> MySQLParts:
        """Host, port, user, password and database, from DATABASE_URL or the DB_* values."""
        if self.database_url is not None:
            url = urlsplit(self.database_url.get_secret_value())
            return MySQLParts(
                host=url.hostname or "localhost",
                port=url.port or 3306,
                user=unquote(url.username or self.db_user),
                password=unquote(url.password or self.db_password.get_secret_value()),
                database=url.path.lstrip("/") or self.db_name,
            )
        return MySQLParts(
            host=self.db_host or "localhost",
            port=self.db_port,
            user=self.db_user,
            password=self.db_password.get_secret_value(),
            database=self.db_name,
        )

    def sqlalchemy_url(self, database: str | None = None) -> str:
        """SQLAlchemy URL for the asyncmy driver (contains the password: never log it)."""
        parts = self.mysql_parts()
        db = parts.database if database is None else database
        auth = quote(parts.user, safe="")
        if parts.password:
            auth += ":" + quote(parts.password, safe="")
        return f"mysql+asyncmy://{auth}@{parts.host}:{parts.port}/{db}?charset={self.db_charset}"

    def endpoints(self) -> dict[str, str]:
        """Store endpoints without secrets, for banners, logs and status."""
        if self.redis_url is not None:
            redis = redact_url(self.redis_url.get_secret_value())
        elif self.redis_sentinels:
            redis = f"sentinel {self.redis_sentinel_master}@{','.join(self.redis_sentinels)}"
        else:
            redis = f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"
        if self.redis_is_cluster and self.redis_url is None:
            redis = f"cluster {self.redis_host}:{self.redis_port}"
        parts = self.mysql_parts()
        mysql = f"mysql://{parts.host}:{parts.port}/{parts.database}"
        return {"redis": redis, "mysql": mysql, "neo4j": redact_url(self.neo4j_uri)}


class MySQLParts:
    """Connection parts of the MySQL server."""

    __slots__ = ("database", "host", "password", "port", "user")

    def __init__(self, host: str, port: int, user: str, password: str, database: str) -> None:
        self.host, self.port, self.user = host, port, user
        self.password, self.database = password, database
