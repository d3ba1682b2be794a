"""The agent's loops and bookkeeping: run() until stopped, status, leases of dead workers, failures that end
visibly, retries, and settling without inference what is no longer pending."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import pytest
from PIL import Image

from agent.app import build_agent
from agent.domain import ModelRef
from agent.errors import ConfigError
from agent.jobs import JobKind, JobState, Stage
from agent.metadata import build_metadata, cid_from_digest
from agent.pipeline import AgentStatus
from agent.settings import Settings
from agent.store.roles import list_agents
from tests.support.devchain import CollectionChain
from tests.support.inputs import input_snapshot
from tests.support.waiting import eventually


def _key(chain: CollectionChain, rid: int) -> str:
    return f"evolve:{chain.w3.eth.chain_id}:{rid}"


def test_run_fulfils_reports_status_and_returns_promptly_when_stopped(
    chain: CollectionChain, settings: Settings
) -> None:
    statuses: list[AgentStatus] = []
    stop = threading.Event()
    with build_agent(settings) as agent:
        runner = threading.Thread(target=agent.run, args=(stop,), kwargs={"on_status": statuses.append})
        runner.start()
        rid = chain.request(1)
        eventually(
            lambda: not chain.is_pending(rid), 60, "the request fulfilled while running", interval=0.05
        )
        # the fulfilment is mined; the worker records the job confirmed once it has its confirmations
        eventually(
            lambda: agent.store.counts().get(JobState.CONFIRMED, 0) == 1,
            60,
            "the job confirmed",
            interval=0.05,
        )
        stopped = time.monotonic()
        stop.set()
        runner.join(15)
        assert not runner.is_alive(), "run() did not return after stop was set"
        took = time.monotonic() - stopped
        status = agent.status()

    assert took < 15
    assert statuses and all(isinstance(s, AgentStatus) for s in statuses)
    assert status.jobs["confirmed"] == 1 and status.pending == 0 and status.events_seen >= 1
    # The fulfilment's own block may not be watched yet when run() returns: lag is 0 or 1.
    assert status.chain_head is not None and status.cursor_block is not None and status.lag in (0, 1), status
    assert status.gas_spent > 0 and status.last_error is None, status


def test_jobs_held_by_a_dead_worker_are_reaped_and_finished(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    with build_agent(settings) as agent:
        agent.poll_once()
        ghost = agent.store.claim("ghost:1", lease_s=0.3)  # a worker that then dies without a word
        assert ghost is not None and ghost.state == JobState.RUNNING
        agent.run_until_idle(timeout_s=60)
        job = agent.store.get(ghost.id)
    assert job.state == JobState.CONFIRMED and job.attempts == 2
    assert "lease expired" in (job.last_error or "")
    assert [int(e["args"]["requestId"]) for e in chain.evolved()] == [rid]


def test_a_permanent_error_fails_the_job_visibly_and_retry_finishes_it_once_fixed(
    chain: CollectionChain, settings: Settings
) -> None:
    """Token 1's current metadata (written by someone else) is not in the agent's repo: the job fails with the
    CID and the fix; once the block is imported, `retry` finishes it with that metadata as its parent."""
    # the foreign parent is a flat crimson square: its evolution fails the sprite palette gate (tests/gates), which
    # is not what this test is about
    settings = settings.model_copy(update={"gates": settings.gates.model_copy(update={"enabled": False})})
    f = chain.collection.functions
    with build_agent(settings) as agent:
        png = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 40, 90)).save(png, format="PNG")
        image_cid = str(agent.repo.add(png.getvalue()).cid)
        elsewhere = build_metadata(
            name="Chrysalis #1", lore="Made elsewhere.", image_cid=image_cid, traits={"mood": "serene"}, stage=1,
            parent=None, receipt={}, models={"image": ModelRef("x", "0" * 64)}, snapshot=input_snapshot(),
        ).encode()  # fmt: skip
        first = chain.request(1)
        chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin), chain.admin)
        chain.transact(
            f.fulfillEvolution(first, chain.seed(first), hashlib.sha256(elsewhere).digest(), bytes(32)),
            chain.admin,
        )
        agent.run_until_idle(timeout_s=60)  # the first request's job settles: fulfilled by someone else
        rid = chain.request(1)
        status = agent.run_until_idle(timeout_s=60)
        job = agent.store.get_by_key(_key(chain, rid))
        assert job is not None and job.state == JobState.FAILED and job.attempts == 1
        parent = cid_from_digest(hashlib.sha256(elsewhere).digest())
        assert parent in (job.reason or "") and "PreviousMetadataMissingError" in (job.reason or "")
        assert status.last_error is not None and parent in status.last_error

        agent.repo.add_raw_block(elsewhere)  # the operator imports the missing block ...
        agent.store.retry(job.id)  # ... and re-queues the job (`chrysalis retry JOB`)
        agent.run_until_idle(timeout_s=60)
        job = agent.store.get(job.id)
    assert job.state == JobState.CONFIRMED
    assert job.output(Stage.INPUTS)["token"]["previous"]["metadata_cid"] == parent
    assert chain.collection.functions.stageOf(1).call() == 2


@pytest.mark.slow
def test_retryable_errors_back_off_then_end_visibly_failed_when_attempts_run_out(
    chain: CollectionChain, settings: Settings
) -> None:
    """Replication needs two backends; the second (a Kubo node) is down: every publish is retried, then the
    job fails with the replication error as its reason. Nothing is sent."""
    settings.ipfs.kubo_api = "/ip4/127.0.0.1/tcp/1/http"
    settings.ipfs.replication = 2
    settings.agent.max_attempts = 2
    rid = chain.request(1)
    with build_agent(settings) as agent:
        status = agent.run_until_idle(timeout_s=90)
        job = agent.store.get_by_key(_key(chain, rid))
    assert job is not None and job.state == JobState.FAILED and job.attempts == 2
    assert job.stage == Stage.GENERATED  # resumed at publish on the second attempt, not regenerated
    assert "gave up after 2 attempts" in (job.reason or "") and "ReplicationError" in (job.reason or "")
    assert status.jobs["failed"] == 1 and chain.agent_nonce() == 0 and chain.is_pending(rid)


def test_a_request_no_longer_pending_is_settled_without_inference(
    chain: CollectionChain, settings: Settings
) -> None:
    """A second agent database (or a wiped one) meets requests the agent's key already fulfilled."""
    rid = chain.request(1)
    with build_agent(settings) as agent:
        agent.run_until_idle(timeout_s=60)
    other = settings.model_copy(update={"data_dir": settings.data_dir.parent / "other"})
    other.database.url = f"sqlite:///{other.data_dir / 'jobs.db'}"
    with build_agent(other) as second:
        second.run_until_idle(timeout_s=60)
        job = second.store.get_by_key(_key(chain, rid))
        kinds = {j.kind for j in second.store.list_jobs()}
    assert job is not None and job.state == JobState.CONFIRMED and job.result["how"] == "found on-chain"
    assert job.stage == Stage.INPUTS  # settled before generating
    assert kinds == {JobKind.EVOLVE} and chain.agent_nonce() == 1


def test_a_second_agent_on_the_same_key_is_refused_at_start_before_it_signs_anything(
    chain: CollectionChain, settings: Settings
) -> None:
    nonce = chain.agent_nonce()
    with build_agent(settings, worker_id="agent-one"):
        with pytest.raises(ConfigError) as err:
            build_agent(settings, worker_id="agent-two")
        assert f"another agent already works with the key {chain.agent}: agent-one" in err.value.message
        assert "its own key" in (err.value.hint or "")
    with build_agent(settings, worker_id="agent-two") as agent:  # the first stopped: its key is free
        assert [a.worker_id for a in list_agents(agent.db) if a.stopped_at is None] == ["agent-two"]
    assert chain.agent_nonce() == nonce


def test_an_agent_whose_key_lacks_agent_role_is_refused_at_start(
    chain: CollectionChain, settings: Settings
) -> None:
    f = chain.collection.functions
    with chain.reverting():
        chain.transact(f.revokeRole(f.AGENT_ROLE().call(), chain.agent), chain.admin)
        with pytest.raises(ConfigError) as err:
            build_agent(settings)
    assert f"the agent key {chain.agent} does not hold AGENT_ROLE" in err.value.message
    assert "grantRole(AGENT_ROLE, address)" in (err.value.hint or "")
