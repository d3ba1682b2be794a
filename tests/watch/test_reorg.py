"""Reorgs: real ones on anvil (``anvil_reorg``), one deeper than finality, and the window logic on its own."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from web3 import Web3

from agent.devnet import start_anvil
from agent.jobs import JobKind, JobState
from agent.store import open_job_store
from agent.watch.cursor import CursorState
from agent.watch.errors import ChainResetError, DeepReorgError
from agent.watch.events import BlockRef, NewBlock, Reorg
from agent.watch.reorg import advance, detect_reorg, finalize
from tests.watch.conftest import EmitterChain, Proxy, Recorder, WatcherFactory

pytestmark = pytest.mark.anvil


def test_a_reorg_reports_the_orphaned_blocks_and_the_new_branch_is_picked_up(
    chain: EmitterChain, make_watcher: WatcherFactory, sqlite_url: str
) -> None:
    chain.mine(3)
    chain.request(token_id=1)
    chain.request(token_id=2)
    chain.request(token_id=3)
    seen = Recorder()
    watcher = make_watcher(finality_depth=10)
    watcher.poll(seen)
    old = {e.args["tokenId"]: e for e in seen.logs()}
    assert sorted(old) == [1, 2, 3]
    reported = {b.block.number: b.block.hash for b in seen.of("block")}
    head = chain.head

    # The last 3 blocks (all three requests) are replaced; the new branch holds one request, for token 77,
    # in its second block.
    chain.reorg(3, requests_at={1: 77})
    assert chain.head == head
    after = Recorder()
    watcher.poll(after)

    (reorg,) = after.of("reorg")
    assert isinstance(reorg, Reorg) and reorg.depth == 3
    assert reorg.orphaned_range == (head - 2, head)
    assert reorg.orphaned_hashes == tuple(reported[n] for n in range(head - 2, head + 1))
    assert reorg.common_ancestor == BlockRef(head - 3, reported[head - 3], reorg.common_ancestor.parent_hash)
    assert after.events[0] is reorg, "the reorg notice comes before the new branch's blocks"
    new_blocks = after.of("block")
    assert [b.block.number for b in new_blocks] == [head - 2, head - 1, head]
    assert all(b.block.hash == chain.block_hash(b.block.number) for b in new_blocks)
    (new_log,) = after.logs()
    assert new_log.args["tokenId"] == 77 and new_log.key.block_hash == chain.block_hash(head - 1)
    orphaned_logs = [e for e in old.values() if e.key.block_hash in reorg.orphaned_hashes]
    assert sorted(e.args["tokenId"] for e in orphaned_logs) == [1, 2, 3]

    # What the agent does with it: cancel the orphaned jobs; the new log makes its own job.
    store = open_job_store(sqlite_url)
    for e in seen.logs():
        store.enqueue(JobKind.EVOLVE, f"evolve:{e.key.chain_id}:{e.args['requestId']}", source=e.key,
                      block_number=e.block_number)  # fmt: skip
    cancelled = store.cancel_orphaned(reorg.orphaned_hashes)
    assert len(cancelled) == 3 and all(j.state is JobState.CANCELLED for j in cancelled)
    # The new branch reuses request id 1 (the orphaned requests never happened there): its cancelled job is
    # revived with the new source.
    assert new_log.args["requestId"] == 1
    job, created = store.enqueue(JobKind.EVOLVE, f"evolve:{new_log.key.chain_id}:{new_log.args['requestId']}",
                                 source=new_log.key, block_number=new_log.block_number)  # fmt: skip
    assert created and job.id == cancelled[0].id
    assert job.state is JobState.QUEUED and job.source == new_log.key and job.payload == {}
    store.close()

    # A restart after the reorg neither repeats nor misses anything.
    chain.request(token_id=5)
    again = Recorder()
    make_watcher(finality_depth=10).poll(again)
    assert again.of("reorg") == [] and [e.args["tokenId"] for e in again.logs()] == [5]


def test_a_reorg_deeper_than_the_finality_depth_is_fatal(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    chain.mine(6)
    chain.request(token_id=1)
    seen = Recorder()
    watcher = make_watcher(finality_depth=2)
    watcher.poll(seen)
    head = chain.head
    finalized = seen.of("finalize")[-1].block
    assert finalized.number == head - 2

    chain.reorg(5)
    with pytest.raises(DeepReorgError) as err:
        watcher.poll(seen)
    error = err.value
    assert error.finality_depth == 2 and error.finalized == finalized
    assert error.depth == 3 and [b.number for b in error.orphaned] == [head - 2, head - 1, head]
    assert "reorg deeper than the finality depth of 2 blocks" in str(error)
    assert f"#{head - 2}..#{head}" in str(error) and "hint:" in str(error)
    with pytest.raises(DeepReorgError):  # and it stays fatal: the cursor did not move
        make_watcher(finality_depth=2).poll(seen)


def test_a_reorg_within_the_confirmations_is_never_seen(
    chain: EmitterChain, make_watcher: WatcherFactory
) -> None:
    chain.mine(5)
    chain.request(token_id=1)
    chain.mine(1)
    seen = Recorder()
    watcher = make_watcher(confirmations=2, finality_depth=6)
    watcher.poll(seen)
    assert seen.logs() == []
    chain.reorg(2, requests_at={0: 9})  # replaces the request's block and the one after it
    chain.mine(2)
    watcher.poll(seen)
    assert seen.of("reorg") == [] and [e.args["tokenId"] for e in seen.logs()] == [9]


# -- the window logic, without a chain --------------------------------------------------------------------


def _chain(numbers: range, tag: str = "a") -> list[BlockRef]:
    blocks, parent = [], f"0x{tag}-{numbers.start - 1}"
    for n in numbers:
        blocks.append(BlockRef(n, f"0x{tag}-{n}", parent))
        parent = blocks[-1].hash
    return blocks


def _state(blocks: list[BlockRef], finalized: int | None = None) -> CursorState:
    state = None
    for b in blocks:
        state = advance(state, 1, b)
    assert state is not None
    if finalized is not None:
        done = finalize(state, finalized)
        assert done is not None
        state = done[0]
    return state


def test_detect_reorg_finds_the_common_ancestor() -> None:
    old = _chain(range(10, 16))
    state = _state(old, finalized=11)
    assert [b.number for b in state.window] == [11, 12, 13, 14, 15]
    canonical = {b.number: b.hash for b in old[:4]} | {14: "0xb-14", 15: "0xb-15", 16: "0xb-16"}
    found = detect_reorg(state, canonical.get, stream="s", finality_depth=4, start_block=10)
    assert found is not None
    reorg, rolled_back = found
    assert reorg.common_ancestor == old[3] and reorg.orphaned == (old[4], old[5])
    assert rolled_back is not None and rolled_back.tip == old[3] and rolled_back.finalized == old[1]
    assert (
        detect_reorg(state, {b.number: b.hash for b in old}.get, stream="s", finality_depth=4, start_block=10)
        is None
    )


def test_detect_reorg_below_the_final_anchor_or_beyond_the_depth_is_fatal() -> None:
    old = _chain(range(10, 16))
    state = _state(old, finalized=12)
    other = {n: f"0xb-{n}" for n in range(20)}
    with pytest.raises(DeepReorgError) as err:
        detect_reorg(state, other.get, stream="s", finality_depth=3, start_block=10)
    assert err.value.depth == 4 and err.value.finalized == old[2]
    unanchored = _state(old)  # nothing final yet, but 6 blocks deep with a finality depth of 3
    keep_first = {10: "0xa-10"} | {n: f"0xb-{n}" for n in range(11, 20)}
    with pytest.raises(DeepReorgError):
        detect_reorg(unanchored, keep_first.get, stream="s", finality_depth=3, start_block=10)


def test_a_reorg_of_everything_since_the_start_block_restarts_from_it() -> None:
    state = _state(_chain(range(10, 13)))
    other = {n: f"0xb-{n}" for n in range(20)}
    found = detect_reorg(state, other.get, stream="s", finality_depth=5, start_block=10)
    assert found is not None
    reorg, rolled_back = found
    assert rolled_back is None and reorg.depth == 3 and reorg.common_ancestor == BlockRef(9, "0xb-9")


def test_advance_links_blocks_and_restarts_the_window_on_a_jump() -> None:
    blocks = _chain(range(1, 4))
    state = _state(blocks)
    assert state.window == tuple(blocks)
    jumped = advance(state, 1, BlockRef(9, "0xa-9"))
    assert jumped.window == (BlockRef(9, "0xa-9"),) and jumped.tip.number == 9
    with pytest.raises(ValueError):
        advance(jumped, 1, BlockRef(9, "0xa-9"))
    assert isinstance(NewBlock(blocks[0]).events, tuple)


def test_a_lagging_head_is_not_a_reorg_and_nothing_is_delivered_twice(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy]
) -> None:
    """Issue 11, anomaly 1: a node behind the cursor (a load-balanced provider) once made the watcher orphan the
    cursor's blocks, and their jobs were cancelled for good."""
    proxy = proxy_factory()
    seen = Recorder()
    watcher = make_watcher(rpc_url=proxy.url, finality_depth=10)
    chain.request(token_id=1)
    watcher.poll(seen)
    tip = watcher.state.tip  # type: ignore[union-attr]
    proxy.lag = 3  # the next answers come from a node three blocks behind
    assert watcher.poll(seen) == 0
    assert seen.of("reorg") == [] and watcher.state.tip == tip  # type: ignore[union-attr]
    chain.request(token_id=2)  # one block ahead of the cursor, still above the lagging node's head
    assert watcher.poll(seen) == 0 and seen.of("reorg") == []
    proxy.lag = 0
    watcher.poll(seen)
    assert seen.of("reorg") == []
    assert [e.args["tokenId"] for e in seen.logs()] == [1, 2]


def test_a_chain_reset_stops_the_watcher_loudly_instead_of_waiting_or_rolling_back(
    chain: EmitterChain, make_watcher: WatcherFactory, proxy_factory: Callable[..., Proxy]
) -> None:
    """Issue 11, anomaly 9: after anvil restarted under a running agent, the agent showed "lag -9", then
    "cursor ?", and kept running. Another genesis, or no contract at the watched address, is fatal."""
    proxy = proxy_factory()
    chain.request(token_id=1)
    chain.mine(3)
    running = make_watcher(rpc_url=proxy.url)
    running.poll(Recorder())
    with start_anvil("--accounts", "2") as other:
        proxy.upstream = other.url  # the node behind the same URL restarted: a new chain, below the cursor
        # (anvil's genesis hash depends on the second it started: the missing contract may be what gives it away)
        with pytest.raises(
            ChainResetError, match=f"genesis block is now|no contract at {chain.emitter.address}"
        ):
            running.poll(Recorder())
        # A new process with the old cursor (same database) against the new chain: the contract is not there.
        new_chain = Web3(Web3.HTTPProvider(other.url))
        for _ in range(12):  # the new chain grows past the old cursor: no lag to hide behind
            new_chain.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        assert new_chain.eth.block_number > running.state.tip.number  # type: ignore[union-attr]
        with pytest.raises(ChainResetError, match=f"no contract at {chain.emitter.address}"):
            make_watcher(rpc_url=other.url).poll(Recorder())
