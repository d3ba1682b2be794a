"""A Chainlink ``AggregatorV3Interface`` price feed, read at the block.

Readings (prefix ``price`` by default):

=====================  =====  =============================================================================
name                   type   meaning
=====================  =====  =============================================================================
``price.answer``       float  latest answer / 10**decimals (raw integer answer and decimals in ``meta``)
``price.updated_at``   int    when the latest round was updated (unix seconds)
``price.age_s``        int    block timestamp minus ``updated_at``
``price.round_id``     int    the latest round id
``price.change_pct``   float  percent change of the answer over ``window_s`` (only when a window is set)
=====================  =====  =============================================================================

The change over the window compares the latest answer with the answer *in effect* at
``block timestamp - window_s``: the newest round updated at or before that time, found by walking back with
``getRoundData`` one round at a time (at most ``max_rounds`` calls). The walk stays inside the feed's current
phase (the upper 16 bits of a Chainlink round id); a window reaching before the phase's first round raises
:class:`~oracles.errors.OracleHistoryError`.

A feed younger than the window (a fresh DevPriceFeed on a new local chain, a new aggregator phase) therefore has no
change over the window. The oracle does not quietly compute one over a shorter span: that would be another
measurement under the same name, judged by rules whose bands were set for ``window_s``. Instead the
:class:`~oracles.errors.OracleHistoryError` carries the latest round's readings, all checked, in ``available``;
the :class:`~oracles.guard.OracleGuard` the pipeline reads through keeps them and leaves only ``change_pct`` out,
with a WARNING log line, a count in ``chrysalis_oracle_skipped{oracle="price", reason="missing"}`` and the skip
recorded in the snapshot (``guard.skipped``, its reason in the reading's meta). The rules then fall back to their
default (the default rules: a calm mood), and the evolution goes on. To make evolutions wait for the history
instead, mark ``price.change_pct`` ``required`` in the guard; to measure over what the feed has, shorten
``window_s``.

Nothing questionable is ever returned. An answer older than ``max_age_s`` raises
:class:`~oracles.errors.StaleOracleDataError`. A non-positive answer, an incomplete round
(``updatedAt == 0``), an ``updatedAt`` after the block, a carried-over answer
(``answeredInRound < roundId``), an answer outside the optional ``[min_answer, max_answer]`` bounds, or
rounds out of time order raise
:class:`~oracles.errors.InvalidOracleDataError`. A hole in the round ids raises
:class:`~oracles.errors.RoundGapError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NoReturn

from web3 import Web3
from web3.exceptions import ContractLogicError

from agent.domain import OracleReading
from oracles.base import Oracle, ReadContext, call_at
from oracles.errors import (
    InvalidOracleDataError,
    OracleCallError,
    OracleHistoryError,
    RoundGapError,
    StaleOracleDataError,
)

AGGREGATOR_V3_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "description",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
    *(
        {
            "type": "function",
            "name": fn,
            "stateMutability": "view",
            "inputs": inputs,
            "outputs": [
                {"name": "roundId", "type": "uint80"},
                {"name": "answer", "type": "int256"},
                {"name": "startedAt", "type": "uint256"},
                {"name": "updatedAt", "type": "uint256"},
                {"name": "answeredInRound", "type": "uint80"},
            ],
        }
        for fn, inputs in (
            ("latestRoundData", []),
            ("getRoundData", [{"name": "_roundId", "type": "uint80"}]),
        )
    ),
]

PHASE_OFFSET = 64
"""Chainlink proxies encode ``roundId = phaseId << 64 | aggregatorRoundId``."""


@dataclass(frozen=True)
class Round:
    """One round of a feed, as ``latestRoundData`` / ``getRoundData`` return it."""

    round_id: int
    answer: int
    started_at: int
    updated_at: int
    answered_in_round: int


class ChainlinkOracle(Oracle):
    """Reads a Chainlink-compatible feed at the context's block.

    Args:
        address: The feed (proxy or aggregator) address.
        name: Reading prefix.
        max_age_s: Largest allowed ``block timestamp - updatedAt``; None disables the staleness check (set it
            a little above the feed's heartbeat).
        window_s: Window of ``change_pct`` in seconds; None leaves ``change_pct`` out.
        max_rounds: Most ``getRoundData`` calls one window walk may make.
        min_answer: Smallest plausible scaled answer (inclusive); None: only ``answer > 0`` is required.
        max_answer: Largest plausible scaled answer (inclusive); None: no upper bound.
    """

    def __init__(
        self,
        address: str,
        *,
        name: str = "price",
        max_age_s: int | None = 3_600,
        window_s: int | None = 86_400,
        max_rounds: int = 1_000,
        min_answer: float | None = None,
        max_answer: float | None = None,
    ) -> None:
        if max_age_s is not None and max_age_s < 0:
            raise ValueError("max_age_s must be >= 0 (or None to disable the staleness check)")
        if window_s is not None and window_s <= 0:
            raise ValueError("window_s must be > 0 (or None to leave change_pct out)")
        if max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.address = Web3.to_checksum_address(address)
        self._name = name
        self.max_age_s = max_age_s
        self.window_s = window_s
        self.max_rounds = max_rounds
        self.min_answer = min_answer
        self.max_answer = max_answer

    @property
    def name(self) -> str:
        return self._name

    @property
    def provides(self) -> tuple[str, ...]:
        fields = ["answer", "updated_at", "age_s", "round_id"]
        if self.window_s is not None:
            fields.append("change_pct")
        return tuple(f"{self._name}.{f}" for f in fields)

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        feed = ctx.web3.eth.contract(address=self.address, abi=AGGREGATOR_V3_ABI)
        decimals = int(self._call(ctx, "decimals()", feed.functions.decimals()))
        description = str(self._call(ctx, "description()", feed.functions.description()))
        latest = Round(*self._call(ctx, "latestRoundData()", feed.functions.latestRoundData()))
        self._check_round(ctx, latest, decimals)
        if latest.answered_in_round < latest.round_id:
            self._invalid(
                ctx, latest, f"answer carried over from round {latest.answered_in_round} (answeredInRound)"
            )
        age = ctx.block_timestamp - latest.updated_at
        if self.max_age_s is not None and age > self.max_age_s:
            raise StaleOracleDataError(
                oracle=self._name,
                block_number=ctx.block_number,
                updated_at=latest.updated_at,
                block_timestamp=ctx.block_timestamp,
                max_age_s=self.max_age_s,
            )

        source = f"chainlink:{self.address}"
        meta = {
            "raw": latest.answer,
            "decimals": decimals,
            "round_id": latest.round_id,
            "description": description,
        }
        readings = [
            self._reading(ctx, "answer", _scaled(latest.answer, decimals), source, meta),
            self._reading(ctx, "updated_at", latest.updated_at, source),
            self._reading(ctx, "age_s", age, source),
            self._reading(ctx, "round_id", latest.round_id, source),
        ]
        if self.window_s is not None:
            start = ctx.block_timestamp - self.window_s
            try:
                base, walked = self._round_at(ctx, feed, latest, start, decimals)
            except OracleHistoryError as exc:
                # The latest round passed every check: only the change over the window is missing.
                exc.available = tuple(readings)
                raise
            change = round(float(Fraction(latest.answer - base.answer, base.answer) * 100), 6)
            window_meta = {
                "window_s": self.window_s,
                "base_round_id": base.round_id,
                "base_raw": base.answer,
                "base_updated_at": base.updated_at,
                "rounds_walked": walked,
            }
            readings.append(self._reading(ctx, "change_pct", change, source, window_meta))
        return readings

    # -- the window walk ----------------------------------------------------------------------------------

    def _round_at(
        self, ctx: ReadContext, feed: Any, latest: Round, target: int, decimals: int
    ) -> tuple[Round, int]:
        """The newest round updated at or before ``target``, and how many rounds were read to find it."""
        newer = latest
        for walked in range(self.max_rounds + 1):
            if newer.updated_at <= target:
                return newer, walked
            if walked == self.max_rounds:
                break
            round_id = newer.round_id - 1
            if round_id & ((1 << PHASE_OFFSET) - 1) == 0:
                raise OracleHistoryError(
                    f"the feed's history starts at round {newer.round_id} (updated {newer.updated_at}), "
                    f"after the window's start {target}",
                    oracle=self._name,
                    block_number=ctx.block_number,
                    round_id=newer.round_id,
                    target_timestamp=target,
                    hint=f"shorten window_s (now {self.window_s} s) or wait until the feed has that much "
                    "history",
                )
            try:
                older = Round(
                    *self._call(ctx, f"getRoundData({round_id})", feed.functions.getRoundData(round_id))
                )
            except OracleCallError as exc:
                if not isinstance(exc.__cause__, ContractLogicError):
                    raise
                raise RoundGapError(
                    oracle=self._name,
                    block_number=ctx.block_number,
                    round_id=latest.round_id,
                    missing_round=round_id,
                ) from exc
            if older.round_id != round_id:
                self._invalid(ctx, older, f"getRoundData({round_id}) answered for round {older.round_id}")
            self._check_round(ctx, older, decimals)
            if older.updated_at > newer.updated_at:
                self._invalid(
                    ctx,
                    older,
                    f"updated at {older.updated_at}, after the newer round {newer.round_id} "
                    f"({newer.updated_at})",
                )
            newer = older
        raise OracleHistoryError(
            f"no round at or before {target} within {self.max_rounds} rounds back from round "
            f"{latest.round_id}",
            oracle=self._name,
            block_number=ctx.block_number,
            round_id=newer.round_id,
            target_timestamp=target,
            hint=f"raise max_rounds (now {self.max_rounds}) or shorten window_s (now {self.window_s} s)",
        )

    # -- checks -------------------------------------------------------------------------------------------

    def _check_round(self, ctx: ReadContext, rnd: Round, decimals: int) -> None:
        if rnd.round_id == 0:
            self._invalid(ctx, rnd, "round id 0: the feed has no rounds")
        if rnd.updated_at == 0:
            self._invalid(ctx, rnd, "incomplete round (updatedAt is 0)")
        if rnd.updated_at > ctx.block_timestamp:
            self._invalid(
                ctx, rnd, f"updatedAt {rnd.updated_at} is after the block's timestamp {ctx.block_timestamp}"
            )
        if rnd.answer <= 0:
            self._invalid(ctx, rnd, f"answer {rnd.answer} is not positive")
        scaled = Fraction(rnd.answer, 10**decimals)
        if self.min_answer is not None and scaled < Fraction(self.min_answer):
            self._invalid(ctx, rnd, f"answer {float(scaled)} is below min_answer {self.min_answer}")
        if self.max_answer is not None and scaled > Fraction(self.max_answer):
            self._invalid(ctx, rnd, f"answer {float(scaled)} is above max_answer {self.max_answer}")

    def _invalid(self, ctx: ReadContext, rnd: Round, reason: str) -> NoReturn:
        raise InvalidOracleDataError(
            reason, oracle=self._name, block_number=ctx.block_number, round_id=rnd.round_id
        )

    # -- plumbing -----------------------------------------------------------------------------------------

    def _call(self, ctx: ReadContext, what: str, fn: Any) -> Any:
        return call_at(
            lambda: fn.call(block_identifier=ctx.block_identifier),
            oracle=self._name,
            block_number=ctx.block_number,
            address=self.address,
            function=what,
        )

    def _reading(
        self, ctx: ReadContext, field: str, value: Any, source: str, meta: dict[str, Any] | None = None
    ) -> OracleReading:
        return OracleReading(f"{self._name}.{field}", value, source, ctx.block_number, meta or {})


def _scaled(answer: int, decimals: int) -> float:
    """``answer / 10**decimals`` as the nearest float (deterministic: exact rational, rounded once)."""
    return float(Fraction(answer, 10**decimals))
