"""The generate stage: image (image-to-image from the token's previous image when it has one), lore, receipt.

Jobs are generated together: one image-model call and one lore-model call per batch. The PNG goes into the
embedded IPFS repo (pinned there; replication is the publish stage's business), so the record stays small and a
retried job reads the exact bytes back by CID. ``[(RenderTask, Inputs)] -> [Artwork]`` (:mod:`agent.domain`;
the job's ``generated`` record): the same for a holder's evolution and a refresh.

With :class:`ImageSigning` (``[credentials]`` configured), each PNG gets signed C2PA Content Credentials before
it goes into the repo (:mod:`agent.credentials`): the receipt still hashes the unsigned PNG and its pixels, so a
replay compares what the model made, and ``Artwork.png_sha256`` is the published (signed) file's hash.

With :class:`~agent.gates.Gates` (``[gates]`` enabled), every artwork is checked (near duplicate, the image
model's metrics, lore) and carries its :class:`~agent.gates.GateReport` in ``Artwork.gates``. A failing one is
rendered again with the next public reroll of the request's seed (:func:`agent.gates.reroll_seed`), up to
``gates.max_rerolls`` times: its receipt records the rerolled seed as ``seed.onchain_seed``, exactly as a curator's
regeneration does, so it verifies the same way. A candidate that passes on its first try is byte for byte what an
ungated run makes (only the job record gains the report). One still failing after the last try keeps its failed
report: the review gate shows it flagged, or (review off) the caller fails the job
(:func:`gate_failure`). Passing images are added to the near-duplicate index as they are made, so later items of
the same batch are compared with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from agent.credentials import CredentialClaim, ParentImage
from agent.domain import Artwork, Inputs, RenderTask
from agent.errors import ConfigError
from agent.gates import GateReport, Gates, GatesFailedError, reroll_seed
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
        gates: The quality gates (None: none run, artworks carry no report).
    """

    def __init__(
        self,
        image: ImageGenerator,
        lore: LoreWriter,
        repo: IpfsRepo,
        assets: AssetStore,
        *,
        signing: ImageSigning | None = None,
        gates: Gates | None = None,
    ) -> None:
        self.image = image
        self.lore = lore
        self.repo = repo
        self.assets = assets
        self.signing = signing
        self.gates = gates

    def requests(
        self, task: RenderTask, inputs: Inputs, *, reroll: int = 0
    ) -> tuple[ImageRequest, LoreRequest]:
        """The model requests for one render (deterministic from the task, its inputs and the reroll)."""
        seed = derive_seed(onchain_seed_bytes(self.onchain_seed(task, reroll)), task.token_id)
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

    @staticmethod
    def onchain_seed(task: RenderTask, reroll: int) -> str:
        """The seed the receipt records: the task's, or its ``reroll``-th public reroll."""
        return reroll_seed(task.seed, reroll) if reroll else task.seed

    def run(self, batch: Sequence[tuple[RenderTask, Inputs]]) -> list[Artwork]:
        """The artwork of each (task, inputs), in order (each gated and, if it fails, rerolled: see above)."""
        if not batch:
            return []
        rendered = self.render(batch, [0] * len(batch))
        if self.gates is None:
            return [artwork for artwork, _ in rendered]
        return self.gate(batch, rendered, self.gates)

    def gate(
        self,
        batch: Sequence[tuple[RenderTask, Inputs]],
        rendered: list[tuple[Artwork, bytes]],
        gates: Gates,
    ) -> list[Artwork]:
        """Check every render; rerender the failing ones with the next reroll until they pass or the tries run out."""
        out: list[Artwork | None] = [None] * len(batch)
        history: list[list[tuple[str, ...]]] = [[] for _ in batch]
        todo = list(range(len(batch)))
        current = dict(zip(todo, rendered, strict=True))
        reroll = 0
        while todo:
            failing = []
            for i in todo:
                task, inputs = batch[i]
                artwork, png = current[i]
                results = gates.check(
                    png=png,
                    lore=artwork.lore if artwork.receipt.get("lore") is not None else None,
                    traits=dict(inputs.rules.conditioning),
                    backend=self.image.model_ref.backend,
                    token_id=task.token_id,
                    weights_sha256=self.image.model_ref.weights_sha256,
                    palettes=self.image.model_ref.extra.get("palettes"),
                )
                report = GateReport(tuple(results), reroll, task.seed, tuple(history[i]))
                if report.passed or reroll >= gates.max_rerolls:
                    out[i] = dataclasses.replace(artwork, gates=report.to_json())
                    if report.passed:
                        gates.accept(task.token_id, task.stage, artwork.image_cid, png)
                else:
                    history[i].append(report.reasons)
                    failing.append(i)
            if not failing:
                break
            reroll += 1
            again = self.render([batch[i] for i in failing], [reroll] * len(failing))
            current.update(zip(failing, again, strict=True))
            todo = failing
        return [a for a in out if a is not None]

    def render(
        self, batch: Sequence[tuple[RenderTask, Inputs]], rerolls: Sequence[int]
    ) -> list[tuple[Artwork, bytes]]:
        """One model call for the batch: each artwork, with the unsigned PNG the model made."""
        pairs = [
            self.requests(task, inputs, reroll=n) for (task, inputs), n in zip(batch, rerolls, strict=True)
        ]
        images = self.image.generate([p[0] for p in pairs])
        lores = self.lore.write([p[1] for p in pairs])
        out: list[tuple[Artwork, bytes]] = []
        for (task, inputs), n, (image_req, lore_req), image, lore in zip(
            batch, rerolls, pairs, images, lores, strict=True
        ):
            previous = inputs.previous
            receipt = build_receipt(
                onchain_seed=self.onchain_seed(task, n),
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
            out.append((artwork, image.png))
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


def gate_failure(artwork: Artwork, label: str) -> GatesFailedError | None:
    """The error that fails a job whose artwork failed the gates on every try, when no curator reviews it."""
    if artwork.gates is None:
        return None
    report = GateReport.from_json(artwork.gates)
    if report.passed:
        return None
    return GatesFailedError(label, report, report.tries)
