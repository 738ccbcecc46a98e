"""The one error of operator actions: a sentence an operator can act on.

The CLI prints it and exits 1; the HTTP API answers ``status`` with the same text.
"""

from __future__ import annotations


class ControlError(Exception):
    """A refused operator action; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
