"""Helpers shared by the contract tests: an independent CIDv1, strict custom-error checks, event lists.

Nothing here trusts the contract: CIDs are computed with :mod:`hashlib` and :mod:`base64`, and custom errors are
compared by name and by every one of their arguments.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ape
from ape.exceptions import CustomError
from eth_abi import decode as abi_decode
from eth_utils import is_address, keccak, to_checksum_address
from hexbytes import HexBytes

# ---------------------------------------------------------------------------------------------------------------
# Deployment parameters of the shared collection (see conftest.py)
# ---------------------------------------------------------------------------------------------------------------

NAME = "Chrysalis Test"
SYMBOL = "CHRT"
MAX_SUPPLY = 20
MINT_PRICE = 10**16  # 0.01 ether
MAX_PER_WALLET = 5
EVOLUTION_FEE = 2 * 10**15  # 0.002 ether
REQUEST_TIMEOUT = 3600
MIN_REQUEST_TIMEOUT = 3600
MAX_ROYALTY_BPS = 1000
ADMIN_TRANSFER_DELAY = 24 * 3600
REVEAL_DELAY = 10
BASE_URI = "https://genesis.chrysalis.test/meta/"
ROYALTY_BPS = 500
MAX_REQUEST_TIMEOUT = 30 * 24 * 3600

WEIGHTS_V1 = hashlib.sha256(b"sprites-v1.safetensors").digest()
WEIGHTS_V2 = hashlib.sha256(b"sprites-v2.safetensors").digest()
MANIFEST_V1 = "ipfs://bafkreimanifestv1"
MANIFEST_V2 = "ipfs://bafkreimanifestv2"

DEFAULT_ADMIN_ROLE = b"\x00" * 32
AGENT_ROLE = keccak(text="AGENT_ROLE")
MINTER_ROLE = keccak(text="MINTER_ROLE")
PAUSER_ROLE = keccak(text="PAUSER_ROLE")
REFRESHER_ROLE = keccak(text="REFRESHER_ROLE")

ZERO_ADDRESS = "0x" + "00" * 20
ZERO32 = b"\x00" * 32
BURNT_MARKER = b"\xff" * 32
"""The contract's internal "burnt" digest: must be rejected as a metadata digest."""

UINT96_MAX = 2**96 - 1

# ---------------------------------------------------------------------------------------------------------------
# CIDv1, computed independently of the contract
# ---------------------------------------------------------------------------------------------------------------

CID_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
"""CID version 1, raw codec (0x55), sha2-256 multihash (0x12) of 32 bytes (0x20)."""

# Kubo's CIDv1 (`ipfs add --cid-version=1`) for two literal inputs (tests/ipfs/data/unixfs-cids.json).
KUBO_VECTORS = {
    b"hello world\n": "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
    b"": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
}


def b32(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding."""
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def cid_of_digest(digest: bytes) -> str:
    """Multibase base32 CIDv1 (raw, sha2-256) of the block whose sha256 is ``digest``."""
    assert len(digest) == 32
    return "b" + b32(CID_PREFIX + digest)


def cid_of(data: bytes) -> str:
    """The CIDv1 Kubo gives ``data`` stored as one raw block."""
    return cid_of_digest(hashlib.sha256(data).digest())


def digest_of(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def metadata(token_id: int, stage: int, note: str = "") -> bytes:
    """Some metadata JSON bytes, as the agent would pin them."""
    return b'{"name":"Chrysalis #%d","stage":%d,"description":"%s","image":"ipfs://bafkreiimage"}' % (
        token_id,
        stage,
        note.encode(),
    )


def request_id(token_id: int, nonce: int) -> int:
    return token_id << 32 | nonce


EVOLUTION_REQUESTED_TOPIC = keccak(text="EvolutionRequested(uint256,uint256,address,uint32,bytes32)")


def seed_of(contract: Any, rid: int) -> bytes:
    """The seed of request ``rid``, read from its ``EvolutionRequested`` log on the current chain (as the agent
    reads it): what ``fulfillEvolution`` must name. Read independently of the contract's storage."""
    from ape import chain

    logs = chain.provider.web3.eth.get_logs(
        {
            "address": to_checksum_address(contract.address),
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [
                HexBytes(EVOLUTION_REQUESTED_TOPIC).to_0x_hex(),
                HexBytes(rid.to_bytes(32, "big")).to_0x_hex(),
            ],
        }
    )
    assert logs, f"no EvolutionRequested log for request {rid}"
    return bytes(logs[-1]["data"])[32:64]


def seeds_of(contract: Any, rids: Any) -> list[bytes]:
    return [seed_of(contract, rid) for rid in rids]


# ---------------------------------------------------------------------------------------------------------------
# Normalising values for comparison
# ---------------------------------------------------------------------------------------------------------------


def norm(value: Any) -> Any:
    """Accounts and address strings -> checksum strings; bytes-likes -> bytes; containers element-wise."""
    address = getattr(value, "address", None)
    if address is not None and not isinstance(value, (bytes, str)):
        return to_checksum_address(address)
    if isinstance(value, str) and is_address(value):
        return to_checksum_address(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(norm(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Custom errors: name AND every argument
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def reverts(error: Any, **inputs: Any) -> Iterator[Any]:
    """Expects a revert with custom error ``error`` whose arguments are exactly ``inputs``.

    ``ape.reverts`` alone lets a wrong error through in some cases (a revert it could not decode, an argument name
    it does not know), and it does not decode custom errors of view calls or constructors on every provider. This
    check extracts the raw revert data when Ape did not decode it, then compares the error's selector and its full
    argument dict.
    """
    abi = error.abi
    selector = keccak(text=abi.selector)[:4]  # ErrorABI.selector is the canonical signature text
    with ape.reverts() as info:
        yield info
    err = info.value
    if isinstance(err, CustomError):
        name, actual = type(err).__name__, dict(err.inputs)
    else:
        data = _revert_data(err)
        assert data is not None and len(data) >= 4, (
            f"expected {abi.name}{inputs}, got a plain revert: {err!r}"
        )
        assert data[:4] == selector, f"expected {abi.name}{inputs}, got {_error_name(error, data)}: {err!r}"
        values = abi_decode([i.canonical_type for i in abi.inputs], data[4:])
        name, actual = abi.name, {i.name: v for i, v in zip(abi.inputs, values, strict=True)}
    assert name == abi.name, f"expected {abi.name}{inputs}, got {name}{actual}"
    assert norm(actual) == norm(inputs), f"{name}: expected {norm(inputs)}, got {norm(actual)}"


def _error_name(expected: Any, data: bytes) -> str:
    """The name of the custom error ``data`` encodes, looked up in the expected error's contract."""
    contract = getattr(expected, "contract", None)
    for abi in getattr(getattr(contract, "contract_type", None), "errors", None) or ():
        if keccak(text=abi.selector)[:4] == data[:4]:
            return abi.signature
    return f"selector 0x{data[:4].hex()}"


def _revert_data(err: Any) -> bytes | None:
    """The raw revert data of an error Ape did not decode (view calls, constructors), whatever the provider."""
    data = getattr(getattr(err, "base_err", None), "data", None)
    if isinstance(data, str) and re.fullmatch(r"0x[0-9a-fA-F]*", data):
        return bytes.fromhex(data[2:])
    message = str(getattr(err, "message", "") or "")
    if re.fullmatch(r"0x[0-9a-fA-F]*", message):
        return bytes.fromhex(message[2:])
    if message.startswith(("b'", 'b"')):  # py-evm: repr() of the revert bytes
        value = ast.literal_eval(message)
        return bytes(value) if isinstance(value, bytes) else None
    call = _call_arguments(err)
    if call is None:
        return None
    # Re-run the call through web3, which reports custom error data in full.
    from ape import chain

    try:
        chain.provider.web3.eth.call(call)
    except Exception as rerun:  # noqa: BLE001 - any provider error carrying the data
        data = getattr(rerun, "data", None)
        if isinstance(data, str) and re.fullmatch(r"0x[0-9a-fA-F]*", data):
            return bytes.fromhex(data[2:])
        text = str(rerun.args[0]) if rerun.args else ""
        text = text.removeprefix("execution reverted: ")
        if text.startswith(("b'", 'b"')):
            value = ast.literal_eval(text)
            return bytes(value) if isinstance(value, bytes) else None
    return None


def _call_arguments(err: Any) -> dict[str, Any] | None:
    """The eth_call arguments of a reverted call: from the error's transaction, or (anvil, where Ape keeps only
    the message) from the lazy call trace Ape attaches to the error."""
    txn = getattr(err, "txn", None)
    if txn is not None and getattr(txn, "receiver", None) is not None:
        call = {"to": txn.receiver, "data": HexBytes(txn.data).to_0x_hex(), "value": txn.value or 0}
        if getattr(txn, "sender", None):
            call["from"] = txn.sender
        return call
    for cell in getattr(getattr(err, "_trace", None), "__closure__", None) or ():
        arguments = getattr(cell.cell_contents, "_arguments", None)
        if arguments:
            return {k: v for k, v in dict(arguments[0]).items() if k in ("to", "from", "data", "value")}
    return None


def unauthorized(contract: Any, account: Any, role: bytes):  # noqa: ANN201
    """``reverts`` for OpenZeppelin's AccessControlUnauthorizedAccount(account, neededRole)."""
    return reverts(contract.AccessControlUnauthorizedAccount, account=account, neededRole=role)


# ---------------------------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------------------------


def events(receipt: Any, contract: Any = None) -> list[tuple[str, dict[str, Any]]]:
    """The receipt's decoded logs, in order, as ``(name, arguments)``; only ``contract``'s when given."""
    address = to_checksum_address(contract.address) if contract is not None else None
    out = []
    for log in receipt.events:
        if address is not None and to_checksum_address(log.contract_address) != address:
            continue
        out.append((log.event_name, norm(dict(log.event_arguments))))
    return out


def event_names(receipt: Any, contract: Any = None) -> list[str]:
    return [name for name, _ in events(receipt, contract)]


def only_event(receipt: Any, name: str, contract: Any = None) -> dict[str, Any]:
    """Arguments of the single ``name`` event in the receipt."""
    found = [args for n, args in events(receipt, contract) if n == name]
    assert len(found) == 1, f"expected one {name}, got {events(receipt, contract)}"
    return found[0]


def ev(name: str, **arguments: Any) -> tuple[str, dict[str, Any]]:
    """An expected event, for comparing with :func:`events`."""
    return name, norm(arguments)


def gas_paid(receipt: Any) -> int:
    """Wei the sender paid for gas (the rest of a balance change is value)."""
    return receipt.total_fees_paid
