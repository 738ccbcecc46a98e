"""The package version (one line, so every layer can read it without importing more)."""

__version__ = "0.1.0"
