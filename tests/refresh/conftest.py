"""Refresh tests run on the shared chain (tests/support/fixtures.py): a real anvil with LivingCollection and
DevPriceFeed (16 tokens, 8 per holder), an encrypted agent keystore, the shipped sprite model (one torch thread)
and the tiny random-weight lore LM. Each test gets its own data directory and database (SQLite; ``backend``
parametrises PostgreSQL).

:func:`drive` runs an agent the way ``chrysalis run`` does (watch, then work) until a refresh job finishes or a
budget pauses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.jobs import Job, JobState
from agent.pipeline import Agent
from agent.settings import RefreshSettings, Settings
from tests.support.agent_settings import Keystore, agent_settings
from tests.support.clock import FakeClock
from tests.support.devchain import CollectionChain

#: Noon: a day's budgets have hours to run before midnight renews them.
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def make(
    chain: CollectionChain, keystore: Keystore, tmp_path: Path, tiny_lm: Path, db_url: str
) -> Callable[..., Settings]:
    """Settings for an agent on the test chain; keyword arguments set the [refresh] section (first_render on)."""

    def build(*, submit: dict[str, Any] | None = None, **refresh: Any) -> Settings:
        settings = agent_settings(chain, keystore, tmp_path / "data", db_url, tiny_lm)
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
