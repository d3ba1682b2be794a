"""Fetching and decoding the contract's logs: the topic filter, adaptive block ranges, ABI decoding.

Logs are fetched with ``eth_getLogs`` over block ranges. Providers cap ranges in different ways (a result
count, a block span, a response size); :class:`AdaptiveRange` halves the span whenever the provider refuses
one and grows it back slowly after successes, so the watcher settles on what the provider accepts.

The negotiation itself is :func:`negotiate_range`, over any ``get_logs(lo, hi)`` callable, forwards (the watcher,
the pipeline's and the studio's collection readers: :func:`fetch_logs`) or backwards from the newest block (the
wallet oracle's search for the latest Transfer: :func:`search_backwards`). One implementation, one rule for what
counts as a refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic, to_checksum_address
from eth_utils.abi import collapse_if_tuple

from agent.domain import ChainEvent, LogKey
from agent.metrics import RANGE_HALVINGS
from agent.watch.errors import (
    LogDecodeError,
    RangeTooLargeError,
    RpcError,
    RpcRateLimitedError,
    UnsplittableRangeError,
)
from agent.watch.rpc import RpcClient, hex0x

log = logging.getLogger("chrysalis.watch.logs")

L = TypeVar("L")

_DYNAMIC = ("string", "bytes")


@dataclass
class AdaptiveRange:
    """The span (in blocks) of the next ``eth_getLogs`` request.

    Halved (down to ``min_size``) when the provider refuses a range; after ``grow_after`` successes in a row
    it grows by ``growth`` (at least one block), up to ``max_size``.
    """

    max_size: int = 2000
    min_size: int = 1
    grow_after: int = 3
    growth: float = 1.25
    size: int = 0
    _streak: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"need 1 <= min_size <= max_size (got {self.min_size}, {self.max_size})")
        self.size = self.size or self.max_size

    def refused(self, span: int) -> bool:
        """A request of ``span`` blocks was refused: halve. False if it cannot get any smaller."""
        self._streak = 0
        if span <= self.min_size:
            return False
        self.size = max(self.min_size, span // 2)
        return True

    def succeeded(self) -> None:
        self._streak += 1
        if self._streak >= self.grow_after and self.size < self.max_size:
            self.size = min(self.max_size, max(self.size + 1, int(self.size * self.growth)))
            self._streak = 0


def negotiate_range(
    get_logs: Callable[[int, int], L],
    start: int,
    end: int,
    span: AdaptiveRange,
    *,
    backwards: bool = False,
    url: str = "",
) -> tuple[int, int, L]:
    """One request the provider accepts, within ``[start, end]``; returns ``(lo, hi, get_logs(lo, hi))``.

    The request covers ``span.size`` blocks from ``start`` (from ``end`` down when ``backwards``), halved on each
    refusal until the provider accepts it; the accepted size stays in ``span`` for the next request. Any
    :class:`~agent.watch.errors.RpcError` the provider answers for a range of more than one block counts as a
    refusal, whatever its wording (providers word their range caps in ways no pattern keeps up with: "eth_getLogs
    is limited to a 10,000 blocks range"); the wording only decides how fast the limit is found. A rate limit is
    not a refusal, nor is an unreachable node (:class:`~agent.jsonrpc.RpcUnavailableError`): both propagate.
    For a single block, a range refusal is :class:`UnsplittableRangeError` (naming ``url``) and any other error
    propagates.

    Args:
        get_logs: One ``eth_getLogs`` over ``[lo, hi]``, raising the watcher's RPC errors (:class:`RpcClient`
            does; wrap a bare web3 call in :func:`agent.watch.rpc.rpc_errors`).
        start, end: The blocks to cover (inclusive).
        span: The negotiated size, kept between calls.
        backwards: Cover the newest blocks first (``hi == end``) instead of the oldest (``lo == start``).
        url: The endpoint, for error messages.
    """
    if end < start:
        raise ValueError(f"empty range {start}..{end}")
    while True:
        if backwards:
            lo, hi = max(start, end - span.size + 1), end
        else:
            lo, hi = start, min(end, start + span.size - 1)
        try:
            logs = get_logs(lo, hi)
        except RpcRateLimitedError:
            raise
        except RpcError as exc:
            recognised = isinstance(exc, RangeTooLargeError)
            if not span.refused(hi - lo + 1):
                if recognised:
                    raise UnsplittableRangeError(
                        url or exc.url, hi if backwards else lo, exc.rpc_message
                    ) from exc
                raise
            RANGE_HALVINGS.inc()
            log.info(
                "eth_getLogs %d..%d refused (%s%s); trying %d blocks",
                lo, hi, exc.rpc_message, "" if recognised else ", an unrecognised error: halving anyway",
                span.size,
            )  # fmt: skip
            continue
        span.succeeded()
        return lo, hi, logs


def fetch_logs(
    rpc: RpcClient,
    address: str | Sequence[str],
    topics: Sequence[Any] | None,
    start: int,
    end: int,
    span: AdaptiveRange,
) -> tuple[int, list[dict[str, Any]]]:
    """Logs from ``start`` up to at most ``end``, in one accepted request; returns ``(last block covered, logs)``.

    :func:`negotiate_range` over :meth:`RpcClient.get_logs`: the span halves on each refusal, in any wording, until
    the provider accepts it; a rate limit is not a refusal; for a single block, a range refusal is
    :class:`UnsplittableRangeError` and any other error propagates: the watcher stops loudly.
    """
    _, to, logs = negotiate_range(
        lambda lo, hi: rpc.get_logs(lo, hi, address, topics), start, end, span, url=rpc.url
    )
    return to, logs


def search_backwards(
    get_logs: Callable[[int, int], Sequence[L]],
    start: int,
    end: int,
    span: AdaptiveRange,
    *,
    url: str = "",
) -> tuple[int, list[L]]:
    """The newest non-empty batch of logs in ``[start, end]``, searched from ``end`` down in accepted requests.

    Returns ``(lo, logs)``: the logs of the first request (newest range first) that found any, and the lowest
    block that request covered; ``(start, [])`` when there are none. Refused ranges are halved as in
    :func:`negotiate_range`, and ``span`` keeps the accepted size for the next search.
    """
    hi = end
    while hi >= start:
        lo, _, logs = negotiate_range(get_logs, start, hi, span, backwards=True, url=url)
        if logs:
            return lo, list(logs)
        hi = lo - 1
    return start, []


@dataclass(frozen=True)
class _Event:
    name: str
    abi: Mapping[str, Any]
    indexed: tuple[tuple[str, str], ...]  # (name, type)
    plain: tuple[tuple[str, str], ...]


class LogDecoder:
    """Decodes raw logs into :class:`~agent.domain.ChainEvent` with an ABI (a list of ABI entries).

    Args:
        abi: The contract ABI; its non-anonymous events are decoded.
        chain_id: Goes into every :class:`~agent.domain.LogKey`.
        events: Event names to keep (default: every event in the ABI).

    Decoded ``args`` are JSON-ready: addresses checksummed, ``bytes``/``bytesN`` as ``0x`` hex, tuples as lists.
    Indexed dynamic values (strings, bytes, arrays) are only available as their keccak hash (``0x`` hex).
    """

    def __init__(
        self, abi: Iterable[Mapping[str, Any]], chain_id: int, *, events: Iterable[str] | None = None
    ) -> None:
        self.chain_id = chain_id
        wanted = set(events) if events is not None else None
        self._by_topic: dict[str, _Event] = {}
        for entry in abi:
            if entry.get("type") != "event" or entry.get("anonymous"):
                continue
            if wanted is not None and entry["name"] not in wanted:
                continue
            inputs = entry.get("inputs", [])
            event = _Event(
                name=entry["name"],
                abi=entry,
                indexed=tuple((i["name"], collapse_if_tuple(dict(i))) for i in inputs if i.get("indexed")),
                plain=tuple((i["name"], collapse_if_tuple(dict(i))) for i in inputs if not i.get("indexed")),
            )
            topic = event_abi_to_log_topic(ABIEvent(type="event", name=entry["name"], inputs=inputs))
            self._by_topic[hex0x(topic)] = event
        if wanted is not None:
            missing = wanted - {e.name for e in self._by_topic.values()}
            if missing:
                raise ValueError(f"events {sorted(missing)} are not in the ABI (or are anonymous)")
        if not self._by_topic:
            raise ValueError("the ABI has no (non-anonymous) events to watch")

    @property
    def topics(self) -> list[list[str]]:
        """The ``topics`` filter matching these events (topic 0 is any of their signatures)."""
        return [sorted(self._by_topic)]

    @property
    def event_names(self) -> list[str]:
        return sorted(e.name for e in self._by_topic.values())

    def key(self, raw: Mapping[str, Any]) -> LogKey:
        return LogKey(self.chain_id, raw["transactionHash"], int(raw["logIndex"]), raw["blockHash"])

    def decode(self, raw: Mapping[str, Any]) -> ChainEvent | None:
        """The decoded event, or ``None`` for a log of an event this decoder does not watch."""
        topics = raw["topics"]
        event = self._by_topic.get(topics[0]) if topics else None
        if event is None:
            return None
        key = self.key(raw)
        try:
            if len(topics) - 1 != len(event.indexed):
                raise ValueError(f"{len(topics) - 1} indexed topics, the ABI has {len(event.indexed)}")
            args: dict[str, Any] = {}
            for (name, typ), topic in zip(event.indexed, topics[1:], strict=True):
                if typ in _DYNAMIC or typ.endswith("]") or typ.startswith("("):
                    args[name] = topic  # only the keccak hash of the value is logged
                else:
                    args[name] = _jsonable(abi_decode([typ], bytes.fromhex(topic[2:]))[0], typ)
            values = abi_decode([t for _, t in event.plain], bytes.fromhex(raw["data"][2:]))
            for (name, typ), value in zip(event.plain, values, strict=True):
                args[name] = _jsonable(value, typ)
        except Exception as exc:
            raise LogDecodeError(str(key), event.name, str(exc)) from exc
        return ChainEvent(
            key=key, block_number=int(raw["blockNumber"]), address=raw["address"], name=event.name, args=args
        )


def _jsonable(value: Any, typ: str) -> Any:
    if typ == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        inner = typ[: typ.rindex("[")] if typ.endswith("]") else None
        if inner is not None:
            return [_jsonable(v, inner) for v in value]
        parts = _split_tuple(typ)
        return [_jsonable(v, t) for v, t in zip(value, parts, strict=True)]
    return value


def _split_tuple(typ: str) -> list[str]:
    """``(uint256,(address,bytes32))`` -> ``['uint256', '(address,bytes32)']``."""
    body, depth, parts, current = typ[1:-1], 0, [], ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    if current:
        parts.append(current)
    return parts
