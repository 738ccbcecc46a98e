"""Settings: the model (:mod:`.settings`) and how sources are layered (:mod:`.loading`).

Sources, highest first: command-line flags > environment > ``--config FILE`` (dotenv
syntax) > ``.env`` in the working directory > defaults.
"""

from kgworker.config.loading import (
    default_text,
    describe_settings,
    describe_unvalidated,
    env_name,
    load_settings,
    reference,
    settings_to_env,
)
from kgworker.config.redact import redact_url
from kgworker.config.settings import (
    ENV_ALIASES,
    NEO4J_SCHEMES,
    POOL_RECYCLE_CAP,
    SOURCE_CLI,
    SOURCE_CONFIG_FILE,
    SOURCE_DEFAULT,
    SOURCE_DOTENV,
    SOURCE_ENV,
    ConfigError,
    MySQLParts,
    Settings,
)

__all__ = [
    "ENV_ALIASES",
    "NEO4J_SCHEMES",
    "POOL_RECYCLE_CAP",
    "SOURCE_CLI",
    "SOURCE_CONFIG_FILE",
    "SOURCE_DEFAULT",
    "SOURCE_DOTENV",
    "SOURCE_ENV",
    "ConfigError",
    "MySQLParts",
    "Settings",
    "default_text",
    "describe_settings",
    "describe_unvalidated",
    "env_name",
    "load_settings",
    "redact_url",
    "reference",
    "settings_to_env",
]
