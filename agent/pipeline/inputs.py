"""The inputs stage: everything an evolution depends on, read at the request's block, then the rules.

Output (stored as the job's ``inputs`` record)::

    {
      "snapshot": InputSnapshot.to_json(),      # wallet + price feed + context, at the request's block
      "snapshot_sha256": "...",
      "token": {"name": "Chrysalis #7", "stage": 2, "fused_burn_id": null,
                "previous": {"metadata_cid": "bafkrei...", "image_cid": "bafkrei...", "traits": {...},
                             "stage": 1} | null},
      "rules": {"rules_sha256", "traits", "conditioning", "strength", "facts", "changed"},
    }

``previous`` comes from the token's on-chain metadata digest at the request's block: its CID is the parent of
the new metadata (the hash-linked history), and its image is the init image of the image-to-image evolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.ipfs.errors import BlockNotFoundError
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.chain import CollectionReader
from agent.pipeline.errors import PreviousMetadataMissingError
from agent.pipeline.request import EvolutionRequest
from agent.pipeline.traits import evaluate_traits
from agent.publish.metadata import cid_from_digest, parse_metadata
from agent.rules import RuleEngine
from oracles.base import Oracle, ReadContext
from oracles.snapshot import take_snapshot

ZERO32 = bytes(32)


class InputsStage:
    """Reads a request's inputs at its block and applies the rules.

    Args:
        reader: The collection (token digests, canonical checks).
        oracles: Oracles read into the snapshot (wallet, price feed).
        rules: The validated evolution rules.
        repo: The IPFS repo holding the tokens' current metadata and images.
        token_name: Template with ``{collection}`` and ``{token_id}``.
        collection_name: The contract's ``name()``.
    """

    def __init__(
        self,
        reader: CollectionReader,
        oracles: Sequence[Oracle],
        rules: RuleEngine,
        repo: IpfsRepo,
        *,
        token_name: str = "{collection} #{token_id}",
        collection_name: str = "Chrysalis",
    ) -> None:
        self.reader = reader
        self.oracles = list(oracles)
        self.rules = rules
        self.repo = repo
        self.token_name = token_name
        self.collection_name = collection_name

    def run(self, request: EvolutionRequest) -> dict[str, Any]:
        """The ``inputs`` record of ``request``.

        Raises:
            SourceOrphanedError: the request's block is no longer canonical (retryable).
            PreviousMetadataMissingError: the token's current metadata is not in the repo (permanent).
            OracleError / OracleUnavailableError: from the oracles.
            MissingFeatureError / FeatureValueError: the inputs do not fit the rules.
        """
        self.reader.check_canonical(request.block_number, request.block_hash)
        ctx = ReadContext.at(
            self.reader.rpc.w3, request.block_hash, token_id=request.token_id, collection=self.reader.address
        )
        snapshot = take_snapshot(self.oracles, ctx)
        previous = self.previous(request)
        rules = evaluate_traits(
            self.rules,
            snapshot,
            stage=request.stage,
            token_id=request.token_id,
            previous=previous["traits"] if previous else None,
            fused=request.fused_burn_id is not None,
        )
        return {
            "snapshot": snapshot.to_json(),
            "snapshot_sha256": snapshot.sha256,
            "token": {
                "name": self.token_name.format(collection=self.collection_name, token_id=request.token_id),
                "stage": request.stage,
                "fused_burn_id": request.fused_burn_id,
                "previous": previous,
            },
            "rules": rules,
        }

    def previous(self, request: EvolutionRequest) -> dict[str, Any] | None:
        """The token's metadata at the request's block, or None before its first evolution."""
        digest = self.reader.metadata_digest_at(request.token_id, request.block_hash)
        if digest == ZERO32:
            return None
        cid = cid_from_digest(digest)
        try:
            data = self.repo.block_get(cid)
        except BlockNotFoundError:
            raise PreviousMetadataMissingError(request.token_id, cid, str(self.repo.path)) from None
        metadata = parse_metadata(data, cid=cid)
        return {
            "metadata_cid": cid,
            "image_cid": metadata.image_cid,
            "traits": dict(metadata.traits),
            "stage": metadata.stage,
        }
