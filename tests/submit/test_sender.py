"""Sending, confirming, reverts, fee caps and nonces, on anvil with the real LivingCollection."""

from __future__ import annotations

import logging

import pytest

from agent.domain import Submission
from agent.errors import RetryableError
from agent.metrics import REGISTRY
from agent.settings import SubmitSettings
from agent.submit import (
    DryRunRevertedError,
    FeeCapExceededError,
    KeystoreSigner,
    NonceConsumedError,
    NonceManager,
    TransactionRevertedError,
    TxRequest,
    Web3TxSender,
)
from agent.submit.errors import GWEI
from tests.submit.conftest import SubmitChain, digest


def _metric(name: str, label: str) -> float:
    return REGISTRY.get_sample_value(name, {"label": label}) or 0.0


def _fulfil(chain: SubmitChain, request_id: int, *, gas: int | None = None) -> TxRequest:
    data = chain.collection.encode_abi(
        "fulfillEvolution", [request_id, chain.seed(request_id), digest(request_id), bytes(32)]
    )
    return TxRequest(
        to=chain.collection.address, data=bytes.fromhex(data[2:]), gas=gas, label="fulfillEvolution"
    )


def test_send_and_wait_reports_a_canonical_confirmation(
    chain: SubmitChain, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rid = chain.request(1)
    sender = chain.sender()
    sent_before = _metric("chrysalis_tx_sent_total", "fulfillEvolution")
    gas_before = _metric("chrysalis_gas_spent_total", "fulfillEvolution")

    conf = sender.send_and_wait(_fulfil(chain, rid))

    assert conf.status == 1 and conf.replaced == ()
    block = chain.w3.eth.get_block(conf.block_number)
    assert "0x" + block["hash"].hex().removeprefix("0x") == conf.block_hash
    receipt = chain.w3.eth.get_transaction_receipt(conf.tx_hash)
    assert conf.gas_used == receipt["gasUsed"] and conf.effective_gas_price == receipt["effectiveGasPrice"]
    assert chain.collection.functions.metadataDigestOf(1).call() == digest(rid)
    assert _metric("chrysalis_tx_sent_total", "fulfillEvolution") == sent_before + 1
    assert _metric("chrysalis_gas_spent_total", "fulfillEvolution") == gas_before + conf.gas_used
    assert chain.agent_key.hex() not in caplog.text.lower()


def test_dry_run_decodes_the_custom_error_and_sends_nothing(chain: SubmitChain) -> None:
    rid = chain.request(2)
    chain.fulfil_directly(rid)
    sender = chain.sender()
    nonce = chain.w3.eth.get_transaction_count(chain.agent, "pending")

    with pytest.raises(DryRunRevertedError) as info:
        sender.dry_run(_fulfil(chain, rid))
    assert info.value.error.name == "LivingCollectionRequestNotPending"
    assert info.value.error.args == {"requestId": rid}
    assert str(info.value.error) == f"LivingCollectionRequestNotPending(requestId={hex(rid)})"

    with pytest.raises(DryRunRevertedError, match="LivingCollectionRequestNotPending"):
        sender.send(_fulfil(chain, rid, gas=200_000))  # preset gas: the dry run is an eth_call
    with pytest.raises(DryRunRevertedError, match="LivingCollectionRequestNotPending"):
        sender.send(_fulfil(chain, rid))  # no gas: the estimate is the dry run
    assert chain.w3.eth.get_transaction_count(chain.agent, "pending") == nonce
    assert sender.nonces.next() == nonce  # nothing was kept reserved


def test_reverted_send_raises_permanent_error_with_the_decoded_error(chain: SubmitChain) -> None:
    rid = chain.request(3)
    chain.fulfil_directly(rid)
    sender = chain.sender()
    reverted_before = _metric("chrysalis_tx_reverted_total", "fulfillEvolution")

    submission = sender.send(_fulfil(chain, rid, gas=200_000), dry_run=False)  # spends gas
    with pytest.raises(TransactionRevertedError) as info:
        sender.wait(submission)

    exc = info.value
    assert exc.tx_hash == submission.tx_hash and not exc.out_of_gas
    assert exc.error.name == "LivingCollectionRequestNotPending" and exc.error.args["requestId"] == rid
    assert f"LivingCollectionRequestNotPending(requestId={hex(rid)})" in str(exc)
    assert exc.confirmation is not None and exc.confirmation.status == 0 and exc.gas_used > 21_000
    assert _metric("chrysalis_tx_reverted_total", "fulfillEvolution") == reverted_before + 1


def test_out_of_gas_is_reported_as_such(chain: SubmitChain) -> None:
    rid = chain.request(4)
    sender = chain.sender()
    with pytest.raises(TransactionRevertedError) as info:
        sender.wait(sender.send(_fulfil(chain, rid, gas=30_000), dry_run=False))
    assert info.value.out_of_gas and "ran out of gas" in str(info.value)


def test_fee_cap_refuses_to_send_when_the_network_needs_more(chain: SubmitChain) -> None:
    rid = chain.request(5)
    sender = chain.sender(max_fee_per_gas_gwei=100)
    nonce = chain.w3.eth.get_transaction_count(chain.agent, "pending")
    sent_before = _metric("chrysalis_tx_sent_total", "fulfillEvolution")
    chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(300 * GWEI))

    with pytest.raises(FeeCapExceededError) as info:
        sender.send(_fulfil(chain, rid))

    exc = info.value
    assert isinstance(exc, RetryableError)
    assert exc.cap_wei == 100 * GWEI and exc.required_wei >= 300 * GWEI
    assert "above the cap 100.000 gwei" in str(exc) and "next base fee 300.000 gwei" in str(exc)
    assert f"needs maxFeePerGas {exc.required_wei / GWEI:.3f} gwei" in str(exc)
    assert chain.w3.eth.get_transaction_count(chain.agent, "pending") == nonce
    assert _metric("chrysalis_tx_sent_total", "fulfillEvolution") == sent_before
    assert sender.nonces.next() == nonce


def test_fee_quote_and_bump(chain: SubmitChain) -> None:
    sender = chain.sender(max_fee_per_gas_gwei=50, base_fee_multiplier=2.0)
    quote = sender.fees.quote()
    pending_base = chain.w3.eth.get_block("pending")["baseFeePerGas"]
    assert quote.base_fee == pending_base
    assert quote.max_priority_fee_per_gas == int(chain.rpc("eth_maxPriorityFeePerGas"), 16)
    assert quote.max_fee_per_gas == 2 * pending_base + quote.max_priority_fee_per_gas
    bumped = sender.fees.bump(quote)
    assert bumped.max_fee_per_gas * 1000 >= quote.max_fee_per_gas * 1125
    assert bumped.max_priority_fee_per_gas * 1000 >= quote.max_priority_fee_per_gas * 1125
    big = type(quote)(max_fee_per_gas=48 * GWEI, max_priority_fee_per_gas=GWEI, base_fee=0)
    with pytest.raises(FeeCapExceededError, match="replacing"):
        sender.fees.bump(big)


def test_nonce_follows_an_external_transaction_from_the_same_key(chain: SubmitChain) -> None:
    sender = chain.sender()
    first = sender.send_and_wait(_fulfil(chain, chain.request(6)))
    n = chain.w3.eth.get_transaction(first.tx_hash)["nonce"]
    # Someone else sends from the agent's key: one mined, one still pending (automine off).
    chain.w3.eth.wait_for_transaction_receipt(chain.external_tx(n + 1))
    rid = chain.request(7)
    chain.automine(False)
    chain.external_tx(n + 2)
    sub = sender.send(_fulfil(chain, rid))
    assert sub.nonce == n + 3
    chain.automine(True)
    chain.mine()
    assert sender.wait(sub).status == 1


def test_nonce_too_low_resyncs_and_retries(chain: SubmitChain) -> None:
    """A race: the manager hands out a nonce an external tx takes before the broadcast."""
    sender = chain.sender()
    rid = chain.request(8)
    n = chain.w3.eth.get_transaction_count(chain.agent, "pending")
    chain.w3.eth.wait_for_transaction_receipt(chain.external_tx(n))

    class Racy(NonceManager):
        stale = True

        def reserve(self, count: int) -> list[int]:
            if self.stale:
                self.stale = False
                return [n]  # what the chain said a moment ago
            return super().reserve(count)

    sender.nonces = Racy(sender.rpc, sender.address)
    before = REGISTRY.get_sample_value("chrysalis_nonce_resyncs_total", {"reason": "nonce_too_low"}) or 0
    conf = sender.send_and_wait(_fulfil(chain, rid))
    assert conf.status == 1
    assert chain.w3.eth.get_transaction(conf.tx_hash)["nonce"] == n + 1
    assert (
        REGISTRY.get_sample_value("chrysalis_nonce_resyncs_total", {"reason": "nonce_too_low"}) == before + 1
    )


def test_restart_keeps_a_forgotten_in_flight_nonce_and_rebroadcasts_it(chain: SubmitChain) -> None:
    rid_a, rid_b = chain.request(9), chain.request(10)
    chain.automine(False)
    first = chain.sender().send(_fulfil(chain, rid_a))
    persisted = first.to_json()
    chain.rpc("anvil_dropTransaction", first.tx_hash)  # the node forgets it (eviction, node restart)
    assert chain.w3.eth.get_transaction_count(chain.agent, "pending") == first.nonce

    restored = Submission.from_json(persisted)
    after_restart = Web3TxSender.connect(
        chain.url,
        KeystoreSigner.from_private_key(chain.agent_key),
        SubmitSettings(poll_interval_s=0.02, receipt_timeout_s=20),
        abis=[chain.collection.abi],
        in_flight=[restored],
    )
    second = after_restart.send(_fulfil(chain, rid_b))
    assert second.nonce == first.nonce + 1  # not handed out again

    chain.automine(True)
    conf_a = after_restart.wait(restored)  # rebroadcast, mined
    conf_b = after_restart.wait(second)
    assert conf_a.tx_hash == first.tx_hash and conf_a.status == 1 and conf_b.status == 1


def test_nonce_taken_by_an_external_replacement(chain: SubmitChain) -> None:
    rid = chain.request(11)
    sender = chain.sender()
    chain.automine(False)
    sender.consumed_grace_s = 0.2  # how long a passed nonce may wait for a lagging receipt
    sub = sender.send(_fulfil(chain, rid))
    chain.external_tx(sub.nonce, max_fee=sub.max_fee_per_gas * 2, tip=sub.max_priority_fee_per_gas * 2)
    chain.mine()
    with pytest.raises(NonceConsumedError) as info:
        sender.wait(sub)
    assert info.value.nonce == sub.nonce and sub.tx_hash in info.value.hashes
