"""Help texts: flags without a type column, and setting flags that say what they set."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from typer.core import TyperOption

from kgworker.config import Settings, default_text, env_name


def flags_take_no_value() -> None:
    """typer's rich help gives a flag a type column (``--json <bool>``) though a flag takes
    no value; click's own help never did. Flags show no type here."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "_kgworker", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return shown(self, ctx)

    display_type_rich._kgworker = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]



def setting_help(field: str, meaning: str | None = None) -> str:
    """Help of a flag that sets a setting: what it means, its variable and its default.

    The flags default to None (= not given, so the environment and files still count);
    the default shown is the setting's. The bracket is escaped for rich markup.
    """
    info = Settings.model_fields[field]
    default = default_text(field) or "none"
    if "SecretStr" in str(info.annotation):
        default = "none"
    text = meaning or info.description or env_name(field)
    return f"{text}. \\[{env_name(field)}; default: {default}]"


def usage_error(ctx: typer.Context, message: str) -> NoReturn:
    """A wrong combination of arguments: the usage line and ``message``, exit code 2."""
    ctx.fail(message)
