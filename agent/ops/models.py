"""Models on IPFS, pointed at from the chain: ``chrysalis model publish`` and ``chrysalis model fetch``.

Publishing pins the whole model directory (weights, configs, its manifest, model card, samples) and a
publication manifest (:mod:`agent.generate.published`: every file's sha256, the weights digest) as one UnixFS
directory in the embedded repo, replicates it through the configured backends as the publish stage does, and
registers it: ``registerModel(weightsDigest, "ipfs://<directory CID>")`` from the admin's key. The directory CID is
the one ``ipfs add -r --cid-version=1`` gives for the same files, so the registry's URI names exactly these bytes.

An embedded sprite model is published with its portable ONNX export (``unet.onnx`` + ``scheduler.json``, made
by :func:`agent.generate.portable.onnx_export.export_sprite_model`, byte-identical for the same model and the same
torch/onnx versions): pinned as a UnixFS directory of its own, replicated as the model is, and named by the
publication manifest's ``portable`` entry (CID, both sha256, opset). The model directory's CID therefore covers
the export's bytes too (and depends on the torch/onnx versions that made them); ``portable=False`` publishes
without it, which gives the CID a publication made before the export was pinned.

Fetching reads a model record (``modelRecord(id)``) or a URI, loads the directory into the model cache with every
file checked against the manifest and the weights against the record, and says which setting loads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from agent.errors import ConfigError, IntegrityError, NotFoundError, PermanentError
from agent.generate.factory import model_dir, publishable_image_model
from agent.generate.published import (
    PORTABLE_DIGESTS,
    PUBLICATION_MANIFEST,
    ModelFetcher,
    PublishableModel,
    describe_model_dir,
    is_ipfs_uri,
    load_model_from_cid,
    model_uri,
    parse_model_uri,
    read_manifest,
)
from agent.ipfs.cid import CID, RAW
from agent.ipfs.directory import validate_name
from agent.ipfs.errors import NodeKindError
from agent.ipfs.fetch import DEFAULT_FETCH_TIMEOUT_S, Fetcher, make_fetcher
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import AddResult, DirEntry, IpfsRepo, is_repo
from agent.settings import Settings

ADMIN_ROLE = b"\x00" * 32
"""AccessControl's ``DEFAULT_ADMIN_ROLE``: who may register models."""


# -- a verified fetcher, file by file ------------------------------------------------------------------------


class FileByFile:
    """:class:`~agent.generate.published.ModelFetcher` over a verified :class:`~agent.ipfs.fetch.Fetcher` (the
    local repo, Kubo nodes, gateways: every block checked against its CID) whose directories are read one file at
    a time, when the loader asks for it: a block that fails its check is then reported with the file it belongs
    to, and a large model is never all in memory. The whole DAG is still asked for as one CAR first, where a
    source offers that."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    def fetch_file(self, cid: str) -> bytes:
        return self.fetcher.fetch_file(cid)

    def fetch_directory(self, cid: str) -> Mapping[str, bytes]:
        root = CID.parse(cid)
        info = self.fetcher.reader.info(root)
        if info.kind != "directory":
            raise NodeKindError(root, info.kind, "directory", hint="a published model is a directory CID")
        self.fetcher.prefetch(root)
        return _LazyTree(self.fetcher, dict(self._walk(root, "")))

    def _walk(self, directory: CID, prefix: str) -> Iterator[tuple[str, CID]]:
        reader = self.fetcher.reader
        for link in reader.entries(directory):
            validate_name(link.name)
            path = f"{prefix}{link.name}"
            if link.cid.codec != RAW and reader.info(link.cid).kind == "directory":
                yield from self._walk(link.cid, path + "/")
            else:
                yield path, link.cid


class _LazyTree(Mapping[str, bytes]):
    """Relative path -> bytes of a directory's files, each fetched (and verified) when asked for."""

    def __init__(self, fetcher: Fetcher, cids: dict[str, CID]) -> None:
        self._fetcher = fetcher
        self._cids = cids

    def __getitem__(self, path: str) -> bytes:
        return self._fetcher.fetch_file(self._cids[path])

    def __contains__(self, path: object) -> bool:  # without reading the file (Mapping's default would)
        return path in self._cids

    def __iter__(self) -> Iterator[str]:
        return iter(self._cids)

    def __len__(self) -> int:
        return len(self._cids)


def model_fetcher(
    settings: Settings,
    *,
    gateways: Sequence[str] = (),
    ipfs_apis: Sequence[str] = (),
    timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
) -> FileByFile:
    """A verified fetcher over the embedded repo (when it exists, or when no other source is named), then the Kubo
    APIs, then the gateways."""
    repo = None
    if is_repo(settings.ipfs_repo) or not (gateways or ipfs_apis):
        repo = open_repo(settings)
    return FileByFile(
        make_fetcher(
            repo=repo,
            gateways=gateways,
            ipfs_apis=ipfs_apis,
            timeout_s=timeout_s,
            limits=DagLimits.from_settings(settings.ipfs),
        )
    )


def open_repo(settings: Settings) -> IpfsRepo:
    """The embedded repo every command uses (``ipfs.repo``, else ``<data_dir>/ipfs``)."""
    return IpfsRepo(settings.ipfs_repo, limits=DagLimits.from_settings(settings.ipfs))


# -- pinning ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedModel:
    """A model directory pinned in a repo: its CID and what the publication manifest says."""

    model: PublishableModel
    cid: CID

    @property
    def uri(self) -> str:
        return model_uri(str(self.cid))

    @property
    def portable_cid(self) -> CID | None:
        """The pinned ONNX export's directory CID (an embedded sprite model's), or None."""
        ref = self.model.portable
        return None if ref is None else CID.parse(str(ref["cid"]))


class _HashingReader:
    """Reads a file for the importer while hashing it, so what is pinned is what the manifest lists."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.sha256.update(data)
        return data


_EXPORTS: dict[tuple[Any, ...], dict[str, bytes]] = {}
"""Export bytes made in this process, by source files and torch version (an export takes ~10 s)."""


def portable_export_bytes(model: PublishableModel) -> tuple[dict[str, bytes], int]:
    """The ONNX export of the embedded sprite model ``model`` (``{file name: bytes}``) and its opset, made now
    (once per process for the same files and torch version) into a temporary directory.

    Raises:
        ModelDigestError: the model's files differ from its ``manifest.json``.
    """
    import torch

    from agent.generate.portable.onnx_export import OPSET, export_sprite_model

    key = (
        str(model.directory),
        tuple(sorted((p, f.sha256) for p, f in model.files.items())),
        torch.__version__,
    )
    if key not in _EXPORTS:
        with tempfile.TemporaryDirectory(prefix="chrysalis-export-") as tmp:
            export_sprite_model(model.directory, tmp)
            _EXPORTS[key] = {name: (Path(tmp) / name).read_bytes() for name in PORTABLE_DIGESTS}
    return dict(_EXPORTS[key]), OPSET


def pin_portable(repo: IpfsRepo, model: PublishableModel) -> PublishableModel:
    """Pin the portable ONNX export of an embedded sprite model as its own UnixFS directory (``unet.onnx``,
    ``scheduler.json``) and return ``model`` with :attr:`~PublishableModel.portable` naming it; any other model
    is returned as it is. The same model and torch/onnx versions always give the same export CID.

    Raises:
        PinnedExportError: the model's own ``manifest.json`` names an export whose digests differ from the export
            made here (naming the file and both digests).
    """
    from agent.generate.published import PinnedExportError

    if not model.is_sprite_model:
        return model
    files, opset = portable_export_bytes(model)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    named = model.portable
    if named is not None:
        for name, key in PORTABLE_DIGESTS.items():
            if named[key] != digests[name]:
                raise PinnedExportError(
                    f"{model.directory / 'manifest.json'} names {key} {named[key]} (pinned export "
                    f"{named['cid']}), but exporting the model here gives {name} with sha256 {digests[name]}",
                    path=name,
                    hint="publish with the torch/onnx versions that made the named export, or remove the portable "
                    "entry from the model's manifest.json to pin the export made here",
                )
    entries: dict[str, CID | AddResult | DirEntry] = {
        name: repo.add(files[name], pin=False) for name in sorted(files)
    }
    cid = repo.add_directory(entries, pin=True)
    if named is not None and named["cid"] != str(cid):
        raise PinnedExportError(
            f"{model.directory / 'manifest.json'} names the pinned export {named['cid']}, but the same files "
            f"give {cid}",
            path="manifest.json",
            hint="fix the portable entry's cid in the model's manifest.json (or remove the entry)",
        )
    ref = {
        "cid": str(cid),
        "unet_onnx_sha256": digests["unet.onnx"],
        "scheduler_sha256": digests["scheduler.json"],
        "opset": opset,
    }
    return dataclasses.replace(model, portable=ref)


def pin_model(repo: IpfsRepo, model: PublishableModel, *, portable: bool = True) -> PinnedModel:
    """Add every file of ``model`` and its publication manifest to ``repo`` as one UnixFS directory (subdirectories
    as directories), pinned recursively. The same files always give the same CID (pinning twice is free).

    An embedded sprite model's ONNX export is pinned first (:func:`pin_portable`) and named by the manifest;
    ``portable=False`` leaves it out (and drops a ``portable`` entry the model's own manifest gives).

    Raises:
        IntegrityError: a file changed since it was hashed (naming it).
        PinnedExportError: the model's own manifest names an export other than the one made here.
    """
    model = pin_portable(repo, model) if portable else dataclasses.replace(model, portable=None)
    tree: dict[str, Any] = {}
    for relative in model.files:
        *parents, name = relative.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = relative
    tree[PUBLICATION_MANIFEST] = None  # the manifest itself

    def build(node: Mapping[str, Any], *, top: bool) -> CID:
        entries: dict[str, CID | AddResult | DirEntry] = {}
        for name, child in sorted(node.items()):
            if isinstance(child, dict):
                entries[name] = build(child, top=False)
            elif child is None:
                entries[name] = repo.add(model.manifest_bytes(), pin=False)
            else:
                entries[name] = _add_file(repo, model, child)
        return repo.add_directory(entries, pin=top)

    return PinnedModel(model, build(tree, top=True))


def _add_file(repo: IpfsRepo, model: PublishableModel, relative: str) -> AddResult:
    path = model.directory / relative
    with open(path, "rb") as stream:
        reader = _HashingReader(stream)
        added = repo.add(cast(IO[bytes], reader), pin=False)  # the importer only calls read(size)
    want = model.files[relative].sha256
    if reader.sha256.hexdigest() != want:
        raise IntegrityError(
            f"{path} changed while it was being published (sha256 {reader.sha256.hexdigest()}, was {want})",
            hint="publish again once nothing is writing to the model directory",
        )
    return added


# -- the registry -------------------------------------------------------------------------------------------------


class ModelUriConflictError(PermanentError):
    """The weights digest is registered already, with another URI (records are immutable)."""


@dataclass(frozen=True)
class Registration:
    """The model's record in the registry after publishing.

    Attributes:
        model_id: its registry id. status: ``registered`` (now) or ``already registered`` (same digest, same URI).
        tx_hash: the ``registerModel`` transaction (None when it was there already). activated: ``setActiveModel``
            was sent now. active: it is the active model.
    """

    model_id: int
    status: str
    uri: str
    tx_hash: str | None = None
    activated: bool = False
    active: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "status": self.status,
            "uri": self.uri,
            "tx_hash": self.tx_hash,
            "activated": self.activated,
            "active": self.active,
        }


def _digest_bytes(digest: str) -> bytes:
    return bytes.fromhex(digest.removeprefix("0x"))


def registered(collection: Any, digest: str) -> tuple[int, str] | None:
    """``(model id, manifest URI)`` of the weights ``digest`` in the registry, or None."""
    model_id = int(collection.view("modelIdOf", _digest_bytes(digest)))
    if not model_id:
        return None
    _digest, uri, _at = collection.view("modelRecord", model_id)
    return model_id, str(uri)


def check_not_conflicting(collection: Any, digest: str, uri: str) -> tuple[int, str] | None:
    """The existing record for ``digest``, if any; raises when it names another URI.

    Raises:
        ModelUriConflictError: registered with another URI.
    """
    found = registered(collection, digest)
    if found is not None and found[1] != uri:
        model_id, recorded = found
        raise ModelUriConflictError(
            f"weights 0x{digest} are registered already as model {model_id} of {collection.address} with URI "
            f"{recorded or '(empty)'}, not {uri}",
            hint="a model record is immutable, one per weights digest: if "
            + (f"{recorded} holds the same weights, fetch it from there (chrysalis model fetch --model {model_id})"
               if is_ipfs_uri(recorded) else "the record was made without a URI, it stays so")
            + "; the directory published now differs (another model card, config or sample changes its CID, and so "
            "does the ONNX export an embedded sprite model is now published with, whose bytes depend on the "
            "torch/onnx versions), so restore the published files to republish the same CID (--no-portable "
            "publishes without the export, as before it was pinned), or use --no-register to only pin it",
        )  # fmt: skip
    return found


def register_model(
    collection: Any, signer: Any, digest: str, uri: str, *, activate: bool = False
) -> Registration:
    """``registerModel(digest, uri)`` from ``signer`` unless the same record exists (idempotent), then
    ``setActiveModel`` when ``activate``.

    Raises:
        ModelUriConflictError: the digest is registered with another URI.
        ConfigError: ``signer`` is not the collection's admin. RevertError: the contract refused otherwise.
    """
    from agent.pipeline.holder import HolderActionRevertedError
    from agent.submit.errors import RevertError
    from agent.submit.sender import TxRequest, Web3TxSender

    found = check_not_conflicting(collection, digest, uri)
    sender = Web3TxSender(collection.rpc, signer, collection.submit, decoder=collection.rpc.decoder)

    def send(method: str, *args: Any) -> str:
        if not collection.view("hasRole", ADMIN_ROLE, signer.address):
            raise ConfigError(
                f"{signer.address} is not an admin of {collection.address}: it cannot {method}",
                hint="send from the collection's admin (the deployer unless the role was handed over): "
                "--from ADMIN_ACCOUNT",
            )
        data = bytes.fromhex(collection.contract.encode_abi(method, args=list(args))[2:])
        try:
            done = sender.wait(sender.send(TxRequest(to=collection.address, data=data, label=method)))
        except RevertError as exc:
            raise HolderActionRevertedError(
                method, exc.error, tx_hash=getattr(exc, "tx_hash", None), detail=exc.hint or ""
            ) from None
        return str(done.tx_hash)

    tx_hash = None
    if found is None:
        try:
            tx_hash = send("registerModel", _digest_bytes(digest), uri)
        except HolderActionRevertedError as exc:
            if exc.error.name != "LivingCollectionModelExists":
                raise
            check_not_conflicting(collection, digest, uri)  # registered meanwhile: fine if with this URI
        found = registered(collection, digest)
        if found is None:
            raise PermanentError(
                f"registerModel was mined but modelIdOf(0x{digest}) is 0 on {collection.address}",
                hint="is the deployment record current? check the node",
            )
    model_id = found[0]
    activated = False
    if activate and int(collection.view("activeModel")) != model_id:
        send("setActiveModel", model_id)
        activated = True
    return Registration(
        model_id=model_id,
        status="registered" if tx_hash else "already registered",
        uri=uri,
        tx_hash=tx_hash,
        activated=activated,
        active=int(collection.view("activeModel")) == model_id,
    )


# -- the commands' work ----------------------------------------------------------------------------------------


@dataclass
class Published:
    """What ``chrysalis model publish`` did."""

    pinned: PinnedModel
    pins: list[str] = field(default_factory=list)
    registration: Registration | None = None
    collection: str | None = None
    chain_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.pinned.model
        return {
            "model_id": m.model_id,
            "kind": m.kind,
            "backend": m.backend,
            "directory": str(m.directory),
            "weights_sha256": m.weights_sha256,
            "cid": str(self.pinned.cid),
            "uri": self.pinned.uri,
            "files": len(m.files) + 1,
            "bytes": m.size,
            "portable": None if m.portable is None else dict(m.portable),
            "pins": self.pins,
            "registry": None
            if self.registration is None
            else {"collection": self.collection, "chain_id": self.chain_id, **self.registration.to_json()},
        }


def publishable(settings: Settings, model: str | None) -> PublishableModel:
    """``model`` (a directory, or ``ipfs://<CID>`` in the model cache) to publish; None: the configured image
    model."""
    if model is None:
        return publishable_image_model(settings.models)
    if is_ipfs_uri(model):
        return describe_model_dir(model_dir(model, settings.models.cache_dir, setting="MODEL"))
    return describe_model_dir(Path(model))


def replicate(settings: Settings, repo: IpfsRepo, pinned: PinnedModel) -> list[str]:
    """Pin ``pinned`` through the configured backends (``ipfs.replication`` must confirm, as for every asset the
    agent publishes); the names of those that confirmed."""
    from agent.ipfs.backends.replicated import Replicator

    with Replicator.from_settings(settings.ipfs, repo) as replicator:
        if pinned.portable_cid is not None:  # the export first: the model's manifest names it
            replicator.publish(pinned.portable_cid, name=f"model {pinned.model.model_id} ONNX export")
        receipts = replicator.publish(pinned.cid, name=f"model {pinned.model.model_id}")
    return [r.backend for r in receipts]


def pin_for_deploy(settings: Settings, model: str | None = None) -> PinnedModel:
    """``chrysalis deploy --publish-model``: the model (default: the configured image model) pinned and
    replicated (with its ONNX export, as ``chrysalis model publish`` pins it, so both give the same CID), so the
    deployment registers its weights digest with its ``ipfs://`` URI."""
    repo = open_repo(settings)
    pinned = pin_model(repo, publishable(settings, model))
    replicate(settings, repo, pinned)
    return pinned


def publish_model(
    settings: Settings,
    model: str | None = None,
    *,
    signer_spec: str = "0",
    register: bool = True,
    activate: bool = False,
    password_file: Path | None = None,
    portable: bool = True,
) -> Published:
    """Pin ``model`` (default: the configured image model), replicate it, and register it on the collection of
    ``settings.chain.deployment`` from ``signer_spec`` (see :func:`register_model`); ``register=False`` only pins.
    ``portable=False`` leaves an embedded sprite model's ONNX export out (see :func:`pin_model`).
    """
    to_publish = publishable(settings, model)
    repo = open_repo(settings)
    pinned = pin_model(repo, to_publish, portable=portable)
    collection = signer = None
    if register:  # a conflicting record is refused before anything is replicated or signed
        from agent.ops.accounts import load_account
        from agent.pipeline.holder import Collection

        try:
            collection = Collection.connect(settings)
        except NotFoundError as exc:  # no deployment record: say how to pin without one
            raise NotFoundError(
                exc.message, hint=f"{exc.hint}; or only pin the model: --no-register"
            ) from None
        check_not_conflicting(collection, to_publish.weights_sha256, pinned.uri)
        signer = load_account(
            signer_spec,
            chain_id=collection.chain_id,
            password_file=password_file or settings.signer.password_file,
            password_env=settings.signer.password_env,
        )
    done = Published(pinned, pins=replicate(settings, repo, pinned))
    if collection is not None:
        done.registration = register_model(
            collection, signer, to_publish.weights_sha256, pinned.uri, activate=activate
        )
        done.collection, done.chain_id = collection.address, collection.chain_id
    return done


@dataclass(frozen=True)
class Fetched:
    """What ``chrysalis model fetch`` loaded."""

    cid: str
    path: Path
    weights_sha256: str
    model_id: str
    registry_id: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "uri": model_uri(self.cid),
            "path": str(self.path),
            "weights_sha256": self.weights_sha256,
            "model_id": self.model_id,
            "registry_id": self.registry_id,
        }


def record_of(settings: Settings, registry_id: int | None) -> tuple[int, str, str]:
    """``(id, weights digest hex, URI)`` of model ``registry_id`` (None: the active model) in the registry."""
    from agent.pipeline.holder import Collection

    collection = Collection.connect(settings)
    count = int(collection.view("modelCount"))
    model_id = int(collection.view("activeModel")) if registry_id is None else registry_id
    if not 1 <= model_id <= count:
        raise NotFoundError(
            f"collection {collection.address} has no model {model_id} (models 1-{count} are registered)"
            if model_id
            else f"collection {collection.address} has no active model",
            hint="name a registered model with --model N",
        )
    digest, uri, _at = collection.view("modelRecord", model_id)
    return model_id, bytes(digest).hex(), str(uri)


def fetch_model(
    settings: Settings,
    uri: str | None = None,
    *,
    registry_id: int | None = None,
    weights_sha256: str | None = None,
    gateways: Sequence[str] = (),
    ipfs_apis: Sequence[str] = (),
    timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
    fetcher: ModelFetcher | None = None,
) -> Fetched:
    """Load a published model into the model cache, every file checked.

    With ``uri`` alone, the files are checked against the publication manifest (and ``weights_sha256`` when
    given); without it, or with ``registry_id``, the URI and the weights digest come from the registry's record.
    The bytes come from ``fetcher``, else from :func:`model_fetcher` (the embedded repo, ``ipfs_apis``,
    ``gateways``), every block checked against its CID.
    """
    recorded = None
    if uri is None or registry_id is not None:
        recorded, digest, recorded_uri = record_of(settings, registry_id)
        if not is_ipfs_uri(recorded_uri):
            raise NotFoundError(
                f"model {recorded}'s record names no IPFS directory (URI {recorded_uri or '(empty)'})",
                hint="only models published with `chrysalis model publish` can be fetched from the chain's record",
            )
        if uri is not None and parse_model_uri(uri) != parse_model_uri(recorded_uri):
            raise ConfigError(
                f"{uri} is not what model {recorded}'s record names ({recorded_uri})",
                hint="leave the URI out to use the record's",
            )
        uri, weights_sha256 = recorded_uri, digest
    cid = parse_model_uri(uri)
    path = load_model_from_cid(
        cid,
        fetcher or model_fetcher(settings, gateways=gateways, ipfs_apis=ipfs_apis, timeout_s=timeout_s),
        settings.models.cache_dir,
        weights_sha256=weights_sha256,
    )
    manifest = read_manifest((path / PUBLICATION_MANIFEST).read_bytes(), where=str(path))
    return Fetched(cid, path, manifest["weights_sha256"], str(manifest.get("model_id", "")), recorded)
