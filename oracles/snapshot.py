"""One :class:`~agent.domain.InputSnapshot` from many oracles, all read at one block.

The snapshot is what an inference depends on; its :attr:`~agent.domain.InputSnapshot.sha256` goes into the
inference receipt. It is deterministic: the same oracles at the same block give the same bytes (readings are
sorted by name, values are plain JSON), so a verifier with an archive node can recompute the hash.

Example::

    ctx = ReadContext.at(w3, event.block_number, token_id=7, collection=deployment.address())
    snapshot = take_snapshot([WalletOracle(from_block=deployment.deploy_block),
                              ChainlinkOracle(deployment.address("DevPriceFeed"))], ctx)
    receipt["inputs_sha256"] = snapshot.sha256
"""

from __future__ import annotations

from collections.abc import Sequence

from hexbytes import HexBytes
from web3.exceptions import BlockNotFound

from agent.domain import InputSnapshot, OracleReading, canonical_json
from oracles.base import Oracle, ReadContext, call_at
from oracles.errors import OracleError, OracleUnavailableError, SnapshotConfigError, SnapshotReorgError

CONTEXT_SOURCE = "context"
CONTEXT_READINGS: tuple[str, ...] = (
    "context.token_id",
    "context.holder",
    "context.collection",
    "context.block_timestamp",
)
"""Readings :func:`take_snapshot` adds about the context, so the hash binds the token and its holder."""


def take_snapshot(
    oracles: Sequence[Oracle], ctx: ReadContext, *, include_context: bool = True
) -> InputSnapshot:
    """Read every oracle at ``ctx``'s block and bundle the readings.

    Oracles run in the order given; the readings are sorted by name. Afterwards the block's hash is checked
    again, so a snapshot never mixes two forks.

    Args:
        oracles: Oracles with distinct names.
        ctx: The block, token and holder to read for.
        include_context: Add the :data:`CONTEXT_READINGS` (token id, holder, collection, block timestamp).

    Raises:
        SnapshotConfigError: two oracles share a name or a reading name, or an oracle returned readings other
            than it :attr:`~oracles.base.Oracle.provides`, at another block, or values that are not plain
            JSON.
        SnapshotReorgError: the block stopped being canonical while reading (retryable).
        OracleError: from the oracles (stale or absurd data, ...).
        OracleUnavailableError: an oracle's reading could not be taken (retryable).
    """
    names = [oracle.name for oracle in oracles]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SnapshotConfigError(
            f"oracle names must be unique; {', '.join(duplicates)} appear more than once",
            hint="give each oracle its own name= (it prefixes its reading names)",
        )

    readings: dict[str, OracleReading] = {}
    if include_context:
        for reading in _context_readings(ctx):
            readings[reading.name] = reading
    for oracle in oracles:
        try:
            got = oracle.read(ctx)
        except OracleError:
            check_canonical(ctx)  # a call pinned to a block that vanished fails: report the reorg instead
            raise
        except OracleUnavailableError as exc:
            if exc.block_unknown:  # "not found" for the pinned hash: a lagging node, or the block vanished
                check_canonical(ctx)
            raise
        _check(oracle, got, ctx)
        for reading in got:
            if reading.name in readings:
                raise SnapshotConfigError(
                    f"reading {reading.name!r} of oracle {oracle.name!r} is already in the snapshot",
                    hint="rename the oracle so its reading names do not clash ('context.' is reserved)",
                )
            readings[reading.name] = reading

    snapshot = InputSnapshot(
        chain_id=ctx.chain_id,
        block_number=ctx.block_number,
        block_hash=ctx.block_hash,
        readings=tuple(readings[name] for name in sorted(readings)),
    )
    try:
        canonical_json(snapshot.to_json())
    except (TypeError, ValueError) as exc:
        raise SnapshotConfigError(
            f"snapshot at block {ctx.block_number} is not plain JSON ({exc})",
            hint="oracles must return JSON values (str, int, finite float, bool, None, lists, dicts)",
        ) from exc
    check_canonical(ctx)
    return snapshot


def _context_readings(ctx: ReadContext) -> list[OracleReading]:
    values = {
        "context.token_id": ctx.token_id,
        "context.holder": ctx.holder,
        "context.collection": ctx.collection,
        "context.block_timestamp": ctx.block_timestamp,
    }
    return [OracleReading(name, values[name], CONTEXT_SOURCE, ctx.block_number) for name in CONTEXT_READINGS]


def _check(oracle: Oracle, readings: list[OracleReading], ctx: ReadContext) -> None:
    got = [r.name for r in readings]
    expected = set(oracle.provides)
    if len(got) != len(set(got)) or set(got) != expected:
        raise SnapshotConfigError(
            f"oracle {oracle.name!r} returned readings {sorted(got)} but provides {sorted(expected)}",
            hint="an oracle must return exactly one reading per name in its `provides`",
        )
    for reading in readings:
        if reading.block_number != ctx.block_number:
            raise SnapshotConfigError(
                f"oracle {oracle.name!r} read {reading.name!r} at block {reading.block_number}, "
                f"not the snapshot's block {ctx.block_number}",
                hint="oracles must read at ctx.block_identifier and stamp readings with ctx.block_number",
            )


def check_canonical(ctx: ReadContext) -> None:
    """Raise :class:`SnapshotReorgError` unless ``ctx.block_hash`` is still the block at its height."""

    def current_hash() -> str | None:
        try:
            return "0x" + bytes(HexBytes(ctx.web3.eth.get_block(ctx.block_number)["hash"])).hex()
        except BlockNotFound:
            return None

    actual = call_at(
        current_hash,
        oracle="snapshot",
        block_number=ctx.block_number,
        address="(node)",
        function="eth_getBlockByNumber",
    )
    if actual != ctx.block_hash:
        raise SnapshotReorgError(
            block_number=ctx.block_number, expected_hash=ctx.block_hash, actual_hash=actual
        )
