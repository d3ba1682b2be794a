"""The retry schedule: exponential, capped, jittered within known bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.jobs import RetryPolicy


def test_nominal_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=5, factor=2, cap_s=60, jitter=0)
    assert [policy.nominal_delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert [policy.delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert policy.nominal_delay(10_000) == 60  # no overflow


def test_jitter_spreads_retries_that_failed_together() -> None:
    policy = RetryPolicy(base_s=10, jitter=0.5)
    rng = random.Random(7)
    delays = {round(policy.delay(1, rng), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 5 and max(delays) <= 10


@given(
    attempt=st.integers(1, 200),
    base=st.floats(0, 100),
    factor=st.floats(1, 4),
    cap=st.floats(0, 3600),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
    at_least=st.floats(0, 5000),
)
def test_delay_stays_within_its_bounds(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int, at_least: float
) -> None:
    policy = RetryPolicy(base_s=base, factor=factor, cap_s=cap, jitter=jitter)
    nominal = policy.nominal_delay(attempt)
    assert nominal <= cap
    assert policy.nominal_delay(attempt + 1) >= nominal
    d = policy.delay(attempt, random.Random(seed))
    assert nominal * (1 - jitter) - 1e-9 <= d <= nominal
    assert min(cap, at_least) <= policy.delay(attempt, random.Random(seed), at_least=at_least) <= cap


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)
    with pytest.raises(ValueError):
        RetryPolicy(factor=0.5)
    assert RetryPolicy(max_attempts=3).exhausted(3) and not RetryPolicy(max_attempts=3).exhausted(2)
