"""The publish stage: the metadata as ONE raw IPFS block, and the image, pinned through the Replicator.

The job goes on only once ``ipfs.replication`` backends confirmed both pins (:class:`ReplicationError`
otherwise, retryable; confirmed pins are kept, so a retry does no new work). Output (the ``published`` record)::

    {"metadata_cid": "bafkrei...", "digest": "0x<sha256 of the metadata>", "image_cid": "bafkrei...",
     "token_uri": "ipfs://bafkrei...", "provenance": "0x<receipt sha256>", "approved_by": null | "curator",
     "pins": [{"backend", "cid", "detail"}, ...]}

The digest is what ``fulfillEvolutions`` writes; the contract's ``tokenURI`` rebuilds the same CID from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agent.generate.base import ModelInfo
from agent.ipfs.backends.replicated import Replicator
from agent.ipfs.cid import CID
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.assets import AssetStore
from agent.pipeline.errors import AssetIntegrityError
from agent.pipeline.request import EvolutionRequest, snapshot_from_json
from agent.publish.metadata import ModelRef, build_metadata, metadata_cid


class PublishStage:
    """Builds, stores and replicates one evolution's metadata and image.

    Args:
        repo: The embedded repo (the metadata block is added here first).
        replicator: Pins through every configured backend and counts confirmations.
        assets: Where the metadata copy is written for browsing.
        models: ``{"image": ModelInfo, "lore": ModelInfo}`` recorded in the metadata.
    """

    def __init__(
        self, repo: IpfsRepo, replicator: Replicator, assets: AssetStore, models: Mapping[str, ModelInfo]
    ) -> None:
        self.repo = repo
        self.replicator = replicator
        self.assets = assets
        self.models = {role: ModelRef.of(info) for role, info in models.items()}

    def metadata(
        self,
        request: EvolutionRequest,
        inputs: Mapping[str, Any],
        generated: Mapping[str, Any],
        *,
        approved_by: str | None = None,
    ) -> bytes:
        """The canonical metadata bytes of one evolution (deterministic from the recorded stages)."""
        token, rules = inputs["token"], inputs["rules"]
        previous = token.get("previous")
        doc = build_metadata(
            name=token["name"],
            lore=generated["lore"],
            image_cid=generated["image_cid"],
            traits=rules["traits"],
            stage=int(token["stage"]),
            parent=previous["metadata_cid"] if previous else None,
            receipt=generated["receipt"],
            models=self.models,
            snapshot=snapshot_from_json(inputs["snapshot"]),
            approved_by=approved_by,
        )
        return doc.encode()

    def run(
        self,
        request: EvolutionRequest,
        inputs: Mapping[str, Any],
        generated: Mapping[str, Any],
        *,
        approved_by: str | None = None,
    ) -> dict[str, Any]:
        """The ``published`` record of one job.

        ``generated`` is the job's ``generated`` record, or in review mode the approved candidate's (which may
        be a regenerated revision); ``approved_by`` then names the curator in the metadata.

        Raises:
            AssetIntegrityError: the stored image no longer matches what the generate stage recorded.
            ReplicationError: too few backends confirmed a pin (retryable).
        """
        image_cid = CID.parse(generated["image_cid"])
        png = b"".join(self.repo.cat(image_cid))
        actual = hashlib.sha256(png).hexdigest()
        if actual != generated["png_sha256"]:
            raise AssetIntegrityError(f"image {image_cid}", generated["png_sha256"], actual)
        data = self.metadata(request, inputs, generated, approved_by=approved_by)
        cid = self.repo.add_raw_block(data)
        assert str(cid) == metadata_cid(data)
        name = f"token {request.token_id} stage {request.stage}"
        pins = self.replicator.publish(image_cid, name=f"{name} image")
        pins += self.replicator.publish(cid, name=f"{name} metadata")
        self.assets.write(request.token_id, request.stage, "json", data)
        return {
            "metadata_cid": str(cid),
            "digest": "0x" + hashlib.sha256(data).hexdigest(),
            "image_cid": str(image_cid),
            "token_uri": f"ipfs://{cid}",
            "provenance": generated["provenance"],
            "approved_by": approved_by,
            "pins": [{"backend": p.backend, "cid": str(p.cid), "detail": p.detail} for p in pins],
        }
