"""The embedded image model: Chrysalis' own 32x32 class-conditional pixel-sprite diffusion model.

No diffusers-loadable image model can be installed from a package registry, so Chrysalis ships a tiny one
(``shipped/sprites32``, trained by ``scripts/train_sprites.py`` on :mod:`agent.generate.sprites.dataset`).

- Fresh image (``init_image is None``): DDIM from Gaussian noise under the token's class (mood x element).
- Evolution (``init_image`` given): the previous stage's PNG is downscaled (nearest) to 32x32, noised to the
  timestep given by ``strength`` and denoised under the new class, so the token keeps its identity while it changes.
  With ``palette_transfer`` it is first recoloured to the new mood within the palette families the model draws in
  (:func:`model_palettes`: the shipped ones, or those a fine-tune's manifest declares); a fine-tune that declares
  none is not recoloured, since its colours are not the shipped model's.
- Output: the native 32x32 image upscaled with nearest-neighbour to 512x512 PNG; ``pixels_sha256`` is the sha256
  of the native uint8 (32, 32, 3) array.

Each request draws its noise from its own CPU ``torch.Generator`` seeded with its seed, and on the CPU each image
goes through the UNet alone (the canonical batch size 1), so its output depends only on its own seed and inputs:
CPU kernels give a row different float bits depending on the batch size and on the row's place in the batch
(oneDNN picks convolution kernels by batch size; vectorised loops and GEMM blocking treat rows by position), so a
batched image could not be replayed from its receipt. On a GPU, requests that share a timestep schedule go
through the UNet together (up to ``max_batch_size``), one call per step; the receipt records the batch size.
A generate call runs with the generator's own torch thread count (``threads``, default 1), restored afterwards.
"""

from __future__ import annotations

import hashlib
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

# From their modules: under TYPE_CHECKING the package root re-exports diffusers' torch-less dummy classes.
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler, DDIMSchedulerOutput
from PIL import Image

from agent.domain import ModelRef
from agent.errors import ConfigError, IntegrityError, NotFoundError
from agent.generate import progress
from agent.generate.base import GeneratedImage, ImageGenerator, ImageRequest, request_label
from agent.generate.runtime import CANONICAL_THREADS, torch_threads
from agent.generate.sprites.conditioning import NULL_CLASS, class_label, class_traits
from agent.generate.sprites.dataset import SIZE

SHIPPED_DIR = Path(__file__).parents[1] / "shipped" / "sprites32"
MODEL_ID = "chrysalis/sprites-32@1"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
MANIFEST_NAME = "manifest.json"
OUTPUT_SIZE = 512
HASHED_FILES = (WEIGHTS_NAME, "config.json", "scheduler_config.json", "conditioning.json")
"""Every file whose bytes decide the output; the manifest lists their sha256 and the loader checks them all."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SEED = 2**64 - 1


class ModelDigestError(NotFoundError, IntegrityError):
    """The model files on disk are not the ones the manifest names (so the model asked for is not there)."""


@dataclass(frozen=True)
class SpriteModel:
    """A loaded, verified model directory."""

    unet: UNet2DModel
    scheduler_config: Mapping[str, Any]
    manifest: Mapping[str, Any]
    model_dir: Path
    device: torch.device
    dtype: torch.dtype


_CACHE: dict[tuple[str, str, str], SpriteModel] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_sprite_model(
    model_dir: Path | None = None, device: str | torch.device = "auto", dtype: torch.dtype = torch.float32
) -> SpriteModel:
    """Load (once per process, per directory/device/dtype) and verify a sprite model directory."""
    model_dir = Path(model_dir or SHIPPED_DIR).resolve()
    dev = resolve_device(device)
    key = (str(model_dir), str(dev), str(dtype))
    with _CACHE_LOCK:
        if key not in _CACHE:
            manifest = verify_model_dir(model_dir)
            unet = UNet2DModel.from_pretrained(model_dir, local_files_only=True, torch_dtype=dtype)
            unet = unet.to(dev).eval().requires_grad_(False)
            sched_cfg = json.loads((model_dir / "scheduler_config.json").read_text())
            _CACHE[key] = SpriteModel(unet, sched_cfg, manifest, model_dir, dev, dtype)
        return _CACHE[key]


def verify_model_dir(model_dir: Path) -> dict[str, Any]:
    """Check that ``model_dir`` holds a manifest and files whose sha256 match it. Returns the manifest."""
    hint = (
        "the embedded model ships inside the chrysalis package (agent/generate/shipped/sprites32); reinstall it, "
        "pass model_dir=<dir>, or rebuild one with `python scripts/train_sprites.py --out RUN --export DIR`"
    )
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise NotFoundError(f"no sprite model at {model_dir} (missing {MANIFEST_NAME})", hint=hint)
    manifest = json.loads(manifest_path.read_text())
    for name, want in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise NotFoundError(f"sprite model file {path} is missing", hint=hint)
        got = file_sha256(path)
        if got != want:
            raise ModelDigestError(
                f"sha256 of {path} is {got}, but {manifest_path} says {want}",
                hint="the weights were changed or corrupted; restore the shipped files (or re-export the model, "
                "which rewrites the manifest and needs a new model id in the registry)",
            )
    if manifest["files"].get(WEIGHTS_NAME) != manifest.get("weights_sha256"):
        raise ModelDigestError(
            f"{manifest_path} is inconsistent: weights_sha256 differs from files[{WEIGHTS_NAME}]"
        )
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pixels_sha256(pixels: np.ndarray) -> str:
    """sha256 of a native uint8 (H, W, 3) array in C order."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def encode_png(pixels: np.ndarray, size: int = OUTPUT_SIZE) -> bytes:
    """Nearest-neighbour upscale of a (32, 32, 3) uint8 array to ``size`` x ``size`` PNG bytes."""
    k = size // pixels.shape[0]
    big = np.repeat(np.repeat(pixels, k, axis=0), k, axis=1)
    buf = io.BytesIO()
    Image.fromarray(big, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def sprite_image(pixels: np.ndarray, config: Mapping[str, Any]) -> GeneratedImage:
    """A native (32, 32, 3) uint8 sprite as a :class:`GeneratedImage`: the upscaled PNG (:func:`encode_png`), the
    pixels' sha256 (:func:`pixels_sha256`), the native size and ``config``."""
    return GeneratedImage(
        png=encode_png(pixels), pixels_sha256=pixels_sha256(pixels), width=SIZE, height=SIZE, config=config
    )


def decode_png(data: bytes, size: int = SIZE) -> np.ndarray:
    """PNG bytes of a square image whose side is a multiple of ``size`` -> (size, size, 3) uint8 by nearest sampling.

    Takes the top-left pixel of each block, which is exact for our own nearest-neighbour upscales.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or not bytes(data[:8]) == PNG_SIGNATURE:
        raise ConfigError(
            "the previous stage's image (init_image) is not PNG data",
            hint="pass the previous stage's PNG file exactly as the model wrote it (<data_dir>/assets/<token>/"
            "<stage>.png, or image.png from `chrysalis model sample`), not a JPEG or an edited copy",
        )
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            w, h = im.size
            if w != h or w % size or not size <= w <= 4096:
                raise ConfigError(
                    f"init_image is {w}x{h}; the sprite model needs a square image whose side is a multiple of {size}",
                    hint=f"pass the previous stage's {OUTPUT_SIZE}x{OUTPUT_SIZE} PNG (or the native {size}x{size} one)",
                )
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ConfigError:
        raise
    except Exception as e:  # truncated or corrupt PNG
        raise ConfigError(f"init_image could not be decoded as PNG: {e}", hint="pass intact PNG bytes") from e
    k = w // size
    return np.ascontiguousarray(arr[::k, ::k])


def model_palettes(manifest: Mapping[str, Any]) -> str | None:
    """The name of the palette families the model draws in, which evolutions recolour within (a key of
    :data:`~agent.generate.sprites.palette.PALETTE_FAMILIES`):

    - the manifest's ``palettes`` when it declares one (``chrysalis model train --palettes neon``);
    - ``shipped`` for a model that is not a fine-tune (no ``base_model``: the shipped model, or an export of
      ``scripts/train_sprites.py``, trained on the procedural sprites in the shipped palettes);
    - None for a fine-tune that declares none: its palettes are unknown, so an evolution keeps the previous
      image's colours (recolouring into the shipped palettes would pull it out of its own style).

    Raises:
        ConfigError: the manifest declares a name that is not a known palette family.
    """
    from agent.generate.sprites.palette import SHIPPED_FAMILY, palette_families

    if "palettes" in manifest:
        name = manifest["palettes"]
        try:
            palette_families(name)
        except ConfigError as e:
            raise ConfigError(
                f"the sprite model {manifest.get('model_id')} declares {e.message}",
                hint=f"{e.hint}: fix palettes in its manifest.json, or retrain it with --palettes NAME",
            ) from None
        return str(name)
    return None if "base_model" in manifest else SHIPPED_FAMILY


@dataclass(frozen=True)
class _Prepared:
    index: int
    label: int
    seed: int
    init: np.ndarray | None
    init_png_sha256: str | None
    strength: float
    palette_from: str | None = None  # the init image's mood, when it was recoloured to the requested one
    init_pixels_sha256: str | None = None  # of the previous stage's pixels, before any recolouring
    palette_from_family: str | None = None  # the families the init image was read in, when not the model's


class EmbeddedSpriteGenerator(ImageGenerator):
    """Generates 32x32 pixel creatures with the shipped model, upscaled to 512x512 PNG.

    Args:
        model_dir: A model directory with ``manifest.json``; defaults to the shipped ``sprites32``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        num_inference_steps: DDIM steps for a fresh image (an evolution runs ``round(steps * strength)`` of them).
        guidance_scale: Classifier-free guidance; 1.0 disables it (one UNet pass per step).
        max_batch_size: Most requests sent through the UNet at once on a GPU (on the CPU each image goes alone).
        palette_transfer: Evolving to another mood first recolours the previous image to the new mood's palette
            family (:mod:`agent.generate.sprites.palette`), so a moderate strength keeps the token's identity and
            still shows the new mood. It maps within the families the model draws in (:func:`model_palettes`);
            a fine-tune that declares none is not recoloured. The start is read in whichever known families
            cover it best (:func:`~agent.generate.sprites.quality.predicted_palette`, the model's own on a tie),
            so a token drawn in the shipped colours that evolves under a neon fine-tune is recoloured into neon.
            The config records the mood it came from and the recoloured start's hash, ``from_palettes`` when the
            start was in other families than the model's, and (for any model whose families are not the shipped
            ones) ``palettes``: the family name, or None where no transfer could apply.
        dtype: Model dtype (float32: the model is tiny and float32 keeps CPU outputs reproducible).
        threads: torch CPU threads for each generate call (pinned for the call, then restored); None uses the
            calling thread's count at the time. Receipts record it; 1 is the canonical configuration.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        device: str = "auto",
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        max_batch_size: int = 64,
        dtype: torch.dtype = torch.float32,
        palette_transfer: bool = True,
        threads: int | None = CANONICAL_THREADS,
    ) -> None:
        if num_inference_steps < 1:
            raise ConfigError(
                f"num_inference_steps={num_inference_steps}", hint="use at least 1 (50 is the default)"
            )
        if not guidance_scale >= 1.0:
            raise ConfigError(f"guidance_scale={guidance_scale}", hint="use 1.0 (off) or more")
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size={max_batch_size}", hint="use at least 1")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads={threads}", hint="use 1 or more (1 is the canonical configuration)")
        self.model = load_sprite_model(model_dir, device, dtype)
        self.device = self.model.device
        self.dtype = dtype
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.max_batch_size = max_batch_size
        self.palette_transfer = palette_transfer
        self.palettes = model_palettes(self.model.manifest)
        """The palette families evolutions recolour within (:func:`model_palettes`); None: no recolouring."""
        self.threads = threads

    @property
    def model_ref(self) -> ModelRef:
        m = self.model.manifest
        declared = {"palettes": m["palettes"]} if "palettes" in m else {}
        return ModelRef(
            model_id=m["model_id"],
            weights_sha256=m["weights_sha256"],
            kind="image",
            backend="embedded",
            extra={
                "files": dict(m["files"]),
                "dataset_generator_version": m.get("dataset_generator_version"),
                "scheduler": "DDIMScheduler",
                "num_inference_steps": self.num_inference_steps,
                "guidance_scale": self.guidance_scale,
                "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device),
                "native_size": SIZE,
                "output_size": OUTPUT_SIZE,
                **declared,
            },
        )

    def check_inputs(self, requests: Sequence[ImageRequest]) -> list[_Prepared]:
        """Validate every request before any work starts; raises ConfigError (a ValueError) saying how to fix it."""
        prepared = []
        for i, r in enumerate(requests):
            where = request_label(r, i, len(requests))
            try:
                label = class_label(r.traits)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
            if isinstance(r.seed, bool) or not isinstance(r.seed, int) or not 0 <= r.seed <= MAX_SEED:
                raise ConfigError(
                    f"{where}: seed {r.seed!r} is not an unsigned 64-bit integer",
                    hint="derive it with agent.generate.seed.derive_seed (0 <= seed < 2**64)",
                )
            if r.init_image is None:
                prepared.append(_Prepared(i, label, r.seed, None, None, 1.0))
                continue
            s = r.strength
            if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s) or not 0.0 <= s <= 1.0:
                raise ConfigError(
                    f"{where}: strength {s!r} is outside [0, 1]",
                    hint="0 keeps the previous image, 1 ignores it; evolutions usually use 0.4-0.7",
                )
            try:
                init = decode_png(r.init_image)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
            png_sha = hashlib.sha256(bytes(r.init_image)).hexdigest()
            palette_from, from_family, init_sha = None, None, pixels_sha256(init)
            if self.palette_transfer and self.palettes is not None:
                from agent.generate.sprites.palette import transfer_palette
                from agent.generate.sprites.quality import predicted_palette

                mood = class_traits(label)["mood"]
                family, seen = predicted_palette(init, self.palettes)
                if (family, seen) != (self.palettes, mood):
                    init = transfer_palette(init, seen, mood, self.palettes, src_family=family)
                    palette_from = seen
                    from_family = None if family == self.palettes else family
            prepared.append(
                _Prepared(i, label, r.seed, init, png_sha, float(s), palette_from, init_sha, from_family)
            )
        return prepared

    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        prepared = self.check_inputs(requests)
        out: list[GeneratedImage | None] = [None] * len(prepared)
        groups: dict[tuple[int, bool], list[_Prepared]] = {}
        # requests that share a timestep schedule and a start (noise, or an init image) run together
        for p in prepared:
            groups.setdefault((self._denoise_steps(p), p.init is not None), []).append(p)
        step = self.model_batch_size
        with torch_threads(self.threads):
            for (n_steps, _), group in groups.items():
                for start in range(0, len(group), step):
                    chunk = group[start : start + step]
                    pixels = self._run(chunk, n_steps)
                    for p, px in zip(chunk, pixels, strict=False):
                        out[p.index] = self._result(p, px, n_steps, len(chunk))
                    progress.advance("image", len(chunk))
        return out  # type: ignore[return-value]

    __call__ = generate

    @property
    def model_batch_size(self) -> int:
        """Images per UNet call: 1 on the CPU (each image independent of its neighbours), else ``max_batch_size``."""
        return 1 if self.device.type == "cpu" else self.max_batch_size

    # --- internals -------------------------------------------------------------------------------------------

    def _denoise_steps(self, p: _Prepared) -> int:
        if p.init is None:
            return self.num_inference_steps
        return min(self.num_inference_steps, int(round(self.num_inference_steps * p.strength)))

    def _scheduler(self) -> DDIMScheduler:
        sched = DDIMScheduler.from_config(self.model.scheduler_config)
        sched.set_timesteps(self.num_inference_steps)
        return sched

    @torch.no_grad()
    def _run(self, chunk: list[_Prepared], n_steps: int) -> np.ndarray:
        """Denoise one batch through its last ``n_steps`` DDIM timesteps. Returns (B, 32, 32, 3) uint8."""
        sched = self._scheduler()
        timesteps = sched.timesteps[len(sched.timesteps) - n_steps :]
        # Each request's noise comes from its own CPU generator, so it depends only on its seed.
        noise = torch.cat(
            [
                torch.randn(
                    (1, 3, SIZE, SIZE),
                    generator=torch.Generator("cpu").manual_seed(p.seed),
                    dtype=torch.float32,
                )
                for p in chunk
            ]
        )
        inits = [p.init for p in chunk if p.init is not None]
        if not inits:
            x = noise * sched.init_noise_sigma
        else:
            assert len(inits) == len(chunk), "a batch is all image-to-image or all text-to-image"
            x0 = torch.from_numpy(np.stack(inits)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            if n_steps == 0:
                x = x0
            else:
                # diffusers annotates timesteps as torch.IntTensor; any integer tensor (these are int64) works
                x = sched.add_noise(x0, noise, timesteps[:1].repeat(len(chunk)))  # type: ignore[arg-type]
        x = x.to(device=self.device, dtype=self.dtype)
        labels = torch.tensor([p.label for p in chunk], device=self.device)
        cfg = self.guidance_scale != 1.0
        if cfg:
            labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
        for t in timesteps:
            inp = torch.cat([x, x]) if cfg else x
            eps = self.model.unet(inp, t, class_labels=labels).sample
            if cfg:
                cond, uncond = eps.chunk(2)
                eps = uncond + self.guidance_scale * (cond - uncond)
            stepped = sched.step(eps, t, x, eta=0.0)
            assert isinstance(stepped, DDIMSchedulerOutput)  # return_dict=True (the default)
            x = stepped.prev_sample
        x = ((x.float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy()

    def _result(self, p: _Prepared, px: np.ndarray, n_steps: int, batch_size: int) -> GeneratedImage:
        config: dict[str, Any] = {
            "pipeline": "chrysalis.EmbeddedSpriteGenerator",
            **self._request_config(p, n_steps),
            "generator": "torch.Generator('cpu').manual_seed(seed); randn((1, 3, 32, 32))",
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "batch_size": batch_size,
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "diffusers_version": _diffusers_version(),
        }
        return sprite_image(px, config)

    def _request_config(self, p: _Prepared, n_steps: int) -> dict[str, Any]:
        """The image config's keys that describe the model and the request, whatever runtime ran it: model id
        and digest, scheduler, mode, steps, guidance, strength, class, init hashes, palette transfer, seed, sizes."""
        sched_cfg = {k: v for k, v in self.model.scheduler_config.items() if not k.startswith("_")}
        return {
            "model_id": self.model.manifest["model_id"],
            "weights_sha256": self.model.manifest["weights_sha256"],
            "scheduler": {"class": "DDIMScheduler", "config": sched_cfg},
            "mode": "fresh" if p.init is None else "img2img",
            "num_inference_steps": self.num_inference_steps,
            "denoise_steps": n_steps,
            "eta": 0.0,
            "guidance_scale": self.guidance_scale,
            "strength": 1.0 if p.init is None else p.strength,
            "class_label": p.label,
            "traits": class_traits(p.label),
            "init_image_sha256": p.init_png_sha256,
            "init_pixels_sha256": p.init_pixels_sha256,
            "palette_transfer": self._transfer_record(p),
            "seed": p.seed,
            "width": SIZE,
            "height": SIZE,
            "output_size": OUTPUT_SIZE,
        }

    def _transfer_record(self, p: _Prepared) -> dict[str, Any] | None:
        """The config's ``palette_transfer``: None for a fresh image or with the setting off; else the mood the
        start was recoloured from (None: not recoloured) and the start's hash, plus ``palettes`` (the families
        used; None: none known, so no transfer) unless they are the shipped ones (so the shipped model's receipts
        keep their form)."""
        from agent.generate.sprites.palette import SHIPPED_FAMILY

        if p.init is None or not self.palette_transfer:
            return None
        record: dict[str, Any] = {"from": p.palette_from, "start_pixels_sha256": pixels_sha256(p.init)}
        if self.palettes != SHIPPED_FAMILY:
            record["palettes"] = self.palettes
        if (
            p.palette_from_family is not None
        ):  # the start was in other families (e.g. shipped colours, now neon)
            record["from_palettes"] = p.palette_from_family
        return record


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def write_shipped_model(checkpoint: Path, dest: Path, *, model_id: str = MODEL_ID) -> dict[str, Any]:
    """Export a training checkpoint's EMA weights to ``dest`` with ``conditioning.json`` and ``manifest.json``.

    The manifest's ``weights_sha256`` is the sha256 of the raw bytes of ``diffusion_pytorch_model.safetensors``
    (what ``sha256sum`` prints); it is the digest the contract's model registry records.
    """
    from agent.generate.sprites import conditioning
    from agent.generate.sprites.dataset import GENERATOR_VERSION
    from agent.generate.sprites.training import export

    facts = export(checkpoint, dest)
    (dest / "conditioning.json").write_text(json.dumps(conditioning.as_json(), indent=2) + "\n")
    files = {name: file_sha256(dest / name) for name in HASHED_FILES}
    manifest = {
        "model_id": model_id,
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": files[WEIGHTS_NAME],
        "digest_rule": (
            "weights_sha256 = sha256 of the raw bytes of weights_file (as `sha256sum` prints it); this is the "
            "digest the contract's model registry records. `files` holds the sha256 of every file that decides "
            "the output; the loader refuses the directory if any differs."
        ),
        "files": files,
        "dataset_generator_version": GENERATOR_VERSION,
        "native_size": SIZE,
        "output_size": OUTPUT_SIZE,
        "classes": 16,
        "null_class": NULL_CLASS,
        "parameters": facts["parameters"],
        "training_steps": facts["step"],
    }
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[0] == str(dest.resolve())]:
            del _CACHE[key]
    return facts
