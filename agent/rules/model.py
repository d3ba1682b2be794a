"""The shape of a rules file (pydantic) and the checks that make it safe to evaluate.

A rules file has five parts (see the commented ``default_rules.toml`` beside this module):

``[features]``
    Inputs the rules may read: InputSnapshot reading names (``price.change_pct``) with a ``type``
    (``"number"`` or ``"string"``). ``token.stage`` and ``token.id`` are always available (numbers).
``[traits.<name>]``
    One rule per trait; the traits become the token's attributes.
``[facts.<name>]``
    One rule per lore fact: qualitative phrases ("a cold season"), never numbers.
``[image]``
    The image model's allowed conditioning values (``[image.allowed]``), which traits condition it
    (``[image.conditioning]``: model key -> trait), and the image-to-image strength (``[image.strength]``).

Rule kinds (``kind = ...``):

``bands``
    Ordered numeric intervals. Each band has ``value`` and optional ``min``/``max`` with ``min_inclusive``
    (default true) and ``max_inclusive`` (default false), so by default a band is ``[min, max)``. The bands
    must cover every number exactly once: the first has no ``min``, the last no ``max``, and each band starts
    where the previous ends, with exactly one of the two touching ends inclusive.
``map``
    Categorical: ``map = { "<feature value>" = "<trait value>" }``; numbers match by their integer text
    (``"2"``). ``otherwise`` is used for a value the map does not list (without it such a value is an error).
``constant``
    ``value`` always.

``bands`` and ``map`` rules may declare ``default``: the value used when the feature is missing from the
inputs (without it a missing feature is an error).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.rules.errors import RuleProblem

BUILTIN_FEATURES: dict[str, str] = {"token.stage": "number", "token.id": "number"}
"""Token facts every evaluation supplies, with their types."""

RESERVED_TRAITS = frozenset({"stage"})
"""Names the metadata already uses for its own attributes."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DIGIT = re.compile(r"[0-9]")

Strength = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Strict):
    """One interval of a ``bands`` rule: ``value`` for numbers between ``min`` and ``max``."""

    value: str
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = False

    def contains(self, x: float | Decimal) -> bool:
        """Whether ``x`` lies in this band."""
        above = self.min is None or x > self.min or (x == self.min and self.min_inclusive)
        below = self.max is None or x < self.max or (x == self.max and self.max_inclusive)
        return above and below

    def describe(self) -> str:
        """The interval in math notation, e.g. ``[-5, 2)``."""
        lo = "(-inf" if self.min is None else ("[" if self.min_inclusive else "(") + _num(self.min)
        hi = "+inf)" if self.max is None else _num(self.max) + ("]" if self.max_inclusive else ")")
        return f"{lo}, {hi}"


class BandsRule(_Strict):
    """Numeric feature -> value of the band it falls in."""

    kind: Literal["bands"]
    feature: str
    bands: list[Band] = Field(min_length=1)
    default: str | None = None
    description: str = ""

    def outputs(self) -> list[str]:
        return [b.value for b in self.bands] + ([self.default] if self.default is not None else [])


class MapRule(_Strict):
    """Categorical feature -> value, with ``otherwise`` for unlisted values."""

    kind: Literal["map"]
    feature: str
    map: dict[str, str] = Field(min_length=1)
    otherwise: str | None = None
    default: str | None = None
    description: str = ""

    def outputs(self) -> list[str]:
        extra = [v for v in (self.otherwise, self.default) if v is not None]
        return list(self.map.values()) + extra


class ConstantRule(_Strict):
    """Always ``value``."""

    kind: Literal["constant"]
    value: str
    description: str = ""

    def outputs(self) -> list[str]:
        return [self.value]


Rule = Annotated[BandsRule | MapRule | ConstantRule, Field(discriminator="kind")]


class FeatureSpec(_Strict):
    """A declared input."""

    type: Literal["number", "string"] = "number"
    description: str = ""


class StrengthSpec(_Strict):
    """Image-to-image strength: ``by_stage[stage]`` (else ``default``), raised to ``by_trait_change[t]`` for
    every trait ``t`` that changed."""

    default: Strength = 0.6
    by_stage: dict[int, Strength] = Field(default_factory=dict)
    by_trait_change: dict[str, Strength] = Field(default_factory=dict)


class ImageSpec(_Strict):
    """How traits condition the image model."""

    model: str = ""
    allowed: dict[str, list[str]] = Field(default_factory=dict)
    conditioning: dict[str, str] = Field(default_factory=dict)
    strength: StrengthSpec = Field(default_factory=StrengthSpec)


class RulesSpec(_Strict):
    """A whole rules file."""

    version: Literal[1]
    description: str = ""
    features: dict[str, FeatureSpec] = Field(default_factory=dict)
    traits: dict[str, Rule] = Field(min_length=1)
    facts: dict[str, Rule] = Field(default_factory=dict)
    image: ImageSpec = Field(default_factory=ImageSpec)

    def feature_types(self) -> dict[str, str]:
        """Every feature a rule may read, with its type."""
        return {**{n: f.type for n, f in self.features.items()}, **BUILTIN_FEATURES}

    def trait_values(self) -> dict[str, tuple[str, ...]]:
        """Every value each trait can take, in rule order."""
        return {name: tuple(dict.fromkeys(rule.outputs())) for name, rule in self.traits.items()}


def check_spec(
    spec: RulesSpec,
    *,
    features: Iterable[str] | None = None,
    conditioning: Mapping[str, Sequence[str]] | None = None,
) -> list[RuleProblem]:
    """Every semantic problem of ``spec``, in file order (empty when it is valid).

    Args:
        spec: The parsed rules.
        features: Reading names the configured oracles provide; when given, every declared feature must be
            one of them.
        conditioning: The image model's allowed values per conditioning key (its ``conditioning.json``
            ``traits``); when given it is authoritative and ``[image.allowed]``, if present, must equal it.
    """
    problems: list[RuleProblem] = []
    add = problems.append

    provided = None if features is None else set(features)
    for name, feature in spec.features.items():
        where = f"[features.{_quote(name)}]"
        if name in BUILTIN_FEATURES and feature.type != BUILTIN_FEATURES[name]:
            add(RuleProblem(where, f"is built in as a {BUILTIN_FEATURES[name]}", "remove the declaration"))
        elif provided is not None and name not in provided and name not in BUILTIN_FEATURES:
            close = difflib.get_close_matches(name, sorted(provided), n=1, cutoff=0.75)
            guess = (
                f"did you mean {close[0]!r}? rename it (here and in every rule that reads it), or "
                if close
                else ""
            )
            add(
                RuleProblem(
                    where,
                    "is not provided by any configured oracle (unknown feature)",
                    f"{guess}use one of: {', '.join(sorted(provided)) or '(no oracles configured)'}",
                )
            )

    types = spec.feature_types()
    for section, rules in (("traits", spec.traits), ("facts", spec.facts)):
        for name, rule in rules.items():
            where = f"[{section}.{name}]"
            if not _NAME.match(name):
                add(
                    RuleProblem(
                        where, f"name {name!r} is not a lower-case identifier", "rename it like `aura`"
                    )
                )
            if section == "traits" and name in RESERVED_TRAITS:
                add(RuleProblem(where, f"trait {name!r} is reserved by the metadata", "rename the trait"))
            problems.extend(_check_rule(where, rule, types, fact=section == "facts"))

    problems.extend(_check_image(spec, conditioning))
    return problems


# -- rules --------------------------------------------------------------------------------------------------


def _check_rule(
    where: str, rule: BandsRule | MapRule | ConstantRule, types: dict[str, str], *, fact: bool
) -> list:
    problems: list[RuleProblem] = []
    add = problems.append
    for value in rule.outputs():
        if not value.strip():
            add(RuleProblem(where, "has an empty value", "give every value some text"))
        elif fact and _DIGIT.search(value):
            add(
                RuleProblem(
                    where,
                    f"fact {value!r} contains a number; lore facts are qualitative",
                    'use words ("a cold season", "held for a long time"), never raw numbers',
                )
            )
    if isinstance(rule, ConstantRule):
        return problems

    ftype = types.get(rule.feature)
    if ftype is None:
        add(
            RuleProblem(
                where,
                f"reads unknown feature {rule.feature!r}",
                f"declare it under [features] or use one of: {', '.join(sorted(types))}",
            )
        )
    if isinstance(rule, BandsRule):
        if ftype == "string":
            add(
                RuleProblem(
                    where, f"bands need a number but {rule.feature!r} is a string", 'use kind = "map"'
                )
            )
        problems.extend(_check_bands(where, rule.bands))
    elif ftype == "number":
        for key in rule.map:
            if not re.fullmatch(r"-?(0|[1-9][0-9]*)", key):
                add(
                    RuleProblem(
                        where,
                        f"map key {key!r} cannot match the number feature {rule.feature!r}",
                        'write integer keys as plain decimal text ("0", "1", "12"); use bands for ranges',
                    )
                )
    return problems


def _check_bands(where: str, bands: list[Band]) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    add = problems.append
    for i, band in enumerate(bands, 1):
        label = f"band {i} ({band.value!r})"
        for end in (band.min, band.max):
            if end is not None and not math.isfinite(end):
                add(
                    RuleProblem(
                        where, f"{label} has a non-finite end", "omit min/max for an open end instead"
                    )
                )
        if band.min is not None and band.max is not None:
            if band.min > band.max:
                add(
                    RuleProblem(
                        where,
                        f"{label} has min {_num(band.min)} > max {_num(band.max)}",
                        "swap min and max",
                    )
                )
            elif band.min == band.max and not (band.min_inclusive and band.max_inclusive):
                add(
                    RuleProblem(
                        where,
                        f"{label} {band.describe()} is empty",
                        "make both ends inclusive for a single value, or widen it",
                    )
                )
    if problems:
        return problems

    if bands[0].min is not None:
        add(
            RuleProblem(
                where,
                f"band 1 ({bands[0].value!r}) starts at {_num(bands[0].min)}, so smaller numbers match no "
                "band",
                "omit `min` in the first band (it then starts at -infinity)",
            )
        )
    if bands[-1].max is not None:
        add(
            RuleProblem(
                where,
                f"band {len(bands)} ({bands[-1].value!r}) ends at {_num(bands[-1].max)}, so larger numbers "
                "match no band",
                "omit `max` in the last band (it then ends at +infinity)",
            )
        )
    starts = [b.min for b in bands[1:] if b.min is not None]
    if starts != sorted(starts):
        add(
            RuleProblem(
                where,
                "bands are not sorted: " + ", ".join(b.describe() for b in bands),
                "list bands in ascending order of `min`",
            )
        )
        return problems
    for i, (prev, band) in enumerate(zip(bands, bands[1:], strict=False), 2):
        label = f"band {i} ({band.value!r}) {band.describe()}"
        if band.min is None or prev.max is None:
            add(
                RuleProblem(
                    where,
                    f"{label} and band {i - 1} {prev.describe()} both reach to infinity (overlap)",
                    "only the first band may omit `min` and only the last may omit `max`",
                )
            )
        elif band.min < prev.max or (band.min == prev.max and band.min_inclusive and prev.max_inclusive):
            add(
                RuleProblem(
                    where,
                    f"{label} overlaps band {i - 1} {prev.describe()}",
                    f"start band {i} where band {i - 1} ends, with exactly one of the touching ends "
                    "inclusive",
                )
            )
        elif band.min > prev.max or not (band.min_inclusive or prev.max_inclusive):
            add(
                RuleProblem(
                    where,
                    f"{label} leaves a gap after band {i - 1} {prev.describe()}",
                    f"start band {i} where band {i - 1} ends, with exactly one of the touching ends "
                    "inclusive",
                )
            )
    return problems


# -- image --------------------------------------------------------------------------------------------------


def _check_image(spec: RulesSpec, conditioning: Mapping[str, Sequence[str]] | None) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    add = problems.append
    image = spec.image
    allowed = {k: list(v) for k, v in (conditioning if conditioning is not None else image.allowed).items()}
    if conditioning is not None and image.allowed and image.allowed != allowed:
        add(
            RuleProblem(
                "[image.allowed]",
                f"does not match the image model's conditioning {allowed}",
                "copy the model's values into [image.allowed], or remove the table",
            )
        )
    if not allowed:
        add(
            RuleProblem(
                "[image.allowed]",
                "is missing, so no trait value can be checked against the image model",
                'list the model\'s values, e.g. mood = ["serene", "radiant", "fierce", "gloomy"]',
            )
        )
    values = spec.trait_values()
    for key, trait in image.conditioning.items():
        where = "[image.conditioning]"
        if trait not in spec.traits:
            add(
                RuleProblem(
                    where,
                    f"{key} = {trait!r} names an unknown trait",
                    f"use one of the traits: {', '.join(sorted(spec.traits))}",
                )
            )
            continue
        if allowed and key not in allowed:
            add(
                RuleProblem(
                    where,
                    f"the image model has no conditioning key {key!r}",
                    f"use the model's keys: {', '.join(sorted(allowed))}",
                )
            )
            continue
        for value in values[trait]:
            if allowed and value not in allowed[key]:
                add(
                    RuleProblem(
                        f"[traits.{trait}]",
                        f"value {value!r} is not one the image model accepts for {key!r}",
                        f"change it to one of: {', '.join(allowed[key])}",
                    )
                )
    for key in allowed:
        if key not in image.conditioning:
            add(
                RuleProblem(
                    "[image.conditioning]",
                    f"the image model conditions on {key!r} but no trait feeds it",
                    f'add {key} = "<trait name>" (a trait whose values are among: {", ".join(allowed[key])})',
                )
            )
    for trait in image.strength.by_trait_change:
        if trait not in spec.traits:
            add(
                RuleProblem(
                    "[image.strength.by_trait_change]",
                    f"names unknown trait {trait!r}",
                    f"use one of the traits: {', '.join(sorted(spec.traits))}",
                )
            )
    for stage in image.strength.by_stage:
        if stage < 0:
            add(RuleProblem("[image.strength.by_stage]", f"stage {stage} is negative", "stages start at 0"))
    return problems


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _quote(name: str) -> str:
    return f'"{name}"' if "." in name else name
