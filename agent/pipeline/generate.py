"""The generate stage: image (image-to-image from the token's previous image when it has one), lore, receipt.

Jobs are generated together: one image-model call and one lore-model call per batch. The PNG goes into the
embedded IPFS repo (pinned there; replication is the publish stage's business), so the record stays small and a
retried job reads the exact bytes back by CID. ``[(RenderTask, Inputs)] -> [Artwork]`` (:mod:`agent.domain`;
the job's ``generated`` record): the same for a holder's evolution and a refresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from agent.domain import Artwork, Inputs, RenderTask
from agent.generate.base import ImageGenerator, ImageRequest, LoreRequest, LoreWriter
from agent.generate.receipt import build_receipt, image_record, lore_record
from agent.generate.seed import derive_seed, onchain_seed_bytes
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.assets import AssetStore


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

    def requests(self, task: RenderTask, inputs: Inputs) -> tuple[ImageRequest, LoreRequest]:
        """The model requests for one render (deterministic from the task and its inputs)."""
        seed = derive_seed(onchain_seed_bytes(task.seed), task.token_id)
        rules, previous = inputs.rules, inputs.previous
        init_image = None
        if previous is not None:
            init_image = b"".join(self.repo.cat(previous.image_cid))
        image = ImageRequest(
            traits=dict(rules.conditioning),
            seed=seed,
            init_image=init_image,
            strength=float(rules.strength),
            label=task.label,
        )
        lore = LoreRequest(
            name=inputs.token.name,
            stage=inputs.token.stage,
            traits=dict(rules.traits),
            facts=dict(rules.facts),
            seed=seed,
            label=task.label,
        )
        return image, lore

    def run(self, batch: Sequence[tuple[RenderTask, Inputs]]) -> list[Artwork]:
        """The artwork of each (task, inputs), in order."""
        if not batch:
            return []
        pairs = [self.requests(task, inputs) for task, inputs in batch]
        images = self.image.generate([p[0] for p in pairs])
        lores = self.lore.write([p[1] for p in pairs])
        out = []
        for (task, inputs), (image_req, lore_req), image, lore in zip(
            batch, pairs, images, lores, strict=True
        ):
            previous = inputs.previous
            receipt = build_receipt(
                onchain_seed=task.seed,
                token_id=task.token_id,
                snapshot_sha256=inputs.snapshot_sha256,
                image=image_record(
                    self.image, image_req, image, init_image_cid=previous.image_cid if previous else None
                ),
                lore=lore_record(self.lore, lore_req, lore),
            )
            image_cid = self.repo.add(image.png).cid
            self.assets.write(task.token_id, task.stage, "png", image.png)
            self.assets.write(task.token_id, task.stage, "receipt.json", receipt.canonical_json() + b"\n")
            artwork = Artwork(
                image_cid=str(image_cid),
                png_sha256=hashlib.sha256(image.png).hexdigest(),
                lore=lore.text,
                receipt=receipt.to_json(),
            )
            assert artwork.receipt_sha256 == receipt.sha256()
            out.append(artwork)
        return out
