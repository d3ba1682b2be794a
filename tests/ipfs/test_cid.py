"""CIDs: parsing, printing, equality, and refusing malformed input with a message that says why."""

from __future__ import annotations

import hashlib
import pickle

import pytest

from agent.errors import PermanentError
from agent.ipfs.cid import (
    CID,
    DAG_PB,
    RAW,
    b58decode,
    b58encode,
    decode_varint,
    encode_varint,
    raw_cid,
)
from agent.ipfs.errors import InvalidCIDError
from tests.ipfs.vectors import SHARNESS_SHARDED_V1, SHARNESS_SHARDED_V1_B58, load_vectors

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
HELLO_V1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


@pytest.mark.parametrize("text", [c for v in load_vectors() for c in (v.cid_v0, v.cid_v1) if c])
def test_every_vector_cid_parses_and_prints_back(text: str) -> None:
    cid = CID.parse(text)
    assert str(cid) == text
    assert CID.parse(cid.to_bytes()) == cid
    assert CID.parse(cid) is cid
    assert len(cid.digest) == 32


def test_v0_and_v1_fields() -> None:
    v0 = CID.parse(HELLO_V0)
    assert (v0.version, v0.codec) == (0, DAG_PB)
    assert v0.to_bytes() == v0.multihash and v0.multihash[:2] == b"\x12\x20"
    v1 = CID.parse(HELLO_V1)
    assert (v1.version, v1.codec) == (1, RAW)
    assert v1.to_bytes()[:2] == b"\x01\x55"


def test_raw_cid_digest_is_sha256_of_the_bytes() -> None:
    cid = raw_cid(b"hello world\n")
    assert str(cid) == HELLO_V1
    assert cid.digest == hashlib.sha256(b"hello world\n").digest()
    assert str(cid).startswith("bafkrei")


def test_other_multibase_spellings_name_the_same_cid() -> None:
    cid = CID.parse(SHARNESS_SHARDED_V1)
    assert CID.parse(SHARNESS_SHARDED_V1_B58) == cid  # base58btc 'z...'
    assert CID.parse("B" + SHARNESS_SHARDED_V1[1:].upper()) == cid
    assert CID.parse("f" + cid.to_bytes().hex()) == cid


def test_v0_and_v1_of_one_node_are_different_cids_of_one_block() -> None:
    v0 = CID.parse(HELLO_V0)
    v1 = v0.to_v1()
    assert v1 != v0 and v1.multihash == v0.multihash
    assert str(v1).startswith("bafybei")
    assert v1.to_v0() == v0
    with pytest.raises(InvalidCIDError, match="CIDv0 is always dag-pb"):
        CID.parse(HELLO_V1).to_v0()


def test_cids_are_immutable_hashable_and_picklable() -> None:
    cid = CID.parse(HELLO_V1)
    with pytest.raises(AttributeError):
        cid.codec = DAG_PB  # type: ignore[misc]
    assert {cid: 1}[CID.parse(HELLO_V1)] == 1
    assert pickle.loads(pickle.dumps(cid)) == cid
    assert repr(cid) == f"CID('{HELLO_V1}')"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Qm" + "0" * 44, "base58"),  # '0' is not in the base58 alphabet
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5", "multibase prefix"),  # 45 chars: not a CIDv0
        (HELLO_V1[:-10], "truncated"),
        ("bafkrei!!!", "base32"),
        ("xafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4", "unsupported multibase prefix 'x'"),
        ("b", "nothing after"),
        ("bAFKREIFJJCIE6LYPI6NY7AMXNFFTAGCLBUXNDQONFIPMB64F2KM2DEVEI4", "mixed case"),
        ("/ipfs/" + HELLO_V1, "path"),
        ("f" + "02551220" + "00" * 32, "version 2"),
        ("f" + "01551220" + "00" * 31, "truncated"),  # digest one byte short
        ("f" + "01551220" + "00" * 33, "unexpected bytes"),
        ("f" + "01551210" + "00" * 16, "32 bytes"),  # sha2-256 must be 32 bytes
        ("f" + "01d500" + "1220" + "00" * 32, "minimal"),  # non-minimal varint for the codec
        ("f" + "1220" + "00" * 32, "base58btc"),  # a CIDv0 in multibase form
        (b"", "empty bytes"),
        (b"\x01\x55\x12\x20", "truncated"),
        (12345, "expected str or bytes"),
    ],
)
def test_malformed_cids_are_refused_with_the_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidCIDError) as caught:
        CID.parse(value)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, PermanentError)
    assert reason.lower() in str(error).lower()
    assert error.hint and "Qm" in error.hint  # says what a valid CID looks like


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16384, 2**63 - 1])
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))


def test_varint_rejects_truncated_and_overlong() -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_varint(b"\x80")
    with pytest.raises(ValueError, match="minimal"):
        decode_varint(b"\x81\x00")
    with pytest.raises(ValueError, match="longer than 9"):
        decode_varint(b"\xff" * 10)


def test_base58_round_trip_keeps_leading_zeros() -> None:
    for raw in (b"", b"\0", b"\0\0\x01\x02", bytes(range(40))):
        assert b58decode(b58encode(raw)) == raw
    with pytest.raises(ValueError, match="base58btc"):
        b58decode("0OIl")
