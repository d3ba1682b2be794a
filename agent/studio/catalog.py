"""The studio's read model: what the gallery, the token pages and ``chrysalis verify`` show.

It joins two public sources and nothing else: the chain (:class:`~agent.studio.index.CollectionIndex`) and the
embedded IPFS repo. A token's ``metadataDigestOf`` is the sha256 of its metadata, so its CID is rebuilt from it
(:func:`~agent.metadata.cid_from_digest`); the metadata's ``parent`` links give the timeline
(:func:`~agent.metadata.history`), every block checked against its CID on the way. Each version is then
matched to the transaction that wrote it: the ``Evolved`` log carrying its digest (or the ``refreshMetadata``
call that did), which also names the request, its seed and the on-chain provenance hash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.domain import canonical_json, sha256_hex
from agent.errors import ChrysalisError, NotFoundError
from agent.ipfs.errors import BlockNotFoundError
from agent.ipfs.repo import IpfsRepo
from agent.metadata import _HEX64, HistoryEntry, TokenMetadata, cid_from_digest, history, parse_metadata
from agent.review import find_reroll
from agent.studio.index import CollectionIndex, TokenState

log = logging.getLogger("chrysalis.studio")


@dataclass(frozen=True)
class TokenCard:
    """A token as the gallery shows it.

    Attributes:
        state: What the chain says. metadata: Its current metadata (None before the first, or when unreadable).
        metadata_cid: The CID rebuilt from the on-chain digest. problem: Why the metadata could not be read.
    """

    state: TokenState
    metadata: TokenMetadata | None = None
    metadata_cid: str | None = None
    problem: str | None = None

    @property
    def token_id(self) -> int:
        return self.state.token_id

    @property
    def name(self) -> str:
        return self.metadata.name if self.metadata else f"Token #{self.token_id}"

    @property
    def image_cid(self) -> str | None:
        return self.metadata.image_cid if self.metadata else None

    @property
    def traits(self) -> Mapping[str, str]:
        return self.metadata.traits if self.metadata else {}

    @property
    def stage(self) -> int:
        return self.state.stage


@dataclass(frozen=True)
class Reading:
    """One input reading of a snapshot, for display."""

    name: str
    value: Any
    source: str
    block_number: int


@dataclass(frozen=True)
class StageView:
    """One version in a token's timeline (oldest first in :attr:`TokenDetail.timeline`).

    Attributes:
        cid: The metadata's CID. metadata: The metadata.
        changed: Traits whose value differs from the previous version (every trait for the first).
        previous_traits: The previous version's traits (empty for the first).
        kind: ``evolved`` (a fulfilled request), ``refreshed`` (``refreshMetadata``) or ``unknown`` (no write
            of this digest was found on this chain).
        tx_hash / block_number: The transaction that wrote this digest on-chain.
        onchain_provenance: The provenance hash that transaction recorded.
        request_id / request_tx / request_block / request_seed / requester: The request that caused it.
        reroll: Which reroll of the request's seed the receipt used (0: the seed itself; None: neither).
    """

    cid: str
    metadata: TokenMetadata
    changed: frozenset[str]
    previous_traits: Mapping[str, str]
    kind: str = "unknown"
    tx_hash: str | None = None
    block_number: int | None = None
    onchain_provenance: str | None = None
    request_id: int | None = None
    request_tx: str | None = None
    request_block: int | None = None
    request_seed: str | None = None
    requester: str | None = None
    reroll: int | None = None

    @property
    def stage(self) -> int:
        return self.metadata.stage

    @property
    def receipt_provenance(self) -> str:
        """``0x`` + sha256 of the receipt's canonical JSON: must equal :attr:`onchain_provenance`."""
        return "0x" + sha256_hex(canonical_json(dict(self.metadata.receipt)))

    @property
    def provenance_matches(self) -> bool | None:
        if self.onchain_provenance is None:
            return None
        return self.onchain_provenance.lower() == self.receipt_provenance

    @property
    def image_lora(self) -> Mapping[str, Any] | None:
        """The LoRA this version's image was drawn with, as its receipt's image config records it (the production
        backend's ``{"source", "file", "sha256", "scale"}``), or None: no image part, no LoRA, or an entry whose
        ``sha256`` is not 64 lowercase hex. It comes from the receipt :attr:`provenance_matches` checks against the
        chain, so a shown LoRA is anchored exactly as the receipt is."""
        image = self.metadata.receipt.get("image")
        config = image.get("config") if isinstance(image, Mapping) else None
        lora = config.get("lora") if isinstance(config, Mapping) else None
        if isinstance(lora, Mapping) and isinstance(lora.get("sha256"), str) and _HEX64.match(lora["sha256"]):
            return lora
        return None

    @property
    def readings(self) -> list[Reading]:
        return [
            Reading(r.get("name", "?"), r.get("value"), r.get("source", ""), int(r.get("block_number", 0)))
            for r in self.metadata.inputs.get("readings", [])
            if isinstance(r, Mapping)
        ]


@dataclass(frozen=True)
class TokenDetail:
    """A token page: its card and its timeline (oldest first)."""

    card: TokenCard
    timeline: list[StageView] = field(default_factory=list)

    def stage_view(self, stage: int | None = None) -> StageView:
        """The version at ``stage`` (default: the current one).

        Raises:
            NotFoundError: the token has no such version.
        """
        if not self.timeline:
            raise NotFoundError(
                f"token {self.card.token_id} has no metadata yet",
                hint="it is verifiable once it has evolved (its tokenURI is ipfs://...)",
            )
        if stage is None:
            return self.timeline[-1]
        for view in reversed(self.timeline):
            if view.stage == stage:
                return view
        stages = ", ".join(str(v.stage) for v in self.timeline)
        raise NotFoundError(
            f"token {self.card.token_id} has no stage {stage}", hint=f"its timeline has stages {stages}"
        )


class Catalog:
    """Gallery cards and token timelines, from the chain index and the IPFS repo.

    Args:
        index: The collection's chain index (synced by the caller or the studio's poller).
        repo: The embedded IPFS repo that holds the metadata and images.
    """

    def __init__(self, index: CollectionIndex, repo: IpfsRepo) -> None:
        self.index = index
        self.repo = repo
        self._parsed: dict[str, TokenMetadata] = {}  # CIDs are immutable: parse each block once

    # -- IPFS -----------------------------------------------------------------------------------------------

    def fetch(self, cid: str) -> bytes:
        """One metadata block by CID from the repo (checked against the CID by the parser)."""
        try:
            return self.repo.block_get(cid)
        except BlockNotFoundError:
            raise NotFoundError(
                f"metadata {cid} is not in the IPFS repo at {self.repo.path}",
                hint="point ipfs.repo (or data_dir) at the agent's repo, or copy it from a node that has it: "
                f"`chrysalis ipfs export {cid} -o m.car` (or Kubo's `ipfs dag export`) there, then "
                "`chrysalis ipfs import m.car` here",
            ) from None

    def metadata(self, cid: str) -> TokenMetadata:
        if cid not in self._parsed:
            self._parsed[cid] = parse_metadata(self.fetch(cid), cid=cid)
        return self._parsed[cid]

    def image(self, cid: str) -> bytes:
        """An image's bytes from the repo."""
        try:
            return b"".join(self.repo.cat(cid))
        except BlockNotFoundError:
            raise NotFoundError(
                f"image {cid} is not in the IPFS repo at {self.repo.path}",
                hint="point ipfs.repo (or data_dir) at the agent's repo",
            ) from None

    # -- cards ----------------------------------------------------------------------------------------------

    def card(self, state: TokenState) -> TokenCard:
        if not state.has_metadata:
            return TokenCard(state)
        cid = cid_from_digest(bytes.fromhex(state.digest[2:]))
        try:
            return TokenCard(state, self.metadata(cid), cid)
        except ChrysalisError as exc:
            return TokenCard(state, None, cid, exc.message)

    def cards(self) -> list[TokenCard]:
        """Every existing token, by id."""
        self.index.ensure_synced()
        return [self.card(s) for s in self.index.tokens() if s.exists]

    def token(self, token_id: int) -> TokenDetail:
        """A token's card and timeline.

        Raises:
            NotFoundError: no such token (never minted, or burnt).
        """
        self.index.ensure_synced()
        state = self.index.token(token_id)
        if state is None or not state.exists:
            burnt = state is not None
            raise NotFoundError(
                f"token {token_id} {'was burnt' if burnt else 'does not exist'}",
                hint="the gallery lists every token that exists",
            )
        card = self.card(state)
        if card.metadata_cid is None or card.metadata is None:
            return TokenDetail(card)
        entries = history(self.fetch, card.metadata_cid)
        return TokenDetail(card, self._timeline(token_id, list(reversed(entries))))

    def _timeline(self, token_id: int, entries: Sequence[HistoryEntry]) -> list[StageView]:
        evolved = {
            str(e.args["metadataDigest"]).lower(): e for e in self.index.events_of(token_id, "Evolved")
        }
        refreshed = {r.digest.lower(): r for r in self.index.refreshes_of(token_id)}
        views: list[StageView] = []
        previous: Mapping[str, str] = {}
        for n, entry in enumerate(entries):
            md = entry.metadata
            self._parsed.setdefault(entry.cid, md)
            digest = "0x" + _digest_of(entry.cid)
            changed = frozenset(md.traits) if n == 0 else frozenset(
                k for k in set(md.traits) | set(previous) if md.traits.get(k) != previous.get(k)
            )  # fmt: skip
            extra: dict[str, Any] = {}
            if digest in evolved:
                event = evolved[digest]
                request_id = int(event.args["requestId"])
                extra.update(
                    kind="evolved",
                    tx_hash=event.key.tx_hash,
                    block_number=event.block_number,
                    onchain_provenance=str(event.args["provenance"]).lower(),
                    request_id=request_id,
                )
                opened = self.index.request(request_id)
                if opened is not None:
                    seed = str(opened.args["seed"])
                    receipt_seed = str((md.receipt.get("seed") or {}).get("onchain_seed", ""))
                    extra.update(
                        request_tx=opened.key.tx_hash,
                        request_block=opened.block_number,
                        request_seed=seed,
                        requester=str(opened.args["requester"]),
                        reroll=find_reroll(seed, receipt_seed) if receipt_seed else None,
                    )
            elif digest in refreshed:
                record = refreshed[digest]
                extra.update(
                    kind="refreshed",
                    tx_hash=record.tx_hash,
                    block_number=record.block_number,
                    onchain_provenance=record.provenance.lower(),
                )
            views.append(StageView(entry.cid, md, changed, dict(previous), **extra))
            previous = md.traits
        return views


def _digest_of(cid: str) -> str:
    from agent.metadata import digest_from_cid

    return digest_from_cid(cid).hex()


def filter_cards(
    cards: Iterable[TokenCard], *, stage: int | None = None, traits: Mapping[str, str] | None = None
) -> list[TokenCard]:
    """Cards at ``stage`` whose traits include every ``name: value`` of ``traits``."""
    out = []
    for card in cards:
        if stage is not None and card.stage != stage:
            continue
        if traits and any(card.traits.get(k) != v for k, v in traits.items()):
            continue
        out.append(card)
    return out


def trait_values(cards: Iterable[TokenCard]) -> dict[str, list[str]]:
    """Every trait name and the values it takes across ``cards`` (sorted): the gallery's filters."""
    values: dict[str, set[str]] = {}
    for card in cards:
        for k, v in card.traits.items():
            values.setdefault(k, set()).add(v)
    return {k: sorted(v) for k, v in sorted(values.items())}
