"""Regenerating a candidate in review with a new seed or strength, so that the result still verifies.

The new candidate is made from the old one's receipt alone: the same traits, prompt, lore request, previous
image (read back from the embedded repo by CID and checked against its sha256) and input snapshot hash; only the
seed and/or the strength change. A new seed is the next *reroll* of the request's on-chain seed
(:func:`agent.review.reroll_seed`): the receipt records it as its ``seed.onchain_seed`` and derives every
request seed from it as usual, so :func:`agent.generate.verify.verify` replays the new receipt like any other,
and anyone with the request's seed can recompute which reroll it was. The models are the studio's
``models`` settings, which must load the very models the receipt names (their weight digests are compared).
With ``[credentials]`` configured the new image is signed as the generate stage signs its images (Content
Credentials naming the token, the stage, the new receipt and the model), so an approved reroll is published signed.

With ``[gates]`` enabled, the new candidate passes the quality gates as the generate stage's candidates do
(:func:`regenerate_gated`): one that fails is made again with the next public reroll, up to ``gates.max_rerolls``
more times, and the candidate the curator sees carries its :class:`~agent.gates.GateReport` (every gate's result,
the reroll kept, why the earlier tries failed), flagged if it still fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable

from agent.credentials import CredentialClaim, ParentImage
from agent.domain import Artwork
from agent.errors import ChrysalisError, ConfigError, IntegrityError
from agent.gates import MAX_REROLLS, GateReport, Gates
from agent.generate.base import ImageRequest, LoreRequest
from agent.generate.receipt import InferenceReceipt, build_receipt, image_record, lore_record
from agent.generate.seed import derive_seed, onchain_seed_bytes
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.generate import ImageSigning
from agent.review import (
    Candidate,
    RegenerateRequest,
    ReviewConflictError,
    ReviewItem,
    ReviewStore,
    reroll_seed,
)
from agent.settings import ModelSettings

log = logging.getLogger("chrysalis.studio")


def regenerate(
    candidate: Candidate,
    request: RegenerateRequest,
    repo: IpfsRepo,
    models: ModelSettings,
    *,
    signing: ImageSigning | None = None,
    stage: int | None = None,
    parent_stage: int | None = None,
) -> Candidate:
    """The next revision of ``candidate``: generated with ``request``'s reroll and strength.

    ``signing``: signs the new image's Content Credentials for ``stage`` (the previous image, of ``parent_stage``,
    as its ingredient); without it, or without a stage (a genesis item), the image is stored unsigned.

    Raises:
        ConfigError: the configured models are not the receipt's, or the candidate has no request seed.
        IntegrityError: the previous image in the repo does not match the receipt's sha256.
        NotFoundError: the previous image is not in the repo.
    """
    from agent.generate import factory

    receipt = InferenceReceipt.from_json(dict(candidate.receipt))
    if not candidate.request_seed:
        raise ConfigError(
            "the candidate has no request seed to reroll", hint="reject it and let the job run again"
        )
    onchain = reroll_seed(candidate.request_seed, request.reroll)
    token_id = receipt.seed.token_id
    seed = derive_seed(onchain_seed_bytes(onchain), token_id)

    image_part = lore_part = None
    image_req = lore_req = None
    image = None
    init_cid: str | None = None
    if receipt.image is not None:
        generator = factory.load_image_generator(models)
        _same_model(
            "image",
            receipt.image.model.weights_sha256,
            generator.model_ref.weights_sha256,
            generator.model_ref.model_id,
        )
        recorded = receipt.image.request
        init = None
        init_cid = recorded.get("init_image_cid")
        if recorded.get("init_image_sha256"):
            if not init_cid:
                raise ConfigError(
                    "the receipt's previous image has no CID",
                    hint="this candidate cannot be regenerated here",
                )
            init = b"".join(repo.cat(init_cid))
            actual = hashlib.sha256(init).hexdigest()
            if actual != recorded["init_image_sha256"]:
                raise IntegrityError(
                    f"previous image {init_cid} hashes to {actual}, the receipt says {recorded['init_image_sha256']}",
                    hint="the IPFS repo is damaged: restore it from a backup or a pinning service",
                )
        strength = request.strength if request.strength is not None else recorded.get("strength")
        image_req = ImageRequest(
            traits=dict(recorded["traits"]),
            seed=seed,
            init_image=init,
            strength=float(strength) if strength is not None else 0.6,
            prompt=recorded.get("prompt"),
        )
        image = generator.generate([image_req])[0]
        image_part = image_record(generator, image_req, image, init_image_cid=init_cid)
    lore_text = candidate.lore
    if receipt.lore is not None:
        writer = factory.load_lore_writer(models)
        _same_model(
            "lore",
            receipt.lore.model.weights_sha256,
            writer.model_ref.weights_sha256,
            writer.model_ref.model_id,
        )
        recorded = receipt.lore.request
        lore_req = LoreRequest(
            name=recorded["name"],
            stage=int(recorded["stage"]),
            traits=dict(recorded["traits"]),
            facts=dict(recorded["facts"]),
            seed=seed,
        )
        lore = writer.write([lore_req])[0]
        lore_part = lore_record(writer, lore_req, lore)
        lore_text = lore.text
    new_receipt = build_receipt(
        onchain_seed=onchain,
        token_id=token_id,
        snapshot_sha256=receipt.input_snapshot_sha256,
        image=image_part,
        lore=lore_part,
    )
    if image is not None and image_part is not None:
        png = image.png
        if signing is not None and stage is not None:
            model = image_part.model
            claim = CredentialClaim(
                chain_id=signing.chain_id,
                contract=signing.contract,
                token_id=token_id,
                stage=stage,
                receipt_sha256=new_receipt.sha256(),
                weights_sha256=model.weights_sha256,
                model_id=model.model_id,
            )
            parent = None
            if image_req is not None and image_req.init_image is not None and init_cid:
                parent = ParentImage(
                    image_req.init_image, init_cid, stage if parent_stage is None else parent_stage
                )
            png = signing.credentials.sign(png, claim, parent=parent)
        image_cid = str(repo.add(png).cid)  # pinned in the embedded node only: for display
        png_sha256 = hashlib.sha256(png).hexdigest()
    else:
        image_cid, png_sha256 = candidate.image_cid, candidate.png_sha256
    return Candidate(
        Artwork(image_cid=image_cid, png_sha256=png_sha256, lore=lore_text, receipt=new_receipt.to_json()),
        traits=dict(candidate.traits),
        name=candidate.name,
        request_seed=candidate.request_seed,
        reroll=request.reroll,
    )


def regenerate_gated(
    candidate: Candidate,
    request: RegenerateRequest,
    repo: IpfsRepo,
    models: ModelSettings,
    *,
    gates: Gates | None,
    token_id: int | None = None,
    signing: ImageSigning | None = None,
    stage: int | None = None,
    parent_stage: int | None = None,
) -> Candidate:
    """:func:`regenerate`, then the quality gates on the new candidate, as the generate stage runs them.

    A candidate that fails is regenerated with the next public reroll (same strength), up to
    ``gates.max_rerolls`` more times (never past ``MAX_REROLLS``); the last try is kept. The result carries the
    :class:`~agent.gates.GateReport` (``artwork.gates``: the reroll kept, the request's seed, the reasons the
    earlier tries failed), so the review queue shows it like any gated candidate, flagged if it still fails. A
    passing image of a token (``token_id``) joins the near-duplicate index at ``stage``, replacing the earlier
    candidate's. ``gates`` None: :func:`regenerate` alone (no report).

    Raises:
        What :func:`regenerate` raises; ConfigError: a ``gates.metrics`` plug-in misbehaves.
    """

    def make(req: RegenerateRequest) -> Candidate:
        return regenerate(
            candidate, req, repo, models, signing=signing, stage=stage, parent_stage=parent_stage
        )

    new = make(request)
    if gates is None:
        return new
    limit = min(request.reroll + gates.max_rerolls, MAX_REROLLS)
    history: list[tuple[str, ...]] = []
    while True:
        receipt = InferenceReceipt.from_json(dict(new.receipt))
        model = receipt.image.model if receipt.image is not None else None
        png = b"".join(repo.cat(new.image_cid)) if receipt.image is not None else None
        results = gates.check(
            png=png,
            lore=new.lore if receipt.lore is not None else None,
            traits=dict(receipt.image.request["traits"]) if receipt.image is not None else dict(new.traits),
            backend=model.backend if model is not None else None,
            token_id=receipt.seed.token_id if token_id is None else token_id,
            weights_sha256=model.weights_sha256 if model is not None else None,
            palettes=model.extra.get("palettes") if model is not None else None,
        )
        report = GateReport(tuple(results), new.reroll, new.request_seed, tuple(history))
        if report.passed or new.reroll >= limit:
            break
        history.append(report.reasons)
        again = RegenerateRequest(new.reroll + 1, request.strength, request.requested_by)
        new = make(again)
    if report.passed and png is not None and token_id is not None and stage is not None:
        gates.accept(token_id, stage, new.image_cid, png)
    return dataclasses.replace(new, artwork=dataclasses.replace(new.artwork, gates=report.to_json()))


def _same_model(role: str, recorded: str, loaded: str, loaded_id: str) -> None:
    if recorded != loaded:
        raise ConfigError(
            f"the studio's {role} model {loaded_id} (weights {loaded[:12]}...) is not the one that made this "
            f"candidate (weights {recorded[:12]}...)",
            hint=f"point the studio's models.{role}_* settings at the agent's {role} model",
        )


class Regenerator:
    """Works through items waiting to be regenerated, one at a time, on a background thread.

    ``gates`` builds the quality gates for each regeneration (with the near-duplicate index as the database holds
    it then; None: ungated): see :func:`regenerate_gated`."""

    def __init__(
        self,
        store: ReviewStore,
        repo: IpfsRepo,
        models: ModelSettings,
        *,
        poll_s: float = 1.0,
        signing: ImageSigning | None = None,
        gates: Callable[[], Gates | None] | None = None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.models = models
        self.poll_s = poll_s
        self.signing = signing
        self.gates = gates
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> ReviewItem | None:
        """Regenerate the oldest waiting item; returns it as stored afterwards (None when none waits)."""
        item = self.store.next_regeneration()
        if item is None or item.regenerate is None:
            return None
        try:
            candidate = regenerate_gated(
                item.candidate,
                item.regenerate,
                self.repo,
                self.models,
                gates=self.gates() if self.gates is not None else None,
                token_id=item.token_id,
                signing=self.signing if item.token_id is not None else None,
                stage=item.stage,
                parent_stage=item.stage - 1 if item.kind == "evolve" else item.stage,
            )
        except ChrysalisError as exc:
            log.warning("regenerating review #%d failed: %s", item.id, exc)
            message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            try:
                return self.store.fail_regeneration(item.id, item.revision, message)
            except ReviewConflictError as conflict:
                return conflict.item
        except Exception as exc:
            log.exception("regenerating review #%d failed", item.id)
            return self.store.fail_regeneration(item.id, item.revision, f"{type(exc).__name__}: {exc}")
        try:
            return self.store.finish_regeneration(item.id, item.revision, candidate)
        except ReviewConflictError as exc:  # another studio process finished it first: keep theirs
            log.info("review #%d was regenerated elsewhere: %s", item.id, exc.message)
            return exc.item

    def kick(self) -> None:
        """Look for work now (after a curator asked)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="chrysalis-regenerate", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while not self._stop.is_set() and self.run_once() is not None:
                    pass
            except ChrysalisError as exc:  # the database blinked: try again on the next round
                log.warning("regenerator: %s", exc)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
