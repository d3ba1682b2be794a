"""``chrysalis status``, ``jobs`` and ``retry`` against a real job store (SQLite and PostgreSQL) and anvil."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.domain import LogKey
from agent.errors import PermanentError, RetryableError
from agent.jobs import JobKind, JobState, JobStore, Stage
from agent.store import open_job_store
from agent.watch.cursor import CursorState
from agent.watch.cursor_sql import SqlCursorStore
from agent.watch.events import BlockRef
from tests.support.databases import BACKENDS, database_url
from tests.support.devchain import CollectionChain

WORKER = "ops-test-worker"


def _payload(token_id: int, nonce: int = 1) -> dict[str, object]:
    return {"request_id": token_id << 32 | nonce, "token_id": token_id, "stage_before": 0}


def _source(chain_id: int, n: int) -> LogKey:
    return LogKey(chain_id, "0x" + f"{n:064x}", 0, "0x" + f"{n + 1000:064x}")


def _confirm(store: JobStore, key: str, token_id: int, tx_hash: str, gas: int, chain_id: int, n: int) -> int:
    job, _ = store.enqueue(
        JobKind.EVOLVE, key, payload=_payload(token_id), source=_source(chain_id, n), block_number=n
    )
    claimed = store.claim(WORKER)
    assert claimed is not None and claimed.id == job.id
    for stage in (Stage.INPUTS, Stage.GENERATED, Stage.PUBLISHED, Stage.SUBMITTED):
        store.record_stage(job.id, WORKER, stage, {"stage": stage.value})
    store.confirm(
        job.id, WORKER, {"how": "sent", "tx_hash": tx_hash, "gas_used": gas, "token_uri": "ipfs://x"}
    )
    return job.id


@pytest.fixture(params=BACKENDS)
def populated(
    request, configured: CollectionChain, workdir: Path, monkeypatch
) -> Iterator[dict[str, object]]:
    """A job store (on the parametrised backend) holding jobs in every state, and settings pointing at it."""
    with database_url(request.param, workdir) as url:
        monkeypatch.setenv("CHRYSALIS_DATABASE__URL", url)
        chain_id = configured.deployment.chain_id
        with open_job_store(url) as store:
            ids: dict[str, int] = {}
            # two jobs fulfilled by one batched transaction, one by its own: gas counts once per transaction
            ids["batched_a"] = _confirm(store, "evolve:a", 1, "0x" + "aa" * 32, 90_000, chain_id, 1)
            ids["batched_b"] = _confirm(store, "evolve:b", 2, "0x" + "aa" * 32, 90_000, chain_id, 2)
            ids["single"] = _confirm(store, "evolve:c", 3, "0x" + "bb" * 32, 60_000, chain_id, 3)
            failed, _ = store.enqueue(
                JobKind.EVOLVE, "evolve:d", payload=_payload(4), source=_source(chain_id, 4)
            )
            assert store.claim(WORKER).id == failed.id
            store.record_stage(failed.id, WORKER, Stage.INPUTS, {"snapshot": 1})
            store.report_error(
                failed.id, WORKER, PermanentError("rules rejected the inputs", hint="fix the rules")
            )
            ids["failed"] = failed.id
            retrying, _ = store.enqueue(
                JobKind.EVOLVE, "evolve:e", payload=_payload(5), source=_source(chain_id, 5)
            )
            assert store.claim(WORKER).id == retrying.id
            store.report_error(retrying.id, WORKER, RetryableError("pinning service answered 503"))
            ids["retrying"] = retrying.id
            running, _ = store.enqueue(
                JobKind.EVOLVE, "evolve:f", payload=_payload(6), source=_source(chain_id, 6)
            )
            assert store.claim(WORKER).id == running.id
            ids["running"] = running.id
            cancelled, _ = store.enqueue(
                JobKind.EVOLVE, "evolve:g", payload=_payload(1, 2), source=_source(chain_id, 7)
            )
            store.cancel(cancelled.id, "source log orphaned by a reorg")
            ids["cancelled"] = cancelled.id
            head = configured.w3.eth.block_number
            address = configured.deployment.address().lower()
            block = configured.w3.eth.get_block(head - 2)
            tip = BlockRef(head - 2, "0x" + bytes(block["hash"]).hex())
            SqlCursorStore(store.db).save(f"{chain_id}:{address}", CursorState(chain_id, tip, None, (tip,)))
        yield {"url": url, "ids": ids, "head": head}


def test_status_shows_head_cursor_lag_jobs_gas_and_the_last_error(populated, chrysalis) -> None:
    result = chrysalis("status", "--json")
    assert result.code == 0, result.text
    report = json.loads(result.out)
    ids = populated["ids"]
    assert report["chain_head"] == populated["head"]
    assert report["cursor_block"] == populated["head"] - 2
    assert report["lag"] == 2
    assert report["jobs"] == {"queued": 1, "running": 1, "confirmed": 3, "failed": 1, "cancelled": 1}
    assert report["gas_spent"] == 150_000
    assert report["fulfilment_txs"] == 2
    assert report["waiting"] == {"unsettled": 0, "stalled": 0}  # confirmed directly in the store: final
    assert report["last_error"].startswith(f"job {ids['failed']}: permanent error on attempt 1")
    assert "rules rejected the inputs" in report["last_error"]

    table = chrysalis("status")
    assert table.code == 0
    assert "lag 2" in table.text
    assert "gas spent 150,000 in 2 fulfilment tx(s)" in table.text
    assert "queued 1 running 1 confirmed 3 failed 1 cancelled 1" in table.text


def test_jobs_lists_and_filters(populated, chrysalis) -> None:
    ids = populated["ids"]
    everything = json.loads(chrysalis("jobs", "--json").out)
    assert [row["id"] for row in everything] == sorted(ids.values(), reverse=True)

    failed = json.loads(chrysalis("jobs", "--state", "failed", "--json").out)
    assert [row["id"] for row in failed] == [ids["failed"]]
    assert failed[0]["stage"] == "inputs" and failed[0]["token_id"] == 4
    assert failed[0]["request_id"] == hex(4 << 32 | 1)
    assert "rules rejected the inputs" in failed[0]["reason"]

    two = json.loads(chrysalis("jobs", "-s", "queued,running", "--json").out)
    assert {row["id"] for row in two} == {ids["retrying"], ids["running"]}
    assert (
        json.loads(chrysalis("jobs", "-s", "queued", "-s", "cancelled", "--json").out)[0]["id"]
        == ids["cancelled"]
    )

    confirmed = json.loads(chrysalis("jobs", "-s", "confirmed", "--json").out)
    assert {row["tx_hash"] for row in confirmed} == {"0x" + "aa" * 32, "0x" + "bb" * 32}

    assert len(json.loads(chrysalis("jobs", "--limit", "2", "--json").out)) == 2

    table = chrysalis("jobs", "--state", "failed")
    assert table.code == 0 and "permanent error" in table.text and "1/5" in table.text


def test_jobs_rejects_an_unknown_state(populated, chrysalis) -> None:
    result = chrysalis("jobs", "--state", "done")
    assert result.code == 1
    assert "unknown job state 'done'" in result.text
    assert "hint: use one of: queued, running, confirmed, failed, cancelled" in result.text


def test_retry_requeues_a_failed_job_keeping_its_stages(populated, chrysalis) -> None:
    job_id = populated["ids"]["failed"]
    result = chrysalis("retry", str(job_id))
    assert result.code == 0, result.text
    assert f"job {job_id} (evolve:d) re-queued; a running agent resumes it after stage inputs" in result.text
    with open_job_store(populated["url"]) as store:
        job = store.get(job_id)
    assert job.state is JobState.QUEUED and job.stage is Stage.INPUTS and job.attempts == 0


def test_retry_refuses_what_is_not_retryable(populated, chrysalis) -> None:
    confirmed = chrysalis("retry", str(populated["ids"]["single"]))
    assert confirmed.code == 1
    assert f"cannot retry job {populated['ids']['single']}: it is confirmed" in confirmed.text
    assert "hint: only failed jobs can be retried" in confirmed.text
    missing = chrysalis("retry", "4242")
    assert missing.code == 1
    assert "no job 4242" in missing.text


def test_status_without_a_database(
    configured: CollectionChain, workdir: Path, chrysalis, monkeypatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_DATABASE__URL", f"sqlite:///{workdir / 'never.db'}")
    result = chrysalis("status")
    assert result.code == 1
    assert f"no agent database at {workdir / 'never.db'}" in result.text
    assert "start it with `chrysalis run`" in result.text
    assert not (workdir / "never.db").exists()


def test_status_with_an_unreachable_node_still_shows_the_jobs(populated, chrysalis, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CHRYSALIS_SUBMIT__RPC_RETRIES", "0")
    result = chrysalis("status")
    assert result.code == 1
    assert "confirmed 3" in result.out
    assert "chain head unknown" in " ".join(result.out.split())
    assert f"cannot reach the node at http://127.0.0.1:{port}: connection refused" in result.text


def test_status_and_the_agent_count_gas_with_one_rule(populated, chrysalis) -> None:
    """`chrysalis status` and the running Agent's status line read gas from agent.pipeline.accounting: a batch
    counts once (whatever the hash's case), a job settled without sending costs nothing, and every job kind the
    agent paid for counts (a refresh's transaction too)."""

    from agent.pipeline.accounting import GasSpent, gas_spent
    from agent.pipeline.agent import Activity

    with open_job_store(populated["url"]) as store:
        for key, kind, result in [
            (
                "evolve:h",
                JobKind.EVOLVE,
                {"how": "found on-chain", "tx_hash": "0x" + "cc" * 32, "gas_used": 1},
            ),
            ("refresh:i", JobKind.REFRESH, {"how": "sent", "tx_hash": "0x" + "dd" * 32, "gas_used": 40_000}),
            ("evolve:j", JobKind.EVOLVE, {"how": "sent", "tx_hash": "0x" + "BB" * 32, "gas_used": 60_000}),
        ]:
            job, _ = store.enqueue(kind, key, payload=_payload(9))
            assert store.claim(WORKER).id == job.id
            store.confirm(job.id, WORKER, result)
        expected = GasSpent(gas=190_000, transactions=3)  # 0xaa.. 90k + 0xbb.. 60k + the refresh's 40k
        assert gas_spent(store) == expected
        assert Activity(store).gas_spent() == expected.gas  # the running agent's own count, on the same store

    report = json.loads(chrysalis("status", "--json").out)
    assert (report["gas_spent"], report["fulfilment_txs"]) == (expected.gas, expected.transactions)
