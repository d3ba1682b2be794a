"""Write the shared test vectors of the rules evaluator (``chrysalis-rules/1``) from the Python engine.

    .venv/bin/python scripts/rules_vectors.py          # rewrite the vector file (VECTORS)
    .venv/bin/python scripts/rules_vectors.py --check  # exit 1 if it differs from what Python computes

Both evaluators are held to the file: ``tests/rules/test_rules_js.py`` recomputes it with
:meth:`agent.rules.RuleEngine.evaluate` (so it cannot drift silently) and runs ``tests/rules/rules_check.mjs``
under Node.js on ``renderer/rules.js``.

For each rules file (the shipped ``agent/rules/default_rules.toml`` and ``tests/rules/data/edge_rules.toml``) the file
holds its export (:func:`agent.rules.rules_data.rules_to_json`) and cases: a base input with one feature varied at a
time through every band end (as int, float, the floats one ulp either side, and Decimals), every map key and
unlisted values, -0.0, infinities, huge ints, NaN, wrong types and a missing feature; then stages and previous traits
for ``changed`` and ``strength``. Values are typed, because the engine's results depend on Python's types:
``{"int": "12"}``, ``{"float": "<repr>"}``, ``{"decimal": "<str>"}``, ``{"str": "..."}``, ``{"bool": true}``, or
``null`` (missing). Each case expects the engine's result (``strength`` as its repr, ``changed`` sorted, ``why``) or
its error (``type``, ``rule``, ``feature``, ``reason``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.rules import DEFAULT_RULES, RuleEngine, load_rules  # noqa: E402
from agent.rules.errors import FeatureValueError, RuleEvaluationError  # noqa: E402
from agent.rules.model import BandsRule, MapRule  # noqa: E402
from agent.rules.rules_data import FORMAT, rules_to_json  # noqa: E402

VECTORS = ROOT / "tests" / "rules" / "data" / "rules_vectors.json"
RULE_FILES = {"default": DEFAULT_RULES, "edge": ROOT / "tests" / "rules" / "data" / "edge_rules.toml"}
VECTORS_FORMAT = "chrysalis-rules-vectors/1"

BASES: dict[str, dict[str, Any]] = {
    "default": {
        "price.change_pct": 3.2,
        "wallet.held_seconds": 90_000,
        "wallet.tx_count": 12,
        "wallet.balance_eth": 1.5,
        "wallet.tokens_held": 3,
    },
    "edge": {"x": 1, "tenth": 0.2, "count": 1, "colour": "red", "sky": "red"},
}

#: Values tried on every number feature, besides its band ends and map keys.
ODD_NUMBERS: list[Any] = [
    0,
    -0.0,
    0.0,
    -1,
    1.5,
    2.0,
    1e-05,
    1e16,
    1.7976931348623157e308,
    5e-324,
    math.inf,
    -math.inf,
    2**64 + 1,
    -(2**70),
    Decimal("2.0"),
    Decimal("2.50"),
    Decimal("-0"),
    Decimal("1E+2"),
    Decimal("1E-7"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    math.nan,
    Decimal("NaN"),
    True,
    "7",
    None,
]
ODD_STRINGS: list[Any] = [
    "",
    "green",
    "RED",
    "toString",
    "__proto__",
    "constructor",
    "ü",
    "u\u0308",
    3,
    True,
    None,
]


def encode(value: Any) -> Any:
    """A Python input value as typed JSON (see the module docstring)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, str):
        return {"str": value}
    raise TypeError(f"no typed JSON for {value!r}")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if value is None:
        return None
    ((kind, text),) = value.items()
    return {"bool": bool, "int": int, "float": float, "decimal": Decimal, "str": str}[kind](text)


def _near(end: float) -> list[Any]:
    """A band end as a float, the floats one ulp either side, an int when integral, and Decimals around it."""
    values: list[Any] = [
        end,
        math.nextafter(end, -math.inf),
        math.nextafter(end, math.inf),
        Decimal(repr(end)),
    ]
    if end.is_integer():
        values += [int(end), int(end) - 1, int(end) + 1]
    with localcontext(Context(prec=2000)):  # exact: the float's binary expansion, and 1E-30 either side
        values += [Decimal(end), Decimal(end) + Decimal("1E-30"), Decimal(end) - Decimal("1E-30")]
    return values


def number_values(engine: RuleEngine, feature: str) -> list[Any]:
    """Values that reach every branch of every rule reading ``feature``, in a fixed order without repeats."""
    values: list[Any] = []
    for rule in [*engine.spec.traits.values(), *engine.spec.facts.values()]:
        if isinstance(rule, BandsRule) and rule.feature == feature:
            for band in rule.bands:
                for end in (band.min, band.max):
                    if end is not None:
                        values += _near(end)
        elif isinstance(rule, MapRule) and rule.feature == feature:
            values += [int(key) for key in rule.map]
            values += [float(int(key)) for key in rule.map if abs(int(key)) < 2**53]
            values += [Decimal(key) for key in rule.map]
    return _unique(values + ODD_NUMBERS)


def _unique(values: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for v in values:
        key = json.dumps(encode(v), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def cases(name: str, engine: RuleEngine) -> Iterator[dict[str, Any]]:
    """The input sets of one rules file (see the module docstring)."""
    base = BASES[name]
    yield {"inputs": base, "stage": 1, "token_id": 1, "previous": None}
    for feature, ftype in engine.spec.feature_types().items():
        if feature.startswith("token."):
            continue
        for value in (
            number_values(engine, feature) if ftype == "number" else _unique(ODD_STRINGS + _keys(engine))
        ):
            yield {"inputs": {**base, feature: value}, "stage": 1, "token_id": 1, "previous": None}
        yield {
            "inputs": {k: v for k, v in base.items() if k != feature},
            "stage": 1,
            "token_id": 1,
            "previous": None,
        }
    first = engine.evaluate(base, stage=1, token_id=1).traits
    other = {trait: f"not-{value}" for trait, value in first.items()}
    previous_sets: list[dict[str, Any] | None] = [None, {}, first, other]
    previous_sets += [{**first, trait: "changed"} for trait in sorted(first)]
    for stage in [0, 1, 2, 3, 4, 7, -1, 2**70, 1.0, 2.5, -0.0, Decimal("2.0")]:
        for previous in previous_sets if stage in (1, 2) else previous_sets[:3:2]:
            yield {"inputs": base, "stage": stage, "token_id": 2**64 - 1, "previous": previous}


def _keys(engine: RuleEngine) -> list[str]:
    return [
        key
        for rule in [*engine.spec.traits.values(), *engine.spec.facts.values()]
        if isinstance(rule, MapRule)
        for key in rule.map
    ]


def expected(engine: RuleEngine, case: dict[str, Any]) -> dict[str, Any]:
    """What the Python engine gives for one case, as JSON."""
    try:
        result = engine.evaluate(
            case["inputs"], stage=case["stage"], token_id=case["token_id"], previous=case["previous"]
        )
    except RuleEvaluationError as exc:
        reason = exc.reason if isinstance(exc, FeatureValueError) else "missing"
        return {
            "error": {"type": type(exc).__name__, "rule": exc.rule, "feature": exc.feature, "reason": reason}
        }
    return {
        "traits": result.traits,
        "conditioning": result.conditioning,
        "strength": repr(result.strength),
        "facts": result.facts,
        "changed": sorted(result.changed),
        "why": result.why,
    }


def build() -> dict[str, Any]:
    """The whole vector file, from the Python engine."""
    sets = []
    for name, path in RULE_FILES.items():
        engine = load_rules(path)
        rows = []
        for case in cases(name, engine):
            rows.append(
                {
                    "inputs": {k: encode(v) for k, v in case["inputs"].items()},
                    "stage": encode(case["stage"]),
                    "token_id": encode(case["token_id"]),
                    "previous": case["previous"],
                    "expected": expected(engine, case),
                }
            )
        sets.append(
            {
                "name": name,
                "source": path.relative_to(ROOT).as_posix(),
                "rules": rules_to_json(engine),
                "cases": rows,
            }
        )
    return {"format": VECTORS_FORMAT, "rules_format": FORMAT, "sets": sets}


def render(vectors: dict[str, Any]) -> str:
    """The file's text: sorted keys, one line per case (small, and a diff shows which cases changed)."""
    line = {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":")}
    sets = []
    for entry in vectors["sets"]:
        head = {k: v for k, v in entry.items() if k != "cases"}
        rows = ",\n".join(json.dumps(case, **line) for case in entry["cases"])  # type: ignore[arg-type]
        sets.append(json.dumps(head, **line)[:-1] + ',"cases":[\n' + rows + "\n]}")  # type: ignore[arg-type]
    top = {k: v for k, v in vectors.items() if k != "sets"}
    return json.dumps(top, **line)[:-1] + ',"sets":[\n' + ",\n".join(sets) + "\n]}\n"  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what Python computes"
    )
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        if not VECTORS.is_file() or VECTORS.read_text(encoding="utf-8") != text:
            print(
                f"{VECTORS.relative_to(ROOT)} is out of date: run scripts/rules_vectors.py and review the diff",
                file=sys.stderr,
            )
            return 1
        print(f"{VECTORS.relative_to(ROOT)} is up to date")
        return 0
    VECTORS.write_text(text, encoding="utf-8")
    print(f"wrote {VECTORS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
