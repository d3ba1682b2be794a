"""Refresh tests run on the pipeline tests' chain: a real anvil with LivingCollection and DevPriceFeed (16 tokens,
8 per holder), an encrypted agent keystore, the shipped sprite model (one torch thread) and a tiny random-weight
lore LM. Each test gets its own data directory and database (SQLite; ``backend`` parametrises PostgreSQL).

:func:`drive` runs an agent the way ``chrysalis run`` does (watch, then work) until a refresh job finishes or a
budget pauses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.jobs import Job, JobState
from agent.pipeline import Agent
from agent.settings import RefreshSettings, Settings
from tests.jobs.dbs import database_url
from tests.pipeline import conftest as pipeline
from tests.pipeline.conftest import Chain, make_settings

# the pipeline tests' chain, keystore and tiny lore model, shared with these tests
anvil_url = pipeline.anvil_url
module_chain = pipeline.module_chain
chain = pipeline.chain
keystore = pipeline.keystore
tiny_lm = pipeline.tiny_lm


class Clock:
    """A settable UTC clock for the job store and the refresh budgets."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(tmp_path: Path, backend: str) -> Iterator[str]:
    with database_url(backend, tmp_path) as url:
        yield url


@pytest.fixture
def make(
    chain: Chain, keystore: tuple[Path, Path], tmp_path: Path, tiny_lm: Path, db_url: str
) -> Callable[..., Settings]:
    """Settings for an agent on the test chain; keyword arguments set the [refresh] section (first_render on)."""

    def build(*, submit: dict[str, Any] | None = None, **refresh: Any) -> Settings:
        settings = make_settings(chain, keystore, tmp_path / "data", db_url, tiny_lm)
        settings.refresh = RefreshSettings(**{"first_render": True, "chunk_size": 8, **refresh})
        if submit:
            settings.submit = settings.submit.model_copy(update=submit)
        return settings

    return build


def drive(agent: Agent, job_id: int, timeout_s: float = 120) -> Job:
    """Watch and work until refresh job ``job_id`` is finished, or queued behind a pause; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        agent.poll_once()
        worked = agent.work_once()
        job = agent.store.get(job_id)
        if job.state.terminal:
            return job
        run = agent.refresh.store.run(job_id)
        if job.state == JobState.QUEUED and run is not None and run.paused_until is not None:
            return job
        if time.monotonic() > deadline:
            counts = agent.refresh.store.counts(job_id) if run else {}
            raise AssertionError(f"refresh job {job_id} still {job.state.value} ({job.last_error}): {counts}")
        if not worked:
            time.sleep(0.05)


def states(agent: Agent, job_id: int) -> dict[int, str]:
    """Token id -> item state of a refresh."""
    return {i.token_id: i.state.value for i in agent.refresh.store.items(job_id)}
