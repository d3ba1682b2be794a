"""Choose, load once and reuse the image generator and lore writer that :class:`ModelSettings` names.

Loading is slow (seconds to minutes) and models are large, so each process keeps one instance per distinct
relevant settings (the cache key is exactly the settings the loader reads). Heavy libraries are imported inside.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from agent.errors import ConfigError, NotFoundError
from agent.generate.base import ImageGenerator, LoreWriter
from agent.generate.published import (
    PublishableModel,
    cache_path,
    cached_model_dir,
    describe_model_dir,
    is_ipfs_uri,
    model_uri,
    parse_model_uri,
)
from agent.generate.quiet import quiet_libraries
from agent.generate.runtime import resolve_model_source
from agent.settings import ModelSettings, model_keys

IMAGE_KEYS = model_keys("image")
"""The settings the image generator is loaded from (the :class:`~agent.settings.ModelKey` marks)."""
LORE_KEYS = model_keys("lore")
"""The settings the lore writer is loaded from."""

_IMAGE: dict[tuple[Any, ...], ImageGenerator] = {}
_LORE: dict[tuple[Any, ...], LoreWriter] = {}
_LOCK = threading.Lock()


def _key(settings: ModelSettings, keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(str(getattr(settings, k)) for k in keys)


def apply_threads(settings: ModelSettings) -> None:
    """Set torch's CPU thread count when the settings name one (it is process-wide and recorded in receipts)."""
    if settings.threads is not None and torch.get_num_threads() != settings.threads:
        torch.set_num_threads(settings.threads)


def load_image_generator(settings: ModelSettings) -> ImageGenerator:
    """The image generator for ``settings`` (loaded on first use, then reused)."""
    apply_threads(settings)
    key = _key(settings, IMAGE_KEYS)
    with _LOCK:
        if key not in _IMAGE:
            _IMAGE[key] = _build_image(settings)
        return _IMAGE[key]


def load_lore_writer(settings: ModelSettings) -> LoreWriter:
    """The lore writer for ``settings`` (loaded on first use, then reused)."""
    apply_threads(settings)
    key = _key(settings, LORE_KEYS)
    with _LOCK:
        if key not in _LORE:
            _LORE[key] = _build_lore(settings)
        return _LORE[key]


def clear_cache() -> None:
    """Forget loaded models (tests, or to free memory)."""
    with _LOCK:
        _IMAGE.clear()
        _LORE.clear()


def _build_image(s: ModelSettings) -> ImageGenerator:
    quiet_libraries()  # before diffusers / transformers are imported: they warn at import
    if s.image_backend == "embedded":
        from agent.generate.image.embedded import EmbeddedSpriteGenerator
        from agent.generate.runtime import resolve_device, resolve_dtype

        if s.image_lora:
            raise ConfigError(
                "image_lora is set but image_backend is 'embedded'",
                hint="set models.image_backend = 'diffusers' to use it, or unset it",
            )
        source = (
            model_dir(s.image_model, s.cache_dir, setting="models.image_model") if s.image_model else None
        )
        if s.image_runtime_for() == "portable":
            from agent.generate.portable.generator import PortableSpriteGenerator

            # device, dtype, threads and batch size do not apply: the WASM runtime is float32, one thread, batch 1
            return PortableSpriteGenerator(
                source,
                cache_dir=s.cache_dir,
                num_inference_steps=s.image_steps or 50,
                guidance_scale=1.0 if s.image_guidance is None else s.image_guidance,
            )
        device = resolve_device(s.device)
        return EmbeddedSpriteGenerator(
            source,
            device=str(device),
            num_inference_steps=s.image_steps or 50,
            guidance_scale=1.0 if s.image_guidance is None else s.image_guidance,
            max_batch_size=s.image_batch_size,
            dtype=resolve_dtype(s.dtype, device, gpu_default="float32"),
            threads=s.threads,
        )
    if s.image_backend == "diffusers":
        from agent.generate.image.diffusers import DiffusersImageGenerator

        if s.image_runtime == "portable":
            raise ConfigError(
                f"models.image_runtime = {s.image_runtime!r} needs image_backend = 'embedded', but it is 'diffusers'",
                hint="the portable runtime runs only the embedded sprite model: set models.image_runtime = 'auto' "
                "(the default) or 'torch' for a diffusers pipeline, or models.image_backend = 'embedded'",
            )
        if not s.image_model:
            raise ConfigError(
                "image_backend is 'diffusers' but no image_model is set",
                hint="set models.image_model to a pipeline directory or hub id",
            )
        return DiffusersImageGenerator(
            _local(s.image_model, s.cache_dir, setting="models.image_model"),
            model_id=s.image_model,
            lora=s.image_lora,
            lora_scale=s.image_lora_scale,
            scheduler=s.image_scheduler,
            num_inference_steps=s.image_steps,
            guidance_scale=s.image_guidance,
            width=s.image_width,
            height=s.image_height,
            negative_prompt=s.image_negative_prompt,
            device=s.device,
            dtype=s.dtype,
            batch_size=s.image_batch_size,
            attention_slicing=s.attention_slicing,
            cpu_offload=s.cpu_offload,
            channels_last=s.channels_last,
            compile=s.compile,
            threads=s.threads,
        )
    raise ConfigError(f"unknown image_backend {s.image_backend!r}", hint="use embedded or diffusers")


def _decoding(s: ModelSettings) -> dict[str, Any]:
    return {
        "max_new_tokens": s.lore_max_new_tokens,
        "do_sample": s.lore_do_sample,
        "temperature": s.lore_temperature,
        "top_p": s.lore_top_p,
        "repetition_penalty": s.lore_repetition_penalty,
        "batch_size": s.lore_batch_size,
    }


def _build_lore(s: ModelSettings) -> LoreWriter:
    quiet_libraries()
    if s.lore_backend == "embedded":
        from agent.generate.lore.embedded import EmbeddedLoreWriter

        if s.lore_model:
            raise ConfigError(
                "lore_model is set but lore_backend is 'embedded'",
                hint="set models.lore_backend = 'transformers' to use it, or unset it",
            )
        return EmbeddedLoreWriter(s.cache_dir, device=s.device, dtype=s.dtype, **_decoding(s))
    if s.lore_backend == "transformers":
        from agent.generate.lore.transformers import TransformersLoreWriter

        if not s.lore_model:
            raise ConfigError(
                "lore_backend is 'transformers' but no lore_model is set",
                hint="set models.lore_model to a causal LM directory or hub id",
            )
        return TransformersLoreWriter(
            _local(s.lore_model, s.cache_dir, setting="models.lore_model"),
            model_id=s.lore_model,
            device=s.device,
            dtype=s.dtype,
            **_decoding(s),
        )
    raise ConfigError(f"unknown lore_backend {s.lore_backend!r}", hint="use embedded or transformers")


# -- model directories, local or published on IPFS ----------------------------------------------------------------


def model_dir(source: str, cache_dir: Path, *, setting: str) -> Path:
    """The directory a model setting names: a local path, or ``ipfs://<CID>`` loaded into ``cache_dir`` before
    (``chrysalis model fetch``), every file checked again against its publication manifest.

    Raises:
        NotFoundError: no such directory, or the CID is not in the cache yet (the hint says how to load it).
        PublishedModelError: a cached file differs from the manifest (naming it).
    """
    if is_ipfs_uri(source):
        cid = parse_model_uri(source)
        found = cached_model_dir(cid, cache_dir)
        if found is None:
            raise NotFoundError(
                f"{setting} = {source!r} is not in the model cache ({cache_path(cid, cache_dir)})",
                hint=f"load it first, every file checked: `chrysalis model fetch {model_uri(cid)}` (from the "
                "configured IPFS repo or a gateway), or set models.cache_dir to where it was loaded",
            )
        return found
    path = Path(source).expanduser()
    if not path.is_dir():
        raise NotFoundError(
            f"{setting} = {source!r} is not a directory",
            hint=f"set {setting} to a model directory, or to ipfs://<CID> of a published model",
        )
    return path.resolve()


def _local(source: str, cache_dir: Path, *, setting: str) -> str:
    """``source`` as the loaders take it: a published model's cached directory, else unchanged (a path, a hub id)."""
    return str(model_dir(source, cache_dir, setting=setting)) if is_ipfs_uri(source) else source


def image_model_dir(settings: ModelSettings) -> Path:
    """The directory of the configured image model: the shipped sprite model, a local directory, a hub id in the
    local cache, or a published model in the model cache."""
    if settings.image_backend == "embedded":
        from agent.generate.image.embedded import SHIPPED_DIR

        if not settings.image_model:
            return SHIPPED_DIR.resolve()
        return model_dir(settings.image_model, settings.cache_dir, setting="models.image_model")
    if not settings.image_model:
        raise ConfigError(
            "image_backend is 'diffusers' but no image_model is set",
            hint="set models.image_model to a pipeline directory or hub id",
        )
    if is_ipfs_uri(settings.image_model):
        return model_dir(settings.image_model, settings.cache_dir, setting="models.image_model")
    return resolve_model_source(settings.image_model, what="image model", setting="models.image_model")


def publishable_image_model(settings: ModelSettings) -> PublishableModel:
    """The configured image model as a directory to publish (every file, its weights digest, the receipts' id)."""
    directory = image_model_dir(settings)
    if settings.image_backend == "embedded":
        return describe_model_dir(directory, kind="image", backend="embedded")
    model_id = settings.image_model if not is_ipfs_uri(settings.image_model) else None
    return describe_model_dir(directory, model_id=model_id, kind="image", backend="diffusers")
