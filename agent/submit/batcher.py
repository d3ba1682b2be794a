"""Batching the agent's writes: fulfilments into ``fulfillEvolutions``, refreshes into ``refreshMetadata``.

``fulfillEvolutions`` skips a request that is no longer pending (fulfilled, cancelled after its timeout, unknown,
listed twice) or is named with another seed than its own: it emits ``FulfilmentSkipped(requestId)``, writes
nothing for it and fulfils the rest, so a cancellation landing just before the batch cannot revert it. A skipped
request is *not* fulfilled: :meth:`FulfilmentBatcher.skipped` reads them from the mined receipt, and
:attr:`BatchReport.confirmed` leaves them out (the pipeline settles their jobs by chain truth, as if the pre-check
had dropped them). Skipping still costs gas, so before sending, :class:`FulfilmentBatcher`

1. drops duplicates, zero digests and malformed seeds;
2. asks the chain whether each request is still pending *with the seed the fulfilment was generated from*
   (``isPendingWith(requestId, seed)``: one ``eth_call`` per id, sent as JSON-RPC batches of
   ``precheck_batch_size``; no multicall contract needed) and drops, and reports, those that are not. A request
   that is pending with another seed was re-mined after a reorg (same id, new block and seed): its metadata was
   made from an orphaned log, and the contract would reject it (``LivingCollectionSeedMismatch``);
3. groups the rest into transactions of at most ``batch_max_count`` fulfilments and ``batch_max_gas`` gas.
   Each group's gas estimate is its dry run: a revert there (a request cancelled a moment ago) names the
   culprit through the decoded custom error, which is dropped, and the group re-estimated; a group above the
   gas cap is split.

A batch that still reverts on-chain (a zero digest, a lost role) is re-checked and its still-pending requests
are sent again once. :class:`RefreshBatcher` does the same for ``refreshMetadata``, sized to the gas cap
(``refresh_max_gas``, default half the block gas limit) and sorted by token id so consecutive ids share one
``BatchMetadataUpdate`` event.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak

from agent.domain import Confirmation, Submission
from agent.errors import ChrysalisError, RetryableError
from agent.settings import SubmitSettings
from agent.submit.errors import (
    DecodedError,
    DryRunRevertedError,
    FeeCapExceededError,
    TransactionRevertedError,
)
from agent.submit.rpc import ChainRpc
from agent.submit.sender import TxRequest, TxSender

log = logging.getLogger(__name__)

_IS_PENDING = function_signature_to_4byte_selector("isPending(uint256)")
_IS_PENDING_WITH = function_signature_to_4byte_selector("isPendingWith(uint256,bytes32)")
_EXISTS = function_signature_to_4byte_selector("exists(uint256)")
_FULFILL_MANY = function_signature_to_4byte_selector(
    "fulfillEvolutions(uint256[],bytes32[],bytes32[],bytes32[])"
)
_REFRESH = function_signature_to_4byte_selector("refreshMetadata(uint256[],bytes32[],bytes32)")
ZERO32 = bytes(32)
_PAUSED = function_signature_to_4byte_selector("paused()")
_HAS_ROLE = function_signature_to_4byte_selector("hasRole(bytes32,address)")
#: The role ``refreshMetadata`` needs (``AGENT_ROLE`` only fulfils).
REFRESHER_ROLE = keccak(text="REFRESHER_ROLE")
#: ``FulfilmentSkipped(uint256 indexed requestId)``: a request ``fulfillEvolutions`` left out.
SKIPPED_TOPIC = "0x" + keccak(text="FulfilmentSkipped(uint256)").hex()

Item = TypeVar("Item", bound=Hashable)


#: Why a fulfilment is dropped when its request is pending with another seed than the one it was generated from.
REMINED_REASON = (
    "pending with another seed: the request was re-mined after a reorg (same id, new block and seed); "
    "this metadata was made from the orphaned log"
)


@dataclass(frozen=True)
class Fulfilment:
    """One request to fulfil: the seed it was generated from (its ``EvolutionRequested`` seed, 32 bytes), the
    sha256 digest of its metadata block and the provenance commitment. The contract accepts it only while the
    request is pending with that seed."""

    request_id: int
    seed: bytes
    metadata_digest: bytes
    provenance: bytes = ZERO32

    @property
    def key(self) -> int:
        return self.request_id


@dataclass(frozen=True)
class Refresh:
    """One token whose metadata digest to rewrite."""

    token_id: int
    digest: bytes

    @property
    def key(self) -> int:
        return self.token_id


@dataclass(frozen=True)
class Dropped:
    """An item left out before sending, and why (a request id or a token id)."""

    key: int
    reason: str


@dataclass(frozen=True)
class Batch(Generic[Item]):
    """One planned transaction: its items, the contract, calldata and gas limit (estimate with headroom)."""

    items: tuple[Item, ...]
    to: str
    data: bytes
    gas: int
    label: str

    def request(self) -> TxRequest:
        return TxRequest(to=self.to, data=self.data, gas=self.gas, label=self.label)


@dataclass(frozen=True)
class Plan(Generic[Item]):
    """Batches to send, and what was dropped before sending."""

    batches: tuple[Batch[Item], ...]
    dropped: tuple[Dropped, ...]


@dataclass(frozen=True)
class BatchResult(Generic[Item]):
    """What became of one batch: confirmed, or the error (revert, fee cap, stuck). ``skipped``: the keys of the
    items a confirmed batch left out on-chain (``FulfilmentSkipped``)."""

    batch: Batch[Item]
    submission: Submission | None
    confirmation: Confirmation | None = None
    error: ChrysalisError | None = None
    skipped: frozenset[int] = frozenset()


@dataclass(frozen=True)
class BatchReport(Generic[Item]):
    """Every batch sent and every item dropped, over all rounds."""

    results: tuple[BatchResult[Item], ...] = ()
    dropped: tuple[Dropped, ...] = ()

    @property
    def confirmed(self) -> list[Item]:
        """Items whose batch was confirmed and that the contract did not skip."""
        return [
            i
            for r in self.results
            if r.confirmation is not None
            for i in r.batch.items
            if _key(i) not in r.skipped
        ]

    @property
    def skipped(self) -> list[Item]:
        """Items of confirmed batches that the contract skipped (no longer pending with their seed)."""
        return [
            i
            for r in self.results
            if r.confirmation is not None
            for i in r.batch.items
            if _key(i) in r.skipped
        ]

    @property
    def failed(self) -> list[BatchResult[Item]]:
        return [r for r in self.results if r.error is not None]

    @property
    def tx_count(self) -> int:
        return sum(1 for r in self.results if r.submission is not None)

    @property
    def gas_used(self) -> int:
        return sum(r.confirmation.gas_used for r in self.results if r.confirmation is not None)


@dataclass
class _Planner(Generic[Item]):
    """Groups items into transactions under count and gas caps; drops items a revert names."""

    sender: TxSender
    to: str
    label: str
    encode: Callable[[Sequence[Item]], bytes]
    culprit: Callable[[DecodedError, Sequence[Item]], Item | None]
    max_gas: int
    max_count: int | None
    first_size: int = 64
    dropped: list[Dropped] = field(default_factory=list)

    def plan(self, items: Sequence[Item]) -> list[Batch[Item]]:
        batches: list[Batch[Item]] = []
        rest = list(items)
        size = min(self.first_size, self.max_count or self.first_size)
        while rest:
            chunk = rest[:size]
            data = self.encode(chunk)
            try:
                gas = self.sender.estimate_gas(TxRequest(to=self.to, data=data, label=self.label))
            except DryRunRevertedError as exc:
                bad = self.culprit(exc.error, chunk)
                if bad is None and len(chunk) == 1:
                    bad = chunk[0]
                if bad is not None:
                    self.dropped.append(Dropped(_key(bad), f"would revert: {exc.error}"))
                    rest.remove(bad)
                else:  # a revert naming no item: bisect to find it
                    size = max(1, len(chunk) // 2)
                continue
            if gas > self.max_gas:
                if len(chunk) == 1:
                    self.dropped.append(
                        Dropped(_key(chunk[0]), f"needs {gas} gas, above the cap {self.max_gas}")
                    )
                    rest.pop(0)
                else:
                    size = max(1, math.floor(len(chunk) * self.max_gas * 0.95 / gas))
                continue
            batches.append(Batch(tuple(chunk), self.to, data, gas, self.label))
            del rest[: len(chunk)]
            per_item = gas / len(chunk)
            size = max(1, math.floor(self.max_gas * 0.95 / per_item))
            if self.max_count is not None:
                size = min(size, self.max_count)
        return batches


def _key(item: Any) -> int:
    return int(item.key)


def _uint_call(selector: bytes, value: int) -> str:
    return "0x" + (selector + value.to_bytes(32, "big")).hex()


def _bool_results(
    rpc: ChainRpc, to: str, selector: bytes, ids: Sequence[int], mode: str, chunk: int
) -> dict[int, bool]:
    return _bool_calls(rpc, to, [(i, _uint_call(selector, i)) for i in ids], mode, chunk)


def _bool_calls(
    rpc: ChainRpc, to: str, calls: Sequence[tuple[int, str]], mode: str, chunk: int
) -> dict[int, bool]:
    """``{key: result}`` of view calls returning ``bool``, given as ``(key, calldata hex)``."""
    out: dict[int, bool] = {}
    if mode == "sequential":
        for key, data in calls:
            out[key] = rpc.call({"to": to, "data": data})[-1:] == b"\x01"
        return out
    for start in range(0, len(calls), chunk):
        part = calls[start : start + chunk]
        requests = [("eth_call", [{"to": to, "data": data}, "latest"]) for _, data in part]
        for (key, _), result in zip(part, rpc.batch(requests), strict=True):
            if isinstance(result, Exception):
                raise result
            out[key] = isinstance(result, str) and result.endswith("1") and int(result, 16) == 1
    return out


def skipped_requests(logs: Sequence[dict[str, Any]], collection: str) -> frozenset[int]:
    """Request ids named by ``FulfilmentSkipped`` logs of ``collection`` among a receipt's ``logs``."""
    out = set()
    for entry in logs:
        topics = [t if isinstance(t, str) else "0x" + bytes(t).hex() for t in entry.get("topics") or ()]
        if (
            len(topics) == 2
            and topics[0].lower() == SKIPPED_TOPIC
            and str(entry.get("address", "")).lower() == collection.lower()
        ):
            out.add(int(topics[1], 16))
    return frozenset(out)


def is_pending_with_call(request_id: int, seed: bytes) -> str:
    """Calldata (hex) of ``isPendingWith(requestId, seed)``."""
    return "0x" + (_IS_PENDING_WITH + request_id.to_bytes(32, "big") + bytes(seed)).hex()


class FulfilmentBatcher:
    """Pre-checks, groups and sends fulfilments; see the module docstring.

    Args:
        sender: Sends and waits (its account must hold ``AGENT_ROLE``).
        rpc: Reads (``isPendingWith``, ``isPending``).
        collection: The LivingCollection address.
        settings: ``batch_max_count``, ``batch_max_gas``, ``precheck_batch_size``.
        precheck: ``batch`` (JSON-RPC batches of ``eth_call``) or ``sequential`` (one request per id).
    """

    label = "fulfillEvolutions"

    def __init__(
        self,
        sender: TxSender,
        rpc: ChainRpc,
        collection: str,
        settings: SubmitSettings,
        *,
        precheck: str = "batch",
    ) -> None:
        self.sender = sender
        self.rpc = rpc
        self.collection = collection
        self.settings = settings
        self.precheck = precheck

    def check_pending(self, request_ids: Sequence[int]) -> dict[int, bool]:
        """Whether each request is still pending (with whatever seed), read from the chain."""
        return _bool_results(
            self.rpc,
            self.collection,
            _IS_PENDING,
            list(request_ids),
            self.precheck,
            self.settings.precheck_batch_size,
        )

    def check_pending_with(self, fulfilments: Sequence[Fulfilment]) -> dict[int, bool]:
        """Whether each fulfilment's request is still pending with the fulfilment's seed (``isPendingWith``):
        exactly what ``fulfillEvolutions`` requires of it, read from the chain."""
        return _bool_calls(
            self.rpc,
            self.collection,
            [(f.request_id, is_pending_with_call(f.request_id, f.seed)) for f in fulfilments],
            self.precheck,
            self.settings.precheck_batch_size,
        )

    @staticmethod
    def encode(items: Sequence[Fulfilment]) -> bytes:
        """Calldata of ``fulfillEvolutions`` for ``items``."""
        return _FULFILL_MANY + abi_encode(
            ["uint256[]", "bytes32[]", "bytes32[]", "bytes32[]"],
            [
                [f.request_id for f in items],
                [f.seed for f in items],
                [f.metadata_digest for f in items],
                [f.provenance for f in items],
            ],
        )

    def plan(self, fulfilments: Sequence[Fulfilment]) -> Plan[Fulfilment]:
        """Drop what would revert (duplicates, zero digests, requests not pending with their seed) and group
        the rest. Nothing is sent, so a dropped fulfilment costs no gas."""
        dropped: list[Dropped] = []
        unique: list[Fulfilment] = []
        seen: set[int] = set()
        for f in fulfilments:
            if f.request_id in seen:
                dropped.append(Dropped(f.request_id, "listed twice (the first is kept)"))
            elif len(f.metadata_digest) != 32 or f.metadata_digest == ZERO32:
                dropped.append(Dropped(f.request_id, "metadata digest is not 32 non-zero bytes"))
            elif len(f.seed) != 32:
                dropped.append(Dropped(f.request_id, "seed is not 32 bytes"))
            else:
                seen.add(f.request_id)
                unique.append(f)
        bound = self.check_pending_with(unique)
        # Only for those that failed: not pending at all, or pending with another seed (re-mined)?
        pending = self.check_pending([f.request_id for f in unique if not bound[f.request_id]])
        live = []
        for f in unique:
            if bound[f.request_id]:
                live.append(f)
            elif pending[f.request_id]:
                log.warning("request %s: %s; not sending it", hex(f.request_id), REMINED_REASON)
                dropped.append(Dropped(f.request_id, REMINED_REASON))
            else:
                dropped.append(
                    Dropped(f.request_id, "not pending (already fulfilled, cancelled, or unknown)")
                )
        if dropped:
            log.info("fulfilments: dropping %d before sending: %s", len(dropped), dropped[:5])
        planner = _Planner(
            self.sender,
            self.collection,
            self.label,
            self.encode,
            _fulfilment_culprit,
            self.settings.batch_max_gas,
            self.settings.batch_max_count,
            first_size=self.settings.batch_max_count,
        )
        batches = planner.plan(live)
        return Plan(tuple(batches), tuple(dropped + planner.dropped))

    def skipped(self, tx_hash: str) -> frozenset[int]:
        """The request ids that the mined ``fulfillEvolutions`` ``tx_hash`` skipped (read from its receipt's
        ``FulfilmentSkipped`` logs): those were not fulfilled by it.

        Raises:
            RetryableError: the node has no receipt for it (any more): ask again later.
        """
        receipt = self.rpc.receipt(tx_hash)
        if receipt is None:
            raise RetryableError(
                f"no receipt for the fulfilment {tx_hash}: cannot tell which requests it skipped",
                hint="it is asked again on the next attempt (a reorg may have dropped it)",
            )
        return skipped_requests(receipt.logs, self.collection)

    def submit(self, fulfilments: Sequence[Fulfilment], *, rounds: int = 2) -> BatchReport[Fulfilment]:
        """Plan, send every batch, wait for all; re-plan reverted batches' items (up to ``rounds``).

        Requests a mined batch skipped are in :attr:`BatchReport.skipped`, not in ``confirmed``."""
        return _submit_rounds(self.plan, self.sender, fulfilments, rounds, lambda c: self.skipped(c.tx_hash))


def _fulfilment_culprit(error: DecodedError, chunk: Sequence[Fulfilment]) -> Fulfilment | None:
    if error.name in ("LivingCollectionRequestNotPending", "LivingCollectionSeedMismatch"):
        rid = error.args.get("requestId")
        return next((f for f in chunk if f.request_id == rid), None)
    if error.name == "LivingCollectionInvalidDigest":
        digest = error.args.get("digest")
        return next((f for f in chunk if f.metadata_digest == digest), None)
    return None


class RefreshBlockedError(RetryableError):
    """``refreshMetadata`` would revert for every token: the collection is paused (``kind`` ``paused``), or the
    sending account lacks ``REFRESHER_ROLE`` (``kind`` ``role``). Nothing was sent."""

    def __init__(self, kind: str, message: str, hint: str) -> None:
        self.kind = kind
        super().__init__(message, hint=hint)


class RefreshBatcher:
    """Groups metadata refreshes into ``refreshMetadata`` transactions sized to a gas cap.

    Args:
        sender, rpc, collection, settings: As for :class:`FulfilmentBatcher` (``refresh_max_gas``).
    """

    label = "refreshMetadata"

    def __init__(self, sender: TxSender, rpc: ChainRpc, collection: str, settings: SubmitSettings) -> None:
        self.sender = sender
        self.rpc = rpc
        self.collection = collection
        self.settings = settings

    def check_writable(self) -> None:
        """Two reads that tell whether ``refreshMetadata`` can succeed at all, before any token is planned (each
        planned token would otherwise cost a gas estimate that reverts for the same reason).

        Raises:
            RefreshBlockedError: paused, or the sender lacks ``REFRESHER_ROLE``.
        """
        paused = self.rpc.call({"to": self.collection, "data": _PAUSED})
        if paused[-1:] == b"\x01":
            raise RefreshBlockedError(
                "paused",
                f"the collection {self.collection} is paused: refreshMetadata is stopped until it is unpaused",
                hint="the refresh waits and resumes by itself once the PAUSER_ROLE holder calls unpause()",
            )
        account = self.sender.address
        data = _HAS_ROLE + abi_encode(["bytes32", "address"], [REFRESHER_ROLE, account])
        if self.rpc.call({"to": self.collection, "data": data})[-1:] != b"\x01":
            raise RefreshBlockedError(
                "role",
                f"the agent account {account} does not hold REFRESHER_ROLE on {self.collection}: it may not "
                "refresh metadata (AGENT_ROLE only fulfils requests)",
                hint=f"the admin grants it: grantRole(keccak256('REFRESHER_ROLE'), {account})",
            )

    def max_gas(self) -> int:
        """``refresh_max_gas``, else half the latest block's gas limit."""
        if self.settings.refresh_max_gas is not None:
            return self.settings.refresh_max_gas
        block = self.rpc.block("latest")
        return (block.gas_limit if block else 30_000_000) // 2

    @staticmethod
    def encoder(provenance: bytes) -> Callable[[Sequence[Refresh]], bytes]:
        def encode(items: Sequence[Refresh]) -> bytes:
            return _REFRESH + abi_encode(
                ["uint256[]", "bytes32[]", "bytes32"],
                [[r.token_id for r in items], [r.digest for r in items], provenance],
            )

        return encode

    def plan(self, refreshes: Sequence[Refresh], provenance: bytes = ZERO32) -> Plan[Refresh]:
        """Keep the last digest per token, drop missing tokens and zero digests, sort, group by gas.

        Tokens are sorted by id so consecutive ids share one ``BatchMetadataUpdate`` event.
        """
        dropped: list[Dropped] = []
        latest: dict[int, Refresh] = {}
        for r in refreshes:
            if len(r.digest) != 32 or r.digest == ZERO32:
                dropped.append(Dropped(r.token_id, "digest is not 32 non-zero bytes"))
                continue
            if r.token_id in latest:
                dropped.append(Dropped(r.token_id, "listed twice (the last digest is kept)"))
            latest[r.token_id] = r
        ordered = [latest[t] for t in sorted(latest)]
        exists = _bool_results(
            self.rpc,
            self.collection,
            _EXISTS,
            [r.token_id for r in ordered],
            "batch",
            self.settings.precheck_batch_size,
        )
        live = []
        for r in ordered:
            if exists[r.token_id]:
                live.append(r)
            else:
                dropped.append(Dropped(r.token_id, "token does not exist (never minted, or burnt)"))
        planner = _Planner(
            self.sender,
            self.collection,
            self.label,
            self.encoder(provenance),
            _refresh_culprit,
            self.max_gas(),
            None,
        )
        batches = planner.plan(live)
        return Plan(tuple(batches), tuple(dropped + planner.dropped))

    def submit(
        self, refreshes: Sequence[Refresh], provenance: bytes = ZERO32, *, rounds: int = 2
    ) -> BatchReport[Refresh]:
        """Plan, send every batch, wait for all; re-plan the items of batches that reverted."""
        return _submit_rounds(lambda items: self.plan(items, provenance), self.sender, refreshes, rounds)


def _refresh_culprit(error: DecodedError, chunk: Sequence[Refresh]) -> Refresh | None:
    if error.name == "LivingCollectionUnknownToken":
        tid = error.args.get("tokenId")
        return next((r for r in chunk if r.token_id == tid), None)
    if error.name == "LivingCollectionInvalidDigest":
        digest = error.args.get("digest")
        return next((r for r in chunk if r.digest == digest), None)
    return None


def _submit_rounds(
    plan: Callable[[Sequence[Item]], Plan[Item]],
    sender: TxSender,
    items: Sequence[Item],
    rounds: int,
    skipped_of: Callable[[Confirmation], frozenset[int]] | None = None,
) -> BatchReport[Item]:
    results: list[BatchResult[Item]] = []
    dropped: list[Dropped] = []
    todo: Sequence[Item] = items
    for round_ in range(max(1, rounds)):
        if not todo:
            break
        p = plan(todo)
        dropped.extend(p.dropped)
        sent: list[tuple[Batch[Item], Submission]] = []
        for i, batch in enumerate(p.batches):
            try:
                sub = sender.send(batch.request(), dry_run=False)  # its gas estimate was the dry run
            except FeeCapExceededError as exc:
                results.extend(BatchResult(b, None, error=exc) for b in p.batches[i:])
                break
            except ChrysalisError as exc:
                results.append(BatchResult(batch, None, error=exc))
                continue
            sent.append((batch, sub))
        retry: list[Item] = []
        outcomes = sender.wait_all([s for _, s in sent])
        for (batch, sub), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, Confirmation):
                skipped = (
                    skipped_of(outcome) if skipped_of is not None and outcome.status == 1 else frozenset()
                )
                results.append(BatchResult(batch, sub, confirmation=outcome, skipped=skipped))
                continue
            results.append(BatchResult(batch, sub, error=outcome))
            if isinstance(outcome, TransactionRevertedError) and round_ + 1 < rounds:
                log.warning(
                    "%s batch of %d reverted (%s); re-checking it",
                    batch.label,
                    len(batch.items),
                    outcome.error,
                )
                retry.extend(batch.items)
        todo = retry
    return BatchReport(tuple(results), tuple(dropped))
