"""The generate stage: image (image-to-image from the token's previous image when it has one), lore, receipt.

Jobs are generated together: one image-model call and one lore-model call per batch. The PNG goes into the
embedded IPFS repo (pinned there; replication is the publish stage's business), so the record stays small and a
retried job reads the exact bytes back by CID. Output (the job's ``generated`` record)::

    {"image_cid": "bafkrei...", "png_sha256": "...", "lore": "...", "receipt": {...},
     "receipt_sha256": "...", "provenance": "0x..."}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from agent.generate.base import ImageGenerator, ImageRequest, LoreRequest, LoreWriter
from agent.generate.receipt import build_receipt, image_record, lore_record
from agent.generate.seed import derive_seed, onchain_seed_bytes
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.assets import AssetStore
from agent.pipeline.request import EvolutionRequest


class GenerateStage:
    """Generates a batch of evolutions.

    Args:
        image: The image generator. lore: The lore writer.
        repo: Where PNGs are stored (and previous images read from).
        assets: Where copies are written for browsing.
    """

    def __init__(self, image: ImageGenerator, lore: LoreWriter, repo: IpfsRepo, assets: AssetStore) -> None:
        self.image = image
        self.lore = lore
        self.repo = repo
        self.assets = assets

    def requests(
        self, request: EvolutionRequest, inputs: Mapping[str, Any]
    ) -> tuple[ImageRequest, LoreRequest]:
        """The model requests for one evolution (deterministic from the request and its inputs record)."""
        seed = derive_seed(onchain_seed_bytes(request.seed), request.token_id)
        token, rules = inputs["token"], inputs["rules"]
        previous = token.get("previous")
        init_image = None
        if previous is not None:
            init_image = b"".join(self.repo.cat(previous["image_cid"]))
        label = f"token {request.token_id} (request {request.request_id:#x})"
        image = ImageRequest(
            traits=dict(rules["conditioning"]),
            seed=seed,
            init_image=init_image,
            strength=float(rules["strength"]),
            label=label,
        )
        lore = LoreRequest(
            name=token["name"],
            stage=int(token["stage"]),
            traits=dict(rules["traits"]),
            facts=dict(rules["facts"]),
            seed=seed,
            label=label,
        )
        return image, lore

    def run(self, batch: Sequence[tuple[EvolutionRequest, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """The ``generated`` record of each (request, inputs record), in order."""
        if not batch:
            return []
        pairs = [self.requests(request, inputs) for request, inputs in batch]
        images = self.image.generate([p[0] for p in pairs])
        lores = self.lore.write([p[1] for p in pairs])
        out = []
        for (request, inputs), (image_req, lore_req), image, lore in zip(
            batch, pairs, images, lores, strict=True
        ):
            previous = inputs["token"].get("previous")
            receipt = build_receipt(
                onchain_seed=request.seed,
                token_id=request.token_id,
                snapshot_sha256=inputs["snapshot_sha256"],
                image=image_record(
                    self.image, image_req, image, init_image_cid=previous["image_cid"] if previous else None
                ),
                lore=lore_record(self.lore, lore_req, lore),
            )
            image_cid = self.repo.add(image.png).cid
            stage = request.stage
            self.assets.write(request.token_id, stage, "png", image.png)
            self.assets.write(request.token_id, stage, "receipt.json", receipt.canonical_json() + b"\n")
            out.append(
                {
                    "image_cid": str(image_cid),
                    "png_sha256": hashlib.sha256(image.png).hexdigest(),
                    "lore": lore.text,
                    "receipt": receipt.to_json(),
                    "receipt_sha256": receipt.sha256(),
                    "provenance": receipt.provenance_hex(),
                }
            )
        return out
