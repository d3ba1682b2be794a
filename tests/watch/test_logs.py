"""Decoding logs with an ABI, without a chain: static, dynamic, indexed, tuple and array arguments."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic, keccak

from agent.domain import LogKey
from agent.watch.errors import LogDecodeError
from agent.watch.logs import LogDecoder

EVENT = {
    "type": "event",
    "name": "Rich",
    "anonymous": False,
    "inputs": [
        {"name": "who", "type": "address", "indexed": True},
        {"name": "label", "type": "string", "indexed": True},
        {"name": "amounts", "type": "uint64[]", "indexed": False},
        {"name": "pair", "type": "tuple", "indexed": False,
         "components": [{"name": "a", "type": "bytes32"}, {"name": "b", "type": "bool"}]},
        {"name": "blob", "type": "bytes", "indexed": False},
    ],
}  # fmt: skip
WHO = "0x" + "ab" * 20


def _raw(data: bytes, topics: list[str] | None = None) -> dict:  # type: ignore[type-arg]
    topic0 = "0x" + event_abi_to_log_topic(EVENT).hex()
    return {
        "address": "0x" + "11" * 20,
        "topics": topics or [topic0, "0x" + "00" * 12 + "ab" * 20, "0x" + keccak(text="hello").hex()],
        "data": "0x" + data.hex(),
        "blockNumber": 5,
        "blockHash": "0x" + "0b" * 32,
        "transactionHash": "0x" + "0c" * 32,
        "logIndex": 2,
    }


def test_every_kind_of_argument_decodes_to_json_ready_values() -> None:
    decoder = LogDecoder([EVENT, {"type": "function", "name": "f"}], chain_id=10)
    data = encode(["uint64[]", "(bytes32,bool)", "bytes"], [[1, 2], (b"\x01" * 32, True), b"\xff\x00"])
    event = decoder.decode(_raw(data))
    assert event is not None and event.name == "Rich" and event.block_number == 5
    assert event.key == LogKey(10, "0x" + "0c" * 32, 2, "0x" + "0b" * 32)
    assert event.args == {
        "who": "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB",
        "label": "0x" + keccak(text="hello").hex(),  # indexed strings are only logged as their hash
        "amounts": [1, 2],
        "pair": ["0x" + "01" * 32, True],
        "blob": "0xff00",
    }
    assert decoder.topics == [["0x" + event_abi_to_log_topic(EVENT).hex()]]


def test_unknown_topics_are_skipped_and_a_wrong_abi_is_loud() -> None:
    decoder = LogDecoder([EVENT], chain_id=10)
    assert decoder.decode(_raw(b"", topics=["0x" + "99" * 32])) is None
    with pytest.raises(LogDecodeError, match="does not decode as Rich") as err:
        decoder.decode(_raw(b"\x00" * 5))
    assert "0x" + "0c" * 32 in err.value.key and err.value.hint
    with pytest.raises(ValueError, match="no .* events"):
        LogDecoder([{"type": "function", "name": "f"}], chain_id=1)
