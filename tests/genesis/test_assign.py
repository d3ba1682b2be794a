"""Assignment: exact counts dealt deterministically from the seed, optional uniqueness, the documented stream."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.generate.seed import derive_seed
from agent.genesis.assign import SEED_DOMAIN, Stream, UniquenessError, assign, genesis_seed
from agent.genesis.provenance import provenance_hash, record_sha256
from agent.genesis.traits import parse_table

MOODS = ["serene", "radiant", "fierce", "gloomy"]
ELEMENTS = ["fire", "water", "earth", "air"]


def table_of(background: dict[str, int], unique=("mood", "element", "background"), mood=None):
    return parse_table(
        {
            "unique": list(unique),
            "traits": {
                "mood": {"weights": mood or {m: 1 for m in MOODS}},
                "element": {"weights": {e: 1 for e in ELEMENTS}},
                "background": {"image": False, "weights": background},
            },
        }
    )


def test_same_seed_same_assignment_and_hash_other_seed_differs(table) -> None:
    a, b, c = assign(table, 60, "launch"), assign(table, 60, "launch"), assign(table, 60, "launch-2")
    assert a.items == b.items and a.sha256 == b.sha256
    assert c.sha256 != a.sha256 and c.items != a.items
    assert assign(table, 61, "launch").sha256 != a.sha256


def test_counts_are_exactly_the_table_s(table) -> None:
    assignment = assign(table, 57, "s")
    assert assignment.value_counts() == table.counts(57)
    # quotas 17.1, 17.1, 11.4, 11.4 -> floors 17, 17, 11, 11 and the one left over to the first .4
    assert assignment.value_counts()["mood"] == {"serene": 17, "radiant": 17, "fierce": 12, "gloomy": 11}


def test_the_documented_rules_reproduce_seed_stream_and_hash(table) -> None:
    """A third party following the module docstring gets the same numbers (no reliance on Python's random)."""
    key = hashlib.sha256(b"chrysalis.genesis.seed.v1" + b"launch").digest()
    assert SEED_DOMAIN == b"chrysalis.genesis.seed.v1" and genesis_seed("launch") == key
    digest = hashlib.sha256(key + b"trait:mood" + b"\x00" + (0).to_bytes(8, "big")).digest()
    stream = Stream(key, "trait:mood")
    assert [stream.word() for _ in range(5)] == [
        int.from_bytes(digest[k : k + 8], "big") for k in (0, 8, 16, 24)
    ] + [int.from_bytes(hashlib.sha256(key + b"trait:mood\x00" + (1).to_bytes(8, "big")).digest()[:8], "big")]
    # an assignment without uniqueness is exactly: each column, Fisher-Yates with its own stream
    plain = parse_table(
        {"traits": {"mood": {"weights": {m: 1 for m in MOODS}}, "element": {"weights": {"air": 1}}}}
    )
    a = assign(plain, 10, "launch")
    column = [v for v, c in plain.counts(10)["mood"].items() for _ in range(c)]
    s = Stream(key, "trait:mood")
    for i in range(len(column) - 1, 0, -1):
        j = s.below(i + 1)
        column[i], column[j] = column[j], column[i]
    assert [item["mood"] for item in a.items] == column
    records = [
        {"item": i, "traits": dict(sorted(a.items[i].items())), "seed": str(derive_seed(key, i))}
        for i in range(10)
    ]
    compact = [json.dumps(r, sort_keys=True, separators=(",", ":")).encode() for r in records]
    assert a.sha256 == hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in compact)).hexdigest()
    assert a.sha256 == provenance_hash(record_sha256(r) for r in records)


def test_stream_below_is_uniform_enough_and_in_range() -> None:
    stream = Stream(b"k" * 32, "x")
    draws = [stream.below(6) for _ in range(6000)]
    assert set(draws) == set(range(6))
    assert all(800 < draws.count(v) < 1200 for v in range(6))


def test_uniqueness_holds_with_exact_counts(table) -> None:
    for size in (24, 48, 60, 95, 96):
        a = (
            assign(table, size, "u")
            if size <= 60
            else assign(table_of({f"b{i}": 1 for i in range(6)}), size, "u")
        )
        combos = {tuple(item[t] for t in ("mood", "element", "background")) for item in a.items}
        assert len(combos) == size
        assert a.value_counts() == a.table.counts(size)


def test_size_above_the_combinations_fails_naming_both() -> None:
    table = table_of({"dawn": 1, "dusk": 1})
    with pytest.raises(UniquenessError) as e:
        assign(table, 33, "x")
    err = e.value
    assert err.size == 33 and err.combinations == 32 and err.traits == ("mood", "element", "background")
    assert (
        "--size 33 exceeds the 32 unique combinations of mood (4) x element (4) x background (2)"
        in err.message
    )
    assert "at most 32" in (err.hint or "")


def test_a_value_too_common_for_uniqueness_fails_naming_it() -> None:
    table = table_of({"dawn": 1, "dusk": 1}, mood={"serene": 10, "radiant": 1, "fierce": 1, "gloomy": 1})
    with pytest.raises(
        UniquenessError, match="mood = 'serene' has 20 tokens, but only 8 unique combinations"
    ):
        assign(table, 26, "x")


def test_full_product_needs_equal_counts() -> None:
    ok = assign(table_of({"dawn": 1, "dusk": 1}), 32, "x")
    assert len({tuple(i.values()) for i in ok.items}) == 32
    with pytest.raises(
        UniquenessError, match="background = 'dawn' has 21 tokens, but only 16 unique combinations"
    ):
        assign(table_of({"dawn": 2, "dusk": 1}), 32, "x")


@settings(max_examples=60, deadline=None)
@given(
    n_bg=st.integers(1, 8),
    fill=st.floats(0.05, 1.0),
    seed=st.text(min_size=1, max_size=8),
    skew=st.booleans(),
)
def test_uniqueness_property(n_bg, fill, seed, skew) -> None:
    """Equal weights: any size up to the combinations works. Skewed weights: it works or fails clearly."""
    background = {f"b{i}": (i + 1 if skew else 1) for i in range(n_bg)}
    table = table_of(background)
    combos = 16 * n_bg
    size = max(4, n_bg, math.floor(fill * combos))  # every value needs a token
    try:
        a = assign(table, size, seed)
    except UniquenessError as e:
        assert skew, f"equal weights must always be dealt uniquely ({size} of {combos}): {e}"
        assert e.combinations == combos and e.size == size
        return
    assert len({tuple(item[t] for t in table.unique) for item in a.items}) == size
    assert a.value_counts() == table.counts(size)


def test_uniqueness_over_a_subset_leaves_other_traits_free() -> None:
    table = table_of({"dawn": 1, "dusk": 1}, unique=("mood", "element"))
    a = assign(table, 16, "x")
    assert len({(i["mood"], i["element"]) for i in a.items}) == 16
    assert len({tuple(i.values()) for i in a.items}) == 16 and a.value_counts()["background"] == {
        "dawn": 8,
        "dusk": 8,
    }
    with pytest.raises(UniquenessError, match="--size 17 exceeds the 16 unique combinations of mood"):
        assign(table, 17, "x")
