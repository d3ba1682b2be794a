"""The publish stage: the metadata as ONE raw IPFS block, and the image, pinned through the Replicator.

The job goes on only once ``ipfs.replication`` backends confirmed both pins (:class:`ReplicationError`
otherwise, retryable; confirmed pins are kept, so a retry does no new work).
``(RenderTask, Inputs, Artwork) -> Published`` (:mod:`agent.domain`; the job's ``published`` record).

The digest is what ``fulfillEvolutions`` writes; the contract's ``tokenURI`` rebuilds the same CID from it.

With a token viewer (``viewer``: images made under the portable scheme, see :mod:`agent.ops.renderer`) the
metadata's ``animation_url`` opens the viewer on this version. A document cannot name its own CID, so the link names
the *core* document (the same metadata without ``animation_url``, :meth:`~agent.metadata.TokenMetadata.core`),
added and pinned beside it as another raw block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from agent.domain import Artwork, Inputs, ModelRef, Pin, Published, RenderTask
from agent.ipfs.backends.replicated import Replicator
from agent.ipfs.cid import CID
from agent.ipfs.repo import IpfsRepo
from agent.metadata import TokenMetadata, build_metadata, metadata_cid
from agent.pipeline.assets import AssetStore
from agent.pipeline.errors import AssetIntegrityError


@dataclass(frozen=True)
class TokenViewer:
    """The token viewer the metadata links to (see the module docstring).

    Attributes:
        link: The ``animation_url`` for a core document's CID.
        pins: What the link needs on every backend (the viewer site, the model's export, the rules), with a name
            each: replicated before the first metadata that links to them, so a backend that is down at the agent's
            start fails that job's publish (retryable), never the start.
    """

    link: Callable[[str], str]
    pins: tuple[tuple[CID, str], ...] = ()


class PublishStage:
    """Builds, stores and replicates one evolution's metadata and image.

    Args:
        repo: The embedded repo (the metadata block is added here first).
        replicator: Pins through every configured backend and counts confirmations.
        assets: Where the metadata copy is written for browsing.
        models: ``{"image": ModelRef, "lore": ModelRef}`` recorded in the metadata (their ids and weight digests).
        external_url: A template of the token's page (``{token_id}``), written as the metadata's ``external_url``.
        viewer: The token viewer (``animation_url``); None writes none.
    """

    def __init__(
        self,
        repo: IpfsRepo,
        replicator: Replicator,
        assets: AssetStore,
        models: Mapping[str, ModelRef],
        *,
        external_url: str | None = None,
        viewer: TokenViewer | None = None,
    ) -> None:
        self.repo = repo
        self.replicator = replicator
        self.assets = assets
        self.models = dict(models)
        self.external_url = external_url
        self.viewer = viewer
        self._viewer_replicated = False

    def metadata(
        self, task: RenderTask, inputs: Inputs, artwork: Artwork, *, approved_by: str | None = None
    ) -> bytes:
        """The canonical metadata bytes of one render (deterministic from the recorded stages)."""
        return self.document(task, inputs, artwork, approved_by=approved_by).encode()

    def document(
        self, task: RenderTask, inputs: Inputs, artwork: Artwork, *, approved_by: str | None = None
    ) -> TokenMetadata:
        """One render's metadata; with a viewer, its ``animation_url`` names the core document's CID."""
        previous = inputs.previous
        doc = build_metadata(
            name=inputs.token.name,
            lore=artwork.lore,
            image_cid=artwork.image_cid,
            traits=inputs.rules.traits,
            stage=inputs.token.stage,
            parent=previous.metadata_cid if previous else None,
            receipt=artwork.receipt,
            models=self.models,
            snapshot=inputs.snapshot,
            approved_by=approved_by,
            external_url=self.external_url.format(token_id=task.token_id) if self.external_url else None,
        )
        if self.viewer is None:
            return doc
        return replace(doc, animation_url=self.viewer.link(metadata_cid(doc.encode())))

    def run(
        self, task: RenderTask, inputs: Inputs, artwork: Artwork, *, approved_by: str | None = None
    ) -> Published:
        """Publish one render.

        ``artwork`` is the job's ``generated`` record, or in review mode the approved candidate's (which may
        be a regenerated revision); ``approved_by`` then names the curator in the metadata.

        Raises:
            AssetIntegrityError: the stored image no longer matches what the generate stage recorded.
            ReplicationError: too few backends confirmed a pin (retryable).
        """
        image_cid = CID.parse(artwork.image_cid)
        png = b"".join(self.repo.cat(image_cid))
        actual = hashlib.sha256(png).hexdigest()
        if actual != artwork.png_sha256:
            raise AssetIntegrityError(f"image {image_cid}", artwork.png_sha256, actual)
        doc = self.document(task, inputs, artwork, approved_by=approved_by)
        data = doc.encode()
        cid = self.repo.add_raw_block(data)
        assert str(cid) == metadata_cid(data)
        name = f"token {task.token_id} stage {task.stage}"
        pins = self.replicator.publish(image_cid, name=f"{name} image")
        if self.viewer is not None and doc.animation_url is not None and not self._viewer_replicated:
            for pinned, what in self.viewer.pins:  # confirmed pins are kept: a retry does no new work
                self.replicator.publish(pinned, name=what)
            self._viewer_replicated = True
        if doc.animation_url is not None:  # the document the viewer link names, before the link itself
            core = self.repo.add_raw_block(doc.core().encode())
            pins += self.replicator.publish(core, name=f"{name} metadata core")
        pins += self.replicator.publish(cid, name=f"{name} metadata")
        self.assets.write(task.token_id, task.stage, "json", data)
        return Published(
            metadata_cid=str(cid),
            digest="0x" + hashlib.sha256(data).hexdigest(),
            image_cid=str(image_cid),
            token_uri=f"ipfs://{cid}",
            provenance=artwork.provenance,
            approved_by=approved_by,
            pins=tuple(Pin(p.backend, str(p.cid), p.detail) for p in pins),
        )
