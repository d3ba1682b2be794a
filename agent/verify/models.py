"""Where the replay finds a receipt's image model: a path given on the command line, the copy shipped with
Chrysalis, the recorded location, or a model published on IPFS that the registry points to.

:func:`load_model_from_cid` is where a model published with ``chrysalis model publish`` (its directory pinned,
its CID registered on-chain as the model's URI) plugs in: it is called when the receipt's model is not on this
machine, with the registry's record and a verified :class:`~agent.ipfs.fetch.Fetcher`, and returns where the
fetched model lies, or why it could not be had (:class:`ModelMissing`: verify reports "cannot reproduce here",
exit 2). A published model whose files are not the registered ones is a mismatch (exit 1).

A portable image (``chrysalis-portable/1``) of the shipped model is replayed from the registered publication when
the registry names one on IPFS: its manifest names the pinned ONNX export, which is fetched with it (every file
checked against the manifest's digests) and used as it is, never exported again; the shipped copy (which exports
the model) only when the publication cannot be fetched.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agent.domain import ModelRef
from agent.errors import ChrysalisError
from agent.generate.published import PublishedModelError, is_ipfs_uri
from agent.generate.published import load_model_from_cid as load_published
from agent.ipfs.blockstore import FsBlockstore
from agent.ipfs.errors import CorruptBlockError
from agent.ipfs.fetch import Fetcher
from agent.verify.chain import RegistryRecord

MAX_MODEL_BYTES = 64 << 30
"""The largest model directory verify fetches (64 GiB)."""

SHIPPED_MANIFEST = (
    Path(__file__).resolve().parents[1] / "generate" / "shipped" / "sprites32" / "manifest.json"
)
"""The manifest of the image model shipped with Chrysalis (the embedded backend's)."""


@dataclass(frozen=True)
class ModelLocation:
    """Where the replay loads the image model from.

    Attributes:
        path: What to pass as ``verify(image_model=...)``; ``None``: where the receipt records it (a hub id or a
            path), or the shipped copy for the embedded backend.
        how: Said in the report (``the copy shipped with Chrysalis``, ``fetched from ipfs://...``).
    """

    path: str | None
    how: str


@lru_cache(maxsize=1)
def shipped_weights_sha256() -> str | None:
    """The weights digest of the shipped sprite model (None if the package lacks it)."""
    try:
        return str(json.loads(SHIPPED_MANIFEST.read_text())["weights_sha256"])
    except (OSError, ValueError, KeyError):
        return None


@dataclass(frozen=True)
class ModelMissing:
    """Why the image model cannot be had here (verify then says "cannot reproduce here", exit 2)."""

    reason: str
    hint: str


def locate_image_model(
    ref: ModelRef,
    record: RegistryRecord | None,
    *,
    fetcher: Fetcher,
    cache_dir: Path | None,
    override: str | None = None,
) -> ModelLocation | ModelMissing:
    """Where the receipt's image model is on this machine, or why it is not (nor fetchable).

    Args:
        ref: The receipt's image model. record: Its entry in the collection's registry (None: not registered).
        fetcher: Verified IPFS access (for a model published on IPFS). cache_dir: Where fetched models go.
        override: A location given by the user (``--image-model``).

    Raises:
        PublishedModelError: the model the registry points to is not the registered one (a file or the weights
            differ from what its manifest or the registry says): a mismatch, not a missing model.
    """
    if override:
        return ModelLocation(override, f"{override} (--image-model)")
    registered_on_ipfs = record is not None and is_ipfs_uri(record.manifest_uri)
    if ref.backend == "embedded" and ref.weights_sha256 == shipped_weights_sha256():
        # a portable image replays from the ONNX export the registered publication pins (the shipped copy's
        # manifest names none, so it would be exported again here); the shipped copy when that cannot be had
        if is_portable_ref(ref) and registered_on_ipfs:
            assert record is not None
            try:
                found = load_model_from_cid(record, fetcher=fetcher, cache_dir=cache_dir)
            except ChrysalisError as exc:  # the shipped copy replays it all the same: say why it is used
                found = ModelMissing(exc.message, exc.hint or "")
            if isinstance(found, ModelLocation):
                return found
            return ModelLocation(
                None,
                f"the copy shipped with Chrysalis (its ONNX export made here: the registered publication "
                f"{record.manifest_uri} could not be used: {found.reason})",
            )
        return ModelLocation(None, "the copy shipped with Chrysalis")
    if registered_on_ipfs:
        assert record is not None
        return load_model_from_cid(record, fetcher=fetcher, cache_dir=cache_dir)
    if ref.backend == "embedded":
        where = (
            f"its registry entry names {record.manifest_uri!r}, not ipfs://<CID>"
            if record
            else "it is not registered"
        )
        return ModelMissing(
            f"the image model {ref.model_id} (weights sha256 {ref.weights_sha256}) is not the one shipped with this "
            f"Chrysalis, and it cannot be fetched: {where}",
            "put the model on this machine (--image-model PATH), or use the Chrysalis version that ships it",
        )
    return ModelLocation(None, f"{ref.model_id} (as the receipt records it)")


def is_portable_ref(ref: ModelRef) -> bool:
    """Whether the receipt's image model ran under the portable scheme (its ``extra.runtime``)."""
    from agent.generate.portable.generator import PORTABLE_SCHEME

    return ref.extra.get("runtime") == PORTABLE_SCHEME


def load_model_from_cid(
    record: RegistryRecord, *, fetcher: Fetcher, cache_dir: Path | None
) -> ModelLocation | ModelMissing:
    """THE SEAM for models published on IPFS: load the model the registry's ``record.manifest_uri``
    (``ipfs://<directory CID>``) names into ``<cache_dir>/ipfs/<CID>`` through the verified ``fetcher`` (every
    block checked against its CID), every file checked against its publication manifest and the weights against
    the registry's digest (:func:`agent.generate.published.load_model_from_cid`); the replay then loads it as
    ``ipfs://<CID>``.

    Raises:
        PublishedModelError: the published files are not the registered model (a mismatch).
    """
    if cache_dir is None:
        return ModelMissing("no model cache to load the published model into", "set models.cache_dir")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # the model's blocks go to disk, not memory (weights can be gigabytes), and are dropped once it is in the cache
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as blocks:
        files = _FileByFile(
            Fetcher(
                fetcher.sources,
                timeout_s=fetcher.timeout_s,
                max_bytes=MAX_MODEL_BYTES,
                store=FsBlockstore(blocks, sync=False),
                limits=fetcher.reader.limits,
            )
        )
        try:
            load_published(record.manifest_uri, files, cache_dir, weights_sha256=record.weights_sha256)
        except PublishedModelError as exc:
            if isinstance(exc.__cause__, CorruptBlockError):  # a source's wrong bytes, not the model's
                raise exc.__cause__ from None
            raise
        except ChrysalisError as exc:
            return ModelMissing(
                f"the image model registered as model {record.model_id} ({record.manifest_uri}) could not be "
                f"fetched: {exc.message}",
                exc.hint or "pass a gateway (--gateway) or a node (--ipfs-api) that has the model",
            )
    return ModelLocation(
        record.manifest_uri,
        f"{record.manifest_uri} (model {record.model_id}), fetched into the model cache, every file checked",
    )


class _FileByFile:
    """The :class:`~agent.generate.published.ModelFetcher` shape over a fetcher: a directory's files are fetched
    one at a time, as the loader reads them."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    def fetch_file(self, cid: str) -> bytes:
        return self.fetcher.fetch_file(cid)

    def fetch_directory(self, cid: str) -> Mapping[str, bytes]:
        return self.fetcher.tree(cid)
