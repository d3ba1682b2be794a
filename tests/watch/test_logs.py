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


# -- range negotiation, shared by the watcher (forwards) and the wallet oracle (backwards) ------------------------


class _Capped:
    """``get_logs(lo, hi)`` of a provider that refuses spans over ``cap`` in a wording no pattern knows."""

    def __init__(self, cap: int, logs_at: tuple[int, ...] = ()) -> None:
        self.cap = cap
        self.logs_at = logs_at
        self.asked: list[tuple[int, int]] = []

    def __call__(self, lo: int, hi: int) -> list[int]:
        from agent.watch.errors import RpcError

        self.asked.append((lo, hi))
        if hi - lo + 1 > self.cap:
            raise RpcError("http://node", "eth_getLogs", -32000, f"limited to a {self.cap} blocks span")
        return [b for b in self.logs_at if lo <= b <= hi]


def test_negotiation_halves_forwards_and_backwards_and_keeps_the_span() -> None:
    from agent.watch.logs import AdaptiveRange, negotiate_range, search_backwards

    get = _Capped(cap=2_000)
    span = AdaptiveRange(max_size=10_000)
    assert negotiate_range(get, 100, 50_000, span) == (100, 1_349, [])
    assert get.asked == [(100, 10_099), (100, 5_099), (100, 2_599), (100, 1_349)]

    get = _Capped(cap=2_000, logs_at=(7, 900, 40_000))
    span = AdaptiveRange(max_size=10_000)
    assert search_backwards(get, 0, 41_000, span) == (39_751, [40_000])
    assert get.asked[0] == (31_001, 41_000) and span.size == 1_250  # the newest blocks first
    asked = len(get.asked)
    lo, logs = search_backwards(get, 0, 39_999, span)  # the next search starts at the accepted span
    assert max(logs) == 900 and lo <= 900
    assert all(hi - lo + 1 <= 2_500 for lo, hi in get.asked[asked:])
    assert search_backwards(_Capped(cap=5), 3, 20, AdaptiveRange(max_size=8)) == (3, [])


def test_negotiation_does_not_halve_on_rate_limits_and_refuses_single_blocks_loudly() -> None:
    from agent.watch.errors import RpcError, RpcRateLimitedError, UnsplittableRangeError
    from agent.watch.logs import AdaptiveRange, negotiate_range

    def limited(lo: int, hi: int) -> list[int]:
        raise RpcRateLimitedError("http://node", "eth_getLogs", 429, "HTTP 429", 1.0)

    span = AdaptiveRange(max_size=64)
    with pytest.raises(RpcRateLimitedError):
        negotiate_range(limited, 0, 1_000, span)
    assert span.size == 64

    def refused(lo: int, hi: int) -> list[int]:
        from agent.watch.errors import RangeTooLargeError

        raise RangeTooLargeError(
            "http://node", "eth_getLogs", -32005, "query returned more than 10000 results"
        )

    with pytest.raises(UnsplittableRangeError, match="single block 99") as err:
        negotiate_range(refused, 0, 99, AdaptiveRange(max_size=4), backwards=True, url="http://node")
    assert err.value.block_number == 99
    with pytest.raises(RpcError, match="limited"):
        negotiate_range(_Capped(cap=0), 5, 9, AdaptiveRange(max_size=4))
