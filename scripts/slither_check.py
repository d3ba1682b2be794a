"""Run slither over the project's contracts and hold its findings to a checked-in triage.

`make lint` runs this. Every finding in project code (OpenZeppelin and the gas baseline are filtered out) must match
an entry of `contracts/slither-triage.toml`, which says why it is accepted; a new finding fails the lint, and so
does an entry that no longer matches anything (so the file cannot rot). A finding is keyed by its detector and the
place it names (`Contract.function` or `Contract.function.variable`), not by line numbers, so editing other code
does not disturb the triage.

    python scripts/slither_check.py            # check (exit 1 on a new or stale entry)
    python scripts/slither_check.py --list     # print every finding with its key, triaged or not
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = ROOT / "contracts" / "slither-triage.toml"
SOLC_VERSION = "0.8.37"
FILTERED = "node_modules|contracts/bench"


@dataclass(frozen=True)
class Finding:
    check: str
    where: str
    impact: str
    summary: str


def _qualified(element: dict) -> str:
    """`Contract.function.variable` for an element, from its parent chain (no line numbers)."""
    names = [element["name"]]
    parent = element.get("type_specific_fields", {}).get("parent")
    while parent:
        names.append(parent["name"])
        parent = parent.get("type_specific_fields", {}).get("parent")
    return ".".join(reversed(names))


def _key_element(result: dict) -> dict:
    # A finding's first element is what it is about; `node` elements are source text, so prefer the enclosing one.
    elements = [e for e in result["elements"] if e["type"] != "node"] or result["elements"]
    return elements[0]


def run_slither() -> list[Finding]:
    solc = ROOT / ".solcx" / f"solc-v{SOLC_VERSION}"
    if not solc.exists() or not (ROOT / "node_modules" / "@openzeppelin").is_dir():
        sys.exit("error: the solc wrapper or node_modules is missing\nhint: run `make setup` first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "slither.json"
        cmd = [
            str(Path(sys.executable).with_name("slither")),
            "contracts",
            "--solc",
            str(solc),
            "--solc-remaps",
            "@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/",
            "--solc-standard-json",
            "--filter-paths",
            FILTERED,
            "--exclude-dependencies",
            "--json",
            str(out),
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if not out.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            sys.exit(f"error: slither did not run (exit {proc.returncode}):\n{tail}\nhint: run `make setup`")
        report = json.loads(out.read_text())
    if not report.get("success"):
        sys.exit(f"error: slither failed: {report.get('error')}\nhint: does `ape compile` pass?")
    findings = set()
    for result in report.get("results", {}).get("detectors", []):
        element = _key_element(result)
        summary = result["description"].strip().splitlines()[0]
        findings.add(Finding(result["check"], _qualified(element), result["impact"], summary))
    return sorted(findings, key=lambda f: (f.check, f.where))


def load_triage() -> dict[tuple[str, str], str]:
    entries = tomllib.loads(TRIAGE.read_text())["accepted"]
    triage: dict[tuple[str, str], str] = {}
    for entry in entries:
        if not entry.get("reason", "").strip():
            sys.exit(f"error: {TRIAGE.name}: the entry {entry['check']} at {entry['where']} gives no reason")
        triage[(entry["check"], entry["where"])] = entry["reason"]
    return triage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every finding with its key")
    args = parser.parse_args()
    findings = run_slither()
    triage = load_triage()
    keys = {(f.check, f.where) for f in findings}
    new = [f for f in findings if (f.check, f.where) not in triage]
    stale = sorted(set(triage) - keys)
    if args.list:
        for f in findings:
            mark = "new" if f in new else "triaged"
            print(f"{mark:8} {f.impact:13} {f.check:22} {f.where}")
        return 0
    for f in new:
        print(f"error: new slither finding [{f.impact}] {f.check} at {f.where}: {f.summary}", file=sys.stderr)
    for check, where in stale:
        print(
            f"error: {TRIAGE.name} accepts {check} at {where}, which slither no longer reports",
            file=sys.stderr,
        )
    if new or stale:
        print(
            f"hint: fix the code, or add (or remove) an entry in contracts/{TRIAGE.name} with the reason; "
            "`python scripts/slither_check.py --list` prints every finding's key",
            file=sys.stderr,
        )
        return 1
    print(f"slither: {len(findings)} finding(s), all triaged in contracts/{TRIAGE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
