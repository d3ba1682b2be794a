"""Models published on IPFS: the publication manifest, and loading a model from its CID into the model cache.

A published model is one UnixFS directory: every file of the model directory (weights, configs, its own manifest,
model card, samples) plus :data:`PUBLICATION_MANIFEST`, which lists each of those files with its sha256 and size,
and the weights digest the contract's model registry records (``registerModel(weightsDigest, "ipfs://<dir CID>")``)::

    {"format": "chrysalis-model/1", "model_id": "chrysalis/sprites-32@1", "kind": "image", "backend": "embedded",
     "weights_sha256": "9178ee7d...", "weights_files": ["diffusion_pytorch_model.safetensors"],
     "files": {"MODEL_CARD.md": {"sha256": "...", "size": 2851}, ...}, "digest_rule": "..."}

The weights digest follows the generators' rule (:func:`agent.generate.runtime.weights_digest` over every weight
file): a one-file model's digest is that file's sha256, what ``sha256sum`` prints.

:func:`load_model_from_cid` fetches such a directory through any :class:`ModelFetcher` (the embedded repo, a
gateway or a Kubo node whose blocks are checked against their CIDs), checks every file against the manifest and
the weights digest against the on-chain record, and only then moves it into ``<cache_dir>/ipfs/<CID>``. The
factories load ``models.image_model = "ipfs://<CID>"`` (or ``lore_model``) from there, re-checking every file.

An embedded sprite model's publication also carries its portable export (``unet.onnx`` + ``scheduler.json``, see
:mod:`agent.generate.portable.onnx_export`), pinned as a UnixFS directory of its own beside the model's and named by
the manifest's ``portable`` entry (:data:`PORTABLE_KEY`)::

    "portable": {"cid": "bafy...", "unet_onnx_sha256": "...", "scheduler_sha256": "...", "opset": 17}

:func:`load_model_from_cid` fetches that directory too, every file checked against those digests, into
``<cache_dir>/portable/<export CID>`` (:func:`portable_cache_path`), where the portable generator and ``verify``
use it instead of exporting the model again.

This module imports no IPFS code (the package graph keeps ``agent.generate`` and ``agent.ipfs`` independent): the
fetcher is handed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from agent.errors import ChrysalisError, ConfigError, IntegrityError, NotFoundError
from agent.generate.runtime import WEIGHT_SUFFIXES, file_sha256, weights_digest

PUBLICATION_MANIFEST = "chrysalis-model.json"
"""The file in a published model directory that lists every other file with its sha256."""
FORMAT = "chrysalis-model/1"
CACHE_SUBDIR = "ipfs"
"""Models loaded from a CID live in ``<models.cache_dir>/ipfs/<CID>``."""
SKIPPED_PARTS = frozenset({".cache", "__pycache__", ".git"})
"""Directories never published (caches, bytecode, version control)."""
SKIPPED_NAMES = frozenset({"__init__.py", ".DS_Store"})
"""Files never published: a package marker is how the shipped model travels in the wheel, not part of it."""
DIGEST_RULE = (
    "weights_sha256 = sha256 of the one weight file (as `sha256sum` prints it), or, for several, sha256 of the "
    'canonical JSON {"relative/path": sha256} of every weight file ('
    + ", ".join(WEIGHT_SUFFIXES)
    + "); it is "
    "the digest the contract's model registry records. `files` lists every file of this directory but this "
    "manifest, with its sha256 and size; a loader refuses the directory if any differs, is missing or is extra."
)
PORTABLE_KEY = "portable"
"""The manifest entry (of the publication manifest, or of a sprite model's own ``manifest.json``) naming the
model's pinned ONNX export."""
PORTABLE_SUBDIR = "portable"
"""Pinned exports live in ``<models.cache_dir>/portable/<export CID>`` (beside the exports made locally, which are
keyed by weights digest)."""
PORTABLE_DIGESTS = {"unet.onnx": "unet_onnx_sha256", "scheduler.json": "scheduler_sha256"}
"""The export's files (``onnx_export.ONNX_NAME`` / ``CONSTANTS_NAME``) and the ``portable`` keys of their sha256."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CID = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{20,})$")


class ModelFetcher(Protocol):
    """Where a published model's bytes come from: the embedded repo, a gateway, a Kubo node.

    An implementation checks what it fetches against the CIDs that name it; :func:`load_model_from_cid` then
    checks every file against the publication manifest (so even a fetcher that does not is caught, file by file).
    """

    def fetch_file(self, cid: str) -> bytes:
        """The bytes of the UnixFS file (or raw block) ``cid``."""
        ...

    def fetch_directory(self, cid: str) -> Mapping[str, bytes]:
        """Every file under the UnixFS directory ``cid``, by relative POSIX path (``"unet/config.json"``).

        The mapping may fetch each file when it is read (models are large); an error reading one propagates.
        """
        ...


class PublishedModelError(IntegrityError):
    """A published model's files are not the ones its manifest (or the chain's record) names.

    Attributes:
        path: the file that differs, is missing or is extra (relative to the model directory), or None when the
            problem is the manifest or the weights digest as a whole.
    """

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint=hint)


@dataclass(frozen=True)
class ModelFile:
    """One file of a model directory: its path (relative, POSIX), sha256 and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class PublishableModel:
    """A model directory ready to be published: every file with its digest, and the weights digest.

    Attributes:
        directory: the model directory on disk.
        model_id: what receipts call the model (the sprite manifest's id, or the configured source).
        kind: ``image`` or ``lore``. backend: the generator family (``embedded``, ``diffusers``, ``transformers``).
        weights_sha256: the digest the registry records (see :data:`DIGEST_RULE`).
        files: every file to publish, by relative path (the publication manifest excluded).
        portable: the pinned ONNX export the manifest names (:data:`PORTABLE_KEY`), None when it names none (set
            by :func:`agent.ops.models.pin_model` for an embedded sprite model; read from a sprite model's own
            ``manifest.json`` when that names one).
    """

    directory: Path
    model_id: str
    kind: str
    backend: str
    weights_sha256: str
    files: Mapping[str, ModelFile] = field(default_factory=dict)
    portable: Mapping[str, Any] | None = None

    @property
    def weights_files(self) -> list[str]:
        return sorted(p for p in self.files if _is_weight(p))

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def is_sprite_model(self) -> bool:
        """An embedded sprite model (the only kind with a portable ONNX export)."""
        return self.kind == "image" and self.backend == "embedded"

    def manifest(self) -> dict[str, Any]:
        """The publication manifest (:data:`PUBLICATION_MANIFEST`) as JSON data."""
        out = {
            "format": FORMAT,
            "model_id": self.model_id,
            "kind": self.kind,
            "backend": self.backend,
            "weights_sha256": self.weights_sha256,
            "weights_files": self.weights_files,
            "digest_rule": DIGEST_RULE,
            "files": {p: {"sha256": f.sha256, "size": f.size} for p, f in sorted(self.files.items())},
        }
        if self.portable is not None:
            out[PORTABLE_KEY] = dict(self.portable)
        return out

    def manifest_bytes(self) -> bytes:
        """The manifest's bytes: the same model always gives the same bytes (so the same directory CID)."""
        return (json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n").encode()


def _is_weight(path: str) -> bool:
    return path.endswith(WEIGHT_SUFFIXES) and ".cache" not in PurePosixPath(path).parts


def _skipped(relative: PurePosixPath) -> bool:
    return (
        bool(SKIPPED_PARTS.intersection(relative.parts))
        or relative.name in SKIPPED_NAMES
        or relative.suffix == ".pyc"
        or relative.as_posix() == PUBLICATION_MANIFEST
    )


def model_files(directory: Path) -> dict[str, ModelFile]:
    """Every file of ``directory`` that a publication carries, by relative POSIX path (symlinks followed, as in a
    Hugging Face snapshot); caches, bytecode, package markers and an earlier publication manifest are left out."""
    out: dict[str, ModelFile] = {}
    for path in sorted(directory.rglob("*")):
        relative = PurePosixPath(path.relative_to(directory).as_posix())
        if not path.is_file() or _skipped(relative):
            continue
        out[relative.as_posix()] = ModelFile(relative.as_posix(), file_sha256(path), path.stat().st_size)
    return out


def describe_model_dir(
    directory: Path | str,
    *,
    model_id: str | None = None,
    kind: str = "image",
    backend: str | None = None,
) -> PublishableModel:
    """Read a model directory for publishing: every file's sha256 and the weights digest.

    A directory with its own ``manifest.json`` (``weights_sha256`` and ``files``: the shipped sprite model, a
    ``chrysalis model train`` output) is checked against it first, and gives its model id, and its kind and backend
    when it names them (a LoRA or lore fine-tune), else the ``embedded`` backend.

    Raises:
        NotFoundError: no such directory. ConfigError: it holds no weight file.
        PublishedModelError: a sprite model whose files differ from its own manifest.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        what = "a file, not a directory" if root.exists() else "missing"
        raise NotFoundError(
            f"model directory {root} is {what}",
            hint="name a model directory (a save_pretrained output, or the shipped "
            "agent/generate/shipped/sprites32); a model is published as a whole directory",
        )
    root = root.resolve()
    files = model_files(root)
    weights = {p: f.sha256 for p, f in files.items() if _is_weight(p)}
    if not weights:
        raise ConfigError(
            f"{root} holds no weight file ({', '.join(WEIGHT_SUFFIXES)})",
            hint="name the model directory itself (the one with the weights), not its parent or a config folder",
        )
    digest = weights_digest(weights)
    own = _sprite_manifest(root)
    portable = None
    if own is not None:
        _check_sprite_manifest(root, own, files, digest)
        model_id = model_id or str(own.get("model_id") or root.name)
        # a trained LoRA's manifest (agent.training.adapters) names its kind and backend; a sprite model's doesn't
        kind = str(own.get("kind") or kind)
        backend = backend or str(own.get("backend") or "embedded")
        if own.get(PORTABLE_KEY) is not None:
            portable = check_portable_ref(own[PORTABLE_KEY], where=str(root / "manifest.json"))
    return PublishableModel(
        root, model_id or root.name, kind, backend or "diffusers", digest, files, portable=portable
    )


def _sprite_manifest(root: Path) -> dict[str, Any] | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "weights_sha256" in data and "files" in data else None


def _check_sprite_manifest(
    root: Path, sprite: Mapping[str, Any], files: Mapping[str, ModelFile], digest: str
) -> None:
    for name, want in dict(sprite.get("files") or {}).items():
        got = files.get(name)
        if got is None or got.sha256 != want:
            raise PublishedModelError(
                f"{root / name} " + ("is missing" if got is None else f"has sha256 {got.sha256}")
                + f", but {root / 'manifest.json'} says {want}",
                path=name,
                hint="restore the model's files (the shipped model: reinstall Chrysalis) before publishing it",
            )  # fmt: skip
    if sprite.get("weights_sha256") != digest:
        raise PublishedModelError(
            f"{root / 'manifest.json'} says weights_sha256 {sprite.get('weights_sha256')}, the weight files give "
            f"{digest}",
            path="manifest.json",
            hint="restore the model's files, or re-export the model (which rewrites its manifest)",
        )


# -- URIs ---------------------------------------------------------------------------------------------------------


def is_ipfs_uri(value: str | None) -> bool:
    """``ipfs://...`` or ``/ipfs/...``: a model named by its CID."""
    return bool(value) and str(value).strip().startswith(("ipfs://", "/ipfs/"))


def parse_model_uri(uri: str) -> str:
    """The directory CID in ``ipfs://<cid>``, ``ipfs://<cid>/chrysalis-model.json``, ``/ipfs/<cid>`` or ``<cid>``.

    Raises:
        ConfigError: anything else (another scheme, a path inside the model, not a CID).
    """
    text = str(uri).strip()
    rest = text.removeprefix("ipfs://") if text.startswith("ipfs://") else text.removeprefix("/ipfs/")
    cid, _, path = rest.partition("/")
    if path.strip("/") not in ("", PUBLICATION_MANIFEST) or not _CID.match(cid):
        raise ConfigError(
            f"{text!r} does not name a published model",
            hint="give ipfs://<directory CID> as `chrysalis model publish` prints it and the model registry "
            "records it (modelRecord(id).manifestURI)",
        )
    return cid


def model_uri(cid: str) -> str:
    """The URI the registry records for the model directory ``cid``."""
    return f"ipfs://{cid}"


# -- loading ------------------------------------------------------------------------------------------------------


def cache_path(cid: str, cache_dir: Path | str) -> Path:
    """Where the model ``cid`` lives once loaded: ``<cache_dir>/ipfs/<cid>``."""
    return Path(cache_dir).expanduser() / CACHE_SUBDIR / parse_model_uri(cid)


def read_manifest(data: bytes, *, where: str) -> dict[str, Any]:
    """Parse and check a publication manifest's shape.

    Raises:
        PublishedModelError: not JSON, another format, or a malformed field (named).
    """
    hint = "this is not a model `chrysalis model publish` made; check the CID the registry records"
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PublishedModelError(
            f"{where}: {PUBLICATION_MANIFEST} is not JSON ({exc})", path=PUBLICATION_MANIFEST, hint=hint
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise PublishedModelError(
            f"{where}: {PUBLICATION_MANIFEST} has format {got!r}, expected {FORMAT!r}",
            path=PUBLICATION_MANIFEST,
            hint=hint + " (or upgrade Chrysalis)",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise PublishedModelError(
            f"{where}: {PUBLICATION_MANIFEST} lists no files", path=PUBLICATION_MANIFEST, hint=hint
        )
    for name, entry in files.items():
        _safe_relative(name, where=where)
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _HEX64.match(entry["sha256"])
            and isinstance(entry.get("size"), int)
        ):
            raise PublishedModelError(
                f"{where}: {PUBLICATION_MANIFEST} entry {name!r} is not {{sha256: 64 hex, size: int}}",
                path=name,
                hint=hint,
            )
    if not isinstance(manifest.get("weights_sha256"), str) or not _HEX64.match(manifest["weights_sha256"]):
        raise PublishedModelError(
            f"{where}: {PUBLICATION_MANIFEST} has no weights_sha256 (64 hex digits)",
            path=PUBLICATION_MANIFEST,
            hint=hint,
        )
    if manifest.get(PORTABLE_KEY) is not None:
        check_portable_ref(manifest[PORTABLE_KEY], where=f"{where}: {PUBLICATION_MANIFEST}")
    return manifest


# -- the pinned portable export -----------------------------------------------------------------------------------


class PinnedExportError(PublishedModelError):
    """A file of a pinned portable export is not the one the model's manifest names (the message names the file
    and both digests)."""


def check_portable_ref(ref: Any, *, where: str) -> dict[str, Any]:
    """A manifest's ``portable`` entry, checked: ``cid`` (a CID), ``unet_onnx_sha256`` and ``scheduler_sha256``
    (64 hex each), ``opset`` (a positive int). Returns it as a plain dict.

    Raises:
        PublishedModelError: a key is missing or malformed (named).
    """
    ok = (
        isinstance(ref, Mapping)
        and isinstance(ref.get("cid"), str)
        and bool(_CID.match(ref["cid"]))
        and all(isinstance(ref.get(k), str) and _HEX64.match(ref[k]) for k in PORTABLE_DIGESTS.values())
        and isinstance(ref.get("opset"), int)
        and not isinstance(ref.get("opset"), bool)
        and ref["opset"] >= 1
    )
    if not ok:
        raise PublishedModelError(
            f"{where}: {PORTABLE_KEY} is not {{cid: a CID, unet_onnx_sha256: 64 hex, scheduler_sha256: 64 hex, "
            f"opset: int}} (got {ref!r})",
            path=PUBLICATION_MANIFEST,
            hint="republish the model with `chrysalis model publish`, which pins its ONNX export and names it",
        )
    assert isinstance(ref, Mapping)
    return dict(ref)


def portable_ref(model_dir: Path | str) -> dict[str, Any] | None:
    """The pinned export a model directory's manifest names: the publication manifest's ``portable`` entry (a
    model loaded from its CID), else its own ``manifest.json``'s; None when neither names one.

    Raises:
        PublishedModelError: the entry is malformed.
    """
    root = Path(model_dir)
    for name in (PUBLICATION_MANIFEST, "manifest.json"):
        path = root / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get(PORTABLE_KEY) is not None:
            return check_portable_ref(data[PORTABLE_KEY], where=str(path))
    return None


def portable_cache_path(cid: str, cache_dir: Path | str) -> Path:
    """Where the pinned export ``cid`` lives once loaded: ``<cache_dir>/portable/<cid>``."""
    if not _CID.match(cid):
        raise ConfigError(
            f"{cid!r} is not a CID", hint="name the export by the CID its model's manifest gives"
        )
    return Path(cache_dir).expanduser() / PORTABLE_SUBDIR / cid


def check_portable_dir(directory: Path, ref: Mapping[str, Any], *, named_by: str) -> dict[str, str]:
    """Check that ``directory`` holds the export ``ref`` names: each file's sha256 against its digest. Returns
    ``{file name: sha256}``.

    Raises:
        PinnedExportError: a file is missing or its sha256 differs (the message names the file and both digests).
    """
    out = {}
    for name, key in PORTABLE_DIGESTS.items():
        path = directory / name
        want = ref[key]
        if not path.is_file():
            raise PinnedExportError(
                f"{path} is missing, but {named_by} names the pinned export {ref['cid']} with {key} {want}",
                path=name,
                hint=f"delete {directory} and load the model again from its CID (`chrysalis model fetch`), which "
                "fetches the export with it",
            )
        got = file_sha256(path)
        if got != want:
            raise PinnedExportError(
                f"{path} has sha256 {got}, but {named_by} names {key} {want} (pinned export {ref['cid']})",
                path=name,
                hint=f"the file was changed or corrupted: delete {directory} and load the model again from its "
                "CID (`chrysalis model fetch`), which fetches the export with it",
            )
        out[name] = got
    return out


def load_portable_export(
    ref: Mapping[str, Any], fetch: ModelFetcher, cache_dir: Path | str, *, named_by: str
) -> Path:
    """Load the pinned export ``ref`` (a manifest's ``portable`` entry) into ``<cache_dir>/portable/<cid>`` and
    return that directory; every file is checked against ``ref``'s digests before the directory appears. One
    already there is checked again, not fetched.

    Raises:
        PinnedExportError: a file differs from ``ref``, is missing, or the directory holds another file.
    """
    cid = str(ref["cid"])
    final = portable_cache_path(cid, cache_dir)
    if final.is_dir():
        check_portable_dir(final, ref, named_by=named_by)
        return final
    where = f"pinned export {cid}"
    files = fetch.fetch_directory(cid)
    for name in sorted(set(files) - set(PORTABLE_DIGESTS)):
        raise PinnedExportError(
            f"{where} holds {name}, which is not part of a portable export ({', '.join(PORTABLE_DIGESTS)})",
            path=name,
            hint="the directory is not the export its model's manifest describes: do not use it",
        )
    with _staged(final, cid) as staging:
        for name, key in PORTABLE_DIGESTS.items():
            if name not in files:
                raise PinnedExportError(
                    f"{where} has no {name}, but {named_by} names {key} {ref[key]}",
                    path=name,
                    hint="the directory is incomplete: do not use it",
                )
            data = _read(files, name, where)
            got = hashlib.sha256(data).hexdigest()
            if got != ref[key]:
                raise PinnedExportError(
                    f"{where}: {name} has sha256 {got}, but {named_by} names {key} {ref[key]}",
                    path=name,
                    hint="the export was changed: do not use it (fetch it from another source, or ask the model's "
                    "publisher)",
                )
            (staging / name).write_bytes(data)
    check_portable_dir(final, ref, named_by=named_by)
    return final


@contextlib.contextmanager
def _staged(final: Path, label: str) -> Iterator[Path]:
    """A temporary directory beside ``final`` to fill; once the block succeeds it becomes ``final`` in one rename
    (when another process got there first, its copy stays, and the caller checks it). Always cleaned up."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{label}.", dir=final.parent))
    try:
        yield staging
        try:
            os.rename(staging, final)
        except OSError:  # another process put it there first: use theirs once it checks out
            if not final.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _safe_relative(name: Any, *, where: str) -> PurePosixPath:
    path = PurePosixPath(name) if isinstance(name, str) else None
    if path is None or not name or path.is_absolute() or any(p in ("", ".", "..") for p in name.split("/")):
        raise PublishedModelError(
            f"{where}: {name!r} is not a relative path inside the model directory",
            path=str(name),
            hint="refusing a manifest or directory that would write outside the model cache",
        )
    return path


def _expected_digest(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    text = ("0x" + value.hex()) if isinstance(value, bytes) else str(value)
    raw = text.lower().removeprefix("0x")
    if not _HEX64.match(raw):
        raise ConfigError(
            f"weights digest {text!r} is not 32 bytes of hex",
            hint="pass the registry's weightsDigest (0x + 64 hex)",
        )
    return raw


def check_weights(manifest: Mapping[str, Any], expected: str | bytes | None, *, where: str) -> str:
    """The weights digest the manifest's weight files give, checked against the manifest's own claim and the
    on-chain record ``expected`` (None: no record to compare with). Returns it (64 hex)."""
    files = manifest["files"]
    weights = {p: e["sha256"] for p, e in files.items() if _is_weight(p)}
    if not weights:
        raise PublishedModelError(
            f"{where}: the manifest lists no weight file", hint="publish the model directory with its weights"
        )
    digest = weights_digest(weights)
    if manifest["weights_sha256"] != digest:
        raise PublishedModelError(
            f"{where}: {PUBLICATION_MANIFEST} claims weights_sha256 {manifest['weights_sha256']}, its weight files "
            f"({', '.join(sorted(weights))}) give {digest}",
            path=PUBLICATION_MANIFEST,
            hint="the manifest is inconsistent: republish the model with `chrysalis model publish`",
        )
    want = _expected_digest(expected)
    if want is not None and want != digest:
        raise PublishedModelError(
            f"{where}: the weights are {digest} ({', '.join(sorted(weights))}), but the on-chain record says 0x{want}",
            path=sorted(weights)[0] if len(weights) == 1 else None,
            hint="the registry's URI points at other weights than its digest names: do not use this model; "
            "ask the collection's admin",
        )
    return digest


def verify_published_dir(
    directory: Path | str, *, weights_sha256: str | bytes | None = None, where: str | None = None
) -> dict[str, Any]:
    """Check a directory on disk against its publication manifest: every file there with its sha256, nothing
    missing, nothing extra, and the weights digest (against ``weights_sha256`` too, when given). Returns the
    manifest.

    Raises:
        NotFoundError: no manifest. PublishedModelError: naming the file that differs.
    """
    root = Path(directory)
    where = where or str(root)
    manifest_path = root / PUBLICATION_MANIFEST
    if not manifest_path.is_file():
        raise NotFoundError(
            f"{where} holds no {PUBLICATION_MANIFEST}",
            hint="load the model again from its CID (`chrysalis model fetch ipfs://<CID>`)",
        )
    manifest = read_manifest(manifest_path.read_bytes(), where=where)
    present = set(_files_under(root)) - {PUBLICATION_MANIFEST}
    listed = set(manifest["files"])
    for name in sorted(present - listed):
        raise PublishedModelError(
            f"{where}: {name} is not listed in {PUBLICATION_MANIFEST}",
            path=name,
            hint=f"remove {root / name}, or load the model again from its CID",
        )
    for name in sorted(listed):
        want = manifest["files"][name]["sha256"]
        if name not in present:
            raise PublishedModelError(
                f"{where}: {name} is missing", path=name, hint="load the model again from its CID"
            )
        got = file_sha256(root / name)
        if got != want:
            raise PublishedModelError(
                f"{where}: sha256 of {name} is {got}, but {PUBLICATION_MANIFEST} says {want}",
                path=name,
                hint=f"the file was changed or corrupted: delete {root} and load the model again from its CID",
            )
    check_weights(manifest, weights_sha256, where=where)
    return manifest


def _files_under(root: Path) -> Iterator[str]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path.relative_to(root).as_posix()


def cached_model_dir(
    cid: str, cache_dir: Path | str, *, weights_sha256: str | bytes | None = None
) -> Path | None:
    """The model ``cid`` in the cache, every file checked again; None when it is not there yet.

    Raises:
        PublishedModelError: it is there but a file differs (naming it).
    """
    path = cache_path(cid, cache_dir)
    if not path.is_dir():
        return None
    verify_published_dir(path, weights_sha256=weights_sha256, where=f"model {parse_model_uri(cid)} in {path}")
    return path


def load_model_from_cid(
    cid: str,
    fetch: ModelFetcher,
    cache_dir: Path | str,
    *,
    weights_sha256: str | bytes | None = None,
) -> Path:
    """Load the published model ``cid`` into ``<cache_dir>/ipfs/<cid>`` and return that directory.

    Every file is checked against :data:`PUBLICATION_MANIFEST` (sha256 and size, nothing missing, nothing extra)
    and the weights digest against ``weights_sha256`` (the registry's ``weightsDigest``; None skips that one
    comparison) before the directory appears in the cache, so a cached model is always a verified one. A model
    already in the cache is checked again, not fetched.

    Args:
        cid: the directory CID, or the URI the registry records (``ipfs://<cid>``).
        fetch: where the bytes come from (:class:`ModelFetcher`).
        cache_dir: ``models.cache_dir``.
        weights_sha256: the on-chain weights digest (hex, 0x optional, or bytes32).

    Raises:
        PublishedModelError: a file differs from the manifest, is missing or extra, or the weights are not the
            recorded ones; the message names the file.
        ConfigError: ``cid`` names no model directory. Whatever ``fetch`` raises for unreachable content.
    """
    root_cid = parse_model_uri(cid)
    cached = cached_model_dir(root_cid, cache_dir, weights_sha256=weights_sha256)
    if cached is not None:
        _load_named_export(cached, fetch, cache_dir, root_cid)
        return cached
    where = f"model {root_cid}"
    files = fetch.fetch_directory(root_cid)
    if PUBLICATION_MANIFEST not in files:
        raise PublishedModelError(
            f"{where} has no {PUBLICATION_MANIFEST}: it is not a model `chrysalis model publish` made",
            path=PUBLICATION_MANIFEST,
            hint="check the CID (the registry's manifestURI names the published directory)",
        )
    manifest = read_manifest(_read(files, PUBLICATION_MANIFEST, where), where=where)
    check_weights(manifest, weights_sha256, where=where)  # before fetching gigabytes of the wrong model
    listed = manifest["files"]
    for name in sorted(set(files) - set(listed) - {PUBLICATION_MANIFEST}):
        raise PublishedModelError(
            f"{where}: {name} is not listed in {PUBLICATION_MANIFEST}",
            path=name,
            hint="the directory is not the one its manifest describes: do not use it",
        )
    final = cache_path(root_cid, cache_dir)
    with _staged(final, root_cid) as staging:
        for name in sorted(listed):
            if name not in files:
                raise PublishedModelError(
                    f"{where}: {name} is listed in {PUBLICATION_MANIFEST} but not in the directory",
                    path=name,
                    hint="the directory is incomplete: do not use it",
                )
            data = _read(files, name, where)
            want = listed[name]
            got = hashlib.sha256(data).hexdigest()
            if got != want["sha256"] or len(data) != want["size"]:
                raise PublishedModelError(
                    f"{where}: sha256 of {name} is {got} ({len(data)} bytes), but {PUBLICATION_MANIFEST} says "
                    f"{want['sha256']} ({want['size']} bytes)",
                    path=name,
                    hint="the file was changed: do not use this model (fetch it from another source, or ask its "
                    "publisher)",
                )
            target = staging / _safe_relative(name, where=where)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (staging / PUBLICATION_MANIFEST).write_bytes(_read(files, PUBLICATION_MANIFEST, where))
    verify_published_dir(final, weights_sha256=weights_sha256, where=f"{where} in {final}")
    _load_named_export(final, fetch, cache_dir, root_cid)
    return final


def _load_named_export(model_dir: Path, fetch: ModelFetcher, cache_dir: Path | str, root_cid: str) -> None:
    """Load the pinned export the model's publication manifest names (if any) beside it in the cache."""
    manifest = read_manifest((model_dir / PUBLICATION_MANIFEST).read_bytes(), where=f"model {root_cid}")
    ref = manifest.get(PORTABLE_KEY)
    if ref is not None:
        load_portable_export(
            ref, fetch, cache_dir, named_by=f"the {PUBLICATION_MANIFEST} of model {root_cid}"
        )


def _read(files: Mapping[str, bytes], name: str, where: str) -> bytes:
    """One file of a fetched directory; a fetch error names the file it was fetching.

    Bytes that do not match their CID are a :class:`PublishedModelError` naming the file; any other error keeps its
    class (unreachable stays retryable) with the file named in its message.
    """
    try:
        return bytes(files[name])
    except IntegrityError as exc:
        raise PublishedModelError(
            f"{where}: fetching {name}: {exc.message}", path=name, hint=exc.hint or "do not use this model"
        ) from exc
    except ChrysalisError as exc:
        exc.message = f"{where}: fetching {name}: {exc.message}"
        exc.args = (f"{exc.message}\n  hint: {exc.hint}" if exc.hint else exc.message,)
        raise
