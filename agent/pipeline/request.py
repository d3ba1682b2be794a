"""One evolution request as a job carries it: the decoded ``EvolutionRequested`` event (and its ``Fused``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from agent.domain import ChainEvent, RenderTask


def job_key(chain_id: int, request_id: int) -> str:
    """The idempotency key of the job fulfilling ``request_id``: one job per request, whatever happens."""
    return f"evolve:{chain_id}:{request_id}"


@dataclass(frozen=True)
class EvolutionRequest:
    """A request to evolve a token, read from its log.

    Attributes:
        request_id: ``tokenId << 32 | nonce``. token_id: The token.
        requester: Who opened it. stage_before: The token's stage when it was opened (it evolves into the next).
        seed: The on-chain seed (``0x`` + 64 hex digits). A request re-mined after a reorg keeps its id but
            gets a new block and seed; the contract accepts only fulfilments that name the seed of the request
            pending now (see :attr:`seed_bytes`).
        block_number, block_hash, tx_hash, log_index: Where the request was logged.
        fused_burn_id: The token burnt to open it through ``fuse``, if it was.
        replay_of: The id of a confirmed job whose fulfilment a reorg orphaned; this job re-sends its outputs.
    """

    request_id: int
    token_id: int
    requester: str
    stage_before: int
    seed: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    fused_burn_id: int | None = None
    replay_of: int | None = None

    @property
    def stage(self) -> int:
        """The stage the token evolves into."""
        return self.stage_before + 1

    @property
    def seed_bytes(self) -> bytes:
        """The on-chain seed as 32 bytes: what the fulfilment names, and the contract checks, so that metadata
        made from this log is never written for a copy of the request re-mined (after a reorg) with another seed."""
        raw = bytes.fromhex(self.seed.removeprefix("0x").removeprefix("0X"))
        if len(raw) != 32:
            raise ValueError(f"request {self.request_id:#x}: seed {self.seed!r} is not 32 bytes")
        return raw

    @property
    def label(self) -> str:
        return f"token {self.token_id} (request {self.request_id:#x})"

    def task(self) -> RenderTask:
        """What the stages render for this request: the token at the request's block, into its next stage."""
        return RenderTask(
            token_id=self.token_id,
            stage=self.stage,
            seed=self.seed,
            block_number=self.block_number,
            block_hash=self.block_hash,
            label=self.label,
            fused_burn_id=self.fused_burn_id,
        )

    @classmethod
    def from_event(cls, event: ChainEvent, fused_burn_id: int | None = None) -> EvolutionRequest:
        args = event.args
        return cls(
            request_id=int(args["requestId"]),
            token_id=int(args["tokenId"]),
            requester=str(args["requester"]),
            stage_before=int(args["stage"]),
            seed=str(args["seed"]),
            block_number=event.block_number,
            block_hash=event.key.block_hash.lower(),
            tx_hash=event.key.tx_hash.lower(),
            log_index=event.key.log_index,
            fused_burn_id=fused_burn_id,
        )

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> EvolutionRequest:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in payload.items() if k in fields})
