"""Which tokens a refresh covers: ``all``, or ids and ranges such as ``1,2,5-9``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from agent.errors import ConfigError, NotFoundError

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


#: Up to this many listed ids are each checked with ``exists`` (burnt ones refused too); above it, only ids never
#: minted are refused (one ``totalMinted`` call), and the refresh skips burnt ones as it goes.
MAX_CHECKED = 256


class UnknownTokensError(NotFoundError):
    """A token selection names tokens that do not exist (never minted, or burnt by a fuse), like the studio's 404.

    Attributes:
        missing: The ids that do not exist. total_minted: Ids 1..total_minted were ever minted.
    """

    def __init__(self, missing: Sequence[int], total_minted: int) -> None:
        self.missing = tuple(missing)
        self.total_minted = total_minted
        never = [i for i in self.missing if i > total_minted]
        burnt = [i for i in self.missing if i <= total_minted]
        why = []
        if never:
            minted = f"ids 1..{total_minted} were minted" if total_minted else "nothing is minted yet"
            why.append(f"{format_tokens(never)} never minted ({minted})")
        if burnt:
            why.append(f"{format_tokens(burnt)} burnt (fused into another token)")
        noun = "token" if len(self.missing) == 1 else "tokens"
        verb = "does" if len(self.missing) == 1 else "do"
        super().__init__(
            f"{noun} {format_tokens(self.missing)} {verb} not exist: {'; '.join(why)}; nothing was queued",
            hint="list only existing tokens in --tokens"
            + (f" (e.g. 1-{total_minted})" if total_minted else "")
            + ", or leave --tokens out to refresh every token",
        )


def require_existing(ids: Sequence[int], total_minted: int, exists: Callable[[int], bool]) -> None:
    """Raise :class:`UnknownTokensError` naming every id in ``ids`` that was never minted or (for selections of
    at most :data:`MAX_CHECKED` ids) was burnt; ``exists(id)`` is the collection's ``exists`` view."""
    missing = [i for i in ids if i > total_minted]
    if len(ids) <= MAX_CHECKED:
        missing += [i for i in ids if i <= total_minted and not exists(i)]
    if missing:
        raise UnknownTokensError(sorted(missing), total_minted)
