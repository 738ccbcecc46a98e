"""Bad-input fixtures: the pipeline's migrated database and handler environment."""

from __future__ import annotations

from tests.pipeline.conftest import db, env  # noqa: F401 (fixtures)
