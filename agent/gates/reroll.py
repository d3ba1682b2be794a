"""Public rerolls of an on-chain seed: the one rule the review queue, the quality gates and verifiers share.

``reroll_seed(seed, n) = sha256(REROLL_DOMAIN || seed || n as 4 bytes)`` (reroll 0 is the seed itself). A
regenerated candidate's receipt records the rerolled value as its ``seed.onchain_seed``, so anyone holding the
request's seed can recompute which reroll it was and replay the receipt. :mod:`agent.review` re-exports these.
"""

from __future__ import annotations

import hashlib

from agent.errors import PermanentError

REROLL_DOMAIN = b"chrysalis.reroll.v1"
"""Domain separator of :func:`reroll_seed`."""

MAX_REROLLS = 64
"""Most rerolls one candidate may go through (and the most a verifier tries when it names one)."""


class RerollError(PermanentError, ValueError):
    """A seed that is not 32 bytes, or a reroll number outside ``0..MAX_REROLLS``."""


def reroll_seed(onchain_seed: str | bytes, n: int) -> str:
    """The ``n``-th reroll of a request's on-chain seed, as ``0x`` + 64 hex digits.

    Raises:
        RerollError: the seed is not 32 bytes or ``n`` is outside ``0..MAX_REROLLS``.
    """
    raw = (
        bytes.fromhex(onchain_seed.removeprefix("0x"))
        if isinstance(onchain_seed, str)
        else bytes(onchain_seed)
    )
    if len(raw) != 32:
        raise RerollError(
            f"an on-chain seed is 32 bytes, got {len(raw)}", hint="pass the request's bytes32 seed"
        )
    if n == 0:
        return "0x" + raw.hex()
    if not 0 < n <= MAX_REROLLS:
        raise RerollError(f"reroll {n} is outside 0..{MAX_REROLLS}", hint="approve or reject it instead")
    return "0x" + hashlib.sha256(REROLL_DOMAIN + raw + n.to_bytes(4, "big")).hexdigest()


def find_reroll(request_seed: str | bytes, receipt_seed: str) -> int | None:
    """Which reroll of ``request_seed`` the receipt's seed is (0: the seed itself), or None if none of
    ``0..MAX_REROLLS`` is."""
    want = receipt_seed.lower()
    for n in range(MAX_REROLLS + 1):
        if reroll_seed(request_seed, n) == want:
            return n
    return None
