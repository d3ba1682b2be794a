"""The data that flows through Chrysalis, one frozen type per arrow::

    chain log --> ChainEvent --> EvolutionRequest --+
                                                    +--> RenderTask --> Inputs --> Artwork --> Published
    refresh plan (many tokens at one block) -------+     (token at a   (snapshot,  (image,    (metadata CID,
                                                          block, seed)  rules,      lore,      digest, pins)
                                                                        token)      receipt)
              Published --> Submission (tx) --> Confirmation

The stages are functions between these types: ``inputs(RenderTask) -> Inputs``,
``generate([(RenderTask, Inputs)]) -> [Artwork]``, ``publish(RenderTask, Inputs, Artwork) -> Published``. Each
type has ``to_json``/``from_json``: a job stores the JSON of every stage it passed and gives it back typed, and
the JSON is the exact shape earlier releases stored, so old records still load.

This module imports nothing of ours, so every stage can import it and none imports another stage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, compact, UTF-8): what every hash in Chrysalis is taken over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class LogKey:
    """Identity of one log. The block hash is part of it: the same tx re-mined after a reorg is a new log."""

    chain_id: int
    tx_hash: str
    log_index: int
    block_hash: str

    def __str__(self) -> str:
        return f"{self.chain_id}:{self.tx_hash}:{self.log_index}@{self.block_hash}"


@dataclass(frozen=True)
class ChainEvent:
    """A decoded contract event at a known position in the chain."""

    key: LogKey
    block_number: int
    address: str
    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class OracleReading:
    """One value an oracle read at a block, with where it came from."""

    name: str
    value: Any
    source: str
    block_number: int
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "source": self.source,
            "block": self.block_number,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OracleReading:
        return cls(
            str(data["name"]),
            data["value"],
            str(data["source"]),
            int(data["block"]),
            dict(data.get("meta") or {}),
        )


ModelKind = Literal["image", "lore"]
"""What a model makes: the token's image or its lore."""

_RECEIPT_MODEL_KEYS = frozenset({"backend", "model_id", "weights_sha256", "extra"})


@dataclass(frozen=True)
class ModelRef:
    """One model's identity: what a generator reports, an inference receipt records and token metadata publishes.

    The receipt and the metadata each hold a projection of it (:meth:`receipt_json`, :meth:`metadata_json`), and
    both are hashed, so the projections' shapes never change. The on-chain model registry holds
    ``weights_sha256``.

    Attributes:
        model_id: Human-readable id: ``"chrysalis/sprites-32@1"``, a hub id or a local path.
        weights_sha256: Hex sha256 over the model's weight files (each generator documents its exact rule).
        kind: ``"image"`` or ``"lore"``; None where the source does not say (metadata names the role instead).
        backend: The ``models.*_backend`` setting that rebuilds it (``embedded``, ``diffusers``, ``transformers``);
            None where the source does not record it (metadata).
        extra: Implementation details worth recording (scheduler, dtype, device, LoRA digest, ...), JSON data.
    """

    model_id: str
    weights_sha256: str
    kind: ModelKind | None = None
    backend: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def receipt_json(self) -> dict[str, Any]:
        """The receipt's ``model`` object: ``backend``, ``model_id``, ``weights_sha256`` and ``extra``.

        Raises:
            ValueError: the backend is unknown, so no receipt could name what replays it.
        """
        if self.backend is None:
            raise ValueError(
                f"model {self.model_id!r} has no backend; a receipt must name the one that rebuilds it"
            )
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "extra": dict(self.extra),
        }

    def metadata_json(self) -> dict[str, str]:
        """The metadata's ``properties.models.<role>`` object: ``model_id`` and ``weights_sha256`` only."""
        return {"model_id": self.model_id, "weights_sha256": self.weights_sha256}

    @classmethod
    def from_receipt_json(cls, data: Mapping[str, Any], *, kind: ModelKind | None = None) -> ModelRef:
        """Read :meth:`receipt_json`'s object back (``kind``: the receipt part it came from).

        Raises:
            KeyError: a field is missing.
            TypeError: an unknown field is present.
        """
        unknown = sorted(set(data) - _RECEIPT_MODEL_KEYS)
        if unknown:
            raise TypeError(f"unknown model field(s) {', '.join(unknown)}")
        return cls(
            model_id=data["model_id"],
            weights_sha256=data["weights_sha256"],
            kind=kind,
            backend=data["backend"],
            extra=data.get("extra", {}),
        )

    @classmethod
    def from_metadata_json(cls, data: Mapping[str, str]) -> ModelRef:
        """Read :meth:`metadata_json`'s object back (validated by the metadata reader first).

        Raises:
            KeyError: a field is missing.
        """
        return cls(model_id=data["model_id"], weights_sha256=data["weights_sha256"])


@dataclass(frozen=True)
class InputSnapshot:
    """Every input to one inference, read at one block. Its hash goes into the inference receipt."""

    chain_id: int
    block_number: int
    block_hash: str
    readings: tuple[OracleReading, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "readings": [r.to_json() for r in sorted(self.readings, key=lambda r: r.name)],
        }

    @property
    def sha256(self) -> str:
        return sha256_hex(canonical_json(self.to_json()))

    def values(self) -> dict[str, Any]:
        return {r.name: r.value for r in self.readings}


@dataclass(frozen=True)
class Submission:
    """A signed transaction the agent broadcast (or is about to), with everything needed to re-wait, rebroadcast
    or replace it after a restart. Persist it before waiting.

    Attributes:
        tx_hash: The hash of the latest broadcast version.
        raw_tx: The signed transaction (``0x`` hex), rebroadcast if the node forgets it.
        sender: The agent account. nonce: Its nonce (shared by every replacement).
        to: The contract. data: Calldata (``0x`` hex). value: Wei sent.
        gas: Gas limit. max_fee_per_gas, max_priority_fee_per_gas: EIP-1559 fees in wei.
        chain_id: Chain it is signed for. label: What it does (a contract method), for logs and metrics.
        sent_at: Unix time of the latest broadcast (a replacement resets it).
        replaced: Hashes of earlier versions with the same nonce, oldest first.
    """

    tx_hash: str
    raw_tx: str
    sender: str
    nonce: int
    to: str
    data: str
    value: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    chain_id: int
    label: str = ""
    sent_at: float = 0.0
    replaced: tuple[str, ...] = ()

    @property
    def hashes(self) -> tuple[str, ...]:
        """Every hash broadcast with this nonce, oldest first (any one of them may be the one mined)."""
        return (*self.replaced, self.tx_hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "tx_hash": self.tx_hash,
            "raw_tx": self.raw_tx,
            "sender": self.sender,
            "nonce": self.nonce,
            "to": self.to,
            "data": self.data,
            "value": str(self.value),
            "gas": self.gas,
            "max_fee_per_gas": str(self.max_fee_per_gas),
            "max_priority_fee_per_gas": str(self.max_priority_fee_per_gas),
            "chain_id": self.chain_id,
            "label": self.label,
            "sent_at": self.sent_at,
            "replaced": list(self.replaced),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Submission:
        return cls(
            tx_hash=str(data["tx_hash"]),
            raw_tx=str(data["raw_tx"]),
            sender=str(data["sender"]),
            nonce=int(data["nonce"]),
            to=str(data["to"]),
            data=str(data["data"]),
            value=int(data["value"]),
            gas=int(data["gas"]),
            max_fee_per_gas=int(data["max_fee_per_gas"]),
            max_priority_fee_per_gas=int(data["max_priority_fee_per_gas"]),
            chain_id=int(data["chain_id"]),
            label=str(data.get("label", "")),
            sent_at=float(data.get("sent_at", 0.0)),
            replaced=tuple(data.get("replaced", ())),
        )


@dataclass(frozen=True)
class Confirmation:
    """A mined transaction buried under the configured confirmations, in a block that is still canonical.

    Attributes:
        block_number, block_hash: Where it was mined.
        gas_used: Gas it used. effective_gas_price: Wei paid per gas.
        status: 1 succeeded, 0 reverted.
        tx_hash: The hash that was mined.
        replaced: Earlier hashes with the same nonce that it replaced (fee bumps), oldest first.
        confirmations: Blocks on top of its block when it was reported.
    """

    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int
    status: int
    tx_hash: str
    replaced: tuple[str, ...] = ()
    confirmations: int = 0

    @property
    def fee_wei(self) -> int:
        """What the transaction cost."""
        return self.gas_used * self.effective_gas_price

    def to_json(self) -> dict[str, Any]:
        return {
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "gas_used": self.gas_used,
            "effective_gas_price": str(self.effective_gas_price),
            "status": self.status,
            "tx_hash": self.tx_hash,
            "replaced": list(self.replaced),
            "confirmations": self.confirmations,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Confirmation:
        return cls(
            block_number=int(data["block_number"]),
            block_hash=str(data["block_hash"]),
            gas_used=int(data["gas_used"]),
            effective_gas_price=int(data["effective_gas_price"]),
            status=int(data["status"]),
            tx_hash=str(data["tx_hash"]),
            replaced=tuple(data.get("replaced", ())),
            confirmations=int(data.get("confirmations", 0)),
        )


# -- the render arrows -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderTask:
    """One token to render at one block: the neutral input that a holder's evolution and a refresh both produce.

    Attributes:
        token_id: The token.
        stage: The stage the new metadata carries (an evolution's next stage; a refresh's current one).
        seed: The on-chain seed (``0x`` + 64 hex digits) the model seed derives from: the request's seed, or
            for a refresh the refresh block's hash, so anyone can re-derive it.
        block_number: The block every input is read at.
        block_hash: Its hash (the inputs are read pinned to it, EIP-1898).
        label: What the logs and errors call it, e.g. ``token 7 (request 0x700000001)``.
        fused_burn_id: The kin token burnt to open the request through ``fuse``, if any.
    """

    token_id: int
    stage: int
    seed: str
    block_number: int
    block_hash: str
    label: str = ""
    fused_burn_id: int | None = None

    @property
    def seed_bytes(self) -> bytes:
        """The seed as 32 bytes."""
        raw = bytes.fromhex(self.seed.removeprefix("0x").removeprefix("0X"))
        if len(raw) != 32:
            raise ValueError(f"{self.label or f'token {self.token_id}'}: seed {self.seed!r} is not 32 bytes")
        return raw


@dataclass(frozen=True)
class PreviousVersion:
    """A token's metadata before this render: its CID is the parent of the new metadata (the hash-linked
    history) and its image the init image of the image-to-image render.

    Attributes:
        metadata_cid: The CID the token's on-chain digest names.
        image_cid: That metadata's image.
        traits: That metadata's traits (the rules' ``previous``).
        stage: That metadata's stage.
    """

    metadata_cid: str
    image_cid: str
    traits: Mapping[str, str]
    stage: int

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata_cid": self.metadata_cid,
            "image_cid": self.image_cid,
            "traits": dict(self.traits),
            "stage": self.stage,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreviousVersion:
        return cls(
            metadata_cid=str(data["metadata_cid"]),
            image_cid=str(data["image_cid"]),
            traits=dict(data.get("traits") or {}),
            stage=int(data["stage"]),
        )


@dataclass(frozen=True)
class TokenFacts:
    """What the render knows of the token itself.

    Attributes:
        name: Its display name (``Chrysalis #7``).
        stage: The stage the new metadata carries.
        fused_burn_id: The kin token burnt by ``fuse``, if any.
        previous: Its metadata before this render (None before its first).
        holder: Its owner at the block (recorded by refreshes; evolutions read it from the wallet oracle).
    """

    name: str
    stage: int
    fused_burn_id: int | None = None
    previous: PreviousVersion | None = None
    holder: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "stage": self.stage,
            "fused_burn_id": self.fused_burn_id,
            "previous": self.previous.to_json() if self.previous else None,
        }
        if self.holder is not None:
            out["holder"] = self.holder
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenFacts:
        previous = data.get("previous")
        burn = data.get("fused_burn_id")
        return cls(
            name=str(data["name"]),
            stage=int(data["stage"]),
            fused_burn_id=int(burn) if burn is not None else None,
            previous=PreviousVersion.from_json(previous) if previous else None,
            holder=data.get("holder"),
        )


@dataclass(frozen=True)
class RuleOutcome:
    """What the rules made of a snapshot: the metadata's traits, the image model's conditioning and strength,
    and the lore's facts.

    Attributes:
        rules_sha256: The rules file's hash.
        traits: The traits the metadata carries.
        conditioning: The image model's trait conditioning.
        strength: The image-to-image strength.
        facts: Facts the lore is written from.
        changed: The traits that differ from the previous version's, sorted.
    """

    rules_sha256: str
    traits: Mapping[str, str]
    conditioning: Mapping[str, str]
    strength: float
    facts: Mapping[str, str]
    changed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "rules_sha256": self.rules_sha256,
            "traits": dict(self.traits),
            "conditioning": dict(self.conditioning),
            "strength": self.strength,
            "facts": dict(self.facts),
            "changed": list(self.changed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuleOutcome:
        return cls(
            rules_sha256=str(data["rules_sha256"]),
            traits=dict(data["traits"]),
            conditioning=dict(data["conditioning"]),
            strength=data["strength"],
            facts=dict(data["facts"]),
            changed=tuple(data.get("changed") or ()),
        )


@dataclass(frozen=True)
class RefreshMark:
    """Marks the inputs of a refresh (rather than a holder's evolution).

    Attributes:
        block_number: The refresh block.
        block_hash: Its hash.
        forced: Rendered although no trait changed (``chrysalis refresh --force``).
    """

    block_number: int
    block_hash: str
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"block_number": self.block_number, "block_hash": self.block_hash, "forced": self.forced}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefreshMark:
        return cls(int(data["block_number"]), str(data["block_hash"]), bool(data.get("forced", False)))


def snapshot_from_json(data: Mapping[str, Any]) -> InputSnapshot:
    """The :class:`InputSnapshot` whose ``to_json()`` is ``data``."""
    return InputSnapshot(
        chain_id=int(data["chain_id"]),
        block_number=int(data["block_number"]),
        block_hash=str(data["block_hash"]),
        readings=tuple(OracleReading.from_json(r) for r in data["readings"]),
    )


@dataclass(frozen=True)
class Inputs:
    """Everything one render depends on, read at its block, and what the rules made of it (the ``inputs``
    record).

    Attributes:
        snapshot: The oracle readings at the block.
        token: The token's facts (name, stage, previous version).
        rules: The rules' outcome.
        refresh: Set when a refresh (not a holder's request) produced these inputs.
    """

    snapshot: InputSnapshot
    token: TokenFacts
    rules: RuleOutcome
    refresh: RefreshMark | None = None

    @property
    def snapshot_sha256(self) -> str:
        """The snapshot's hash: what the inference receipt names."""
        return self.snapshot.sha256

    @property
    def previous(self) -> PreviousVersion | None:
        return self.token.previous

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "snapshot": self.snapshot.to_json(),
            "snapshot_sha256": self.snapshot_sha256,
            "token": self.token.to_json(),
            "rules": self.rules.to_json(),
        }
        if self.refresh is not None:
            out["refresh"] = self.refresh.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Inputs:
        refresh = data.get("refresh")
        return cls(
            snapshot=snapshot_from_json(data["snapshot"]),
            token=TokenFacts.from_json(data["token"]),
            rules=RuleOutcome.from_json(data["rules"]),
            refresh=RefreshMark.from_json(refresh) if refresh else None,
        )


@dataclass(frozen=True)
class Artwork:
    """What the models made for one render (the ``generated`` record): the image, the lore, and the inference
    receipt that says which model made them from which inputs.

    Attributes:
        image_cid: The PNG's CID in the embedded IPFS repo.
        png_sha256: sha256 of the PNG.
        lore: The lore text.
        receipt: The inference receipt (``InferenceReceipt.to_json()``).
        gates: The quality gates' report (``agent.gates.GateReport.to_json()``), when gates ran: stored under
            the optional key ``gates`` (records from before the gates load without it); never part of the
            receipt or the metadata.
    """

    image_cid: str
    png_sha256: str
    lore: str
    receipt: Mapping[str, Any]
    gates: Mapping[str, Any] | None = None

    @property
    def receipt_sha256(self) -> str:
        """Hex sha256 of the receipt's canonical JSON."""
        return sha256_hex(canonical_json(dict(self.receipt)))

    @property
    def provenance(self) -> str:
        """What the contract stores: ``0x`` + :attr:`receipt_sha256`."""
        return "0x" + self.receipt_sha256

    def to_json(self) -> dict[str, Any]:
        return {
            "image_cid": self.image_cid,
            "png_sha256": self.png_sha256,
            "lore": self.lore,
            "receipt": dict(self.receipt),
            "receipt_sha256": self.receipt_sha256,
            "provenance": self.provenance,
        } | ({"gates": dict(self.gates)} if self.gates is not None else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artwork:
        """From a ``generated`` record.

        Raises:
            KeyError: a field is missing (callers that take user data check first).
        """
        return cls(
            image_cid=str(data["image_cid"]),
            png_sha256=str(data["png_sha256"]),
            lore=str(data["lore"]),
            receipt=dict(data["receipt"]),
            gates=dict(data["gates"]) if data.get("gates") is not None else None,
        )


@dataclass(frozen=True)
class Pin:
    """One backend's confirmation that it holds a CID."""

    backend: str
    cid: str
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "cid": self.cid, "detail": self.detail}


@dataclass(frozen=True)
class Published:
    """A render's metadata and image, pinned and replicated (the ``published`` record).

    Attributes:
        metadata_cid: The metadata block's CID (raw codec, sha2-256).
        digest: ``0x`` + sha256 of the metadata: what the fulfilment writes on-chain.
        image_cid: The image's CID.
        token_uri: ``ipfs://<metadata_cid>``: what ``tokenURI`` returns once the digest is written.
        provenance: ``0x`` + the receipt's sha256.
        approved_by: The curator who approved it (review mode), else None.
        pins: Every backend's confirmation.
    """

    metadata_cid: str
    digest: str
    image_cid: str
    token_uri: str
    provenance: str
    approved_by: str | None = None
    pins: tuple[Pin, ...] = ()

    @property
    def digest_bytes(self) -> bytes:
        return bytes.fromhex(self.digest.removeprefix("0x"))

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata_cid": self.metadata_cid,
            "digest": self.digest,
            "image_cid": self.image_cid,
            "token_uri": self.token_uri,
            "provenance": self.provenance,
            "approved_by": self.approved_by,
            "pins": [p.to_json() for p in self.pins],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Published:
        return cls(
            metadata_cid=str(data["metadata_cid"]),
            digest=str(data["digest"]),
            image_cid=str(data["image_cid"]),
            token_uri=str(data["token_uri"]),
            provenance=str(data.get("provenance") or ""),
            approved_by=cast("str | None", data.get("approved_by")),
            pins=tuple(
                Pin(str(p["backend"]), str(p["cid"]), p.get("detail")) for p in data.get("pins") or ()
            ),
        )


@dataclass(frozen=True)
class CuratorApproval:
    """A curator approved an artwork (review mode): publish THIS one (it may be a regenerated revision)."""

    artwork: Artwork
    approved_by: str


@dataclass(frozen=True)
class CuratorRejection:
    """A curator rejected the artwork: the render ends, the token keeps its metadata."""

    reason: str
