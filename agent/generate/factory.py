"""Choose, load once and reuse the image generator and lore writer that :class:`ModelSettings` names.

Loading is slow (seconds to minutes) and models are large, so each process keeps one instance per distinct
relevant settings (the cache key is exactly the settings the loader reads). Heavy libraries are imported inside.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from agent.errors import ConfigError
from agent.generate.base import ImageGenerator, LoreWriter
from agent.generate.quiet import quiet_libraries
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

        if s.image_model or s.image_lora:
            raise ConfigError(
                "image_model / image_lora are set but image_backend is 'embedded'",
                hint="set models.image_backend = 'diffusers' to use them, or unset them",
            )
        device = resolve_device(s.device)
        return EmbeddedSpriteGenerator(
            None,
            device=str(device),
            num_inference_steps=s.image_steps or 50,
            guidance_scale=1.0 if s.image_guidance is None else s.image_guidance,
            max_batch_size=s.image_batch_size,
            dtype=resolve_dtype(s.dtype, device, gpu_default="float32"),
            threads=s.threads,
        )
    if s.image_backend == "diffusers":
        from agent.generate.image.diffusers import DiffusersImageGenerator

        if not s.image_model:
            raise ConfigError(
                "image_backend is 'diffusers' but no image_model is set",
                hint="set models.image_model to a pipeline directory or hub id",
            )
        return DiffusersImageGenerator(
            s.image_model,
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
        return TransformersLoreWriter(s.lore_model, device=s.device, dtype=s.dtype, **_decoding(s))
    raise ConfigError(f"unknown lore_backend {s.lore_backend!r}", hint="use embedded or transformers")
