"""Trait tables: exact counts by largest remainder, and every bad table rejected with a message naming the fix."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError, NotFoundError
from agent.genesis.traits import EXAMPLE_TABLE, exact_counts, load_table, parse_table


def base(**traits: object) -> dict[str, object]:
    table: dict[str, object] = {
        "traits": {
            "mood": {"weights": {"serene": 1, "radiant": 1}},
            "element": {"weights": {"fire": 1}},
        }
    }
    table["traits"].update(traits)  # type: ignore[attr-defined]
    return table


# -- exact counts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "size", "expected"),
    [
        ([1, 1, 1], 10, [4, 3, 3]),  # equal remainders: the earlier value wins the extra token
        ([1, 1], 3, [2, 1]),
        ([0.1, 0.2, 0.7], 10, [1, 2, 7]),  # 0.1 is read as exactly 1/10: no binary-float drift
        ([1, 2, 4], 100, [14, 29, 57]),  # quotas 14.29, 28.57, 57.14 -> remainders .29 .57 .14
        ([1000, 1, 0], 10, [9, 1, 0]),  # the rare value is raised to 1 (from the largest), weight 0 stays 0
        ([97, 1, 1, 1], 4, [1, 1, 1, 1]),
        ([5, 3, 2], 1_000_000, [500_000, 300_000, 200_000]),
        ([Fraction(1, 3), Fraction(2, 3)], 7, [2, 5]),  # 2.33 / 4.67
    ],
)
def test_awkward_weights_round_to_exact_counts(weights, size, expected) -> None:
    assert exact_counts(weights, size) == expected


def test_more_rare_values_than_tokens_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match="5 values have a positive weight but the collection has only 3 tokens"
    ) as e:
        exact_counts([1, 1, 1, 1, 1], 3)
    assert "--size to at least 5" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([0, 0], "every weight is 0"),
        ([1, -1], "negative"),
        ([1, float("nan")], "not a finite number"),
        ([1, "3"], "not a number"),
        ([True], "not a number"),
    ],
)
def test_bad_weights(weights, match) -> None:
    with pytest.raises(ConfigError, match=match):
        exact_counts(weights, 10)


weights_st = st.lists(
    st.one_of(st.integers(0, 1000), st.floats(0, 1000, allow_nan=False, allow_infinity=False)),
    min_size=1,
    max_size=12,
).filter(lambda ws: any(w > 0 for w in ws))


@settings(max_examples=300, deadline=None)
@given(weights=weights_st, size=st.integers(1, 20_000))
def test_counts_are_exact_and_respect_the_floor(weights, size) -> None:
    positive = sum(1 for w in weights if w > 0)
    if positive > size:
        with pytest.raises(ConfigError):
            exact_counts(weights, size)
        return
    counts = exact_counts(weights, size)
    assert sum(counts) == size
    for w, c in zip(weights, counts, strict=False):
        assert (c == 0) if w == 0 else (c >= 1)
    exact = [Fraction(repr(w)) if isinstance(w, float) else Fraction(w) for w in weights]
    quotas = [w * size / sum(exact) for w in exact]
    if all(q >= 1 or w == 0 for q, w in zip(quotas, exact, strict=False)):
        # nothing was raised to the floor: pure largest remainder, every count is its quota rounded down or up
        for q, c in zip(quotas, counts, strict=False):
            assert math.floor(q) <= c <= math.ceil(q)
        # and the extra tokens went to the largest remainders
        extra = [i for i, (q, c) in enumerate(zip(quotas, counts, strict=False)) if c > math.floor(q)]
        rest = [i for i in range(len(quotas)) if i not in extra]
        if extra and rest:
            assert min(quotas[i] - math.floor(quotas[i]) for i in extra) >= max(
                quotas[i] - math.floor(quotas[i]) for i in rest
            )
    else:
        # raising rare values to 1 only ever takes tokens from the others
        for q, c in zip(quotas, counts, strict=True):
            assert c <= math.ceil(q)


@settings(max_examples=100, deadline=None)
@given(weights=weights_st, size=st.integers(1, 5000))
def test_table_counts_match_exact_counts(weights, size) -> None:
    values = {f"v{i}": w for i, w in enumerate(weights)}
    table = parse_table(base(extra={"image": False, "weights": values}))
    extra = table.trait("extra")
    if sum(1 for w in weights if w > 0) > size:
        with pytest.raises(ConfigError, match="trait 'extra'"):
            extra.counts_for(size)
        return
    assert list(extra.counts_for(size).values()) == exact_counts(weights, size)


# -- loading and validation -----------------------------------------------------------------------------------


def test_the_example_table_loads_and_conditions_the_shipped_model() -> None:
    table = load_table()
    assert table.source == str(EXAMPLE_TABLE)
    assert {t.name for t in table.traits if t.image} == {"mood", "element"}
    assert table.combinations(10_000) >= 10_000
    assert len(table.sha256) == 64 and table.sha256 == load_table(EXAMPLE_TABLE).sha256


def test_counts_are_exact_numbers_that_must_add_up() -> None:
    table = parse_table(base(background={"image": False, "counts": {"dawn": 7, "dusk": 3}}))
    assert table.counts(10)["background"] == {"dawn": 7, "dusk": 3}
    with pytest.raises(ConfigError, match="counts add up to 10, but the collection has 12 tokens") as e:
        table.counts(12)
    assert "--size 10" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("table", "message", "hint"),
    [
        (
            base(moood={"weights": {"a": 1}}),
            "[traits.moood] is not a trait the image model is conditioned on",
            "add image = false",
        ),
        (
            base(mood={"weights": {"serene": 1, "sleepy": 1}}),
            "traits.mood.weights.sleepy is not a value",
            "serene, radiant, fierce, gloomy",
        ),
        (
            {"traits": {"mood": {"weights": {"serene": 1}}}},
            "has no 'element', which the image model is conditioned on",
            "[traits.element]",
        ),
        (
            base(mood={"weights": {"serene": -2}}),
            "traits.mood.weights.serene is negative",
            "use 0 to leave a value out",
        ),
        (base(mood={"weights": {"serene": 0}}), "traits.mood.weights are all 0", "positive weight"),
        (base(mood={"weights": {}}), "traits.mood.weights is empty", "give every value"),
        (
            base(bg={"image": False, "weights": {"": 1}}),
            "has the value '', which is empty",
            "non-empty words",
        ),
        (base(bg={"image": False, "weights": {" dusk": 1}}), "spaces at its ends", "non-empty words"),
        (
            base(bg={"image": False, "weights": {"a": 1}, "counts": {"a": 1}}),
            "exactly one of weights or counts",
            "counts = {",
        ),
        (base(bg={"image": False}), "exactly one of weights or counts", "weights = {"),
        (base(bg={"image": False, "counts": {"a": 1.5}}), "traits.bg.counts.a is 1.5", "whole numbers"),
        (base(stage={"image": False, "weights": {"a": 1}}), "reserved name 'stage'", "rename"),
        (
            base(element={"image": False, "weights": {"fire": 1}}),
            "image is false, but the image model is conditioned",
            "remove image = false",
        ),
        (base(bg={"image": False, "weight": {"a": 1}}), "traits.bg.weight is not a key", "weights"),
        (
            {**base(), "unique": ["mood", "colour"]},
            "unique names 'colour', which is not a trait",
            "mood, element",
        ),
        ({**base(), "colour": 1}, "colour is not a key of a trait table", "traits"),
        ({**base(), "lore": {"facts": {"age": "born 3 days ago"}}}, "contains a digit", "never numbers"),
        ({**base(), "image": {"conditioning": "missing.json"}}, "does not exist", "shipped"),
        ({"traits": {}}, "[traits] is missing or empty", "weights or counts"),
        ({**base(), "version": 2}, "version is 2", "version = 1"),
    ],
)
def test_bad_tables_name_the_problem_and_the_fix(table, message, hint) -> None:
    with pytest.raises(ConfigError) as e:
        parse_table(table, source="t.toml")
    assert message in e.value.message and e.value.message.startswith("trait table t.toml: ")
    assert hint in (e.value.hint or ""), e.value.hint


def test_prompt_models_take_any_trait(tmp_path: Path) -> None:
    table = parse_table(
        {"image": {"conditioning": "prompt"}, "traits": {"hat": {"weights": {"cap": 1, "crown": 1}}}}
    )
    assert table.conditioning is None and table.traits[0].image


def test_a_model_s_own_conditioning_file_is_read_relative_to_the_table(tmp_path: Path) -> None:
    (tmp_path / "cond.json").write_text('{"traits": {"hat": ["cap", "crown"]}}')
    path = tmp_path / "table.toml"
    path.write_text('[image]\nconditioning = "cond.json"\n[traits.hat]\nweights = { cap = 1, crown = 2 }\n')
    assert load_table(path).conditioning == {"hat": ("cap", "crown")}
    path.write_text('[image]\nconditioning = "cond.json"\n[traits.hat]\nweights = { fez = 1 }\n')
    with pytest.raises(ConfigError, match="traits.hat.weights.fez is not a value the image model knows"):
        load_table(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_table(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[traits.mood\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_table(bad)
