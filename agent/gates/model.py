"""What a quality gate says about a candidate: one :class:`GateResult` per check, a :class:`GateReport` per try.

A report is plain JSON data (:meth:`GateReport.to_json` / :meth:`GateReport.from_json`) stored with the candidate:
in the job's ``generated`` record under the optional key ``gates`` (records written before the gates existed load
without it) and in the review item. It never enters the inference receipt or the token metadata, so a candidate
that passes on its first try publishes exactly the bytes it did before the gates existed.

A report also says which public reroll of the request's seed made the candidate (``reroll``, 0: the seed itself;
:func:`agent.review.reroll_seed`) and why the earlier tries failed (``history``), so a curator sees what the gates
caught before the candidate reached them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import PermanentError


@dataclass(frozen=True)
class GateResult:
    """One check's verdict.

    Attributes:
        name: The gate (``near_duplicate``, ``symmetry``, ``palette``, ``lore_length``, ``lore_blocklist``,
            ``lore_repetition``, ``lore_leakage``, or a plugin's name).
        passed: Whether the candidate passed it.
        value: What was measured (a number, or a list of offending strings).
        threshold: What it was compared with (None where the gate has no number).
        reason: A human sentence saying what was found (also for a pass).
    """

    name: str
    passed: bool
    value: Any = None
    threshold: Any = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            name=str(data["name"]),
            passed=bool(data["passed"]),
            value=data.get("value"),
            threshold=data.get("threshold"),
            reason=str(data.get("reason") or ""),
        )


@dataclass(frozen=True)
class GateReport:
    """Every gate's result for the candidate as it stands, plus what the earlier tries failed.

    Attributes:
        results: One result per gate run, in a fixed order.
        reroll: Which reroll of the request's seed made this candidate (0: the seed itself).
        request_seed: The request's on-chain seed (the base of the rerolls), when known.
        history: For each earlier (failed) try, in order, the reasons it failed.
    """

    results: tuple[GateResult, ...] = ()
    reroll: int = 0
    request_seed: str | None = None
    history: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def passed(self) -> bool:
        """Whether every gate passed."""
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The failed gates' reasons, as ``name: reason``."""
        return tuple(f"{r.name}: {r.reason}" for r in self.failed)

    @property
    def tries(self) -> int:
        return len(self.history) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "results": [r.to_json() for r in self.results],
            "reasons": list(self.reasons),
            "reroll": self.reroll,
            "request_seed": self.request_seed,
            "history": [list(h) for h in self.history],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateReport:
        return cls(
            results=tuple(GateResult.from_json(r) for r in data.get("results") or ()),
            reroll=int(data.get("reroll") or 0),
            request_seed=data.get("request_seed"),
            history=tuple(tuple(str(x) for x in h) for h in data.get("history") or ()),
        )


class GatesFailedError(PermanentError):
    """A candidate failed the quality gates on every try and review is off, so nothing may publish it."""

    def __init__(self, label: str, report: GateReport, tries: int) -> None:
        self.report = report
        names = ", ".join(sorted({r.name for r in report.failed}))
        super().__init__(
            f"{label} failed the quality gates ({names}) on all {tries} tries: " + "; ".join(report.reasons),
            hint="raise the failing gate's threshold or gates.max_rerolls in [gates], or turn on review "
            "(studio.review = true) so a curator decides on flagged candidates",
        )


def failed_names(reports: Sequence[GateReport]) -> list[str]:
    """Sorted names of the gates any of ``reports`` failed."""
    return sorted({r.name for rep in reports for r in rep.failed})
