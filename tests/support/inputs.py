"""Oracle readings for tests that need an :class:`~agent.domain.InputSnapshot` without reading a chain."""

from __future__ import annotations

from agent.domain import InputSnapshot, OracleReading

#: The readings :func:`input_snapshot` holds unless told otherwise.
VALUES: dict[str, object] = {
    "price.change_pct": 5.0,
    "wallet.held_seconds": 100,
    "wallet.tx_count": 3,
    "wallet.balance_eth": 1.0,
    "wallet.tokens_held": 8,
}


def input_snapshot(**values: object) -> InputSnapshot:
    """A snapshot at block 7 of chain 31337 holding :data:`VALUES`, updated by ``values``."""
    readings = tuple(OracleReading(k, v, "test", 7) for k, v in sorted({**VALUES, **values}.items()))
    return InputSnapshot(chain_id=31337, block_number=7, block_hash="0x" + "ab" * 32, readings=readings)
