"""The generate stage: image (image-to-image from the token's previous image when it has one), lore, receipt.

Jobs are generated together: one image-model call and one lore-model call per batch. The PNG goes into the
embedded IPFS repo (pinned there; replication is the publish stage's business), so the record stays small and a
retried job reads the exact bytes back by CID. ``[(RenderTask, Inputs)] -> [Artwork]`` (:mod:`agent.domain`;
the job's ``generated`` record): the same for a holder's evolution and a refresh.

With :class:`ImageSigning` (``[credentials]`` configured), each PNG gets signed C2PA Content Credentials before
it goes into the repo (:mod:`agent.credentials`): the receipt still hashes the unsigned PNG and its pixels, so a
replay compares what the model made, and ``Artwork.png_sha256`` is the published (signed) file's hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from agent.credentials import CredentialClaim, ParentImage
from agent.domain import Artwork, Inputs, RenderTask
from agent.errors import ConfigError
from agent.generate.base import ImageGenerator, ImageRequest, LoreRequest, LoreWriter
from agent.generate.receipt import InferenceReceipt, build_receipt, image_record, lore_record
from agent.generate.seed import derive_seed, onchain_seed_bytes
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.assets import AssetStore
from agent.pipeline.ports import ImageCredentials


@dataclass(frozen=True)
class ImageSigning:
    """Content Credentials for the stage's images: who signs, and the collection every claim names.

    Attributes:
        credentials: The signer (:class:`agent.credentials.ContentCredentials`).
        chain_id: The deployment's chain id. contract: The collection's address.
    """

    credentials: ImageCredentials
    chain_id: int
    contract: str


class GenerateStage:
    """Generates a batch of evolutions.

    Args:
        image: The image generator. lore: The lore writer.
        repo: Where PNGs are stored (and previous images read from).
        assets: Where copies are written for browsing.
        signing: Signs Content Credentials into every PNG (None: images stay unsigned).
    """

    def __init__(
        self,
        image: ImageGenerator,
        lore: LoreWriter,
        repo: IpfsRepo,
        assets: AssetStore,
        *,
        signing: ImageSigning | None = None,
    ) -> None:
        self.image = image
        self.lore = lore
        self.repo = repo
        self.assets = assets
        self.signing = signing

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
            png = self.sign(task, inputs, receipt, image.png, init_image=image_req.init_image)
            image_cid = self.repo.add(png).cid
            self.assets.write(task.token_id, task.stage, "png", png)
            self.assets.write(task.token_id, task.stage, "receipt.json", receipt.canonical_json() + b"\n")
            artwork = Artwork(
                image_cid=str(image_cid),
                png_sha256=hashlib.sha256(png).hexdigest(),
                lore=lore.text,
                receipt=receipt.to_json(),
            )
            assert artwork.receipt_sha256 == receipt.sha256()
            out.append(artwork)
        return out

    def sign(
        self,
        task: RenderTask,
        inputs: Inputs,
        receipt: InferenceReceipt,
        png: bytes,
        *,
        init_image: bytes | None = None,
    ) -> bytes:
        """``png`` with Content Credentials for ``task`` (unchanged without :class:`ImageSigning`).

        Raises:
            ConfigError: the claim cannot be made (a malformed model digest or contract address).
            SigningError: the SDK refused to sign.
        """
        if self.signing is None:
            return png
        model = self.image.model_ref
        try:
            claim = CredentialClaim(
                chain_id=self.signing.chain_id,
                contract=self.signing.contract,
                token_id=task.token_id,
                stage=task.stage,
                receipt_sha256=receipt.sha256(),
                weights_sha256=model.weights_sha256,
                model_id=model.model_id,
            )
        except ValueError as exc:
            raise ConfigError(
                f"{task.label or f'token {task.token_id}'}: cannot make its Content Credentials: {exc}",
                hint="the image model must report a sha256 weights digest; the deployment record an address",
            ) from None
        previous = inputs.previous
        parent = None
        if previous is not None and init_image is not None:
            parent = ParentImage(png=init_image, cid=previous.image_cid, stage=previous.stage)
        return self.signing.credentials.sign(png, claim, parent=parent)
