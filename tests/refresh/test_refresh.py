"""Refreshes end to end on anvil: one block for every token, unchanged tokens skipped, the rest regenerated from
their previous image, published with a parent link, and written with refreshMetadata."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from eth_abi import decode as abi_decode

from agent.app import build_agent
from agent.errors import ConfigError
from agent.generate.verify import verify
from agent.jobs import JobKind, JobState
from agent.metadata import cid_from_digest, history, parse_metadata
from agent.pipeline import Agent
from agent.refresh.runner import batch_provenance
from agent.settings import Settings
from tests.refresh.conftest import drive, states
from tests.support.clock import FakeClock
from tests.support.devchain import CollectionChain


def metadata_of(chain: CollectionChain, agent: Agent, token_id: int):
    cid = cid_from_digest(chain.collection.functions.metadataDigestOf(token_id).call())
    return cid, parse_metadata(agent.repo.block_get(cid), cid=cid)


def test_a_refresh_renders_every_token_at_one_block_then_skips_what_did_not_change(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    with build_agent(make()) as agent:
        job, _ = agent.refresh.queue_manual([1, 2, 3, 9])
        done = drive(agent, job.id)
        assert done.state == JobState.CONFIRMED, done.last_error
        run = agent.refresh.store.run(job.id)
        assert states(agent, job.id) == {1: "confirmed", 2: "confirmed", 3: "confirmed", 9: "confirmed"}
        assert done.result["counts"] == {"confirmed": 4} and len(done.result["transactions"]) == 1
        tx = chain.w3.eth.get_transaction(done.result["transactions"][0])
        assert tx["from"] == chain.agent and tx["to"] == chain.collection.address

        for token_id in (1, 2, 3, 9):
            cid, md = metadata_of(chain, agent, token_id)
            assert chain.collection.functions.tokenURI(token_id).call() == f"ipfs://{cid}"
            assert md.inputs["block_number"] == run.block_number  # ONE block for every token
            assert md.inputs["block_hash"] == run.block_hash
            assert md.stage == 0 and md.parent is None and md.traits["mood"] == "radiant"
            assert (
                md.receipt["seed"]["onchain_seed"] == run.block_hash
            )  # the refresh's seed is its block hash
        assert chain.collection.functions.stageOf(1).call() == 0  # a refresh never changes the stage
        assert verify(dict(metadata_of(chain, agent, 9)[1].receipt)).match

        # nothing moved: the second refresh evaluates every token and sends nothing
        nonce = chain.agent_nonce()
        again, _ = agent.refresh.queue_manual([1, 2, 3, 9])
        second = drive(agent, again.id)
        assert second.state == JobState.CONFIRMED
        assert set(states(agent, again.id).values()) == {"unchanged"}
        assert second.result["transactions"] == [] and chain.agent_nonce() == nonce


@pytest.mark.slow
def test_a_price_move_past_the_threshold_triggers_a_refresh_that_repaints_from_the_previous_image(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    settings = make(policies=[{"name": "moves", "price_change_pct": 5.0, "tokens": "1-3"}])
    with build_agent(settings) as agent:
        first, _ = agent.refresh.queue_manual([1, 2, 3])
        assert drive(agent, first.id).state == JobState.CONFIRMED
        before = {t: metadata_of(chain, agent, t) for t in (1, 2, 3)}
        baseline = agent.refresh.store.baseline(chain.feed.address)
        assert baseline is not None and baseline[0] == 3_150 * 10**8  # the first refresh's answer

        chain.transact(chain.feed.functions.updateAnswer(3_250 * 10**8), chain.admin)  # +3.2 %: below 5 %
        agent.poll_once()
        assert agent.refresh.store.open_refresh_jobs() == []

        chain.transact(
            chain.feed.functions.updateAnswer(3_400 * 10**8), chain.admin
        )  # +7.9 % since the refresh
        agent.poll_once()
        (queued,) = agent.refresh.store.open_refresh_jobs()
        job = agent.store.get(queued[0])
        assert job.payload["trigger"] == "price" and job.payload["policy"] == "moves"
        assert job.payload["baseline"] == str(3_150 * 10**8) and job.payload["answer"] == str(3_400 * 10**8)

        done = drive(agent, job.id)
        assert done.state == JobState.CONFIRMED, done.last_error
        assert states(agent, job.id) == {1: "confirmed", 2: "confirmed", 3: "confirmed"}
        for token_id in (1, 2, 3):
            cid, md = metadata_of(chain, agent, token_id)
            old_cid, old = before[token_id]
            assert md.traits["mood"] == "fierce" and old.traits["mood"] == "radiant"  # +13 % over the hour
            assert md.parent == old_cid and md.stage == old.stage == 0
            image = md.receipt["image"]["request"]
            assert image["init_image_cid"] == old.image_cid and image["strength"] is not None
            assert [e.cid for e in history(agent.repo.block_get, cid)] == [cid, old_cid]
        assert agent.refresh.store.baseline(chain.feed.address)[0] == 3_400 * 10**8

        # receipts of a repaint replay, given the previous image
        _, md = metadata_of(chain, agent, 2)
        old_png = b"".join(agent.repo.cat(before[2][1].image_cid))
        assert verify(dict(md.receipt), init_image_loader=lambda sha, cid: old_png).match


@pytest.mark.slow
def test_refreshmetadata_batches_stay_under_the_gas_cap_and_carry_a_recomputable_provenance(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    cap = 150_000
    with build_agent(make(submit={"refresh_max_gas": cap})) as agent:
        job, _ = agent.refresh.queue_manual(list(range(1, 13)))
        done = drive(agent, job.id, timeout_s=240)
        assert done.state == JobState.CONFIRMED, done.last_error
        assert done.result["counts"] == {"confirmed": 12}
        hashes = done.result["transactions"]
        assert len(hashes) >= 3  # 12 first writes (~25k gas each) cannot fit in two 150k transactions
        block_gas_limit = chain.w3.eth.get_block("latest")["gasLimit"]
        written = []
        for tx_hash in hashes:
            tx = chain.w3.eth.get_transaction(tx_hash)
            receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
            assert tx["gas"] <= cap and receipt["gasUsed"] <= cap < block_gas_limit
            ids, digests, provenance = abi_decode(
                ["uint256[]", "bytes32[]", "bytes32"], bytes(tx["input"])[4:]
            )
            items = []
            for token_id, digest in zip(ids, digests, strict=True):
                md = parse_metadata(agent.repo.block_get(cid_from_digest(digest)))
                items.append((token_id, "0x" + digest.hex(), verify_sha(md.receipt)))
            assert provenance == batch_provenance(agent.refresh.store.run(job.id).block_hash, items)
            assert list(ids) == sorted(ids)  # consecutive ids share one BatchMetadataUpdate event
            written += ids
        assert sorted(written) == list(range(1, 13))


def verify_sha(receipt: object) -> str:
    from agent.generate.receipt import InferenceReceipt

    return InferenceReceipt.from_json(receipt).sha256()  # type: ignore[arg-type]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_refresh_on_postgresql(chain: CollectionChain, make: Callable[..., Settings]) -> None:
    settings = make()
    assert settings.database.url.startswith("postgresql")
    with build_agent(settings) as agent:
        job, _ = agent.refresh.queue_manual([4, 5])
        done = drive(agent, job.id)
    assert done.state == JobState.CONFIRMED and done.result["counts"] == {"confirmed": 2}


def test_a_newer_refresh_supersedes_what_an_older_paused_one_had_not_sent(
    chain: CollectionChain, make: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make(max_tokens=1, pause_s=60)
    with build_agent(settings, clock=clock) as agent:
        old, _ = agent.refresh.queue_manual([1, 2, 3])
        assert drive(agent, old.id).state == JobState.QUEUED  # paused after one token
        assert states(agent, old.id) == {1: "confirmed", 2: "changed", 3: "changed"}

        new, _ = agent.refresh.queue_manual([2, 3])
        assert drive(agent, new.id).state == JobState.QUEUED  # planned at a newer block, paused after one
        item = agent.refresh.store.item(old.id, 2)
        assert item.state.value == "superseded" and f"superseded by refresh job {new.id}" in item.reason
        assert states(agent, old.id) == {1: "confirmed", 2: "superseded", 3: "superseded"}

        clock.advance(61)
        finished = drive(agent, old.id)  # nothing left to do: it finishes without writing again
        assert finished.state == JobState.CONFIRMED
        assert finished.result["counts"] == {"confirmed": 1, "superseded": 2}
        assert drive(agent, new.id).state == JobState.CONFIRMED
        assert states(agent, new.id) == {2: "confirmed", 3: "confirmed"}


def test_a_price_policy_on_an_address_that_is_no_feed_is_a_config_error(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    settings = make(policies=[{"name": "px", "price_change_pct": 5, "feed": chain.collection.address}])
    with pytest.raises(ConfigError) as err:
        build_agent(settings)
    assert f"the price feed {chain.collection.address} does not answer latestRoundData()" in err.value.message
    assert "Chainlink-compatible aggregator" in err.value.hint


def test_the_studio_button_queues_a_refresh_the_worker_runs(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    with build_agent(make()) as agent:
        # what agent.studio.service.StudioService.request_refresh enqueues for "Request refresh" on token 7
        job, created = agent.store.enqueue(
            JobKind.REFRESH,
            f"refresh:{chain.w3.eth.chain_id}:7:0:studio",
            payload={"token_id": 7, "stage": 0, "source": "studio", "requested_by": "alice"},
        )
        assert created
        done = drive(agent, job.id)
        assert done.state == JobState.CONFIRMED and states(agent, job.id) == {7: "confirmed"}
        assert agent.refresh.store.run(job.id).trigger == "studio"


def test_a_refresh_whose_block_a_reorg_orphaned_is_planned_again_at_a_new_block(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    with build_agent(make(chunk_size=1)) as agent:
        chain.mine(2)  # B is an empty block: the reorg takes nothing else away
        job, _ = agent.refresh.queue_manual([1, 2])
        assert agent.work_once() == 1  # block B fixed, token 1 read at B
        old = agent.refresh.store.run(job.id)
        chain.rpc("anvil_reorg", chain.w3.eth.block_number - old.block_number + 1, [])  # B replaced
        assert chain.w3.eth.get_block(old.block_number)["hash"].hex() not in old.block_hash

        assert agent.work_once() == 1  # the next step sees it
        assert states(agent, job.id) == {1: "superseded", 2: "superseded"}
        assert "orphaned by a reorg" in agent.refresh.store.item(job.id, 2).reason
        replan = agent.store.get_by_key(f"{job.key}@replan:{old.block_hash[:18]}")
        assert replan is not None and replan.payload["tokens"] == "1-2"

        assert drive(agent, job.id).state == JobState.CONFIRMED  # nothing of its own left to do
        done = drive(agent, replan.id)
        assert done.state == JobState.CONFIRMED and states(agent, replan.id) == {
            1: "confirmed",
            2: "confirmed",
        }
        new = agent.refresh.store.run(replan.id)
        assert new.block_hash != old.block_hash
        assert chain.w3.eth.get_block(new.block_number)["hash"].hex() in new.block_hash  # canonical


def test_a_refresh_broadcast_is_journaled_so_a_restart_sends_the_same_transaction_again(
    chain: CollectionChain, make: Callable[..., Settings]
) -> None:
    """Every refreshMetadata broadcast is recorded in the broadcast journal before it is sent, as a holder's
    fulfilment is: a node that forgets the transaction while the agent is down gets the same signed transaction
    again from the next start (one nonce, one transaction, no second write that would revert)."""
    settings = make()
    with chain.reverting():
        nonce = chain.agent_nonce()
        with build_agent(settings) as agent:
            job, _ = agent.refresh.queue_manual([6])
            chain.automine(False)
            deadline = time.monotonic() + 120
            while not agent.refresh.store.sent(job.id):
                assert time.monotonic() < deadline, agent.refresh.store.counts(job.id)
                agent.poll_once()
                agent.work_once()
            (tx,) = agent.refresh.store.sent(job.id)
            journal = agent.refresh.runner.sender.journal
            assert journal is not None
            recorded = journal.latest(chain.agent, tx.nonce)
            assert recorded is not None and recorded.outcome is None
            assert recorded.submission.tx_hash.lower() == tx.tx_hash.lower()
        chain.rpc("anvil_dropTransaction", tx.tx_hash)  # the node forgets it while no agent runs
        assert chain.rpc("txpool_content")["pending"] == {}

        with build_agent(settings) as agent:  # the start settles the journal: the transaction is sent again
            pooled = {t["hash"].lower() for txs in chain.rpc("txpool_content")["pending"].values()
                      for t in txs.values()}  # fmt: skip
            assert pooled == {tx.tx_hash.lower()}
            chain.automine(True)
            chain.mine()
            done = drive(agent, job.id)
            assert done.state == JobState.CONFIRMED, done.last_error
            assert done.result["transactions"] == [tx.tx_hash]
            assert states(agent, job.id) == {6: "confirmed"}
        assert chain.agent_nonce() == nonce + 1
