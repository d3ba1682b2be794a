"""Evaluating evolution rules: inputs (a snapshot and token facts) -> traits, conditioning, strength, facts.

Example::

    engine = load_rules()                                  # the shipped default_rules.toml
    result = engine.evaluate(snapshot, stage=2, token_id=7, previous={"mood": "serene", ...})
    result.traits        # {"aura": "glowing", "element": "water", "form": "chrysalis", "mood": "radiant"...}
    result.conditioning  # {"element": "water", "mood": "radiant"}  -> ImageRequest.traits
    result.strength      # 0.7  -> ImageRequest.strength
    result.facts         # {"bond": "held for a while", "season": "a warm season", ...}  -> LoreRequest.facts
    result.changed       # frozenset({"mood"})

Evaluation is a pure function of the rules and the inputs: no clock, no randomness, no dict-order effects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agent.domain import InputSnapshot, canonical_json, sha256_hex
from agent.rules.errors import FeatureValueError, MissingFeatureError, RulesConfigError
from agent.rules.model import BandsRule, ConstantRule, MapRule, RulesSpec, check_spec


@dataclass(frozen=True)
class TraitResult:
    """What the rules made of one token's inputs.

    Attributes:
        traits: Trait name -> value, sorted by name (the token's attributes).
        conditioning: Image model key -> value (what the image model is conditioned on).
        strength: Image-to-image strength for this evolution (unused when there is no previous image).
        facts: Lore fact name -> qualitative phrase, sorted by name.
        changed: Traits whose value differs from ``previous`` (every trait when there is no previous).
        why: Which branch of each rule gave its value, keyed by the rule's table (``[traits.mood]``):
            ``{"via": "band", "band": n}`` (1-based), ``{"via": "map", "key": k}``,
            ``{"via": "otherwise", "key": k}`` (``k``: the feature value as map-key text), ``{"via": "default"}``
            (feature missing) or ``{"via": "constant"}``. Not part of equality: it explains, never decides.
    """

    traits: dict[str, str]
    conditioning: dict[str, str]
    strength: float
    facts: dict[str, str]
    changed: frozenset[str]
    why: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


class RuleEngine:
    """Validated rules, ready to evaluate. Build it with :func:`agent.rules.loader.load_rules`.

    Args:
        spec: The parsed rules.
        source: Where they came from (named in errors).
        features: Reading names the configured oracles provide (see :func:`agent.rules.model.check_spec`).
        conditioning: The image model's allowed values per key (see :func:`agent.rules.model.check_spec`).

    Raises:
        RulesConfigError: the rules are invalid.
    """

    def __init__(
        self,
        spec: RulesSpec,
        *,
        source: str = "<memory>",
        features: Iterable[str] | None = None,
        conditioning: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        problems = check_spec(spec, features=features, conditioning=conditioning)
        if problems:
            raise RulesConfigError(source, problems)
        self.spec = spec
        self.source = source
        self._types = spec.feature_types()

    @property
    def sha256(self) -> str:
        """Hex sha256 of the rules' canonical JSON: record it in the receipt to pin which rules ran."""
        return sha256_hex(canonical_json(self.spec.model_dump(mode="json")))

    @property
    def trait_values(self) -> dict[str, tuple[str, ...]]:
        """Every value each trait can take."""
        return self.spec.trait_values()

    def evaluate(
        self,
        inputs: InputSnapshot | Mapping[str, Any],
        *,
        stage: int,
        token_id: int,
        previous: Mapping[str, str] | None = None,
    ) -> TraitResult:
        """Map inputs to traits, conditioning, strength and facts.

        Args:
            inputs: The snapshot (its :meth:`~agent.domain.InputSnapshot.values`) or reading name -> value.
            stage: The stage the token evolves into (feature ``token.stage``).
            token_id: The token (feature ``token.id``).
            previous: The token's traits before this evolution, or None for its first image.

        Raises:
            MissingFeatureError: a rule's feature is missing and the rule has no ``default``.
            FeatureValueError: a feature's value does not fit its rule.
        """
        values = dict(inputs.values() if isinstance(inputs, InputSnapshot) else inputs)
        values["token.stage"] = stage
        values["token.id"] = token_id

        why: dict[str, dict[str, Any]] = {}
        traits: dict[str, str] = {}
        facts: dict[str, str] = {}
        for section, rules, out in (("traits", self.spec.traits, traits), ("facts", self.spec.facts, facts)):
            for name, rule in sorted(rules.items()):
                where = f"[{section}.{name}]"
                out[name], why[where] = self._apply(where, rule, values)
        if previous is None:
            changed = frozenset(traits)
        else:
            changed = frozenset(name for name, value in traits.items() if previous.get(name) != value)

        image = self.spec.image
        conditioning = {key: traits[trait] for key, trait in sorted(image.conditioning.items())}
        strength = image.strength.by_stage.get(stage, image.strength.default)
        for trait in sorted(changed):
            strength = max(strength, image.strength.by_trait_change.get(trait, 0.0))
        return TraitResult(traits, conditioning, strength, facts, changed, why)

    # -- one rule -----------------------------------------------------------------------------------------

    def _apply(
        self, where: str, rule: BandsRule | MapRule | ConstantRule, values: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The rule's value for ``values`` and which branch gave it (see :attr:`TraitResult.why`)."""
        if isinstance(rule, ConstantRule):
            return rule.value, {"via": "constant"}
        value = values.get(rule.feature)
        if value is None:
            if rule.default is not None:
                return rule.default, {"via": "default"}
            raise MissingFeatureError(rule=where, feature=rule.feature, available=sorted(values))
        if isinstance(rule, BandsRule):
            x = self._number(where, rule.feature, value)
            matches = [i for i, band in enumerate(rule.bands, 1) if band.contains(x)]
            if len(matches) != 1:  # impossible for validated bands; never pick one silently
                raise FeatureValueError(
                    f"{rule.feature} = {value!r} matches {len(matches)} bands",
                    rule=where,
                    feature=rule.feature,
                    value=value,
                    hint="the bands were changed after validation; rebuild the RuleEngine",
                    reason="band_count",
                )
            return rule.bands[matches[0] - 1].value, {"via": "band", "band": matches[0]}
        key = self._key(where, rule.feature, value)
        if key in rule.map:
            return rule.map[key], {"via": "map", "key": key}
        if rule.otherwise is not None:
            return rule.otherwise, {"via": "otherwise", "key": key}
        raise FeatureValueError(
            f"{rule.feature} = {value!r} is not in the map ({', '.join(rule.map)})",
            rule=where,
            feature=rule.feature,
            value=value,
            hint=f'add "{key}" to the map, or declare `otherwise = "..."` in {where}',
            reason="not_in_map",
        )

    def _number(self, where: str, feature: str, value: Any) -> float | int | Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise FeatureValueError(
                f"{feature} = {value!r} is not a number",
                rule=where,
                feature=feature,
                value=value,
                hint=f"make the oracle return a number for {feature!r}, or use a map rule",
                reason="not_a_number",
            )
        if (isinstance(value, float) and math.isnan(value)) or (
            isinstance(value, Decimal) and value.is_nan()
        ):
            raise FeatureValueError(
                f"{feature} is NaN",
                rule=where,
                feature=feature,
                value=value,
                hint="the oracle must raise instead of returning NaN",
                reason="nan",
            )
        return value

    def _key(self, where: str, feature: str, value: Any) -> str:
        if self._types.get(feature) == "number":
            x = self._number(where, feature, value)
            if isinstance(x, float | Decimal) and not (math.isfinite(x) and x == int(x)):
                return str(x)
            return str(int(x))
        if not isinstance(value, str):
            raise FeatureValueError(
                f"{feature} = {value!r} is not a string, as [features] declares",
                rule=where,
                feature=feature,
                value=value,
                hint=f'declare {feature} with type = "number", or make the oracle return text',
                reason="not_a_string",
            )
        return value
