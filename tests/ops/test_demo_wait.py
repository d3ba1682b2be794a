"""The demo's wait for a round of requests (``Demo._wait``) against a real job store on SQLite: a job that fails
permanently stops the wait at once with the job's error (instead of the round's whole timeout), and jobs that are
merely queued or running don't. The chain and the agent process are stand-ins (running the whole demo takes a
minute; tests/ops/test_demo.py does): the chain keeps a request pending until told, as it keeps the request of a
failed job pending."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from agent.errors import PermanentError
from agent.jobs import JobKind
from agent.ops.demo import Demo
from agent.pipeline.request import job_key
from agent.store import open_job_store

CHAIN_ID = 31337
TIMEOUT_S = 120.0  # the round's timeout: the wait must end long before it


class Chain:
    """The collection as ``_wait`` reads it: ``chain_id`` and ``view("isPending", request_id)``."""

    def __init__(self, pending: set[int]) -> None:
        self.chain_id = CHAIN_ID
        self.pending = set(pending)

    def view(self, name: str, request_id: int) -> bool:
        assert name == "isPending"
        return request_id in self.pending


class Agent:
    """The agent process as ``_wait`` uses it: alive, with a log."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def check_alive(self) -> None:
        pass

    def tail(self, n: int = 15) -> str:
        return ""


def _demo(tmp_path: Path) -> Demo:
    demo = Demo(tmp_path / "demo-out", console=Console(file=io.StringIO()), timeout_s=TIMEOUT_S)
    (demo.out / "data").mkdir(parents=True)
    demo.agent = Agent(demo.out / "agent.log")  # type: ignore[assignment]
    return demo


def _later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)  # the wait has polled a few times by then
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_job_failing_permanently_stops_the_wait_at_once_naming_token_error_and_fix(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    failing, queued = 4 << 32 | 1, 7 << 32 | 1
    with open_job_store(demo.database_url) as store:
        job, _ = store.enqueue(JobKind.EVOLVE, job_key(CHAIN_ID, failing))
        store.enqueue(JobKind.EVOLVE, job_key(CHAIN_ID, queued))  # still queued: no reason to stop

        def fail() -> None:
            assert store.claim("agent-1") is not None
            store.report_error(job.id, "agent-1", PermanentError("image model refused: palette out of range"))

        started = time.monotonic()
        failer = _later(1.5, fail)
        with pytest.raises(PermanentError) as raised:
            demo._wait(Chain({failing, queued}), [failing, queued], "round 1")
        elapsed = time.monotonic() - started
        failer.join()
    message = raised.value.message
    assert message == (
        f"round 1: the agent's job {job.id} for token 4 (request {failing:#x}) failed permanently: "
        "permanent error on attempt 1: PermanentError: image model refused: palette out of range"
    )
    assert raised.value.hint is not None
    assert str(demo.out / "agent.log") in raised.value.hint and "run the demo again" in raised.value.hint
    assert elapsed < 15, f"the wait took {elapsed:.1f} s after the job failed at 1.5 s"


def test_the_wait_returns_once_requests_are_fulfilled_while_their_jobs_run(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    requests = [1 << 32 | 1, 2 << 32 | 1]
    chain = Chain(set(requests))
    with open_job_store(demo.database_url) as store:
        for r in requests:
            store.enqueue(JobKind.EVOLVE, job_key(CHAIN_ID, r))
        assert store.claim("agent-1") is not None  # one running, one queued: neither stops the wait
        started = time.monotonic()
        fulfiller = _later(1.5, chain.pending.clear)
        demo._wait(chain, requests, "round 2")
        fulfiller.join()
    assert time.monotonic() - started < 15
