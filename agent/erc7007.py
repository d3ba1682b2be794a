"""ERC-7007 (verifiable AI-generated content) on LivingCollection: a token version's exact (prompt, aigcData, proof)
bytes, the on-chain ``verify`` call, and the ``addAigcData`` calldata the agent sends to record a version.

A version's triple (the layout ``contracts/LivingCollection.sol`` reads, "ERC-7007" section)::

    prompt    160 bytes  abi.encode(uint256 tokenId, uint256 stage, bytes32 seed, bytes32 inputsSha256,
                                    bytes32 weightsSha256)
                         from the inference receipt: seed.token_id, the metadata's stage, seed.onchain_seed,
                         input_snapshot_sha256 (the canonical inputs commitment), image.model.weights_sha256
    aigcData   32 bytes  sha256 of the metadata JSON: the digest the collection stores (tokenURI's CID)
    proof      32 bytes  sha256 of the receipt's canonical JSON: the ``provenance`` the fulfilment announced

The contract's ``verify`` is the on-chain half: the token is live, ``aigcData`` is its current digest, the stage its
stage, the weights the registered weights of ``modelOf``, and the agent recorded exactly this triple
(``addAigcData``). The off-chain half is ``chrysalis verify``: the metadata and receipt hash to ``aigcData`` and
``proof``, and replaying the model on the inputs gives the same outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_typing import HexStr
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import BlockIdentifier

from agent.domain import canonical_json
from agent.errors import BackendUnavailableError, ConfigError

ERC7007_INTERFACE_ID = bytes.fromhex("702c55a6")
"""ERC-165 id of IERC7007: ``addAigcData(uint256,bytes,bytes,bytes)`` ^ ``verify(bytes,bytes,bytes)``."""
ERC7572_INTERFACE_ID = bytes.fromhex("e8a3d485")
"""ERC-165 id of IERC7572 (``contractURI()``), which the collection also answers."""

AIGC_DATA_TOPIC = "0x" + keccak(text="AigcData(uint256,bytes,bytes,bytes)").hex()
"""Topic 0 of ``AigcData(uint256 indexed tokenId, bytes indexed prompt, bytes aigcData, bytes proof)``."""

PROMPT_TYPES = ("uint256", "uint256", "bytes32", "bytes32", "bytes32")
PROMPT_LENGTH = 160

_VERIFY = keccak(text="verify(bytes,bytes,bytes)")[:4]
_ADD = keccak(text="addAigcData(uint256,bytes,bytes,bytes)")[:4]
_RECEIPT_HINT = "pass the inference receipt (the metadata's properties.receipt) as Chrysalis wrote it"


@dataclass(frozen=True)
class AigcTriple:
    """One token version's ERC-7007 arguments.

    Attributes:
        token_id: The token the prompt names.
        stage: The stage the prompt names.
        prompt: 160 bytes (see the module docstring).
        aigc_data: The metadata digest (32 bytes).
        proof: The receipt's sha256 (32 bytes).
    """

    token_id: int
    stage: int
    prompt: bytes
    aigc_data: bytes
    proof: bytes

    def args(self) -> tuple[bytes, bytes, bytes]:
        """``(prompt, aigcData, proof)``: the arguments of ``verify``."""
        return self.prompt, self.aigc_data, self.proof

    def add_calldata(self) -> bytes:
        """Calldata of ``addAigcData(tokenId, prompt, aigcData, proof)`` (AGENT_ROLE) recording this version."""
        return _ADD + abi_encode(["uint256", "bytes", "bytes", "bytes"], [self.token_id, *self.args()])

    def prompt_hash(self) -> bytes:
        """keccak256 of the prompt: the ``AigcData`` log's second topic."""
        return keccak(self.prompt)


def prompt_bytes(
    token_id: int, stage: int, seed: bytes | str, inputs_sha256: bytes | str, weights_sha256: bytes | str
) -> bytes:
    """``abi.encode(tokenId, stage, seed, inputsSha256, weightsSha256)``: the 160-byte prompt.

    Raises:
        ConfigError: a value is out of range or not 32 bytes.
    """
    for name, value in (("token id", token_id), ("stage", stage)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**256:
            raise ConfigError(f"{name} {value!r} is not a uint256", hint=_RECEIPT_HINT)
    words = [
        _bytes32(name, v)
        for name, v in (("seed", seed), ("inputs", inputs_sha256), ("weights", weights_sha256))
    ]
    return abi_encode(list(PROMPT_TYPES), [token_id, stage, *words])


def aigc_triple(receipt: Mapping[str, Any], metadata_digest: bytes | str, stage: int) -> AigcTriple:
    """The triple of the token version whose metadata hashes to ``metadata_digest`` and holds ``receipt`` at
    ``stage``.

    Args:
        receipt: The inference receipt as JSON (``InferenceReceipt.to_json()``, the metadata's
            ``properties.receipt``).
        metadata_digest: sha256 of the metadata JSON bytes (32 bytes, or ``0x`` hex).
        stage: The version's stage (the metadata's ``properties.stage``).

    Raises:
        ConfigError: the receipt lacks a field the prompt needs, or a value is malformed.
    """
    if not isinstance(receipt, Mapping):
        raise ConfigError(f"the receipt is {type(receipt).__name__}, not a JSON object", hint=_RECEIPT_HINT)
    seed = receipt.get("seed")
    part = receipt.get("image") or receipt.get("lore")
    model = part.get("model") if isinstance(part, Mapping) else None
    if not isinstance(seed, Mapping) or not isinstance(model, Mapping):
        raise ConfigError("the receipt has no seed record or no model", hint=_RECEIPT_HINT)
    for name, value in (
        ("seed.token_id", seed.get("token_id")),
        ("seed.onchain_seed", seed.get("onchain_seed")),
        ("input_snapshot_sha256", receipt.get("input_snapshot_sha256")),
        ("model.weights_sha256", model.get("weights_sha256")),
    ):
        if value is None:
            raise ConfigError(f"the receipt has no {name}", hint=_RECEIPT_HINT)
    token_id = seed["token_id"]
    try:
        prompt = prompt_bytes(
            token_id, stage, seed["onchain_seed"], receipt["input_snapshot_sha256"], model["weights_sha256"]
        )
        proof = hashlib.sha256(canonical_json(dict(receipt))).digest()
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"the receipt is not JSON data: {exc}", hint=_RECEIPT_HINT) from None
    return AigcTriple(token_id, stage, prompt, _bytes32("metadata digest", metadata_digest), proof)


def aigc_triple_for_metadata(data: bytes) -> AigcTriple:
    """The triple of the version whose metadata JSON is ``data`` (the bytes ``tokenURI``'s CID names).

    Raises:
        ConfigError: not Chrysalis metadata (no ``properties.receipt`` or ``properties.stage``).
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"the metadata is not JSON ({exc})", hint="pass the metadata bytes tokenURI names"
        ) from None
    properties = document.get("properties") if isinstance(document, dict) else None
    if not isinstance(properties, dict) or "receipt" not in properties or "stage" not in properties:
        raise ConfigError(
            "the metadata has no properties.receipt or properties.stage",
            hint="pass metadata written by Chrysalis (schema chrysalis.metadata/1)",
        )
    return aigc_triple(properties["receipt"], hashlib.sha256(data).digest(), properties["stage"])


def erc7007_verify(
    w3: Web3, collection: str, triple: AigcTriple, *, block_identifier: BlockIdentifier = "latest"
) -> bool:
    """The collection's on-chain ``verify(prompt, aigcData, proof)`` (an ``eth_call`` at ``block_identifier``).

    True only when ``triple`` describes the token's current version and the agent recorded it with
    ``addAigcData``; the model replay that completes the check is off-chain.

    Raises:
        ConfigError: ``collection`` is not an address, or answers no ERC-7007 ``verify`` (no code there, or a
            collection deployed before ERC-7007).
        BackendUnavailableError: the node could not be reached.
    """
    if not Web3.is_address(collection):
        raise ConfigError(f"{collection!r} is not an address", hint="give 0x and 40 hex digits")
    data = _VERIFY + abi_encode(["bytes", "bytes", "bytes"], list(triple.args()))
    to = Web3.to_checksum_address(collection)
    try:
        reply = bytes(w3.eth.call({"to": to, "data": HexStr("0x" + data.hex())}, block_identifier))
    except ContractLogicError:
        reply = b""
    except (Web3Exception, OSError) as exc:
        raise BackendUnavailableError(
            f"the node could not answer verify on {to}: {type(exc).__name__}: {exc}",
            hint="check the RPC URL and that the node is up",
        ) from None
    if len(reply) != 32:
        raise ConfigError(
            f"{to} answers no ERC-7007 verify (no contract there, or one deployed before ERC-7007)",
            hint="check the collection address and chain; supportsInterface(0x702c55a6) says whether it has ERC-7007",
        )
    (ok,) = abi_decode(["bool"], reply)
    return bool(ok)


def decode_aigc_data_log(log: Mapping[str, Any]) -> tuple[int, bytes, bytes, bytes]:
    """``(tokenId, keccak256(prompt), aigcData, proof)`` of an ``AigcData`` log (``eth_getLogs`` shape).

    Raises:
        ConfigError: not an ``AigcData`` log of this shape.
    """
    topics = [_hexbytes(t) for t in log.get("topics") or ()]
    if len(topics) != 3 or "0x" + topics[0].hex() != AIGC_DATA_TOPIC:
        raise ConfigError("not an AigcData log", hint=f"filter logs by topic {AIGC_DATA_TOPIC}")
    aigc_data, proof = abi_decode(["bytes", "bytes"], _hexbytes(log.get("data") or b""))
    return int.from_bytes(topics[1], "big"), topics[2], bytes(aigc_data), bytes(proof)


def _hexbytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


def _bytes32(name: str, value: bytes | str) -> bytes:
    raw: bytes | None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            raw = None
    else:
        raw = None
    if raw is None or len(raw) != 32:
        raise ConfigError(f"{name} {value!r} is not 32 bytes (64 hex digits)", hint=_RECEIPT_HINT)
    return raw


__all__ = [
    "AIGC_DATA_TOPIC",
    "ERC7007_INTERFACE_ID",
    "ERC7572_INTERFACE_ID",
    "PROMPT_LENGTH",
    "AigcTriple",
    "aigc_triple",
    "aigc_triple_for_metadata",
    "decode_aigc_data_log",
    "erc7007_verify",
    "prompt_bytes",
]
