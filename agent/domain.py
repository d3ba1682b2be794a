"""The data that flows through Chrysalis, one frozen type per arrow::

    chain log --> ChainEvent --> Job --> InputSnapshot (wallet + oracle readings at the event's block)
              --> Artwork (image + lore + receipt) --> Published (CIDs) --> Submission (tx) --> Confirmation

This module imports nothing of ours, so every stage can import it and none imports another stage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
            "readings": [
                {
                    "name": r.name,
                    "value": r.value,
                    "source": r.source,
                    "block": r.block_number,
                    "meta": dict(r.meta),
                }
                for r in sorted(self.readings, key=lambda r: r.name)
            ],
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
