"""How ``chrysalis --help`` shows options: no type column for on/off flags.

Typer's rich help prints every option's type, flags included (``--json <bool>``, ``--install-completion
<bool>``), which reads as if the flag took a value. :func:`hide_flag_types` drops the type of flags (and of
``count`` options), wherever typer made them (our commands, ``--help``, the completion options), and keeps it for
every option that takes a value.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_PATCHED = "_chrysalis_flag_types_hidden"


def hide_flag_types() -> None:
    """Make typer's rich help show no ``<bool>`` for flags. Idempotent."""
    if getattr(TyperOption, _PATCHED, False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if (self.is_flag or self.count) and self.metavar is None:
            return None
        return shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    setattr(TyperOption, _PATCHED, True)
