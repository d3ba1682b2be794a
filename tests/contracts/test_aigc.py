"""ERC-7007 (verifiable AI-generated content): ``supportsInterface``, ``addAigcData`` (who may call it, what it
checks, the ``AigcData`` event) and ``verify`` (every field of the triple, every version change), plus the agent's
helpers (:mod:`agent.erc7007`) against the contract.

The triple is encoded here with :mod:`eth_abi` alone; :mod:`agent.erc7007` is checked against it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from agent.domain import canonical_json
from agent.erc7007 import (
    AIGC_DATA_TOPIC,
    AigcTriple,
    aigc_triple,
    aigc_triple_for_metadata,
    decode_aigc_data_log,
    erc7007_verify,
)
from agent.errors import ConfigError
from tests.contracts.support import (
    AGENT_ROLE,
    EVOLUTION_FEE,
    MANIFEST_V2,
    WEIGHTS_V1,
    WEIGHTS_V2,
    digest_of,
    metadata,
    norm,
    request_id,
    reverts,
    seed_of,
    unauthorized,
)

INPUTS = hashlib.sha256(b'{"chain_id":1337,"readings":[]}').digest()
PROOF = hashlib.sha256(b'{"schema":"chrysalis.inference-receipt/1"}').digest()


def prompt(
    token_id: int, stage: int, seed: bytes, inputs: bytes = INPUTS, weights: bytes = WEIGHTS_V1
) -> bytes:
    return abi_encode(
        ["uint256", "uint256", "bytes32", "bytes32", "bytes32"], [token_id, stage, seed, inputs, weights]
    )


def evolve(
    collection: Any, token_id: int, holder: Any, agent: Any, note: str = ""
) -> tuple[bytes, bytes, int]:
    """Request and fulfil an evolution of ``token_id``; its (seed, metadata digest, stage)."""
    receipt = collection.requestEvolution(token_id, sender=holder, value=EVOLUTION_FEE)
    (log,) = [x for x in receipt.events if x.event_name == "EvolutionRequested"]
    rid = log.requestId
    seed = seed_of(collection, rid)
    stage = log.stage + 1
    digest = digest_of(metadata(token_id, stage, note))
    collection.fulfillEvolution(rid, seed, digest, PROOF, sender=agent)
    return seed, digest, stage


@pytest.fixture
def evolved(collection: Any, alice: Any, agent: Any) -> tuple[bytes, bytes, bytes]:
    """Token 1 at stage 1; the triple of that version (not recorded yet)."""
    seed, digest, stage = evolve(collection, 1, alice, agent)
    assert stage == 1
    return prompt(1, stage, seed), digest, PROOF


# --------------------------------------------------------------------------------------------------------------
# ERC-165
# --------------------------------------------------------------------------------------------------------------


def _interface_id(contract_type: Any) -> bytes:
    value = 0
    for abi in contract_type.abi:
        if abi.type == "function":
            value ^= int.from_bytes(keccak(text=abi.selector)[:4], "big")
    return value.to_bytes(4, "big")


def test_supports_erc7007_and_erc7572(project: Any, collection: Any) -> None:
    """The ids computed from the interfaces' ABIs are the ERCs' ids, and the collection answers both. IERC7007's
    ABI also lists what it inherits (ERC-721 ``0x80ac58cd``, ERC-165 ``0x01ffc9a7``), which ERC-165 leaves out."""
    inherited = int.from_bytes(_interface_id(project.IERC7007.contract_type), "big") ^ 0x80AC58CD ^ 0x01FFC9A7
    assert inherited.to_bytes(4, "big") == bytes.fromhex("702c55a6")
    assert _interface_id(project.IERC7572.contract_type) == bytes.fromhex("e8a3d485")
    assert collection.supportsInterface("0x702c55a6") is True
    assert collection.supportsInterface("0xe8a3d485") is True
    # The ERC's optional extensions are not implemented.
    assert collection.supportsInterface("0xfa1a557a") is False  # IERC7007Enumerable
    assert collection.supportsInterface("0x3f37dce2") is False  # IERC7007Updatable


# --------------------------------------------------------------------------------------------------------------
# addAigcData and the AigcData event
# --------------------------------------------------------------------------------------------------------------


def test_add_aigc_data_emits_the_event_and_verify_turns_true(
    collection: Any, agent: Any, evolved: tuple[bytes, bytes, bytes], chain: Any
) -> None:
    assert collection.verify(*evolved) is False  # not recorded yet
    receipt = collection.addAigcData(1, *evolved, sender=agent)
    (log,) = [x for x in receipt.events if x.event_name == "AigcData"]
    assert log.tokenId == 1
    assert bytes(log.prompt) == keccak(evolved[0])  # an indexed bytes is its keccak256
    assert bytes(log.aigcData) == evolved[1] and bytes(log.proof) == evolved[2]
    # The raw log: topics (event, tokenId, keccak256(prompt)), data abi.encode(aigcData, proof).
    (raw,) = [x for x in chain.provider.get_receipt(receipt.txn_hash).logs if x["topics"]]
    topics = [bytes(t) for t in raw["topics"]]
    assert "0x" + topics[0].hex() == AIGC_DATA_TOPIC
    assert topics[0] == keccak(text="AigcData(uint256,bytes,bytes,bytes)")
    assert int.from_bytes(topics[1], "big") == 1 and topics[2] == keccak(evolved[0])
    assert abi_decode(["bytes", "bytes"], bytes(raw["data"])) == (evolved[1], evolved[2])
    assert decode_aigc_data_log(raw) == (1, keccak(evolved[0]), evolved[1], evolved[2])
    assert [x.event_name for x in receipt.events] == ["AigcData"]  # nothing else: no metadata change
    assert collection.verify(*evolved) is True


def test_verify_checks_every_field(collection: Any, agent: Any, evolved: tuple[bytes, bytes, bytes]) -> None:
    p, digest, proof = evolved
    collection.addAigcData(1, p, digest, proof, sender=agent)
    seed = p[64:96]
    other = b"\x42" * 32
    wrong = {
        "token": (prompt(2, 1, seed), digest, proof),
        "stage": (prompt(1, 2, seed), digest, proof),
        "stage 0": (prompt(1, 0, seed), digest, proof),
        "seed": (prompt(1, 1, other), digest, proof),
        "inputs": (prompt(1, 1, seed, inputs=other), digest, proof),
        "weights": (prompt(1, 1, seed, weights=WEIGHTS_V2), digest, proof),
        "aigcData": (p, other, proof),
        "proof": (p, digest, other),
        "zero proof": (p, digest, b"\x00" * 32),
        "unknown token": (prompt(99, 1, seed), digest, proof),
        "token 0": (prompt(0, 1, seed), digest, proof),
        "short prompt": (p[:-1], digest, proof),
        "long prompt": (p + b"\x00", digest, proof),
        "short aigcData": (p, digest[:31], proof),
        "long proof": (p, digest, proof + b"\x00"),
        "empty": (b"", b"", b""),
        "prompt in aigcData's place": (digest, p, proof),
    }
    for name, triple in wrong.items():
        assert collection.verify(*triple) is False, name
    assert collection.verify(p, digest, proof) is True


def test_verify_follows_the_token_versions(
    collection: Any, admin: Any, agent: Any, alice: Any, evolved: tuple[bytes, bytes, bytes]
) -> None:
    """A record stays true while its version is the token's current one, a pending request included; a new
    version (fulfilment or refresh) makes it false, and so does burning the token."""
    collection.addAigcData(1, *evolved, sender=agent)
    # A pending request changes neither the stage nor the model that stageOf / modelOf report.
    collection.registerModel(WEIGHTS_V2, MANIFEST_V2, sender=admin)
    collection.setActiveModel(2, sender=admin)
    receipt = collection.requestEvolution(1, sender=alice, value=EVOLUTION_FEE)
    (log,) = [x for x in receipt.events if x.event_name == "EvolutionRequested"]
    assert collection.stageOf(1) == 1 and collection.modelOf(1) == 1
    assert collection.verify(*evolved) is True
    # The fulfilment writes stage 2 by model 2: the old record is a past version.
    seed2 = seed_of(collection, log.requestId)
    digest2 = digest_of(metadata(1, 2))
    collection.fulfillEvolution(log.requestId, seed2, digest2, PROOF, sender=agent)
    assert collection.verify(*evolved) is False
    v2 = (prompt(1, 2, seed2, weights=WEIGHTS_V2), digest2, PROOF)
    assert collection.verify(*v2) is False  # not recorded yet
    with reverts(
        collection.LivingCollectionAigcModelMismatch,
        tokenId=1,
        weightsDigest=WEIGHTS_V1,
        registered=WEIGHTS_V2,
    ):
        collection.addAigcData(1, prompt(1, 2, seed2), digest2, PROOF, sender=agent)
    collection.addAigcData(1, *v2, sender=agent)
    assert collection.verify(*v2) is True
    # A refresh re-renders the same stage: a new digest, so a new version.
    refreshed = digest_of(metadata(1, 2, "refreshed"))
    collection.refreshMetadata([1], [refreshed], PROOF, sender=agent)
    assert collection.verify(*v2) is False
    v3 = (v2[0], refreshed, hashlib.sha256(b"refresh receipt").digest())
    collection.addAigcData(1, *v3, sender=agent)
    assert collection.verify(*v3) is True
    # Burnt (fused away): no version at all.
    collection.fuse(2, 1, sender=alice, value=EVOLUTION_FEE)
    assert collection.verify(*v3) is False


def test_add_aigc_data_needs_the_agent_role(
    collection: Any, admin: Any, alice: Any, stranger: Any, evolved: tuple[bytes, bytes, bytes]
) -> None:
    for caller in (stranger, alice, admin):  # the holder and the admin do not hold AGENT_ROLE
        with unauthorized(collection, caller, AGENT_ROLE):
            collection.addAigcData(1, *evolved, sender=caller)
    # A refresher-only account may not record either.
    collection.grantRole(collection.REFRESHER_ROLE(), stranger, sender=admin)
    with unauthorized(collection, stranger, AGENT_ROLE):
        collection.addAigcData(1, *evolved, sender=stranger)
    assert collection.verify(*evolved) is False


def test_add_aigc_data_rejects_bad_input(
    collection: Any, agent: Any, evolved: tuple[bytes, bytes, bytes]
) -> None:
    p, digest, proof = evolved
    seed = p[64:96]
    C = collection
    with reverts(C.LivingCollectionAigcMalformed, promptLength=159, aigcDataLength=32, proofLength=32):
        C.addAigcData(1, p[:-1], digest, proof, sender=agent)
    with reverts(C.LivingCollectionAigcMalformed, promptLength=160, aigcDataLength=0, proofLength=33):
        C.addAigcData(1, p, b"", proof + b"\x00", sender=agent)
    with reverts(C.LivingCollectionAigcTokenMismatch, tokenId=3, promptTokenId=1):
        C.addAigcData(3, p, digest, proof, sender=agent)
    with reverts(C.LivingCollectionUnknownToken, tokenId=99):
        C.addAigcData(99, prompt(99, 1, seed), digest, proof, sender=agent)
    with reverts(C.LivingCollectionAigcNotCurrent, tokenId=2, aigcData=digest, metadataDigest=b"\x00" * 32):
        C.addAigcData(2, prompt(2, 0, seed), digest, proof, sender=agent)  # token 2 has no metadata yet
    with reverts(C.LivingCollectionAigcNotCurrent, tokenId=1, aigcData=b"\x42" * 32, metadataDigest=digest):
        C.addAigcData(1, p, b"\x42" * 32, proof, sender=agent)
    with reverts(C.LivingCollectionAigcStageMismatch, tokenId=1, stage=2, currentStage=1):
        C.addAigcData(1, prompt(1, 2, seed), digest, proof, sender=agent)
    with reverts(
        C.LivingCollectionAigcModelMismatch, tokenId=1, weightsDigest=WEIGHTS_V2, registered=WEIGHTS_V1
    ):
        C.addAigcData(1, prompt(1, 1, seed, weights=WEIGHTS_V2), digest, proof, sender=agent)
    with reverts(C.LivingCollectionInvalidDigest, digest=b"\x00" * 32):
        C.addAigcData(1, p, digest, b"\x00" * 32, sender=agent)
    assert C.verify(*evolved) is False  # nothing was recorded


def test_re_recording_replaces_the_record(
    collection: Any, agent: Any, evolved: tuple[bytes, bytes, bytes]
) -> None:
    """The agent may correct a version's record (one per token): only the latest verifies."""
    p, digest, proof = evolved
    collection.addAigcData(1, *evolved, sender=agent)
    corrected = prompt(1, 1, p[64:96], inputs=b"\x07" * 32)
    collection.addAigcData(1, corrected, digest, proof, sender=agent)
    assert collection.verify(*evolved) is False
    assert collection.verify(corrected, digest, proof) is True


# --------------------------------------------------------------------------------------------------------------
# agent.erc7007 against the contract
# --------------------------------------------------------------------------------------------------------------


def _receipt_json(seed: bytes, token_id: int) -> dict[str, Any]:
    """A receipt as InferenceReceipt.to_json() writes it (only the fields the prompt reads matter here)."""
    return {
        "schema": "chrysalis.inference-receipt/1",
        "seed": {"onchain_seed": "0x" + seed.hex(), "token_id": token_id, "derived_seed": 7},
        "input_snapshot_sha256": INPUTS.hex(),
        "image": {
            "model": {"backend": "embedded", "model_id": "sprites", "weights_sha256": WEIGHTS_V1.hex()}
        },
        "lore": None,
    }


def test_the_agent_helpers_build_what_the_contract_verifies(
    collection: Any, alice: Any, agent: Any, chain: Any
) -> None:
    collection.requestEvolution(3, sender=alice, value=EVOLUTION_FEE)
    rid = request_id(3, 1)
    seed = seed_of(collection, rid)
    receipt_json = _receipt_json(seed, 3)
    document = canonical_json({"name": "Chrysalis #3", "properties": {"receipt": receipt_json, "stage": 1}})
    collection.fulfillEvolution(rid, seed, digest_of(document), PROOF, sender=agent)
    triple = aigc_triple_for_metadata(document)
    assert triple == aigc_triple(receipt_json, "0x" + digest_of(document).hex(), 1)
    assert triple.token_id == 3 and triple.stage == 1
    assert triple.prompt == prompt(3, 1, seed)
    assert triple.aigc_data == digest_of(document)
    assert triple.proof == hashlib.sha256(canonical_json(receipt_json)).digest()
    w3 = chain.provider.web3
    assert erc7007_verify(w3, collection.address, triple) is False
    # The calldata the agent would send is the contract's own encoding of addAigcData.
    encoded = w3.eth.contract(
        abi=[a.model_dump(mode="json", by_alias=True) for a in collection.contract_type.abi]
    )
    assert triple.add_calldata().hex() == encoded.encode_abi("addAigcData", args=[3, *triple.args()])[2:]
    tx = w3.eth.send_transaction(
        {"from": agent.address, "to": collection.address, "data": triple.add_calldata()}
    )
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert erc7007_verify(w3, collection.address, triple) is True
    assert collection.verify(*triple.args()) is True
    # Another version's triple is false, through the helper as on the contract.
    stale = AigcTriple(3, 1, triple.prompt, triple.aigc_data, PROOF)
    assert erc7007_verify(w3, collection.address, stale) is False


def test_erc7007_verify_refuses_what_is_not_a_collection(collection: Any, alice: Any, chain: Any) -> None:
    w3 = chain.provider.web3
    triple = AigcTriple(1, 1, prompt(1, 1, b"\x01" * 32), b"\x02" * 32, b"\x03" * 32)
    with pytest.raises(ConfigError, match="answers no ERC-7007 verify") as info:
        erc7007_verify(w3, to_checksum_address(alice.address), triple)  # an account: no code
    assert "supportsInterface(0x702c55a6)" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="is not an address"):
        erc7007_verify(w3, "0x1234", triple)
    assert norm(collection.address)  # the collection itself answers (False: not recorded)
    assert erc7007_verify(w3, collection.address, triple) is False


@pytest.mark.parametrize(
    ("receipt", "problem"),
    [
        ({}, "no seed record or no model"),
        (
            {"seed": {"token_id": 1}, "image": {"model": {"weights_sha256": "11" * 32}}},
            "no seed.onchain_seed",
        ),
        (
            {
                "seed": {"token_id": 1, "onchain_seed": "0x12"},
                "input_snapshot_sha256": "00" * 32,
                "image": {"model": {"weights_sha256": "11" * 32}},
            },
            "seed '0x12' is not 32 bytes",
        ),
        (
            {
                "seed": {"token_id": -1, "onchain_seed": "00" * 32},
                "input_snapshot_sha256": "00" * 32,
                "image": {"model": {"weights_sha256": "11" * 32}},
            },
            "token id -1 is not a uint256",
        ),
    ],
)
def test_aigc_triple_rejects_malformed_receipts(receipt: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        aigc_triple(receipt, b"\x00" * 32, 1)
    assert info.value.hint


def test_aigc_triple_for_metadata_rejects_other_json() -> None:
    for data, problem in ((b"not json", "is not JSON"), (b'{"name":"x"}', "no properties.receipt")):
        with pytest.raises(ConfigError, match=problem) as info:
            aigc_triple_for_metadata(data)
        assert info.value.hint
    with pytest.raises(ConfigError, match="metadata digest"):
        aigc_triple(_receipt_json(b"\x01" * 32, 1), "0x1234", 1)
