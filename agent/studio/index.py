"""The collection as the studio reads it: token state from view calls, history from logs, in step with the chain.

The chain is the only source here; nothing is read from the agent's job records, so the studio shows what
anyone could check. :class:`CollectionIndex` keeps, in memory:

* every token's state (exists, owner, stage, metadata digest, ``tokenURI``, pending request, model), read with
  view calls in one JSON-RPC batch at one block;
* every log of the collection since its deploy block, decoded (``Evolved``, ``EvolutionRequested``,
  ``Transfer``, ``MetadataRefreshed``, ...).

:meth:`CollectionIndex.sync` fetches only the logs after the last synced block and re-reads only the tokens those
logs name (or all of them after a reorg below the synced block, which it detects by the synced block's hash).
It returns the new events, which the studio turns into live updates.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from web3 import Web3

from agent.deployment import Deployment
from agent.domain import ChainEvent
from agent.errors import BackendUnavailableError, ChrysalisError
from agent.settings import Settings
from agent.submit.rpc import ChainRpc
from agent.watch.logs import AdaptiveRange, LogDecoder, fetch_logs
from agent.watch.rpc import RpcClient

log = logging.getLogger("chrysalis.studio")

ZERO_DIGEST = "0x" + "00" * 32

#: Events whose arguments name the tokens they change.
_TOKEN_ARGS = {
    "Transfer": ("tokenId",),
    "Evolved": ("tokenId",),
    "EvolutionRequested": ("tokenId",),
    "EvolutionCancelled": ("tokenId",),
    "Fused": ("keepId", "burnId"),
    "MetadataUpdate": ("_tokenId",),
}


@dataclass(frozen=True)
class TokenState:
    """One token as the contract reports it at :attr:`block`.

    Attributes:
        token_id: The id. exists: Minted and not burnt (the other fields are empty when False).
        owner: Its holder. stage: Its stage (the current one, not the one a pending request will reach).
        digest: sha256 of its metadata (``0x`` hex; all zeros before its first metadata).
        token_uri: What ``tokenURI`` returns (``ipfs://<CID>`` once it has a digest).
        pending_request: The id of its open evolution request, if any.
        model_id: The registry id of the model of its latest evolution (0 before the first).
        block: The block these values were read at.
    """

    token_id: int
    exists: bool
    owner: str | None = None
    stage: int = 0
    digest: str = ZERO_DIGEST
    token_uri: str = ""
    pending_request: int | None = None
    model_id: int = 0
    block: int = 0

    @property
    def has_metadata(self) -> bool:
        return self.exists and self.digest != ZERO_DIGEST


@dataclass(frozen=True)
class ModelRecord:
    """An entry of the collection's on-chain model registry."""

    model_id: int
    weights_digest: str
    manifest_uri: str
    registered_at: int


@dataclass(frozen=True)
class RefreshRecord:
    """One token's digest written by a ``refreshMetadata`` transaction."""

    token_id: int
    digest: str
    provenance: str
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class GasSpent:
    """What the agent's metadata writes (fulfilments and refreshes) cost, from their receipts."""

    gas_used: int = 0
    fee_wei: int = 0
    transactions: int = 0


@dataclass
class _Logs:
    events: list[ChainEvent] = field(default_factory=list)
    by_token: dict[int, list[ChainEvent]] = field(default_factory=lambda: defaultdict(list))
    requests: dict[int, ChainEvent] = field(default_factory=dict)


class CollectionIndex:
    """Token states and decoded logs of one collection, synced on demand (thread-safe).

    Args:
        rpc: The chain's RPC client (retries, rate limit).
        deployment: Where the collection lives (address, ABI, deploy block).
        max_range: Largest ``eth_getLogs`` span.
    """

    def __init__(self, rpc: RpcClient, deployment: Deployment, *, max_range: int = 2000) -> None:
        self.rpc = rpc
        self.calls = ChainRpc(rpc.w3, retries=rpc.retries)
        self.deployment = deployment
        self.address = Web3.to_checksum_address(deployment.address())
        self.abi = deployment.abi()
        self.contract = rpc.w3.eth.contract(address=self.address, abi=self.abi)
        self.decoder = LogDecoder(self.abi, deployment.chain_id)
        self._outputs = {
            e["name"]: [o["type"] for o in e.get("outputs", [])]
            for e in self.abi
            if e.get("type") == "function"
        }
        self._span = AdaptiveRange(max_size=max_range)
        self._lock = threading.RLock()
        self._synced: tuple[int, str] | None = None  # (block, hash) the index reflects
        self._logs = _Logs()
        self._tokens: dict[int, TokenState] = {}
        self._name: str | None = None
        self._models: dict[str, ModelRecord | None] = {}
        self._receipts: dict[str, tuple[int, int]] = {}
        self._refreshes: dict[str, list[RefreshRecord]] = {}
        self.head: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CollectionIndex:
        """From :class:`agent.settings.Settings` (``chain.rpc_url``, ``chain.deployment``)."""
        deployment = Deployment.load(settings.chain.deployment)
        return cls(
            RpcClient.from_settings(settings.chain), deployment, max_range=settings.chain.max_block_range
        )

    # -- view calls -----------------------------------------------------------------------------------------

    def _batch_calls(self, calls: list[tuple[str, list[Any]]], block: int) -> list[Any]:
        """Several view calls in one JSON-RPC batch; each result decoded, or the exception of a revert."""
        requests = [
            (
                "eth_call",
                [{"to": self.address, "data": self.contract.encode_abi(name, args=args)}, hex(block)],
            )
            for name, args in calls
        ]
        out: list[Any] = []
        for (name, _), result in zip(calls, self.calls.batch(requests), strict=True):
            if isinstance(result, Exception):
                out.append(result)
                continue
            values = abi_decode(self._outputs[name], bytes.fromhex(str(result)[2:]))
            out.append(values[0] if len(values) == 1 else values)
        return out

    def call(self, name: str, *args: Any, block: int | str = "latest") -> Any:
        """One view call (decoded); raises on revert."""
        ident = block if isinstance(block, int) else self.calls.block_number()
        (result,) = self._batch_calls([(name, list(args))], ident)
        if isinstance(result, Exception):
            raise result
        return result

    def name(self) -> str:
        if self._name is None:
            self._name = str(self.call("name"))
        return self._name

    def _read_tokens(self, ids: Iterable[int], block: int) -> dict[int, TokenState]:
        ids = sorted(set(ids))
        if not ids:
            return {}
        exists = self._batch_calls([("exists", [i]) for i in ids], block)
        live = [i for i, e in zip(ids, exists, strict=True) if e is True]
        out = {i: TokenState(i, False, block=block) for i in ids}
        if not live:
            return out
        per = ("ownerOf", "stageOf", "metadataDigestOf", "tokenURI", "pendingRequestOf", "modelOf")
        results = self._batch_calls([(fn, [i]) for i in live for fn in per], block)
        for n, token_id in enumerate(live):
            owner, stage, digest, uri, pending, model = results[n * len(per) : (n + 1) * len(per)]
            failed = [r for r in (owner, stage, digest, uri, pending, model) if isinstance(r, Exception)]
            if failed:
                raise BackendUnavailableError(
                    f"reading token {token_id} at block {block} failed: {failed[0]}",
                    hint="check that chain.rpc_url serves the deployment's chain",
                )
            request_id, _requester, _fee, requested_at = pending
            out[token_id] = TokenState(
                token_id=token_id,
                exists=True,
                owner=Web3.to_checksum_address(owner),
                stage=int(stage),
                digest="0x" + bytes(digest).hex(),
                token_uri=str(uri),
                pending_request=int(request_id) if requested_at else None,
                model_id=int(model),
                block=block,
            )
        return out

    # -- syncing --------------------------------------------------------------------------------------------

    def sync(self) -> list[ChainEvent]:
        """Catch up with the chain head; returns the events that are new since the last sync.

        Raises:
            BackendUnavailableError: the node cannot be reached.
        """
        with self._lock:
            head = self.rpc.block_number()
            self.head = head
            if self._synced is not None:
                number, block_hash = self._synced
                current = self.rpc.get_block(number)
                if current is None or current.hash != block_hash:
                    log.warning("block %d was replaced (reorg): re-reading the collection", number)
                    self._synced, self._logs, self._tokens = None, _Logs(), {}
                    self._refreshes = {}
                elif number == head:
                    return []
            start = self.deployment.deploy_block if self._synced is None else self._synced[0] + 1
            new: list[ChainEvent] = []
            while start <= head:
                to, raws = fetch_logs(self.rpc, self.address, None, start, head, self._span)
                for raw in raws:
                    if raw.get("removed"):
                        continue
                    event = self.decoder.decode(raw)
                    if event is not None:
                        new.append(event)
                start = to + 1
            first = self._synced is None
            touched: set[int] = set()
            for event in new:
                self._add(event, touched)
            minted = int(self.call("totalMinted", block=head))
            if first:
                touched.update(range(1, minted + 1))
            else:
                touched.update(i for i in range(1, minted + 1) if i not in self._tokens)
            self._tokens.update(self._read_tokens(touched, head))
            block = self.rpc.get_block(head)
            self._synced = (head, block.hash if block is not None else "")
            return new

    def _add(self, event: ChainEvent, touched: set[int]) -> None:
        logs = self._logs
        logs.events.append(event)
        names = _TOKEN_ARGS.get(event.name, ())
        ids = [int(event.args[n]) for n in names]
        if event.name == "BatchMetadataUpdate":
            ids = list(range(int(event.args["_fromTokenId"]), int(event.args["_toTokenId"]) + 1))
        for token_id in ids:
            touched.add(token_id)
            if event.name != "BatchMetadataUpdate":
                logs.by_token[token_id].append(event)
        if event.name == "EvolutionRequested":
            logs.requests[int(event.args["requestId"])] = event

    def ensure_synced(self) -> None:
        """Sync once if the index has never synced (pages call this; the poller keeps it fresh)."""
        if self._synced is None:
            self.sync()

    # -- reading the index ----------------------------------------------------------------------------------

    @property
    def synced_block(self) -> int | None:
        return self._synced[0] if self._synced else None

    def tokens(self) -> list[TokenState]:
        with self._lock:
            return [self._tokens[i] for i in sorted(self._tokens)]

    def token(self, token_id: int) -> TokenState | None:
        with self._lock:
            return self._tokens.get(token_id)

    def events_of(self, token_id: int, name: str | None = None) -> list[ChainEvent]:
        with self._lock:
            return [e for e in self._logs.by_token.get(token_id, []) if name is None or e.name == name]

    def events(self, name: str | None = None) -> list[ChainEvent]:
        with self._lock:
            return [e for e in self._logs.events if name is None or e.name == name]

    def request(self, request_id: int) -> ChainEvent | None:
        """The ``EvolutionRequested`` event that opened ``request_id``."""
        with self._lock:
            return self._logs.requests.get(request_id)

    def refreshes_of(self, token_id: int) -> list[RefreshRecord]:
        """The ``refreshMetadata`` writes of ``token_id`` (decoded from the transactions' input)."""
        out: list[RefreshRecord] = []
        for event in self.events("MetadataRefreshed"):
            tx_hash = event.key.tx_hash
            if tx_hash not in self._refreshes:
                self._refreshes[tx_hash] = self._decode_refresh(event)
            out.extend(r for r in self._refreshes[tx_hash] if r.token_id == token_id)
        return out

    def _decode_refresh(self, event: ChainEvent) -> list[RefreshRecord]:
        tx = self.calls.transaction(event.key.tx_hash)
        if tx is None:
            return []
        try:
            _fn, args = self.contract.decode_function_input(tx["input"])
        except (ValueError, KeyError) as exc:
            log.warning("cannot decode refresh transaction %s: %s", event.key.tx_hash, exc)
            return []
        provenance = "0x" + bytes(args["provenance"]).hex()
        return [
            RefreshRecord(int(t), "0x" + bytes(d).hex(), provenance, event.key.tx_hash, event.block_number)
            for t, d in zip(args["tokenIds"], args["digests"], strict=True)
        ]

    def model_record(self, weights_sha256: str) -> ModelRecord | None:
        """The registry entry whose weights digest is ``weights_sha256`` (hex), or None when none is."""
        key = weights_sha256.lower().removeprefix("0x")
        if key not in self._models:
            model_id = int(self.call("modelIdOf", bytes.fromhex(key)))
            record = None
            if model_id:
                digest, manifest, registered = self.call("modelRecord", model_id)
                record = ModelRecord(model_id, "0x" + bytes(digest).hex(), str(manifest), int(registered))
            self._models[key] = record
        return self._models[key]

    def model_by_id(self, model_id: int) -> ModelRecord | None:
        if model_id <= 0:
            return None
        try:
            digest, manifest, registered = self.call("modelRecord", model_id)
        except ChrysalisError:
            return None
        record = ModelRecord(model_id, "0x" + bytes(digest).hex(), str(manifest), int(registered))
        self._models.setdefault(record.weights_digest[2:], record)
        return record

    def gas_spent(self) -> GasSpent:
        """Gas and fees of every transaction that wrote metadata (``Evolved`` or ``MetadataRefreshed``)."""
        hashes = sorted({e.key.tx_hash for e in self.events() if e.name in ("Evolved", "MetadataRefreshed")})
        missing = [h for h in hashes if h not in self._receipts]
        for start in range(0, len(missing), 100):
            chunk = missing[start : start + 100]
            for tx_hash, receipt in zip(chunk, self.calls.receipts(chunk), strict=True):
                if receipt is not None:
                    self._receipts[tx_hash] = (
                        receipt.gas_used,
                        receipt.gas_used * receipt.effective_gas_price,
                    )
        known = [self._receipts[h] for h in hashes if h in self._receipts]
        return GasSpent(sum(g for g, _ in known), sum(f for _, f in known), len(known))


def event_json(event: ChainEvent) -> Mapping[str, Any]:
    """A decoded event as JSON for the live-update stream."""
    return {
        "name": event.name,
        "args": dict(event.args),
        "tx_hash": event.key.tx_hash,
        "block_number": event.block_number,
    }
