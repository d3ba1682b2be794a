from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.jobs import JobStore, RetryPolicy
from agent.jobs.sql_store import SqlJobStore
from tests.jobs.dbs import BACKENDS, FakeClock, database_url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, base_s=10.0, factor=2.0, cap_s=60.0, jitter=0.5)


@pytest.fixture
def store(db_url: str, clock: FakeClock, policy: RetryPolicy) -> Iterator[SqlJobStore]:
    s = JobStore.open(db_url, policy=policy, clock=clock)
    assert isinstance(s, SqlJobStore)
    try:
        yield s
    finally:
        s.close()
