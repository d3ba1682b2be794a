"""Revert data decoded into readable errors from the LivingCollection ABI; messages with numbers."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector as selector

from agent.errors import PermanentError, RetryableError
from agent.submit.errors import ErrorDecoder, FeeCapExceededError, TransactionRevertedError
from agent.submit.rpc import classify_rejection
from tests.support.devchain import artifacts


def _decoder() -> ErrorDecoder:
    return ErrorDecoder.from_abi(artifacts()["LivingCollection"]["abi"])


def test_custom_error_with_a_packed_request_id() -> None:
    data = selector("LivingCollectionRequestNotPending(uint256)") + encode(["uint256"], [(1 << 32) | 1])
    err = _decoder().decode(data)
    assert err.name == "LivingCollectionRequestNotPending"
    assert err.args == {"requestId": 0x100000001}
    assert str(err) == "LivingCollectionRequestNotPending(requestId=0x100000001)"


def test_custom_error_with_several_arguments_and_an_address() -> None:
    caller = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    data = selector("LivingCollectionNotHolder(uint256,address)") + encode(
        ["uint256", "address"], [7, caller]
    )
    assert str(_decoder().decode(data)) == f"LivingCollectionNotHolder(tokenId=7, caller={caller})"
    fee = selector("LivingCollectionWrongPayment(uint256,uint256)") + encode(["uint256"] * 2, [1, 5 * 10**14])
    assert str(_decoder().decode(fee)) == "LivingCollectionWrongPayment(sent=1, required=500000000000000)"


def test_inherited_openzeppelin_error_is_known() -> None:
    role = bytes.fromhex("cab5a0bfe0b79d2c4b1c2e02599fa044d115b7511f9659307cb4276950967709")
    data = selector("AccessControlUnauthorizedAccount(address,bytes32)") + encode(
        ["address", "bytes32"], ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8", role]
    )
    err = _decoder().decode("0x" + data.hex())
    assert err.name == "AccessControlUnauthorizedAccount"
    assert "neededRole=0xcab5a0bf" in str(err)


def test_error_string_panic_and_unknown() -> None:
    d = ErrorDecoder()
    assert str(d.decode(selector("Error(string)") + encode(["string"], ["nope"]))) == "Error('nope')"
    assert str(d.decode(selector("Panic(uint256)") + encode(["uint256"], [0x11]))) == (
        "Panic(0x11: arithmetic overflow or underflow)"
    )
    assert str(d.decode("0xdeadbeef00")) == "unknown error 0xdeadbeef (5 bytes of data)"
    assert str(d.decode("0x")) == "revert without data"
    assert not d.decode(None).known
    # A known selector with a truncated body decodes to "unknown" instead of raising.
    assert not d.decode(selector("Panic(uint256)") + b"\x01").known


def test_fee_cap_error_names_both_numbers_and_is_retryable() -> None:
    exc = FeeCapExceededError(301 * 10**9, 100 * 10**9)
    assert isinstance(exc, RetryableError)
    assert exc.required_wei == 301 * 10**9 and exc.cap_wei == 100 * 10**9
    assert "needs maxFeePerGas 301.000 gwei" in str(exc) and "above the cap 100.000 gwei" in str(exc)
    assert "max_fee_per_gas_gwei" in str(exc)


def test_reverted_error_is_permanent_and_carries_the_decoded_error() -> None:
    data = selector("LivingCollectionRequestNotPending(uint256)") + encode(["uint256"], [(3 << 32) | 2])
    exc = TransactionRevertedError(
        _decoder().decode(data),
        label="fulfillEvolution",
        tx_hash="0xab",
        block_number=9,
        gas_used=30_000,
        gas_limit=200_000,
    )
    assert isinstance(exc, PermanentError) and not exc.out_of_gas
    assert "LivingCollectionRequestNotPending(requestId=0x300000002)" in str(exc)
    oog = TransactionRevertedError(
        ErrorDecoder().decode("0x"),
        label="x",
        tx_hash="0xab",
        block_number=9,
        gas_used=25_000,
        gas_limit=25_000,
    )
    assert oog.out_of_gas and "ran out of gas" in str(oog)


def test_node_rejections_are_classified() -> None:
    assert classify_rejection("nonce too low") == "nonce_too_low"
    assert classify_rejection("nonce too low: next nonce 5, tx nonce 4") == "nonce_too_low"
    assert classify_rejection("already known") == "already_known"
    assert classify_rejection("transaction already imported") == "already_known"
    assert classify_rejection("replacement transaction underpriced") == "underpriced"
    assert classify_rejection("max fee per gas less than block base fee") == "underpriced"
    assert classify_rejection("insufficient funds for gas * price + value") == "insufficient_funds"
    assert classify_rejection("intrinsic gas too low") == "other"
