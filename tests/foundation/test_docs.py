"""The README's configuration table and .env.example name every variable there is."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgworker.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_variable_documented(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    missing = [env_name(f) for f in Settings.model_fields if f"{env_name(f)}" not in text]
    assert missing == [], f"{document} lacks {missing}: run scripts/sync-docs"
