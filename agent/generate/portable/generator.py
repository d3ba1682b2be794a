"""The embedded sprite model under the portable canonical runtime (receipt scheme ``chrysalis-portable/1``).

:class:`PortableSpriteGenerator` is :class:`~agent.generate.image.embedded.EmbeddedSpriteGenerator` with another
engine: the same input checks, class labels, palette transfer for evolutions, PNG encoding and request config, but
every image is rendered by :class:`~agent.generate.portable.wasm_runtime.WasmSpriteRuntime` (onnxruntime-web's WASM
build in one long-lived Node.js process, ``renderer/sampler.js``'s float32 DDIM loop) from the model's ONNX export,
with ``chrysalis-noise/1`` noise seeded by the request's seed. Chosen with ``models.image_runtime = "portable"``.

Guarantees:

- An image depends only on its own request, the export (``unet.onnx`` + ``scheduler.json``, whose sha256 the
  config records), the noise and sampler schemes and the onnxruntime-web build (version and ``.wasm`` sha256,
  recorded too): the same request gives the same bytes alone or among others, in any process, on any CPU, and in
  a browser running ``renderer/sampler.js`` with the same files.
- When the model's manifest names a pinned export (the publication manifest's ``portable`` entry, for a model
  loaded from its CID, else the sprite manifest's own; see :mod:`agent.generate.published`), that export is used,
  from ``<models.cache_dir>/portable/<export CID>/`` where loading the model from its CID put it, each file's
  sha256 checked against the manifest (a differing file is refused, naming it and both digests); nothing is
  exported then (:attr:`PortableSpriteGenerator.export_source` is ``"pinned"``).
- Only when the manifest names none is the export made, once per model, into
  ``<models.cache_dir>/portable/<weights_sha256>/`` (written to a temporary directory, then renamed into place)
  with an ``export.json`` naming the source model's files and the export's sha256; a cached export is reused only
  when those all still hold, else it is made again (``export_source`` ``"exported"``).

The image config declares ``generator = "chrysalis-portable/1"`` (:data:`PORTABLE_SCHEME`); :mod:`agent.generate.verify`
replays such receipts through the same Node runtime, and older receipts (the torch scheme) under their own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.domain import ModelRef
from agent.errors import ConfigError
from agent.generate import progress
from agent.generate.base import GeneratedImage, ImageRequest
from agent.generate.image.embedded import EmbeddedSpriteGenerator, _Prepared, file_sha256, sprite_image
from agent.generate.portable.onnx_export import CONSTANTS_NAME, ONNX_NAME, OPSET, export_sprite_model
from agent.generate.portable.wasm_runtime import WasmSpriteRuntime, find_node, find_node_modules
from agent.generate.published import (
    PORTABLE_DIGESTS,
    check_portable_dir,
    portable_cache_path,
    portable_ref,
)

PORTABLE_SCHEME = "chrysalis-portable/1"
"""What a portable image config records as ``generator``. Version 1: ``chrysalis-noise/1`` noise, the
``chrysalis-ddim-f32/1`` sampler of ``renderer/sampler.js``, onnxruntime-web's WASM build on one thread, batch 1."""
PIPELINE = "chrysalis.PortableSpriteGenerator"
EXPORT_RECORD = "export.json"
EXPORT_FORMAT = "chrysalis.portable-export/1"
WASM_THREADS = 1


def is_portable(config: Mapping[str, Any]) -> bool:
    """Whether an image config (a receipt's ``image.config``) was made under :data:`PORTABLE_SCHEME`."""
    return config.get("generator") == PORTABLE_SCHEME


def check_portable_runtime() -> None:
    """Check that this machine can run the portable runtime: ``node`` and the pinned onnxruntime-web.

    Raises:
        ConfigError: one is missing (the message says which, the hint how to install it).
    """
    find_node()
    find_node_modules()


def export_cache_dir(cache_dir: Path, weights_sha256: str) -> Path:
    """Where the ONNX export of the model with ``weights_sha256`` is cached."""
    return Path(cache_dir) / "portable" / weights_sha256


def cached_export(
    model_dir: Path, manifest: Mapping[str, Any], cache_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """The ONNX export of the sprite model in ``model_dir`` (its verified ``manifest``), from the cache when a
    valid one is there, else made now and put there atomically. Returns the directory and its ``export.json``.

    Raises:
        ConfigError: the cache directory cannot be written (the hint says which setting moves it).
    """
    dest = export_cache_dir(cache_dir, str(manifest["weights_sha256"]))
    record = _valid_export(dest, manifest)
    if record is not None:
        return dest, record
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".tmp-{dest.name[:16]}-{uuid.uuid4().hex}"
        info = export_sprite_model(model_dir, tmp)
        record = {
            "format": EXPORT_FORMAT,
            "model_id": manifest["model_id"],
            "weights_sha256": manifest["weights_sha256"],
            "source_files": dict(manifest["files"]),
            "files": {ONNX_NAME: info[ONNX_NAME], CONSTANTS_NAME: info[CONSTANTS_NAME]},
            "opset": info["opset"],
            "torch_version": torch.__version__,
        }
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another process put one there first, or a stale one is in the way
            found = _valid_export(dest, manifest)
            if found is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return dest, found
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(tmp, dest)
    except OSError as e:
        raise ConfigError(
            f"cannot write the portable export of {manifest['model_id']} under {parent}: {e}",
            hint="set models.cache_dir to a writable directory",
        ) from None
    return dest, record


def pinned_export(model_dir: Path, cache_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The pinned export the manifest of the model in ``model_dir`` names (:func:`portable_ref`), checked, with a
    record shaped as :func:`cached_export`'s (``files``, ``opset``, plus ``cid``); None when it names none.

    Raises:
        NotFoundError: the export is not in ``<cache_dir>/portable/<export CID>`` (the hint says how to fetch it).
        PinnedExportError: a file's sha256 differs from the manifest's (naming the file and both digests).
    """
    from agent.errors import NotFoundError

    ref = portable_ref(model_dir)
    if ref is None:
        return None
    directory = portable_cache_path(str(ref["cid"]), cache_dir)
    named_by = f"the manifest of the model in {model_dir}"
    if not directory.is_dir():
        raise NotFoundError(
            f"{named_by} names the pinned ONNX export {ref['cid']}, which is not in {directory}",
            hint="load the model from its CID (`chrysalis model fetch ipfs://<model CID>`, or models.image_model = "
            "'ipfs://<model CID>'), which fetches the export with it",
        )
    files = check_portable_dir(directory, ref, named_by=named_by)
    record = {
        "format": EXPORT_FORMAT,
        "cid": ref["cid"],
        "files": files,
        "opset": ref["opset"],
        "pinned": True,
    }
    assert set(files) == set(PORTABLE_DIGESTS)
    return directory, record


def _check_export_is_of(directory: Path, manifest: Mapping[str, Any]) -> None:
    """A pinned export's ``scheduler.json`` names the weights it was exported from: they must be the model's."""
    from agent.generate.published import PinnedExportError

    try:
        names = json.loads((directory / CONSTANTS_NAME).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        names = None
    if names != manifest["weights_sha256"]:
        raise PinnedExportError(
            f"the pinned export in {directory} was made from weights {names}, not the model's "
            f"{manifest['weights_sha256']}",
            path=CONSTANTS_NAME,
            hint="the model's manifest names another model's export: republish the model with "
            "`chrysalis model publish`",
        )


def _valid_export(directory: Path, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """``directory``'s export record when it is an export of exactly ``manifest``'s files whose own files still
    hash to the record's sha256, else None."""
    try:
        record = json.loads((directory / EXPORT_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("format") != EXPORT_FORMAT
        or record.get("source_files") != dict(manifest["files"])
        or not isinstance(record.get("files"), dict)
    ):
        return None
    for name in (ONNX_NAME, CONSTANTS_NAME):
        path = directory / name
        if not path.is_file() or file_sha256(path) != record["files"].get(name):
            return None
    return record


class PortableSpriteGenerator(EmbeddedSpriteGenerator):
    """The embedded sprite model rendered by the portable canonical runtime (see the module docstring).

    Everything the torch generator checks and records is shared (it is a subclass); what differs is the engine
    and the config's runtime keys. Each image is rendered alone (batch 1), in request order; the Node process
    lives as long as this object (:meth:`close`).

    Args:
        model_dir: A sprite model directory with ``manifest.json``; defaults to the shipped ``sprites32``.
        cache_dir: The model cache (``models.cache_dir``); the export goes to ``<cache_dir>/portable/``.
        num_inference_steps, guidance_scale, palette_transfer: As for
            :class:`~agent.generate.image.embedded.EmbeddedSpriteGenerator`.
        timeout: Seconds to wait for Node to start, and for each image.

    Attributes:
        export_dir, export: the export rendered from and its record. export_source: ``"pinned"`` (the export the
            model's manifest names) or ``"exported"`` (made here, the manifest naming none).

    Raises:
        ConfigError: node or onnxruntime-web is missing (checked before the export is made), or a bad setting.
        NotFoundError: no sprite model at ``model_dir``, or the pinned export its manifest names is not here.
        PinnedExportError: a file of the pinned export differs from the manifest (naming it and both digests).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cache_dir: Path,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        palette_transfer: bool = True,
        timeout: float = 300.0,
    ) -> None:
        check_portable_runtime()
        super().__init__(
            model_dir,
            device="cpu",
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            max_batch_size=1,
            dtype=torch.float32,
            palette_transfer=palette_transfer,
            threads=WASM_THREADS,
        )
        pinned = pinned_export(self.model.model_dir, Path(cache_dir))
        if pinned is not None:
            self.export_dir, self.export = pinned
            self.export_source = "pinned"
            _check_export_is_of(self.export_dir, self.model.manifest)
        else:
            self.export_dir, self.export = cached_export(
                self.model.model_dir, self.model.manifest, Path(cache_dir)
            )
            self.export_source = "exported"
        self.runtime = WasmSpriteRuntime(self.export_dir, timeout=timeout)

    def close(self) -> None:
        """Stop the Node process (a later :meth:`generate` starts a new one)."""
        self.runtime.close()

    @property
    def model_ref(self) -> ModelRef:
        ref = super().model_ref
        extra = {k: v for k, v in ref.extra.items() if k not in ("device", "dtype")}
        extra["runtime"] = PORTABLE_SCHEME
        extra["onnx"] = self._onnx_record()
        return dataclasses.replace(ref, extra=extra)

    @property
    def model_batch_size(self) -> int:
        """Always 1: each image is rendered alone, so its bytes never depend on its neighbours."""
        return 1

    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        """One image per request, in order, each rendered alone by the Node runtime (all inputs checked first)."""
        prepared = self.check_inputs(requests)
        out: list[GeneratedImage] = []
        for p in prepared:
            n_steps = self._denoise_steps(p)
            pixels = self.runtime.render(
                p.seed,
                p.label,
                self.num_inference_steps,
                self.guidance_scale,
                p.init,
                None if p.init is None else p.strength,
            )
            out.append(self._portable_result(p, pixels, n_steps))
            progress.advance("image", 1)
        return out

    __call__ = generate

    def _onnx_record(self) -> dict[str, Any]:
        return {
            ONNX_NAME: self.export["files"][ONNX_NAME],
            CONSTANTS_NAME: self.export["files"][CONSTANTS_NAME],
            "opset": self.export.get("opset", OPSET),
        }

    def _portable_result(self, p: _Prepared, pixels: np.ndarray, n_steps: int) -> GeneratedImage:
        rt = self.runtime
        config: dict[str, Any] = {
            "pipeline": PIPELINE,
            **self._request_config(p, n_steps),
            "generator": PORTABLE_SCHEME,
            "noise": rt.noise_scheme,
            "sampler": rt.sampler_scheme,
            "onnx": self._onnx_record(),
            "onnxruntime_web": {
                "version": rt.ort_version,
                "wasm_sha256": rt.wasm_sha256,
                "threads": WASM_THREADS,
            },
            # where it ran (the receipt's runtime): the WASM build runs float32 on the CPU, one thread, batch 1
            "device": "cpu",
            "dtype": "float32",
            "batch_size": 1,
            "torch_threads": WASM_THREADS,
            "node_version": rt.node_version,
        }
        return sprite_image(pixels, config)


__all__ = [
    "PORTABLE_SCHEME",
    "PortableSpriteGenerator",
    "cached_export",
    "check_portable_runtime",
    "export_cache_dir",
    "is_portable",
    "pinned_export",
]
