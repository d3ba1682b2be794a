"""The collection as ``verify`` reads it: straight from a node, with nothing but the contract's address.

No deployment record and no ABI file is needed: the few views and events verify reads are named here by their
Solidity signatures (tests/verify checks each against the compiled contract). :class:`CollectionReader` checks
first that the node serves the expected chain and that the address holds a LivingCollection (code, ERC-165 for
ERC-721 and ERC-4906, a model registry that answers), then reads, at one block:

* a token's state (exists, stage, metadata digest, ``tokenURI``, ``modelOf``), or why it has none (never minted,
  burnt);
* every write of its metadata: the ``Evolved`` logs naming it (digest and provenance of each fulfilment) and the
  ``refreshMetadata`` transactions behind ``MetadataRefreshed`` logs (decoded from their input);
* the model registry (``modelRecord``, ``modelIdOf``).

Where the collection's logs start is the deployment record's block when there is one, else the block where code
first appears at the address (found by bisecting ``eth_getCode``; block 0 on a node that keeps no old state).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from web3 import Web3

from agent.errors import BackendUnavailableError, ChrysalisError, ConfigError, NotFoundError, PermanentError
from agent.jsonrpc import describe_reply
from agent.redact import redact_url
from agent.submit.errors import CallRevertedError
from agent.submit.rpc import ChainRpc
from agent.verify.report import Check
from agent.watch.logs import AdaptiveRange, fetch_logs
from agent.watch.rpc import RpcClient

log = logging.getLogger("chrysalis.verify")

ZERO32: Final = "0x" + "00" * 32

VIEWS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "supportsInterface": ("supportsInterface(bytes4)", ("bool",)),
    "name": ("name()", ("string",)),
    "totalMinted": ("totalMinted()", ("uint256",)),
    "exists": ("exists(uint256)", ("bool",)),
    "ownerOf": ("ownerOf(uint256)", ("address",)),
    "stageOf": ("stageOf(uint256)", ("uint32",)),
    "metadataDigestOf": ("metadataDigestOf(uint256)", ("bytes32",)),
    "tokenURI": ("tokenURI(uint256)", ("string",)),
    "modelOf": ("modelOf(uint256)", ("uint16",)),
    "modelCount": ("modelCount()", ("uint16",)),
    "modelRecord": ("modelRecord(uint16)", ("bytes32", "string", "uint64")),
    "modelIdOf": ("modelIdOf(bytes32)", ("uint16",)),
}
"""The views verify calls: name -> (Solidity signature, output types)."""

EVENTS: Final[dict[str, str]] = {
    "EvolutionRequested": "EvolutionRequested(uint256,uint256,address,uint32,bytes32)",
    "Evolved": "Evolved(uint256,uint256,uint32,bytes32,bytes32)",
    "MetadataRefreshed": "MetadataRefreshed(uint256,bytes32)",
}
"""The events verify reads: name -> Solidity signature."""

REFRESH_CALL: Final = "refreshMetadata(uint256[],bytes32[],bytes32)"
"""The call whose input names the digests a ``MetadataRefreshed`` log wrote."""

INTERFACES: Final[dict[str, str]] = {"ERC-721": "80ac58cd", "ERC-4906": "49064906"}
"""ERC-165 ids a LivingCollection must report."""


def _selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature)[:4])


def _topic(signature: str) -> str:
    return "0x" + bytes(Web3.keccak(text=signature)).hex()


def _inputs(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return [t for t in inner.split(",") if t]


@dataclass(frozen=True)
class ChainTarget:
    """Where the collection is, and what the node must be.

    Attributes:
        rpc_url: The node's JSON-RPC endpoint.
        address: The collection's address.
        chain_id: The chain the node must serve (None: not checked; the report says so).
        from_block: The first block of the collection's logs (None: found from the chain).
        record: The deployment record these came from, for messages (None: given on the command line).
    """

    rpc_url: str
    address: str
    chain_id: int | None = None
    from_block: int | None = None
    record: str | None = None


@dataclass(frozen=True)
class TokenFacts:
    """A token as the contract reports it at :attr:`block`."""

    token_id: int
    owner: str
    stage: int
    digest: str
    token_uri: str
    model_id: int
    block: int

    @property
    def has_metadata(self) -> bool:
        return self.digest != ZERO32


@dataclass(frozen=True)
class MetadataWrite:
    """One on-chain write of a token's metadata digest.

    Attributes:
        token_id: The token. kind: ``evolved`` (a fulfilment's ``Evolved`` log) or ``refreshed`` (a
            ``refreshMetadata`` call). digest, provenance: ``0x`` hex, lower case. request_id: the fulfilled
            request (evolved only).
    """

    token_id: int
    kind: str
    digest: str
    provenance: str
    tx_hash: str
    block_number: int
    request_id: int | None = None
    stage: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    """The ``EvolutionRequested`` log of a request (the last one: a request re-mined after a reorg may carry a new
    seed). ``seed``: ``0x`` hex."""

    request_id: int
    token_id: int
    seed: str
    block_number: int
    block_hash: str
    tx_hash: str


@dataclass(frozen=True)
class RegistryRecord:
    """An entry of the collection's model registry (``weights_sha256``: hex without ``0x``)."""

    model_id: int
    weights_sha256: str
    manifest_uri: str
    registered_at: int


class CollectionReader:
    """Reads one collection from one node; :meth:`connect` first (it checks chain and contract).

    Args:
        target: The node, the address and what to expect.
        timeout_s: Per request. retries: Extra attempts after a transport failure.
        max_range: Largest ``eth_getLogs`` span asked for (halved when a provider refuses it).
    """

    def __init__(
        self, target: ChainTarget, *, timeout_s: float = 15.0, retries: int = 2, max_range: int = 10_000
    ) -> None:
        if not target.rpc_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"the RPC URL {redact_url(target.rpc_url)!r} is not an http(s) URL",
                hint="pass the node's JSON-RPC endpoint, e.g. --rpc http://127.0.0.1:8545",
            )
        try:
            self.address = Web3.to_checksum_address(target.address)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{target.address!r} is not a contract address",
                hint="pass the collection's address: --contract 0x followed by 40 hex digits",
            ) from None
        self.target = target
        self.url = target.rpc_url
        self.rpc = ChainRpc.connect(self.url, timeout_s=timeout_s, retries=retries, backoff_s=0.25)
        self.logs = RpcClient(self.url, timeout_s=timeout_s, retries=retries, client="verify")
        self._span = AdaptiveRange(max_size=max_range)
        self.chain_id: int | None = None
        self.block: int = 0
        self.from_block: int = 0
        self._writes: dict[int, list[MetadataWrite]] = {}
        self._refreshes: list[MetadataWrite] | None = None

    # -- connecting -------------------------------------------------------------------------------------------

    def connect(self) -> list[Check]:
        """Check the node and the contract; returns what was checked (each ok).

        Raises:
            BackendUnavailableError: the node cannot be reached. ConfigError: it does not speak JSON-RPC, serves
            another chain than expected, has no contract at the address, or the contract there is not a
            LivingCollection.
        """
        shown = redact_url(self.url)
        try:
            chain_id = self.rpc.chain_id()
        except (BackendUnavailableError, PermanentError) as exc:
            raise self._unreachable(exc) from None
        self.chain_id = chain_id
        checks: list[Check] = []
        expected = self.target.chain_id
        if expected is not None and chain_id != expected:
            said = (
                f"deployment record {self.target.record} is for chain {expected}"
                if self.target.record
                else f"--chain-id is {expected}"
            )
            raise ConfigError(
                f"the node at {shown} serves chain {chain_id}, but {said}",
                hint="point --rpc (chain.rpc_url) at a node of the collection's chain: a token is verified only on "
                "the chain that holds it",
            )
        checks.append(
            Check("chain.id", "ok", f"the node at {shown} serves chain {chain_id} (expected {expected})")
            if expected is not None
            else Check(
                "chain.id",
                "skipped",
                f"the node at {shown} serves chain {chain_id}; pass --chain-id to check it is the chain you mean",
            )
        )
        self.block = self.rpc.block_number()
        code = self.rpc.request("eth_getCode", [self.address, hex(self.block)])
        if not code or code in ("0x", "0x0"):
            where = (
                f", where deployment record {self.target.record} puts the collection"
                if self.target.record
                else ""
            )
            raise ConfigError(
                f"no contract at {self.address} on chain {chain_id} ({shown}){where}",
                hint="check the address and the chain (a restarted local chain has lost its contracts: deploy "
                "again, or point at the current deployment record)",
            )
        missing = [name for name, ident in INTERFACES.items() if not self._supports(ident)]
        try:
            models = int(self.view("modelCount"))
            name = str(self.view("name"))
        except (CallRevertedError, DecodingError):
            missing.append("the model registry (modelCount)")
            models, name = 0, "?"
        if missing:
            raise ConfigError(
                f"the contract at {self.address} on chain {chain_id} is not a LivingCollection: it does not answer "
                + ", ".join(missing),
                hint="pass the address of the collection itself (not of a proxy admin, a marketplace or a token)",
            )
        checks.append(
            Check(
                "contract",
                "ok",
                f"{name!r} at {self.address}: code, ERC-721 and ERC-4906 (ERC-165), a model registry of {models} "
                f"model{'s' if models != 1 else ''} (block {self.block})",
            )
        )
        self.from_block = (
            self.target.from_block if self.target.from_block is not None else self._first_block()
        )
        return checks

    def _unreachable(self, exc: ChrysalisError) -> ChrysalisError:
        shown = redact_url(self.url)
        kind = getattr(exc, "rpc_kind", None)
        if kind in ("bad_response", "http_4xx"):
            return ConfigError(
                f"the node at {shown} did not answer JSON-RPC (got {describe_reply(self.url)})",
                hint="--rpc must be the node's JSON-RPC endpoint (anvil: http://127.0.0.1:8545): check the host, "
                "port and path",
            )
        if kind == "timeout":
            return BackendUnavailableError(
                f"the node at {shown} accepted the connection but did not answer in time",
                hint="it is stuck or overloaded: check the node, or point --rpc at another",
            )
        return BackendUnavailableError(
            f"cannot reach the node at {shown}: {_cause(exc.message)}",
            hint="start it (a local chain: `anvil`), or pass the URL of a running node with --rpc",
        )

    def _supports(self, interface_hex: str) -> bool:
        try:
            return bool(self.view("supportsInterface", bytes.fromhex(interface_hex)))
        except (CallRevertedError, DecodingError):
            return False

    def _first_block(self) -> int:
        """The first block with code at the address (bisecting ``eth_getCode``); 0 where old state is gone."""
        lo, hi = 0, self.block
        try:
            while lo < hi:
                mid = (lo + hi) // 2
                code = self.rpc.request("eth_getCode", [self.address, hex(mid)])
                if code and code not in ("0x", "0x0"):
                    hi = mid
                else:
                    lo = mid + 1
        except ChrysalisError as exc:
            log.info("cannot read old state (%s): searching logs from block 0", exc.message)
            return 0
        return lo

    # -- views ------------------------------------------------------------------------------------------------

    def view(self, name: str, *args: Any) -> Any:
        """Call view ``name`` at :attr:`block`; one output is returned bare, several as a tuple.

        Raises:
            CallRevertedError: it reverted.
        """
        signature, outputs = VIEWS[name]
        data = _selector(signature) + abi_encode(_inputs(signature), list(args))
        raw = self.rpc.call({"to": self.address, "data": "0x" + data.hex()}, self.block or "latest")
        values = abi_decode(list(outputs), raw)
        return values[0] if len(values) == 1 else tuple(values)

    def token(self, token_id: int) -> TokenFacts:
        """The token's state at :attr:`block`.

        Raises:
            NotFoundError: never minted, or burnt.
        """
        if token_id < 1 or not self.view("exists", token_id):
            minted = int(self.view("totalMinted"))
            if 1 <= token_id <= minted:
                raise NotFoundError(
                    f"token {token_id} was burnt", hint="a burnt token has no metadata left to verify"
                )
            raise NotFoundError(
                f"token {token_id} does not exist (the collection has minted {minted})",
                hint="check the token id, and that --contract is the collection that holds it",
            )
        return TokenFacts(
            token_id=token_id,
            owner=Web3.to_checksum_address(self.view("ownerOf", token_id)),
            stage=int(self.view("stageOf", token_id)),
            digest="0x" + bytes(self.view("metadataDigestOf", token_id)).hex(),
            token_uri=str(self.view("tokenURI", token_id)),
            model_id=int(self.view("modelOf", token_id)),
            block=self.block,
        )

    def model_record(self, model_id: int) -> RegistryRecord | None:
        """The registry entry ``model_id`` (None for 0 or an id never registered)."""
        if model_id <= 0:
            return None
        try:
            digest, manifest, registered = self.view("modelRecord", model_id)
        except CallRevertedError:
            return None
        return RegistryRecord(model_id, bytes(digest).hex(), str(manifest), int(registered))

    def model_id_of(self, weights_sha256: str) -> int:
        """The registry id of a weights digest (0: not registered)."""
        raw = bytes.fromhex(weights_sha256.lower().removeprefix("0x"))
        if len(raw) != 32:
            return 0
        return int(self.view("modelIdOf", raw))

    def block_hash(self, number: int) -> str | None:
        """The hash of block ``number`` on this chain (None: the node has no such block)."""
        header = self.rpc.block(number)
        return header.hash.lower() if header is not None else None

    # -- writes -----------------------------------------------------------------------------------------------

    def writes(self, token_id: int) -> list[MetadataWrite]:
        """Every on-chain write of ``token_id``'s metadata digest since :attr:`from_block`, oldest first."""
        if token_id not in self._writes:
            topics = [_topic(EVENTS["Evolved"]), "0x" + token_id.to_bytes(32, "big").hex()]
            out: list[MetadataWrite] = []
            for raw in self._logs(topics):
                stage, digest, provenance = abi_decode(
                    ["uint32", "bytes32", "bytes32"], _hex_bytes(raw["data"])
                )
                out.append(
                    MetadataWrite(
                        token_id,
                        "evolved",
                        "0x" + bytes(digest).hex(),
                        "0x" + bytes(provenance).hex(),
                        str(raw["transactionHash"]),
                        int(raw["blockNumber"]),
                        int(str(raw["topics"][2]), 16),
                        int(stage),
                    )
                )
            out += [w for w in self._refresh_writes() if w.token_id == token_id]
            self._writes[token_id] = sorted(out, key=lambda w: w.block_number)
        return self._writes[token_id]

    def request(self, request_id: int) -> RequestRecord | None:
        """The request's ``EvolutionRequested`` log (None: none since :attr:`from_block`)."""
        topics = [_topic(EVENTS["EvolutionRequested"]), "0x" + request_id.to_bytes(32, "big").hex()]
        logs = self._logs(topics)
        if not logs:
            return None
        raw = logs[-1]
        _stage, seed = abi_decode(["uint32", "bytes32"], _hex_bytes(raw["data"]))
        return RequestRecord(
            request_id,
            int(str(raw["topics"][2]), 16),
            "0x" + bytes(seed).hex(),
            int(raw["blockNumber"]),
            str(raw["blockHash"]).lower(),
            str(raw["transactionHash"]),
        )

    def refresh_batch(self, tx_hash: str) -> list[MetadataWrite]:
        """Every write of the ``refreshMetadata`` transaction ``tx_hash``, in its calldata's order."""
        return [w for w in self._refresh_writes() if w.tx_hash == tx_hash]

    def _refresh_writes(self) -> list[MetadataWrite]:
        if self._refreshes is None:
            self._refreshes = []
            seen: set[str] = set()
            for raw in self._logs([_topic(EVENTS["MetadataRefreshed"])]):
                tx_hash = str(raw["transactionHash"])
                if tx_hash in seen:
                    continue
                seen.add(tx_hash)
                self._refreshes += self._decode_refresh(tx_hash, int(raw["blockNumber"]))
        return self._refreshes

    def _decode_refresh(self, tx_hash: str, block: int) -> list[MetadataWrite]:
        tx = self.rpc.transaction(tx_hash)
        data = _hex_bytes(str((tx or {}).get("input", "0x")))
        if data[:4] != _selector(REFRESH_CALL):
            log.info("refresh transaction %s is not a direct refreshMetadata call: not decoded", tx_hash)
            return []
        token_ids, digests, provenance = abi_decode(_inputs(REFRESH_CALL), data[4:])
        return [
            MetadataWrite(
                int(token_id),
                "refreshed",
                "0x" + bytes(digest).hex(),
                "0x" + bytes(provenance).hex(),
                tx_hash,
                block,
            )
            for token_id, digest in zip(token_ids, digests, strict=True)
        ]

    def _logs(self, topics: Sequence[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = self.from_block
        while start <= self.block:
            to, raws = fetch_logs(self.logs, self.address, list(topics), start, self.block, self._span)
            out += [r for r in raws if not r.get("removed")]
            start = to + 1
        return out


def _hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def _cause(message: str) -> str:
    lowered = message.lower()
    for needle, short in (
        ("connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
    ):
        if needle in lowered:
            return short
    return message if len(message) <= 160 else message[:157] + "..."
