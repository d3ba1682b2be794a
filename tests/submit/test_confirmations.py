"""Stuck transactions replaced with a fee bump; confirmations counted; orphaned receipts re-waited."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from agent.domain import Confirmation, Submission
from agent.metrics import REGISTRY
from agent.submit import StuckTransactionError, TxRequest, TxStatus, Web3TxSender
from agent.submit.errors import GWEI
from tests.submit.conftest import SubmitChain, digest
from tests.support.waiting import eventually


def _fulfil(chain: SubmitChain, request_id: int) -> TxRequest:
    data = chain.collection.encode_abi(
        "fulfillEvolution", [request_id, chain.seed(request_id), digest(request_id), bytes(32)]
    )
    return TxRequest(to=chain.collection.address, data=bytes.fromhex(data[2:]), label="fulfillEvolution")


class Background:
    """Runs a function in a thread; ``result()`` re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._out: dict[str, Any] = {}

        def run() -> None:
            try:
                self._out["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                self._out["error"] = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 30) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "still waiting"
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]


def _tx(chain: SubmitChain, tx_hash: str) -> Any:
    return chain.w3.eth.get_transaction(tx_hash)


def _mined(sender: Web3TxSender, sub: Submission) -> TxStatus:
    """``sender.poll(sub)`` once it says mined. Automine mines a transaction as it arrives, but anvil answers
    ``eth_sendRawTransaction`` first: on a busy machine the first look can still find it pending."""
    eventually(lambda: sender.poll(sub).state == "mined", what=f"{sub.tx_hash} to be mined")
    return sender.poll(sub)


def test_stuck_transaction_is_replaced_with_a_fee_bump(chain: SubmitChain) -> None:
    """Automine off: nothing is mined until the test mines, so the first broadcast goes stale."""
    rid = chain.request(1)
    sender = chain.sender(stuck_after_s=0.3)
    replaced_before = (
        REGISTRY.get_sample_value("chrysalis_tx_replaced_total", {"label": "fulfillEvolution"}) or 0
    )
    chain.automine(False)
    first = sender.send(_fulfil(chain, rid))
    replacements: list[Submission] = []
    mined = threading.Event()

    def on_replace(sub: Submission) -> None:
        replacements.append(sub)
        # Hold the waiter until the test has looked at the pool and mined: left running, it would replace
        # the replacement too once another 0.3 s went by (as on a busy machine, between two lines of this test).
        mined.wait(30)

    waiting = Background(lambda: sender.wait(first, on_replace=on_replace))
    try:
        (second,) = eventually(lambda: list(replacements), timeout=10, what="a replacement to be sent")
        assert chain.pool_hashes() == [second.tx_hash]  # the pool holds the replacement only
        chain.mine()
    finally:
        mined.set()
    conf: Confirmation = waiting.result()

    assert conf.status == 1
    assert conf.tx_hash == second.tx_hash and conf.replaced == (first.tx_hash,)
    assert second.nonce == first.nonce and second.replaced == (first.tx_hash,)
    new = _tx(chain, second.tx_hash)
    assert new["maxFeePerGas"] * 1000 >= first.max_fee_per_gas * 1125
    assert new["maxPriorityFeePerGas"] * 1000 >= first.max_priority_fee_per_gas * 1125
    assert chain.w3.eth.get_transaction_count(chain.agent) == first.nonce + 1
    assert (
        REGISTRY.get_sample_value("chrysalis_tx_replaced_total", {"label": "fulfillEvolution"})
        == replaced_before + 1
    )


def test_low_fee_transaction_under_a_raised_base_fee_is_replaced(chain: SubmitChain) -> None:
    """The base fee jumps past the transaction's maxFeePerGas: the node evicts it, blocks go by without it,
    and the sender replaces it at today's fees (well above a 12.5% bump)."""
    rid = chain.request(2)
    sender = chain.sender(stuck_after_s=60, stuck_after_blocks=2, max_fee_per_gas_gwei=500)
    chain.automine(False)
    first = sender.send(_fulfil(chain, rid))
    assert first.max_fee_per_gas < 10 * GWEI
    chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(100 * GWEI))
    chain.mine()  # a 100 gwei block without our transaction

    with chain.mining(0.1):
        conf = Background(lambda: sender.wait(first)).result()
    assert conf.status == 1 and conf.replaced == (first.tx_hash,)
    assert conf.effective_gas_price > 10 * GWEI
    assert _tx(chain, conf.tx_hash)["maxFeePerGas"] >= 2 * 80 * GWEI


def test_stuck_transaction_that_cannot_be_replaced_under_the_cap_times_out(chain: SubmitChain) -> None:
    rid = chain.request(3)
    quote = chain.sender().fees.quote()
    cap_gwei = (quote.base_fee + quote.max_priority_fee_per_gas) * 1.05 / GWEI  # room to send, not to bump
    sender = chain.sender(stuck_after_s=0.1, max_fee_per_gas_gwei=cap_gwei, max_replacements=5)
    chain.automine(False)
    first = sender.send(_fulfil(chain, rid))
    assert first.max_fee_per_gas == int(cap_gwei * GWEI)  # capped
    with pytest.raises(StuckTransactionError) as info:
        sender.wait(first, timeout_s=0.6)
    assert info.value.nonce == first.nonce and info.value.hashes[0] == first.tx_hash
    assert info.value.retryable


def test_confirmations_are_counted_block_by_block(
    chain: SubmitChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = chain.request(4)
    sender = chain.sender(confirmations=2)
    sub = sender.send(_fulfil(chain, rid))  # automine: mined as it arrives
    first = _mined(sender, sub)
    assert first.state == "mined" and first.depth == 0
    chain.mine()
    assert sender.poll(sub).state == "mined"
    chain.mine()
    done = sender.poll(sub)
    assert done.state == "confirmed" and done.depth == 2

    # wait() blocks until the blocks exist: it sees the transaction mined, poll after poll, and keeps waiting.
    sub2 = sender.send(_fulfil(chain, chain.request(5)))
    seen: list[str] = []
    poll = sender.tracker.poll

    def counting_poll(sub: Submission) -> TxStatus:
        status = poll(sub)
        seen.append(status.state)
        return status

    monkeypatch.setattr(sender.tracker, "poll", counting_poll)
    waiting = Background(lambda: sender.wait(sub2))
    eventually(
        lambda: seen.count("mined") >= 3 or not waiting.thread.is_alive(),
        what="wait() to find the transaction mined in three polls",
    )
    assert waiting.thread.is_alive(), f"confirmed before two blocks were built on it (polls saw {seen})"
    chain.mine(2)
    conf = waiting.result()
    assert conf.confirmations == 2
    assert chain.w3.eth.block_number - conf.block_number >= 2


def test_receipt_in_an_orphaned_block_is_re_waited(chain: SubmitChain) -> None:
    """A reorg replaces the block holding the transaction with another that holds it too."""
    rid = chain.request(6)
    sender = chain.sender(confirmations=2)
    sub = sender.send(_fulfil(chain, rid))
    seen = _mined(sender, sub)
    assert seen.state == "mined" and seen.receipt is not None
    old_block, old_hash = seen.receipt.block_number, seen.receipt.block_hash
    reorged_before = (
        REGISTRY.get_sample_value("chrysalis_tx_reorged_total", {"label": "fulfillEvolution"}) or 0
    )

    chain.rpc("anvil_reorg", 1, [[sub.raw_tx, 0]])  # the same signed tx, in a new block at the same height

    assert sender.poll(sub).state == "orphaned"
    again = sender.poll(sub)
    assert again.state == "mined" and again.receipt is not None
    assert again.receipt.block_hash != old_hash
    chain.mine(2)
    conf = sender.wait(sub)
    assert conf.block_hash == again.receipt.block_hash != old_hash
    assert conf.block_number == old_block
    canonical = chain.w3.eth.get_block(conf.block_number)["hash"]
    assert conf.block_hash.removeprefix("0x") == canonical.hex().removeprefix("0x")
    assert (
        REGISTRY.get_sample_value("chrysalis_tx_reorged_total", {"label": "fulfillEvolution"})
        == reorged_before + 1
    )


def test_transaction_dropped_by_a_reorg_is_rebroadcast(chain: SubmitChain) -> None:
    rid = chain.request(7)
    sender = chain.sender(confirmations=1)
    sub = sender.send(_fulfil(chain, rid))
    seen = _mined(sender, sub)
    assert seen.state == "mined" and seen.receipt is not None

    chain.rpc("anvil_reorg", 1, [])  # the block is replaced by an empty one; the node forgets the tx
    assert chain.w3.eth.get_transaction_count(chain.agent) == sub.nonce

    with chain.mining(0.1):
        conf = Background(lambda: sender.wait(sub)).result()
    assert conf.tx_hash == sub.tx_hash and conf.status == 1
    assert conf.block_hash != seen.receipt.block_hash
    assert chain.collection.functions.metadataDigestOf(7).call() == digest(rid)
