"""Loading rules: the shipped file is valid; every mistake is a RulesConfigError naming file, rule, fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError, NotFoundError
from agent.rules import DEFAULT_RULES, RulesConfigError, load_conditioning, load_rules, parse_rules
from oracles.chainlink import ChainlinkOracle
from oracles.wallet import WalletOracle

ROOT = Path(__file__).resolve().parents[2]
SPRITES_CONDITIONING = ROOT / "agent" / "generate" / "shipped" / "sprites32" / "conditioning.json"

BASE = """
version = 1
[features]
"price.change_pct" = { type = "number" }
name = { type = "string" }

[traits.mood]
kind = "bands"
feature = "price.change_pct"
bands = [
  { max = -5, value = "gloomy" },
  { min = -5, max = 2, value = "serene" },
  { min = 2, value = "radiant" },
]

[traits.element]
kind = "constant"
value = "fire"

[facts.season]
kind = "bands"
feature = "price.change_pct"
bands = [{ max = 0, value = "a cold season" }, { min = 0, value = "a warm season" }]

[image.allowed]
mood = ["serene", "radiant", "fierce", "gloomy"]
element = ["fire", "water", "earth", "air"]

[image.conditioning]
mood = "mood"
element = "element"

[image.strength]
default = 0.6
by_trait_change = { mood = 0.7 }
"""

MOOD_BANDS = """bands = [
  { max = -5, value = "gloomy" },
  { min = -5, max = 2, value = "serene" },
  { min = 2, value = "radiant" },
]"""


def broken(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def bands(*items: str) -> str:
    return broken(MOOD_BANDS, "bands = [" + ", ".join(items) + "]")


def problems_of(text: str, tmp_path: Path, **kw) -> RulesConfigError:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesConfigError) as info:
        load_rules(path, **kw)
    err = info.value
    assert err.path == str(path) and str(path) in str(err)  # names the file
    assert err.problems and all(p.rule and p.fix for p in err.problems)  # ... every rule and its fix
    assert isinstance(err, ConfigError) and isinstance(err, ValueError) and not err.retryable
    return err


def test_base_is_valid() -> None:
    engine = parse_rules(BASE)
    assert engine.evaluate({"price.change_pct": 3}, stage=1, token_id=1).traits == {
        "element": "fire",
        "mood": "radiant",
    }


def test_shipped_rules_match_the_shipped_model_and_the_oracles() -> None:
    provided = [*WalletOracle().provides, *ChainlinkOracle("0x" + "11" * 20).provides]
    engine = load_rules(
        DEFAULT_RULES, features=provided, conditioning=load_conditioning(SPRITES_CONDITIONING)
    )
    assert engine.source == str(DEFAULT_RULES)
    assert set(engine.trait_values) == {"mood", "element", "aura", "form", "species"}
    allowed = load_conditioning(SPRITES_CONDITIONING)
    assert set(engine.trait_values["mood"]) == set(allowed["mood"])
    assert set(engine.trait_values["element"]) == set(allowed["element"])


# -- bands ---------------------------------------------------------------------------------------------------

BAND_ERRORS = [
    pytest.param(
        bands(
            '{ max = -5, value = "gloomy" }',
            '{ min = -6, max = 2, value = "serene" }',
            '{ min = 2, value = "radiant" }',
        ),
        "overlaps band 1",
        "where band 1 ends",
        id="overlap",
    ),
    pytest.param(
        bands(
            '{ max = -5, max_inclusive = true, value = "gloomy" }',
            '{ min = -5, max = 2, value = "serene" }',
            '{ min = 2, value = "radiant" }',
        ),
        "overlaps band 1",  # both touching ends include -5
        "exactly one of the touching ends inclusive",
        id="overlap-at-a-point",
    ),
    pytest.param(
        bands(
            '{ max = -5, value = "gloomy" }',
            '{ min = -4, max = 2, value = "serene" }',
            '{ min = 2, value = "radiant" }',
        ),
        "leaves a gap",
        "where band 1 ends",
        id="gap",
    ),
    pytest.param(
        bands(
            '{ max = -5, value = "gloomy" }',
            '{ min = -5, min_inclusive = false, max = 2, value = "serene" }',
            '{ min = 2, value = "radiant" }',
        ),
        "leaves a gap",  # -5 itself is in neither band
        "exactly one of the touching ends inclusive",
        id="gap-at-a-point",
    ),
    pytest.param(
        bands(
            '{ max = -5, value = "gloomy" }',
            '{ min = 2, max = 9, value = "radiant" }',
            '{ min = -5, max = 2, value = "serene" }',
            '{ min = 9, value = "fierce" }',
        ),
        "not sorted",
        "ascending order",
        id="unsorted",
    ),
    pytest.param(
        bands(
            '{ max = -5, value = "gloomy" }',
            '{ min = 2, max = -5, value = "serene" }',
            '{ min = 2, value = "radiant" }',
        ),
        "min 2 > max -5",
        "swap min and max",
        id="lo-above-hi",
    ),
    pytest.param(
        bands(
            '{ max = 1, value = "gloomy" }',
            '{ min = 1, max = 1, value = "serene" }',
            '{ min = 1, value = "radiant" }',
        ),
        "is empty",
        "both ends inclusive",
        id="empty-band",
    ),
    pytest.param(
        bands('{ min = -100, max = 2, value = "serene" }', '{ min = 2, value = "radiant" }'),
        "smaller numbers match no band",
        "omit `min` in the first band",
        id="first-band-bounded",
    ),
    pytest.param(
        bands('{ max = 2, value = "serene" }', '{ min = 2, max = 100, value = "radiant" }'),
        "larger numbers match no band",
        "omit `max` in the last band",
        id="last-band-bounded",
    ),
    pytest.param(
        bands(
            '{ max = 2, value = "serene" }', '{ max = 5, value = "gloomy" }', '{ min = 5, value = "radiant" }'
        ),
        "reach to infinity",
        "only the first band may omit `min`",
        id="two-open-bands",
    ),
]


@pytest.mark.parametrize(("text", "problem", "fix"), BAND_ERRORS)
def test_band_errors(tmp_path: Path, text: str, problem: str, fix: str) -> None:
    err = problems_of(text, tmp_path)
    assert err.rule == "[traits.mood]"
    assert problem in str(err) and fix in err.fix


# -- references and values -----------------------------------------------------------------------------------

REFERENCE_ERRORS = [
    pytest.param(
        broken(
            'feature = "price.change_pct"\nbands = [\n  { max = -5',
            'feature = "price.chnage_pct"\nbands = [\n  { max = -5',
        ),
        "[traits.mood]",
        "unknown feature 'price.chnage_pct'",
        "declare it under [features]",
        id="unknown-feature",
    ),
    pytest.param(
        broken('mood = "mood"\nelement', 'mood = "moood"\nelement'),
        "[image.conditioning]",
        "unknown trait",
        "use one of the traits: element, mood",
        id="unknown-trait-in-conditioning",
    ),
    pytest.param(
        broken("by_trait_change = { mood = 0.7 }", "by_trait_change = { colour = 0.7 }"),
        "[image.strength.by_trait_change]",
        "unknown trait 'colour'",
        "use one of the traits",
        id="unknown-trait-in-strength",
    ),
    pytest.param(
        broken('{ min = 2, value = "radiant" }', '{ min = 2, value = "ecstatic" }'),
        "[traits.mood]",
        "value 'ecstatic' is not one the image model accepts for 'mood'",
        "change it to one of: serene, radiant, fierce, gloomy",
        id="value-outside-conditioning",
    ),
    pytest.param(
        broken('value = "fire"', 'value = "lava"'),
        "[traits.element]",
        "value 'lava' is not one the image model accepts",
        "fire, water, earth, air",
        id="constant-outside-conditioning",
    ),
    pytest.param(
        broken('mood = "mood"\nelement = "element"', 'mood = "mood"'),
        "[image.conditioning]",
        "conditions on 'element' but no trait feeds it",
        'add element = "<trait name>"',
        id="conditioning-key-unfed",
    ),
    pytest.param(
        broken('mood = "mood"\nelement = "element"', 'mood = "mood"\nelement = "element"\ncolour = "mood"'),
        "[image.conditioning]",
        "no conditioning key 'colour'",
        "use the model's keys",
        id="conditioning-key-unknown",
    ),
    pytest.param(
        broken(
            '[image.allowed]\nmood = ["serene", "radiant", "fierce", "gloomy"]\n'
            'element = ["fire", "water", "earth", "air"]\n',
            "",
        ).replace('[image.conditioning]\nmood = "mood"\nelement = "element"\n', ""),
        "[image.allowed]",
        "is missing",
        "list the model's values",
        id="no-allowed-values",
    ),
    pytest.param(
        broken('{ min = 0, value = "a warm season" }', '{ min = 0, value = "up 5 percent" }'),
        "[facts.season]",
        "contains a number",
        "never raw numbers",
        id="fact-with-number",
    ),
    pytest.param(
        broken(
            'feature = "price.change_pct"\nbands = [\n  { max = -5',
            'feature = "name"\nbands = [\n  { max = -5',
        ),
        "[traits.mood]",
        "bands need a number but 'name' is a string",
        'kind = "map"',
        id="bands-on-string",
    ),
    pytest.param(
        BASE + '[traits.form]\nkind = "map"\nfeature = "token.stage"\nmap = { "one" = "larva" }\n',
        "[traits.form]",
        "map key 'one' cannot match the number feature 'token.stage'",
        "integer keys",
        id="map-key-not-integer",
    ),
    pytest.param(
        BASE + '[traits.stage]\nkind = "constant"\nvalue = "x"\n',
        "[traits.stage]",
        "reserved",
        "rename the trait",
        id="reserved-trait",
    ),
    pytest.param(
        BASE + '[traits.Colour]\nkind = "constant"\nvalue = "x"\n',
        "[traits.Colour]",
        "not a lower-case identifier",
        "rename it",
        id="trait-name",
    ),
    pytest.param(
        broken('value = "fire"', 'value = " "'),
        "[traits.element]",
        "empty value",
        "some text",
        id="empty-value",
    ),
]


@pytest.mark.parametrize(("text", "rule", "problem", "fix"), REFERENCE_ERRORS)
def test_reference_and_value_errors(tmp_path: Path, text: str, rule: str, problem: str, fix: str) -> None:
    err = problems_of(text, tmp_path)
    found = [p for p in err.problems if p.rule == rule and problem in p.problem]
    assert found, str(err)
    assert fix in found[0].fix


def test_declared_feature_no_oracle_provides(tmp_path: Path) -> None:
    err = problems_of(BASE, tmp_path, features=["price.change_pct", "wallet.tx_count"])
    assert [p.rule for p in err.problems] == ["[features.name]"]
    assert "unknown feature" in err.problems[0].problem
    assert "price.change_pct, wallet.tx_count" in err.fix


def test_model_conditioning_overrides_the_file(tmp_path: Path) -> None:
    model = {"mood": ["serene", "radiant"], "element": ["fire", "water", "earth", "air"]}
    err = problems_of(BASE, tmp_path, conditioning=model)
    rules = {p.rule for p in err.problems}
    assert rules == {"[image.allowed]", "[traits.mood]"}  # the table differs; 'gloomy' is not accepted
    without_table = BASE.replace('mood = ["serene", "radiant", "fierce", "gloomy"]\n', "").replace(
        'element = ["fire", "water", "earth", "air"]\n', ""
    )
    model["mood"].append("gloomy")
    parse_rules(without_table, conditioning=model)  # the model's conditioning is enough


# -- structure -----------------------------------------------------------------------------------------------

STRUCTURE_ERRORS = [
    pytest.param(broken('kind = "bands"\n', ""), "[traits.mood]", 'add kind = "bands"', id="missing-kind"),
    pytest.param(
        broken('kind = "bands"', 'kind = "ranges"'), "[traits.mood]", 'set kind to "bands"', id="bad-kind"
    ),
    pytest.param(
        broken("{ max = -5,", "{ maxx = -5,"), "[traits.mood]", "remove `maxx` of band 1", id="typo-key"
    ),
    pytest.param(
        broken("{ max = -5,", '{ max = "low",'), "[traits.mood]", "`max` of band 1", id="wrong-type"
    ),
    pytest.param(
        broken("default = 0.6", "default = 1.5"), "[image.strength]", "`default`", id="strength-range"
    ),
    pytest.param(broken("version = 1", "version = 2"), "(top level)", "set `version` to 1", id="version"),
    pytest.param(broken('value = "fire"\n', ""), "[traits.element]", "add `value`", id="missing-field"),
    pytest.param("version = 1\n", "(top level)", "add `traits`", id="no-traits"),
    pytest.param(
        broken('"price.change_pct" = { type = "number" }', '"price.change_pct" = { type = "int" }'),
        '[features."price.change_pct"]',
        "`type`",
        id="feature-type",
    ),
    pytest.param(BASE + "[traits.mood\n", "(file)", "fix the TOML syntax", id="bad-toml"),
]


@pytest.mark.parametrize(("text", "rule", "fix"), STRUCTURE_ERRORS)
def test_structure_errors(tmp_path: Path, text: str, rule: str, fix: str) -> None:
    err = problems_of(text, tmp_path)
    assert err.rule == rule, str(err)
    assert fix in err.fix, str(err)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = broken('{ min = 2, value = "radiant" }', '{ min = 3, value = "ecstatic" }').replace(
        "by_trait_change = { mood = 0.7 }", "by_trait_change = { colour = 0.7 }"
    )
    err = problems_of(text, tmp_path)
    assert len(err.problems) == 3
    assert "3 problems" in str(err)
    assert [p.rule for p in err.problems] == [
        "[traits.mood]",
        "[traits.mood]",
        "[image.strength.by_trait_change]",
    ]


def test_missing_file_and_bad_conditioning_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_rules(tmp_path / "nope.toml")
    with pytest.raises(NotFoundError):
        load_conditioning(tmp_path / "nope.json")
    bad = tmp_path / "conditioning.json"
    bad.write_text('{"traits": {"mood": "serene"}}')
    with pytest.raises(RulesConfigError, match="string lists"):
        load_conditioning(bad)
