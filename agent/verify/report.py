"""What a verification found: every check with its result, the fields that differ, the verdict and exit code.

Exit codes (``chrysalis verify``, ``python -m agent.generate.verify``): 0 match, 1 mismatch (the report names
each field that differs), 2 cannot reproduce here (a GPU receipt, or a model that is not on this machine), 3 bad
input or an unreachable source (raised as an error, not reported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.generate.verify import EXIT_MATCH, EXIT_MISMATCH, EXIT_NOT_REPRODUCIBLE, FieldMismatch

Status = Literal["ok", "mismatch", "skipped", "not reproducible"]

_MARKS = {"ok": "ok", "mismatch": "FAIL", "skipped": "--", "not reproducible": "??"}


@dataclass(frozen=True)
class Check:
    """One thing verify checked.

    Attributes:
        name: What (``chain.id``, ``chain.provenance``, ``metadata.image``, ``replay``...).
        status: ``ok``, ``mismatch``, ``skipped`` (could not be checked here; ``detail`` says why) or
            ``not reproducible``.
        detail: What was compared and what was found, in a line.
    """

    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class StageCheck:
    """The outcome of verifying one version of a token.

    Attributes:
        token_id, stage, cid: What was verified (``cid``: the version's metadata).
        match: Every field matched and the outputs were reproduced.
        reproducible: False when the outputs could not be replayed here (a GPU / half-precision receipt, or a
            model that is not on this machine).
        mismatches: Every field that differs (receipt / on-chain value = ``expected``, found = ``actual``).
        note: What was replayed and how.
        checked: Every field compared.
        seconds: How long it took.
        checks: Every check, in order, with its result (chain, contract, IPFS, links, replay).
        chain_id, contract: Where the token lives.
        hint: What to do when the verdict is "not reproducible here".
    """

    token_id: int
    stage: int
    cid: str
    match: bool
    reproducible: bool
    mismatches: list[FieldMismatch]
    note: str
    checked: list[str] = field(default_factory=list)
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    chain_id: int | None = None
    contract: str | None = None
    hint: str | None = None

    @property
    def exit_code(self) -> int:
        if self.mismatches:
            return EXIT_MISMATCH
        return EXIT_MATCH if self.match else EXIT_NOT_REPRODUCIBLE

    @property
    def verdict(self) -> str:
        """``match``, ``mismatch`` or ``not reproducible here``."""
        if self.mismatches:
            return "mismatch"
        return "match" if self.match else "not reproducible here"

    def to_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "stage": self.stage,
            "cid": self.cid,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "match": self.match,
            "reproducible": self.reproducible,
            "mismatches": [
                {"field": m.field, "expected": m.expected, "actual": m.actual} for m in self.mismatches
            ],
            "checks": [c.to_json() for c in self.checks],
            "note": self.note,
            "hint": self.hint,
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
        }

    def report(self) -> str:
        """Lines for the terminal (what ``chrysalis verify`` prints)."""
        where = ""
        if self.chain_id is not None and self.contract:
            where = f" on chain {self.chain_id}, collection {self.contract}"
        lines = [f"token {self.token_id} stage {self.stage} ({self.cid}){where}: {self.verdict.upper()}"]
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            lines.append(f"  {_MARKS[c.status]:<4} {c.name:<{width}}  {c.detail}")
        lines.append(self.note)
        for m in self.mismatches:
            lines.append(f"  {m.field}: expected {m.expected!r}, got {m.actual!r}")
        if self.hint and not self.match:
            lines.append(f"hint: {self.hint}")
        lines.append(f"{len(self.checked)} fields checked in {self.seconds:.1f} s")
        return "\n".join(lines)
