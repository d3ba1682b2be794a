"""Rules as data: the canonical JSON (``chrysalis-rules/1``) that ``renderer/rules.js`` evaluates in a browser.

:func:`rules_to_json` turns validated rules into one JSON object holding everything
:meth:`agent.rules.engine.RuleEngine.evaluate` reads; :func:`rules_json_bytes` gives its deterministic bytes
(:func:`agent.domain.canonical_json`), the file pinned beside the renderer. :func:`rules_from_json` reads it back,
and ``rules_from_json(rules_to_json(engine)).sha256 == engine.sha256``: nothing the evaluator reads is lost, and
``rules_sha256`` in the export is the hash a token's receipt records for the rules that ran.

Layout::

    {"format": "chrysalis-rules/1", "rules_sha256": "<hex>", "version": 1, "description": "...",
     "features": {"<name>": {"type": "number"|"string", "description": "..."}},   # declared
     "feature_types": {"<name>": "number"|"string"},      # declared + built in (token.stage, token.id)
     "traits": [{"name": "aura", "kind": "bands", "feature": "...", "default": null, "description": "...",
                 "bands": [{"value": "...", "min": null, "max": 86400.0,
                            "min_inclusive": true, "max_inclusive": false}, ...]},
                {"name": "form", "kind": "map", "feature": "token.stage", "map": {"0": "egg"},
                 "otherwise": "imago", "default": null, "description": ""},
                {"name": "species", "kind": "constant", "value": "chrysalid", "description": ""}],  # by name
     "facts": [...same rule objects, sorted by name...],
     "image": {"model": "...", "allowed": {...}, "conditioning": {"<model key>": "<trait>"},
               "strength": {"default": 0.6, "by_stage": {"1": 0.8}, "by_trait_change": {"mood": 0.7}}}}

Band ends are float64 JSON numbers (shortest round-trip text), which JS parses to the same doubles; rules.js
compares them exactly against ints (BigInt), floats and Decimals, as Python does.

What JS cannot evaluate identically is refused here, never exported: anything the format does not know (a rule
kind, or a field of a rule, band, strength or image table, added to :mod:`agent.rules.model` after this format
was fixed). Such a field changes what the Python evaluator may do, so the export raises
:class:`~agent.rules.errors.RulesConfigError` naming it until ``renderer/rules.js`` and this format learn it
(``chrysalis-rules/2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.domain import canonical_json
from agent.rules.engine import RuleEngine
from agent.rules.errors import RuleProblem, RulesConfigError
from agent.rules.model import (
    Band,
    BandsRule,
    ConstantRule,
    FeatureSpec,
    ImageSpec,
    MapRule,
    RulesSpec,
    StrengthSpec,
)

FORMAT = "chrysalis-rules/1"
"""The export's format tag; ``renderer/rules.js`` refuses any other."""

_KNOWN: dict[type[BaseModel], frozenset[str]] = {
    RulesSpec: frozenset({"version", "description", "features", "traits", "facts", "image"}),
    FeatureSpec: frozenset({"type", "description"}),
    BandsRule: frozenset({"kind", "feature", "bands", "default", "description"}),
    Band: frozenset({"value", "min", "max", "min_inclusive", "max_inclusive"}),
    MapRule: frozenset({"kind", "feature", "map", "otherwise", "default", "description"}),
    ConstantRule: frozenset({"kind", "value", "description"}),
    ImageSpec: frozenset({"model", "allowed", "conditioning", "strength"}),
    StrengthSpec: frozenset({"default", "by_stage", "by_trait_change"}),
}
"""Every field of every rules model that ``chrysalis-rules/1`` carries and ``renderer/rules.js`` evaluates."""

_FIX = (
    "renderer/rules.js does not evaluate it: teach renderer/rules.js and agent/rules/rules_data.py "
    "(a new format version), or leave it out of the rules to publish"
)


def rules_to_json(rules: RuleEngine | RulesSpec) -> dict[str, Any]:
    """The ``chrysalis-rules/1`` object of ``rules`` (layout in the module docstring).

    Guarantees: a pure function of the rules (same rules, same object; :func:`rules_json_bytes` gives the same
    bytes), and evaluating it with ``renderer/rules.js`` gives what :meth:`RuleEngine.evaluate` gives.

    Raises:
        RulesConfigError: the rules are invalid (every problem, as loading reports them), or hold a kind or
            field this format does not carry (each named, with the fix).
    """
    spec = rules.spec if isinstance(rules, RuleEngine) else rules
    source = rules.source if isinstance(rules, RuleEngine) else "<spec>"
    problems = _unportable(spec)  # first: the semantic checks only know the kinds of agent.rules.model
    if problems:
        raise RulesConfigError(source, problems)
    engine = rules if isinstance(rules, RuleEngine) else RuleEngine(rules, source=source)
    image = spec.image
    return {
        "format": FORMAT,
        "rules_sha256": engine.sha256,
        "version": spec.version,
        "description": spec.description,
        "features": {name: f.model_dump(mode="json") for name, f in spec.features.items()},
        "feature_types": spec.feature_types(),
        "traits": [{"name": n, **r.model_dump(mode="json")} for n, r in sorted(spec.traits.items())],
        "facts": [{"name": n, **r.model_dump(mode="json")} for n, r in sorted(spec.facts.items())],
        "image": {
            "model": image.model,
            "allowed": {key: list(values) for key, values in image.allowed.items()},
            "conditioning": dict(image.conditioning),
            "strength": {
                "default": image.strength.default,
                "by_stage": {str(stage): s for stage, s in image.strength.by_stage.items()},
                "by_trait_change": dict(image.strength.by_trait_change),
            },
        },
    }


def rules_json_bytes(rules: RuleEngine | RulesSpec) -> bytes:
    """:func:`rules_to_json` as canonical JSON (sorted keys, compact, UTF-8): the bytes to pin.

    Raises:
        RulesConfigError: as :func:`rules_to_json`.
    """
    return canonical_json(rules_to_json(rules))


def rules_from_json(data: Mapping[str, Any], *, source: str = "<rules json>") -> RuleEngine:
    """Read a ``chrysalis-rules/1`` object back into a validated engine (its ``sha256`` is the original's).

    Raises:
        RulesConfigError: not this format, its rules are invalid, or ``rules_sha256`` does not match the rules it
            holds (the file was edited by hand or damaged).
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise RulesConfigError(
            source,
            [
                RuleProblem(
                    "format", f"is {found!r}, not {FORMAT!r}", "export the rules with chrysalis rules export"
                )
            ],
        )
    try:
        body = {
            "version": data["version"],
            "description": data["description"],
            "features": data["features"],
            "traits": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in data["traits"]},
            "facts": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in data["facts"]},
            "image": data["image"],
        }
        spec = RulesSpec.model_validate(body)
    except (KeyError, TypeError, AttributeError) as exc:
        problem = RuleProblem(
            "(file)", f"is not a complete {FORMAT} object ({exc!r})", "export the rules again"
        )
        raise RulesConfigError(source, [problem]) from None
    except ValidationError as exc:
        problems = [
            RuleProblem(".".join(map(str, e["loc"])), e["msg"], "export the rules again")
            for e in exc.errors()
        ]
        raise RulesConfigError(source, problems) from None
    engine = RuleEngine(spec, source=source)
    if data.get("rules_sha256") != engine.sha256:
        problem = RuleProblem(
            "rules_sha256",
            f"is {data.get('rules_sha256')!r} but the rules in the file hash to {engine.sha256!r}",
            "export the rules again instead of editing the export",
        )
        raise RulesConfigError(source, [problem])
    return engine


def _unportable(spec: RulesSpec) -> list[RuleProblem]:
    """Every kind or field of ``spec`` that ``chrysalis-rules/1`` does not carry, each with where it is."""
    problems: list[RuleProblem] = []

    def check(where: str, model: object) -> None:
        # The exact class must be one the format knows; a subclass (or any other class) may evaluate differently.
        base = next((c for c in type(model).__mro__ if c in _KNOWN), None)
        fields = set(type(model).model_fields) if isinstance(model, BaseModel) else set()
        extra = sorted(fields - _KNOWN[base]) if base is not None else []
        if extra:
            problems.append(
                RuleProblem(where, f"has field(s) {', '.join(extra)}, which {FORMAT} cannot express", _FIX)
            )
        elif base is not type(model):
            kind = getattr(model, "kind", type(model).__name__)
            problems.append(RuleProblem(where, f"is of kind {kind!r}, which {FORMAT} cannot express", _FIX))

    check("(top level)", spec)
    for name, feature in spec.features.items():
        check(f'[features."{name}"]', feature)
    for section, rules in (("traits", spec.traits), ("facts", spec.facts)):
        for name, rule in rules.items():
            check(f"[{section}.{name}]", rule)
            for i, band in enumerate(getattr(rule, "bands", None) or [], 1):
                check(f"[{section}.{name}] band {i}", band)
    check("[image]", spec.image)
    check("[image.strength]", spec.image.strength)
    return problems
