"""Evaluating rules: band edges, maps, constants, defaults, strength, changes, input errors."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from agent.domain import InputSnapshot, OracleReading
from agent.rules import (
    FeatureValueError,
    MissingFeatureError,
    RuleEngine,
    TraitResult,
    load_rules,
    parse_rules,
)

ALLOWED = """
[image.allowed]
mood = ["serene", "radiant", "fierce", "gloomy"]
[image.conditioning]
mood = "mood"
"""

#: A tiny rules file with every kind and non-default band ends: (-inf, 0] (0, 10) [10, 10] (10, +inf).
TINY = (
    """
version = 1
[features]
x = { type = "number" }
colour = { type = "string" }

[traits.mood]
kind = "bands"
feature = "x"
bands = [
  { max = 0, max_inclusive = true, value = "gloomy" },
  { min = 0, min_inclusive = false, max = 10, value = "serene" },
  { min = 10, max = 10, max_inclusive = true, value = "radiant" },
  { min = 10, min_inclusive = false, value = "fierce" },
]

[traits.hue]
kind = "map"
feature = "colour"
map = { red = "warm", blue = "cold" }
default = "none"

[traits.form]
kind = "map"
feature = "token.stage"
map = { "0" = "egg", "1" = "larva" }
otherwise = "imago"

[traits.kind]
kind = "constant"
value = "chrysalid"

[facts.weather]
kind = "bands"
feature = "x"
bands = [{ max = 0, value = "a cold season" }, { min = 0, value = "a warm season" }]

[image.strength]
default = 0.5
by_stage = { 2 = 0.3 }
by_trait_change = { mood = 0.9, hue = 0.6 }
"""
    + ALLOWED
)


@pytest.fixture(scope="module")
def tiny() -> RuleEngine:
    return parse_rules(TINY, source="tiny.toml")


@pytest.fixture(scope="module")
def default() -> RuleEngine:
    return load_rules()


DEFAULT_INPUTS = {
    "price.change_pct": 0.0,
    "wallet.held_seconds": 0,
    "wallet.tx_count": 0,
    "wallet.balance_eth": 0.0,
    "wallet.tokens_held": 1,
}


@pytest.mark.parametrize(
    ("x", "mood"),
    [
        (-math.inf, "gloomy"),
        (-1, "gloomy"),
        (0, "gloomy"),  # max_inclusive
        (0.0, "gloomy"),
        (5e-324, "serene"),  # smallest float above 0: min_inclusive = false
        (9.999999999, "serene"),
        (10, "radiant"),  # the single-point band [10, 10]
        (Decimal("10.000000000000000001"), "fierce"),
        (10.000000000000002, "fierce"),
        (math.inf, "fierce"),
        (10**30, "fierce"),
    ],
)
def test_band_edges_with_explicit_inclusivity(tiny: RuleEngine, x: float, mood: str) -> None:
    assert tiny.evaluate({"x": x}, stage=0, token_id=1).traits["mood"] == mood


@pytest.mark.parametrize(
    ("change", "mood", "season"),
    [
        (-50.0, "gloomy", "a cold season"),
        (-5.000001, "gloomy", "a cold season"),
        (-5.0, "serene", "a quiet season"),  # min is inclusive by default
        (-5, "serene", "a quiet season"),
        (1.999999, "serene", "a quiet season"),
        (2.0, "radiant", "a warm season"),
        (9.999999, "radiant", "a warm season"),
        (10.0, "fierce", "a blazing season"),
        (400.0, "fierce", "a blazing season"),
    ],
)
def test_default_rules_mood_bands(default: RuleEngine, change: float, mood: str, season: str) -> None:
    result = default.evaluate({**DEFAULT_INPUTS, "price.change_pct": change}, stage=1, token_id=1)
    assert (result.traits["mood"], result.facts["season"]) == (mood, season)
    assert result.conditioning["mood"] == mood


@pytest.mark.parametrize(
    ("held", "aura", "bond"),
    [
        (0, "faint", "newly bound to its keeper"),
        (86_399, "faint", "newly bound to its keeper"),
        (86_400, "glowing", "held for a while"),
        (2_591_999, "glowing", "held for a while"),
        (2_592_000, "luminous", "held for a long time"),
        (31_536_000, "ancient", "held for a long time"),
    ],
)
def test_default_rules_holding_time(default: RuleEngine, held: int, aura: str, bond: str) -> None:
    result = default.evaluate({**DEFAULT_INPUTS, "wallet.held_seconds": held}, stage=1, token_id=1)
    assert (result.traits["aura"], result.facts["bond"]) == (aura, bond)


@pytest.mark.parametrize(
    ("txs", "element"), [(0, "earth"), (9, "earth"), (10, "water"), (999, "air"), (1000, "fire")]
)
def test_default_rules_element(default: RuleEngine, txs: int, element: str) -> None:
    result = default.evaluate({**DEFAULT_INPUTS, "wallet.tx_count": txs}, stage=1, token_id=1)
    assert result.traits["element"] == result.conditioning["element"] == element


@pytest.mark.parametrize(
    ("stage", "form"), [(0, "egg"), (1, "larva"), (2, "chrysalis"), (3, "imago"), (9, "imago")]
)
def test_default_rules_form_from_stage(default: RuleEngine, stage: int, form: str) -> None:
    assert default.evaluate(DEFAULT_INPUTS, stage=stage, token_id=1).traits["form"] == form


def test_default_rules_whole_result(default: RuleEngine) -> None:
    inputs = {
        "price.change_pct": 3.2,
        "wallet.held_seconds": 90_000,
        "wallet.tx_count": 12,
        "wallet.balance_eth": 1.5,
        "wallet.tokens_held": 3,
    }
    previous = {
        "mood": "serene",
        "element": "water",
        "aura": "faint",
        "form": "larva",
        "species": "chrysalid",
    }
    result = default.evaluate(inputs, stage=2, token_id=7, previous=previous)
    assert result == TraitResult(
        traits={
            "aura": "glowing",
            "element": "water",
            "form": "chrysalis",
            "mood": "radiant",
            "species": "chrysalid",
        },
        conditioning={"element": "water", "mood": "radiant"},
        strength=0.7,  # stage 2 gives 0.65; the mood change raises it to 0.7
        facts={
            "bond": "held for a while",
            "kin": "one of several kin in its keeper's care",
            "purse": "a keeper of modest means",
            "season": "a warm season",
        },
        changed=frozenset({"aura", "form", "mood"}),
    )
    assert list(result.traits) == sorted(result.traits)
    assert not any(ch.isdigit() for fact in result.facts.values() for ch in fact)


def test_maps_constants_and_defaults(tiny: RuleEngine) -> None:
    result = tiny.evaluate({"x": 1, "colour": "red"}, stage=1, token_id=5)
    assert result.traits == {"form": "larva", "hue": "warm", "kind": "chrysalid", "mood": "serene"}
    assert tiny.evaluate({"x": 1}, stage=7, token_id=5).traits["hue"] == "none"  # missing -> default
    assert tiny.evaluate({"x": 1, "colour": None}, stage=7, token_id=5).traits["hue"] == "none"
    assert tiny.evaluate({"x": 1}, stage=7, token_id=5).traits["form"] == "imago"  # unlisted -> otherwise
    assert (
        tiny.evaluate({"x": 1}, stage=1.0, token_id=5).traits["form"] == "larva"
    )  # integral float matches "1"


def test_snapshot_inputs(default: RuleEngine) -> None:
    snapshot = InputSnapshot(
        chain_id=1,
        block_number=10,
        block_hash="0x" + "ab" * 32,
        readings=tuple(OracleReading(k, v, "test", 10) for k, v in DEFAULT_INPUTS.items()),
    )
    assert default.evaluate(snapshot, stage=1, token_id=1) == default.evaluate(
        DEFAULT_INPUTS, stage=1, token_id=1
    )


def test_missing_feature_names_feature_rule_and_fix(tiny: RuleEngine) -> None:
    with pytest.raises(MissingFeatureError) as info:
        tiny.evaluate({"colour": "red"}, stage=1, token_id=1)
    err = info.value
    assert (err.feature, err.rule) == ("x", "[traits.mood]")
    assert "colour" in err.available and "token.stage" in err.available
    assert "default" in str(err) and "oracle" in str(err)
    assert isinstance(err, LookupError) and not err.retryable


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"x": "7", "colour": "red"}, "not a number"),
        ({"x": True, "colour": "red"}, "not a number"),
        ({"x": math.nan, "colour": "red"}, "NaN"),
        ({"x": 1, "colour": "green"}, "not in the map"),
        ({"x": 1, "colour": 3}, "not a string"),
    ],
)
def test_bad_feature_values(tiny: RuleEngine, inputs: dict, match: str) -> None:
    tiny_strict = parse_rules(TINY.replace('default = "none"', ""), source="tiny.toml")
    with pytest.raises(FeatureValueError, match=match) as info:
        tiny_strict.evaluate(inputs, stage=1, token_id=1)
    assert isinstance(info.value, ValueError)
    assert info.value.rule.startswith("[traits.")


@pytest.mark.parametrize(
    ("stage", "previous", "strength", "changed"),
    [
        (1, None, 0.9, {"form", "hue", "kind", "mood"}),  # first image: everything counts as changed
        (1, {"form": "larva", "hue": "warm", "kind": "chrysalid", "mood": "serene"}, 0.5, set()),
        (2, {"form": "imago", "hue": "warm", "kind": "chrysalid", "mood": "serene"}, 0.3, set()),  # by_stage
        (2, {"form": "egg", "hue": "cold", "kind": "chrysalid", "mood": "serene"}, 0.6, {"form", "hue"}),
        (2, {"form": "imago", "hue": "cold", "kind": "chrysalid", "mood": "gloomy"}, 0.9, {"hue", "mood"}),
    ],
)
def test_strength_and_changed(tiny: RuleEngine, stage: int, previous, strength: float, changed: set) -> None:
    result = tiny.evaluate({"x": 1, "colour": "red"}, stage=stage, token_id=1, previous=previous)
    assert result.strength == strength
    assert result.changed == changed


def test_rules_digest_is_stable_and_sensitive() -> None:
    assert parse_rules(TINY).sha256 == parse_rules(TINY).sha256
    assert parse_rules(TINY).sha256 != parse_rules(TINY.replace("default = 0.5", "default = 0.55")).sha256
    # Comments and layout do not change what the rules mean, so they do not change the digest.
    assert parse_rules(TINY).sha256 == parse_rules("# a comment\n" + TINY.replace(" = ", "=")).sha256
