"""Production images: any diffusers text-to-image pipeline (and its image-to-image twin for evolutions).

The model is a local ``save_pretrained`` directory or a hub id (resolved from the local cache; with
``HF_HUB_OFFLINE=1`` a missing one fails at once). Loading goes through ``AutoPipelineForText2Image``;
evolutions reuse the same components through ``AutoPipelineForImage2Image.from_pipe`` (no extra memory).

- Optional LoRA (``load_lora_weights``, needs ``peft``) with a scale; scheduler and steps from settings.
- Device ``auto`` (CUDA, MPS, CPU); float16 on GPUs by default, float32 on the CPU.
- Each request has its own CPU ``torch.Generator``, so its noise depends only on its seed. On the CPU every image
  is computed alone (one pipeline call each, the canonical batch size 1): CPU kernels give a row different float
  bits depending on the batch size and on the row's place in the batch (vectorised loops, GEMM/convolution
  blocking), so a batched image could not be replayed from its receipt, and two equal requests in one batch could
  differ. On a GPU, requests that share a mode and strength go through one call (up to ``batch_size``); such
  receipts are not reproducible on the CPU anyway, and they record the batch size.
- A generate call runs with the generator's own torch thread count (``threads``, default 1, the canonical
  configuration; restored afterwards), never with whatever count the process happens to have; it is recorded.
- Memory savers from settings: attention slicing, model or sequential CPU offload (GPU only).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from agent.domain import ModelRef
from agent.errors import ConfigError
from agent.generate import progress
from agent.generate.base import GeneratedImage, ImageGenerator, ImageRequest, request_label
from agent.generate.runtime import (
    CANONICAL_THREADS,
    dtype_name,
    file_sha256,
    resolve_device,
    resolve_dtype,
    resolve_model_source,
    torch_threads,
    weight_files,
    weights_digest,
)
from agent.generate.seed import check_seed, cpu_generator

DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
LORA_ADAPTER = "chrysalis"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUNTIME_KEYS = frozenset(
    {
        "device",
        "dtype",
        "batch_size",
        "torch_threads",
        "torch_version",
        "diffusers_version",
        "transformers_version",
    }
)
"""Config keys that describe where an image was made rather than what was asked for."""


def prompt_from_traits(traits: Mapping[str, str]) -> str:
    """A simple prompt template (the rules issue will bring richer ones)."""
    t = dict(traits)
    mood, element = t.pop("mood", None), t.pop("element", None)
    subject = " ".join(x for x in (mood, element, "creature") if x)
    extras = ", ".join(f"{k} {t[k]}" for k in sorted(t))
    parts = [f"a {subject}", extras, "digital art, centered, full body, plain background"]
    return ", ".join(p for p in parts if p)


def _auto_pipeline_names() -> tuple[set[str], set[str]]:
    from diffusers.pipelines.auto_pipeline import (
        AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    )

    t2i = {c.__name__ for c in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()}
    i2i = {c.__name__ for c in AUTO_IMAGE2IMAGE_PIPELINES_MAPPING.values()}
    return t2i, i2i


def check_pipeline_dir(path: Path) -> str:
    """The pipeline class named in ``path/model_index.json``; ConfigError if it is not a usable pipeline."""
    t2i, i2i = _auto_pipeline_names()
    examples = "StableDiffusionPipeline, StableDiffusionXLPipeline, FluxPipeline, ..."
    if path.is_file():
        raise ConfigError(
            f"{path} is a single file; the diffusers backend needs a pipeline directory with model_index.json",
            hint="convert it once: StableDiffusionPipeline.from_single_file(path).save_pretrained(dir)",
        )
    index = path / "model_index.json"
    if not index.is_file():
        config = path / "config.json"
        found = "no model_index.json"
        if config.is_file():
            try:
                cfg = json.loads(config.read_text())
            except ValueError:
                cfg = {}
            found = f"a {cfg.get('_class_name') or ', '.join(cfg.get('architectures') or []) or 'model'} (config.json)"
        raise ConfigError(
            f"{path} holds {found}, not a diffusers pipeline; expected a text-to-image or image-to-image "
            f"pipeline directory with model_index.json ({examples})",
            hint="point models.image_model at a pipeline saved with save_pretrained (or a hub id of one)",
        )
    name = json.loads(index.read_text()).get("_class_name", "?")
    if name not in t2i and name not in i2i:
        raise ConfigError(
            f"{path} holds a {name}, which is not a text-to-image or image-to-image pipeline that "
            f"AutoPipelineForText2Image can load; expected one of {', '.join(sorted(t2i))}",
            hint="use a text-to-image checkpoint (e.g. a StableDiffusionPipeline directory)",
        )
    return name


def decode_init_image(data: bytes, size: tuple[int, int] | None) -> Image.Image:
    """PNG bytes -> RGB PIL image, resized (Lanczos) to ``size`` = (width, height) when given."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:8]) != PNG_SIGNATURE:
        raise ConfigError(
            "the previous stage's image (init_image) is not PNG data",
            hint="pass the previous stage's PNG file as the model wrote it (<data_dir>/assets/<token>/<stage>.png, or "
            "image.png from `chrysalis model sample`)",
        )
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            img = im.convert("RGB")
    except Exception as e:
        raise ConfigError(f"init_image could not be decoded as PNG: {e}", hint="pass intact PNG bytes") from e
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def pixels_sha256(pixels: np.ndarray) -> str:
    """sha256 of a uint8 (H, W, 3) array in C order."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy of a config (tuples to lists, numpy scalars to Python, anything else to str)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        return str(o)

    return json.loads(json.dumps(obj, default=default))


@dataclass(frozen=True)
class _Prepared:
    index: int
    prompt: str
    seed: int
    init: Image.Image | None
    init_sha256: str | None
    strength: float
    traits: Mapping[str, str]


class DiffusersImageGenerator(ImageGenerator):
    """Images from a diffusers text-to-image pipeline; evolutions through its image-to-image twin.

    Args:
        model: Local pipeline directory or hub id.
        model_id: What receipts call the model (default: ``model``); e.g. ``ipfs://<CID>`` for a published model
            loaded from the model cache.
        lora: Optional LoRA weights (a ``.safetensors`` file, a directory holding one, or a hub id).
        lora_scale: LoRA weight. scheduler: diffusers scheduler class name (None keeps the model's).
        num_inference_steps: Steps for a fresh image (default 30). guidance_scale: CFG scale (default 7.5).
        width, height: Output size (None: the model's default). negative_prompt: Optional.
        device: ``auto``/``cpu``/``cuda``/``mps``. dtype: ``auto`` (fp16 on GPU, fp32 on CPU) or explicit.
        batch_size: Most images per pipeline call on a GPU (on the CPU each image is computed alone).
        threads: torch CPU threads for each generate call (pinned for the call, then restored); None uses the
            calling thread's count at the time. Receipts record it; 1 is the canonical configuration.
        attention_slicing, cpu_offload, channels_last, compile: Memory and speed options (see settings).
    """

    def __init__(
        self,
        model: str,
        *,
        model_id: str | None = None,
        lora: str | None = None,
        lora_scale: float = 1.0,
        scheduler: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        attention_slicing: bool = False,
        cpu_offload: str = "none",
        channels_last: bool = False,
        compile: bool = False,
        threads: int | None = CANONICAL_THREADS,
    ) -> None:
        from diffusers import AutoPipelineForText2Image

        self.num_inference_steps = int(num_inference_steps or DEFAULT_STEPS)
        self.guidance_scale = float(DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale)
        if self.num_inference_steps < 1:
            raise ConfigError(
                f"num_inference_steps={num_inference_steps}", hint="use at least 1 (30 is typical)"
            )
        if batch_size < 1:
            raise ConfigError(f"image batch_size={batch_size}", hint="use at least 1")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads={threads}", hint="use 1 or more (1 is the canonical configuration)")
        self.threads = threads
        for name, v in (("width", width), ("height", height)):
            if v is not None and (v < 8 or v % 8):
                raise ConfigError(
                    f"image {name}={v} is not a positive multiple of 8", hint="use e.g. 512 or 1024"
                )
        if cpu_offload not in ("none", "model", "sequential"):
            raise ConfigError(f"cpu_offload={cpu_offload!r}", hint="use none, model or sequential")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if cpu_offload != "none" and self.device.type != "cuda":
            raise ConfigError(
                f"cpu_offload={cpu_offload!r} needs a CUDA device (running on {self.device.type})",
                hint="set models.cpu_offload = 'none' on the CPU, or use attention_slicing to save memory",
            )
        self.source = model_id or model
        self.path = resolve_model_source(model, what="image model", setting="models.image_model")
        self.pipeline_class_name = check_pipeline_dir(self.path)
        self.width, self.height = width, height
        self.negative_prompt = negative_prompt
        self.batch_size = batch_size
        self.options = {
            "attention_slicing": bool(attention_slicing),
            "cpu_offload": cpu_offload,
            "channels_last": bool(channels_last),
            "compile": bool(compile),
        }
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                self.path, torch_dtype=self.dtype, local_files_only=True
            )
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ConfigError(
                f"could not load {self.pipeline_class_name} from {self.path}: {e}",
                hint="check that the directory is a complete save_pretrained output of a text-to-image pipeline",
            ) from e
        pipe.set_progress_bar_config(disable=True)
        self.files = weight_files(self.path)
        self.lora = self._load_lora(pipe, lora, lora_scale) if lora else None
        if scheduler:
            pipe.scheduler = self._scheduler(pipe, scheduler)
        self._place(pipe)
        self.pipe = pipe
        self._img2img: Any = None
        self._lock = threading.Lock()

    # --- loading ---------------------------------------------------------------------------------------------

    def _load_lora(self, pipe: Any, lora: str, scale: float) -> dict[str, Any]:
        path = resolve_model_source(lora, what="LoRA", setting="models.image_lora")
        if path.is_dir():
            preferred = path / "pytorch_lora_weights.safetensors"
            candidates = [preferred] if preferred.is_file() else sorted(path.glob("*.safetensors"))
            if len(candidates) != 1:
                raise ConfigError(
                    f"LoRA directory {path} holds {len(candidates)} .safetensors files; expected exactly one",
                    hint="point models.image_lora at the weight file itself",
                )
            path = candidates[0]
        if not hasattr(pipe, "load_lora_weights"):
            raise ConfigError(
                f"{type(pipe).__name__} does not support LoRA weights", hint="unset models.image_lora"
            )
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=LORA_ADAPTER)
            pipe.set_adapters([LORA_ADAPTER], adapter_weights=[float(scale)])
        except ValueError as e:
            if "PEFT" in str(e):
                raise ConfigError(
                    "LoRA weights need the peft package", hint="pip install peft==0.21.2"
                ) from e
            raise ConfigError(
                f"LoRA {path} does not fit {type(pipe).__name__}: {e}",
                hint="use a LoRA trained for this base model",
            ) from e
        return {"source": lora, "file": path.name, "sha256": file_sha256(path), "scale": float(scale)}

    @staticmethod
    def _scheduler(pipe: Any, name: str) -> Any:
        import diffusers

        compatible = sorted(
            {c.__name__ for c in getattr(pipe.scheduler, "compatibles", [])} | {type(pipe.scheduler).__name__}
        )
        cls = getattr(diffusers, name, None)
        if cls is None or name not in compatible:
            raise ConfigError(
                f"scheduler {name!r} is not compatible with {type(pipe).__name__}",
                hint=f"use one of: {', '.join(compatible)}",
            )
        return cls.from_config(pipe.scheduler.config)

    def _place(self, pipe: Any) -> None:
        opts = self.options
        if opts["attention_slicing"]:
            pipe.enable_attention_slicing()
        if opts["cpu_offload"] == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        elif opts["cpu_offload"] == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if opts["channels_last"]:
            for name in ("unet", "transformer", "vae"):
                module = getattr(pipe, name, None)
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if opts["compile"]:
            denoiser = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
            setattr(pipe, denoiser, torch.compile(getattr(pipe, denoiser)))

    @property
    def img2img(self) -> Any:
        """The image-to-image pipeline sharing this pipeline's components (built on first use)."""
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            except ValueError as e:
                raise ConfigError(
                    f"{type(self.pipe).__name__} has no image-to-image counterpart, so it cannot evolve images: {e}",
                    hint="use a model family with an img2img pipeline (Stable Diffusion, SDXL, Flux, ...)",
                ) from e
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(
            model_id=self.source,
            weights_sha256=weights_digest(self.files),
            kind="image",
            backend="diffusers",
            extra={
                "backend": "diffusers",
                "pipeline": self.pipeline_class_name,
                "path": str(self.path),
                "files": dict(self.files),
                "digest_rule": "one weight file: its sha256; several: sha256 of canonical JSON {relpath: sha256}",
                "lora": self.lora,
                "scheduler": type(self.pipe.scheduler).__name__,
                "num_inference_steps": self.num_inference_steps,
                "guidance_scale": self.guidance_scale,
                "device": str(self.device),
                "dtype": dtype_name(self.dtype),
                **self.options,
            },
        )

    # --- generation ------------------------------------------------------------------------------------------

    def check_inputs(self, requests: Sequence[ImageRequest]) -> list[_Prepared]:
        """Validate every request before any work starts; ConfigError (a ValueError) says how to fix it."""
        size = (self.width, self.height) if self.width and self.height else None
        prepared = []
        for i, r in enumerate(requests):
            where = request_label(r, i, len(requests))
            if not r.prompt and not r.traits:
                raise ConfigError(
                    f"{where}: no prompt and no traits", hint="pass traits (or an explicit prompt)"
                )
            check_seed(r.seed, f"{where}: seed")
            prompt = r.prompt or prompt_from_traits(r.traits)
            if r.init_image is None:
                prepared.append(_Prepared(i, prompt, r.seed, None, None, 1.0, dict(r.traits)))
                continue
            s = r.strength
            if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s) or not 0.0 < s <= 1.0:
                raise ConfigError(
                    f"{where}: strength {s!r} is outside (0, 1]", hint="evolutions usually use 0.4-0.7"
                )
            if int(self.num_inference_steps * s) < 1:
                raise ConfigError(
                    f"{where}: strength {s} x {self.num_inference_steps} steps leaves no denoising step",
                    hint=f"raise strength to at least {1 / self.num_inference_steps:.3f} or raise image_steps",
                )
            try:
                init = decode_init_image(r.init_image, size)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
            sha = hashlib.sha256(bytes(r.init_image)).hexdigest()
            prepared.append(_Prepared(i, prompt, r.seed, init, sha, float(s), dict(r.traits)))
        return prepared

    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        prepared = self.check_inputs(requests)
        out: list[GeneratedImage | None] = [None] * len(prepared)
        groups: dict[tuple[str, float], list[_Prepared]] = {}
        for p in prepared:
            groups.setdefault(("fresh", 1.0) if p.init is None else ("img2img", p.strength), []).append(p)
        step = self.model_batch_size
        # the thread count first, then the pipeline: the same lock order as verify's (threads, then generate)
        with torch_threads(self.threads), self._lock:
            for (mode, _), group in groups.items():
                for start in range(0, len(group), step):
                    chunk = group[start : start + step]
                    pipe = self.pipe if mode == "fresh" else self.img2img
                    pixels = self._run(pipe, chunk, mode)
                    for p, px in zip(chunk, pixels, strict=False):
                        out[p.index] = self._result(pipe, p, px, mode, len(chunk))
                    progress.advance("image", len(chunk))
        return out  # type: ignore[return-value]

    __call__ = generate

    @property
    def model_batch_size(self) -> int:
        """Images per pipeline call: 1 on the CPU (each image independent of its neighbours), else ``batch_size``."""
        return 1 if self.device.type == "cpu" else self.batch_size

    def _call_kwargs(self, pipe: Any, chunk: list[_Prepared], mode: str) -> dict[str, Any]:
        accepted = set(inspect.signature(pipe.__call__).parameters)
        kwargs: dict[str, Any] = {
            "prompt": [p.prompt for p in chunk],
            "num_inference_steps": self.num_inference_steps,
            "generator": [cpu_generator(p.seed) for p in chunk],
            "output_type": "np",
        }
        if "guidance_scale" in accepted:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.negative_prompt:
            if "negative_prompt" not in accepted:
                raise ConfigError(
                    f"{type(pipe).__name__} takes no negative_prompt",
                    hint="unset models.image_negative_prompt",
                )
            kwargs["negative_prompt"] = [self.negative_prompt] * len(chunk)
        if mode == "fresh":
            if self.width and self.height:
                kwargs.update(width=self.width, height=self.height)
        else:
            kwargs.update(image=[p.init for p in chunk], strength=chunk[0].strength)
        return kwargs

    @torch.no_grad()
    def _run(self, pipe: Any, chunk: list[_Prepared], mode: str) -> np.ndarray:
        images = pipe(**self._call_kwargs(pipe, chunk, mode)).images
        arr = np.asarray(images, dtype=np.float32)
        return (arr * 255).round().clip(0, 255).astype(np.uint8)  # as diffusers' numpy_to_pil does

    def _result(self, pipe: Any, p: _Prepared, px: np.ndarray, mode: str, batch_size: int) -> GeneratedImage:
        import diffusers

        sched = pipe.scheduler
        config: dict[str, Any] = {
            "backend": "diffusers",
            "pipeline": type(pipe).__name__,
            "model_id": self.source,
            "weights_sha256": weights_digest(self.files),
            "lora": self.lora,
            "scheduler": {
                "class": type(sched).__name__,
                "config": jsonable({k: v for k, v in dict(sched.config).items() if not k.startswith("_")}),
            },
            "mode": mode,
            "prompt": p.prompt,
            "negative_prompt": self.negative_prompt,
            "traits": dict(p.traits),
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "strength": p.strength,
            "init_image_sha256": p.init_sha256,
            "seed": p.seed,
            "generator": "torch.Generator('cpu').manual_seed(seed), one per image",
            "width": int(px.shape[1]),
            "height": int(px.shape[0]),
            "size_setting": [self.width, self.height],
            **self.options,
            "dtype": dtype_name(self.dtype),
            "device": str(self.device),
            "batch_size": batch_size,
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "diffusers_version": diffusers.__version__,
        }
        return GeneratedImage(
            png=encode_png(px),
            pixels_sha256=pixels_sha256(px),
            width=int(px.shape[1]),
            height=int(px.shape[0]),
            config=config,
        )
