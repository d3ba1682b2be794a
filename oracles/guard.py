"""The reading guard: stale, missing or absurd oracle data is skipped, logged and counted, never evolved on.

:class:`OracleGuard` takes a snapshot like :func:`oracles.snapshot.take_snapshot`, but screens each oracle first:

- the oracle itself refuses its data (:class:`~oracles.errors.StaleOracleDataError`,
  :class:`~oracles.errors.InvalidOracleDataError`, :class:`MissingOracleDataError`, a reverted call, ...);
- a reading is missing, ``None``, or a float that is NaN or infinite;
- a reading is outside its configured ``[min, max]`` (absurd);
- a timestamp reading is older than its ``max_age_s`` at the block (stale), or after the block.

An oracle's readings come from one source, so one bad reading leaves *all* of that oracle's readings out. The one
exception is missing *history*: a price feed younger than its change window
(:class:`~oracles.errors.OracleHistoryError`) has a trustworthy latest answer and only no change over the window,
so the readings the error carries as ``available`` (checked here like any other) stay in and only the rest (e.g.
``price.change_pct``) is skipped with reason ``missing``. Each skip is logged at WARNING
(``oracle 'price' at block 1234 skipped (stale): ...; left out: price.answer, ...``) and counted in
``chrysalis_oracle_skipped{oracle, reason}`` (:data:`ORACLE_SKIPPED`, in :data:`agent.metrics.REGISTRY`).
The snapshot then holds the readings that passed plus ``guard.skipped`` (the names left out, reasons in its
``meta``), so the receipt's snapshot hash records what was skipped and why.

What happens next is the rules' decision, and it is never a garbage evolution: a rule with a ``default`` uses it
(the default rules keep a calm mood when there is no price), a rule without one raises
:class:`~agent.rules.errors.MissingFeatureError`, and a reading the guard marks ``required`` makes the whole
snapshot fail with :class:`GuardRejectedError` (retryable: the job waits until the data is good again).
A node that cannot be reached is not bad data: :class:`~oracles.errors.OracleUnavailableError` propagates
(retryable) and nothing is skipped.

Configuration (e.g. from a TOML table) with :meth:`OracleGuard.from_mapping`::

    [guard."price.answer"]
    min = 100
    max = 1000000
    required = true
    [guard."price.updated_at"]
    max_age_s = 3600
    [guard."http.usd"]
    min = 0
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.domain import InputSnapshot, OracleReading
from agent.errors import ConfigError, RetryableError
from agent.metrics import ORACLE_SKIPPED
from oracles.base import Oracle, ReadContext
from oracles.errors import (
    InvalidOracleDataError,
    OracleError,
    OracleHistoryError,
    OracleUnavailableError,
    StaleOracleDataError,
)
from oracles.snapshot import check_canonical, take_snapshot

log = logging.getLogger(__name__)

GUARD_READING = "guard.skipped"
"""The reading every guarded snapshot carries: the names of the readings left out (sorted)."""

REASONS = ("stale", "missing", "absurd", "failed")
"""Why an oracle was skipped: ``stale`` (too old), ``missing`` (no value), ``absurd`` (impossible or out of
bounds), ``failed`` (the call reverted or the oracle refused for another reason)."""


class MissingOracleDataError(OracleError, LookupError):
    """An oracle's source has no value where one is expected (a JSON path that is not there, a null).

    Attributes:
        reading: The reading name. detail: What is missing.
    """

    def __init__(
        self, detail: str, *, oracle: str, block_number: int, reading: str, hint: str | None = None
    ) -> None:
        self.reading = reading
        self.detail = detail
        super().__init__(
            f"{reading}: {detail}",
            oracle=oracle,
            block_number=block_number,
            hint=hint or "check the source and the path the reading is taken from",
        )


class AbsurdOracleDataError(OracleError, ValueError):
    """An oracle's source gave a value that cannot be right (not a number, NaN, out of its plausible range).

    Attributes:
        reading: The reading name. value: The value received (as text). detail: What is wrong with it.
    """

    def __init__(
        self,
        detail: str,
        *,
        oracle: str,
        block_number: int,
        reading: str,
        value: Any,
        hint: str | None = None,
    ) -> None:
        self.reading = reading
        self.value = repr(value)
        self.detail = detail
        super().__init__(
            f"{reading} = {value!r}: {detail}",
            oracle=oracle,
            block_number=block_number,
            hint=hint
            or "never trust this value; check the source, or widen the bounds if it is really plausible",
        )


class GuardRejectedError(RetryableError):
    """A reading marked ``required`` was skipped: the evolution waits until the data is good.

    Attributes:
        block_number: The snapshot's block. skipped: What was skipped.
    """

    def __init__(self, *, block_number: int, skipped: Sequence[SkippedOracle]) -> None:
        self.block_number = block_number
        self.skipped = tuple(skipped)
        lines = "; ".join(f"{s.oracle} ({s.reason}): {s.detail}" for s in skipped)
        super().__init__(
            f"required oracle data at block {block_number} was skipped: {lines}",
            hint="the job is retried later; fix the feed or source, or relax the guard's limits if they are wrong",
        )


@dataclass(frozen=True)
class ReadingCheck:
    """Limits for one reading.

    Attributes:
        reading: The reading name (``price.answer``).
        min: Smallest plausible value (inclusive); None: no lower bound.
        max: Largest plausible value (inclusive); None: no upper bound.
        max_age_s: The reading is a unix timestamp; it may be at most this many seconds before the block.
        required: Skipping it rejects the whole snapshot (:class:`GuardRejectedError`).
    """

    reading: str
    min: float | None = None
    max: float | None = None
    max_age_s: int | None = None
    required: bool = False

    def __post_init__(self) -> None:
        where = f"guard check {self.reading!r}"
        for key in ("min", "max"):
            bound = getattr(self, key)
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound)
            ):
                raise ConfigError(
                    f"{where}: {key} = {bound!r} is not a finite number", hint=f"set {key} to a number"
                )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(
                f"{where}: min {self.min} is above max {self.max}", hint="swap or fix the bounds"
            )
        if self.max_age_s is not None and (
            isinstance(self.max_age_s, bool) or not isinstance(self.max_age_s, int) or self.max_age_s < 0
        ):
            raise ConfigError(
                f"{where}: max_age_s = {self.max_age_s!r}", hint="set max_age_s to whole seconds >= 0"
            )


@dataclass(frozen=True)
class SkippedOracle:
    """One oracle left out of a snapshot.

    Attributes:
        oracle: Its name. reason: One of :data:`REASONS`. detail: What was wrong. readings: Names left out.
        required: Whether a left-out reading is required.
    """

    oracle: str
    reason: str
    detail: str
    readings: tuple[str, ...]
    required: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "oracle": self.oracle,
            "reason": self.reason,
            "detail": self.detail,
            "readings": list(self.readings),
            "required": self.required,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SkippedOracle:
        return cls(
            str(data["oracle"]),
            str(data["reason"]),
            str(data["detail"]),
            tuple(data["readings"]),
            bool(data.get("required")),
        )


@dataclass(frozen=True)
class GuardedSnapshot:
    """A snapshot of the readings that passed, and what was skipped."""

    snapshot: InputSnapshot
    skipped: tuple[SkippedOracle, ...] = field(default_factory=tuple)


class OracleGuard:
    """Screens oracle readings against :class:`ReadingCheck` limits (and the universal checks).

    Args:
        checks: Limits per reading name (readings without one get the universal checks only).
    """

    def __init__(self, checks: Iterable[ReadingCheck] = ()) -> None:
        self.checks: dict[str, ReadingCheck] = {}
        # (oracle, reason) skips already warned about: the next ones log at DEBUG until the oracle passes again
        # (a fresh local chain skips price.change_pct at every evolution for a day: one WARNING says it)
        self._warned: set[tuple[str, str]] = set()
        self._warned_lock = threading.Lock()
        for check in checks:
            if check.reading in self.checks:
                raise ConfigError(f"two guard checks for {check.reading!r}", hint="merge them into one")
            self.checks[check.reading] = check

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, Any]]) -> OracleGuard:
        """From ``{reading: {min, max, max_age_s, required}}`` (a TOML ``[guard."<reading>"]`` table)."""
        checks = []
        allowed = {"min", "max", "max_age_s", "required"}
        for reading, spec in data.items():
            if not isinstance(spec, Mapping):
                raise ConfigError(
                    f"guard.{reading} is not a table", hint='write [guard."<reading>"] min = ...'
                )
            unknown = sorted(set(spec) - allowed)
            if unknown:
                raise ConfigError(
                    f"guard.{reading}.{unknown[0]} is not a guard setting",
                    hint=f"use {', '.join(sorted(allowed))}",
                )
            required = spec.get("required", False)
            if not isinstance(required, bool):
                raise ConfigError(
                    f"guard.{reading}.required = {required!r}", hint="write required = true or false"
                )
            checks.append(
                ReadingCheck(
                    reading=str(reading),
                    min=spec.get("min"),
                    max=spec.get("max"),
                    max_age_s=spec.get("max_age_s"),
                    required=required,
                )
            )
        return cls(checks)

    # -- screening ----------------------------------------------------------------------------------------

    def screen(self, oracle: Oracle, ctx: ReadContext) -> tuple[list[OracleReading], SkippedOracle | None]:
        """Read ``oracle`` at ``ctx``: the readings that passed, and what was skipped and why (None: nothing).

        Either everything passes, or nothing (and why), or, for missing history only, the readings the history
        does not affect plus the skip of the rest (see the module docstring).

        Raises:
            OracleUnavailableError: the node or source could not be reached (retryable; nothing is skipped).
        """
        provides = tuple(oracle.provides)
        try:
            readings = oracle.read(ctx)
        except OracleHistoryError as exc:
            kept = [r for r in exc.available if r.name in provides]
            problems = [(r.name, p) for r in kept if (p := self._problem(r, ctx)) is not None]
            if problems:
                name, (reason, detail) = problems[0]
                return [], self._skip(oracle.name, reason, f"{name}: {detail}", provides, ctx)
            names = {r.name for r in kept}
            left_out = tuple(n for n in provides if n not in names)
            return kept, self._skip(oracle.name, _reason(exc), exc.message, left_out, ctx)
        except OracleError as exc:
            return [], self._skip(oracle.name, _reason(exc), exc.message, provides, ctx)
        got = {r.name: r for r in readings}
        for name in provides:
            if name not in got:
                return [], self._skip(oracle.name, "missing", f"{name} was not returned", provides, ctx)
        for name in provides:
            problem = self._problem(got[name], ctx)
            if problem is not None:
                return [], self._skip(oracle.name, problem[0], f"{name}: {problem[1]}", provides, ctx)
        self._passed(oracle.name, ctx)
        return [got[name] for name in provides], None

    def snapshot(
        self, oracles: Sequence[Oracle], ctx: ReadContext, *, include_context: bool = True
    ) -> GuardedSnapshot:
        """Screen every oracle, then take the snapshot of what passed (see the module docstring).

        Raises:
            GuardRejectedError: a required reading was skipped (retryable).
            OracleUnavailableError, SnapshotReorgError: as :func:`~oracles.snapshot.take_snapshot` (retryable).
            SnapshotConfigError: duplicate oracle names, or an oracle misbehaves.
        """
        passed: list[tuple[str, list[OracleReading]]] = []
        skipped: list[SkippedOracle] = []
        for oracle in oracles:
            try:
                readings, skip = self.screen(oracle, ctx)
            except OracleUnavailableError as exc:
                if exc.block_unknown:  # the pinned block may have vanished: report a reorg as one
                    check_canonical(ctx)
                raise
            if skip is not None:
                skipped.append(skip)
            if readings:
                passed.append((oracle.name, readings))
        rejected = [s for s in skipped if s.required]
        if rejected:
            raise GuardRejectedError(block_number=ctx.block_number, skipped=rejected)
        snapshot = self.assemble(passed, skipped, ctx, include_context=include_context)
        return GuardedSnapshot(snapshot, tuple(skipped))

    def assemble(
        self,
        passed: Sequence[tuple[str, Sequence[OracleReading]]],
        skipped: Sequence[SkippedOracle],
        ctx: ReadContext,
        *,
        include_context: bool = True,
    ) -> InputSnapshot:
        """The snapshot of readings already screened (by oracle name), with the guard's marker of what was
        left out. :meth:`snapshot` ends here; a refresh, which screens block-level oracles once for many
        tokens, calls it directly."""
        left_out = sorted(name for s in skipped for name in s.readings)
        reasons = {s.oracle: {"reason": s.reason, "detail": s.detail} for s in skipped}
        marker = OracleReading(GUARD_READING, left_out, "guard", ctx.block_number, {"skipped": reasons})
        fixed = [_Fixed(name, readings) for name, readings in passed]
        return take_snapshot([*fixed, _Fixed("guard", [marker])], ctx, include_context=include_context)

    # -- checks -------------------------------------------------------------------------------------------

    def _problem(self, reading: OracleReading, ctx: ReadContext) -> tuple[str, str] | None:
        value = reading.value
        if value is None:
            return "missing", "no value (null)"
        if isinstance(value, float) and not math.isfinite(value):
            return "absurd", f"{value!r} is not a finite number"
        check = self.checks.get(reading.name)
        if check is None:
            return None
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (check.min is not None or check.max is not None or check.max_age_s is not None) and not numeric:
            return "absurd", f"{value!r} is not a number"
        if check.min is not None and value < check.min:
            return "absurd", f"{value!r} is below the minimum {check.min!r}"
        if check.max is not None and value > check.max:
            return "absurd", f"{value!r} is above the maximum {check.max!r}"
        if check.max_age_s is not None:
            age = ctx.block_timestamp - value
            if age < 0:
                return "absurd", f"timestamp {value} is {-age} s after the block ({ctx.block_timestamp})"
            if age > check.max_age_s:
                return "stale", f"updated {age} s before the block, the limit is {check.max_age_s} s"
        return None

    def _skip(
        self, oracle: str, reason: str, detail: str, readings: tuple[str, ...], ctx: ReadContext
    ) -> SkippedOracle:
        required = any(self.checks.get(name, _NO_CHECK).required for name in readings)
        ORACLE_SKIPPED.labels(oracle=oracle, reason=reason).inc()
        with self._warned_lock:
            first = (oracle, reason) not in self._warned
            self._warned.add((oracle, reason))
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "oracle %r at block %d skipped (%s): %s; left out of the snapshot: %s%s%s",
            oracle,
            ctx.block_number,
            reason,
            detail,
            ", ".join(readings) or "(nothing)",
            " [required: the evolution waits]" if required else "",
            f"; later skips of {oracle!r} for this reason are logged at DEBUG (and counted in "
            "chrysalis_oracle_skipped_total) until it passes again"
            if first
            else "",
        )
        return SkippedOracle(oracle, reason, detail, readings, required)

    def _passed(self, oracle: str, ctx: ReadContext) -> None:
        """``oracle`` passed whole: a later skip warns again (and say that it recovered, if it had warned)."""
        with self._warned_lock:
            recovered = {key for key in self._warned if key[0] == oracle}
            self._warned -= recovered
        if recovered:
            log.info("oracle %r passes again at block %d", oracle, ctx.block_number)


_NO_CHECK = ReadingCheck(reading="")


def _reason(exc: OracleError) -> str:
    if isinstance(exc, StaleOracleDataError):
        return "stale"
    if isinstance(exc, (MissingOracleDataError, OracleHistoryError)):
        return "missing"
    if isinstance(exc, (InvalidOracleDataError, AbsurdOracleDataError)):
        return "absurd"
    return "failed"  # a reverted call (OracleCallError), a holder mismatch, ...


class _Fixed(Oracle):
    """Readings already read and screened, handed to :func:`take_snapshot` under their oracle's name."""

    def __init__(self, name: str, readings: Sequence[OracleReading]) -> None:
        self._name = name
        self._readings = list(readings)

    @property
    def name(self) -> str:
        return self._name

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._readings)

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        return list(self._readings)
