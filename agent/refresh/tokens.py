"""Which tokens a refresh covers: ``all``, or ids and ranges such as ``1,2,5-9``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.errors import ConfigError

ALL = "all"

MAX_LISTED = 1_000_000
"""Most ids one selection may list (a typo such as ``1-100000000`` must not allocate a billion ints)."""


class TokenSelectionError(ConfigError):
    """A token selection such as ``--tokens 1,2,5-9`` could not be read.

    Attributes:
        spec: The text given. problem: What is wrong with it.
    """

    def __init__(self, spec: str, problem: str) -> None:
        self.spec = spec
        self.problem = problem
        super().__init__(
            f"token selection {spec!r}: {problem}",
            hint="write token ids and ranges separated by commas, e.g. 1,2,5-9, or 'all'",
        )


def parse_tokens(spec: str | Sequence[int] | None) -> list[int] | None:
    """Token ids in ascending order without duplicates, or ``None`` for every token.

    Args:
        spec: ``"all"`` (or None / empty), ``"1,2,5-9"``, or a list of ids.

    Raises:
        TokenSelectionError: not a number, a range that runs backwards, an id below 1, too many ids.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        return _checked(str(list(spec)), spec)
    text = spec.strip()
    if text == "" or text.lower() == ALL:
        return None
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise TokenSelectionError(spec, "an empty item between commas")
        lo_text, dash, hi_text = part.partition("-")
        lo = _int(spec, lo_text)
        hi = _int(spec, hi_text) if dash else lo
        if hi < lo:
            raise TokenSelectionError(spec, f"the range {part} runs backwards (write {hi}-{lo})")
        if hi - lo + 1 + len(ids) > MAX_LISTED:
            raise TokenSelectionError(spec, f"more than {MAX_LISTED:,} ids; use 'all' instead")
        ids.extend(range(lo, hi + 1))
    return _checked(spec, ids)


def format_tokens(ids: Iterable[int] | None) -> str:
    """The shortest ``1-3,7`` form of ``ids`` (``all`` for None)."""
    if ids is None:
        return ALL
    ordered = sorted(set(ids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _int(spec: str, text: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise TokenSelectionError(spec, f"{text!r} is not a token id (a whole number)")
    return int(text)


def _checked(spec: str, ids: Iterable[int]) -> list[int]:
    out = sorted(set(ids))
    for token_id in out:
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise TokenSelectionError(spec, f"{token_id!r} is not a token id")
        if token_id < 1:
            raise TokenSelectionError(spec, f"token ids start at 1 (got {token_id})")
    if not out:
        raise TokenSelectionError(spec, "no token ids")
    return out
