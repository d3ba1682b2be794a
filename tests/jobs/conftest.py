from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.jobs import RetryPolicy
from agent.store import SqlJobStore, open_job_store
from tests.support.clock import FakeClock
from tests.support.databases import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend (the plugin's ``db_url`` is a fresh, empty database on it)."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, base_s=10.0, factor=2.0, cap_s=60.0, jitter=0.5)


@pytest.fixture
def store(db_url: str, clock: FakeClock, policy: RetryPolicy) -> Iterator[SqlJobStore]:
    s = open_job_store(db_url, policy=policy, clock=clock)
    try:
        yield s
    finally:
        s.close()
