"""Token selections (``--tokens 1,2,5-9``, a policy's ``tokens``): read exactly, or refused with the fix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.tokens import TokenSelectionError, format_tokens, parse_tokens


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("1,2,5-9", [1, 2, 5, 6, 7, 8, 9]),
        (" 9 , 3-4,3 ", [3, 4, 9]),  # sorted, duplicates dropped, spaces allowed
        ("7", [7]),
        ("all", None),
        ("ALL", None),
        ("", None),
        (None, None),
        ([5, 2, 2], [2, 5]),
    ],
)
def test_selections_are_read_in_order_without_duplicates(spec: object, ids: list[int] | None) -> None:
    assert parse_tokens(spec) == ids  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("1,,2", "an empty item between commas"),
        ("3-x", "'x' is not a token id"),
        ("-3", "'' is not a token id"),
        ("9-2", "the range 9-2 runs backwards (write 2-9)"),
        ("0-3", "token ids start at 1 (got 0)"),
        ("1-2000000", "more than 1,000,000 ids"),
        ("1.5", "'1.5' is not a token id"),
    ],
)
def test_a_bad_selection_names_the_problem_and_how_to_write_one(spec: str, problem: str) -> None:
    with pytest.raises(TokenSelectionError) as err:
        parse_tokens(spec)
    assert problem in err.value.message and "e.g. 1,2,5-9" in (err.value.hint or "")


@given(st.sets(st.integers(min_value=1, max_value=500), min_size=1, max_size=60))
def test_format_and_parse_round_trip(ids: set[int]) -> None:
    text = format_tokens(ids)
    assert parse_tokens(text) == sorted(ids)
    assert len(text.split(",")) <= len(ids)  # runs are collapsed into ranges
