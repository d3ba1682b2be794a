"""LoRA fine-tuning of a diffusers text-to-image pipeline's UNet or SD3 transformer, following diffusers' own recipes.

One entry point, :func:`train_diffusers_lora`, picks the recipe from the pipeline it loads:

- A UNet (Stable Diffusion 1.x/2.x): diffusers' ``examples/text_to_image/train_text_to_image_lora.py``. The VAE,
  the text encoder and the UNet are frozen; a peft ``LoraConfig(r, lora_alpha, init_lora_weights="gaussian",
  target_modules=["to_k", "to_q", "to_v", "to_out.0"])`` adapter is added to the UNet; each step encodes the images
  to latents (``latent_dist.sample() * scaling_factor``), adds noise at uniform random timesteps with the pipeline's
  noise schedule as a ``DDPMScheduler``, predicts epsilon or v (the scheduler config's ``prediction_type``), and
  takes an MSE loss; AdamW (betas 0.9/0.999, weight decay 1e-2, eps 1e-8, constant learning rate). Saved with
  ``get_peft_model_state_dict`` -> ``convert_state_dict_to_diffusers`` -> ``save_lora_weights(unet_lora_layers=)``.
- An ``SD3Transformer2DModel`` (Stable Diffusion 3/3.5): diffusers'
  ``examples/dreambooth/train_dreambooth_lora_sd3.py``. The VAE, both CLIP encoders, T5 and the transformer are
  frozen; the same ``LoraConfig`` goes on the transformer's attention (``to_k``/``to_q``/``to_v``/``to_out.0``);
  prompts are encoded by the pipeline's own ``encode_prompt`` (at the ``max_sequence_length`` the pipeline generates
  with); latents are ``(sample - shift_factor) * scaling_factor``; flow matching with the pipeline's schedule as a
  ``FlowMatchEulerDiscreteScheduler``: a uniform ``u`` (weighting scheme ``none``) picks a training timestep and its
  sigma, ``x_t = (1 - sigma) x_0 + sigma noise``, and the loss is the MSE to ``noise - latents`` (no output
  preconditioning); AdamW with the script's weight decay 1e-4. Saved with ``get_peft_model_state_dict`` ->
  ``save_lora_weights(transformer_lora_layers=)``.

Both update the LoRA parameters only, with gradients clipped to norm 1, and write
``out_dir/pytorch_lora_weights.safetensors``, which the production image backend loads as ``models.image_lora``
(:class:`agent.generate.image.diffusers.DiffusersImageGenerator`'s ``lora=``).

Supported pipelines: a UNet with one CLIP-style text encoder and tokenizer (Stable Diffusion 1.x/2.x and pipelines
built like them), and Stable Diffusion 3 pipelines (an ``SD3Transformer2DModel`` with SD3's LoRA loader). Others
(SDXL's two encoders and time ids; other transformers such as Flux, PixArt, Sana) are refused before anything
trains, naming the reason.

Prompts: an item's ``caption``, or for a class-conditional item the production backend's own
:func:`~agent.generate.image.diffusers.prompt_from_traits`, so training and inference ask for the same text.
Images: resized (shorter side to ``resolution``, bilinear) and centre-cropped with PIL, scaled to [-1, 1].

Guarantees:

- Determinism: on the CPU (the canonical configuration: float32, one torch thread for the run, restored after) the
  same dataset, base, hyperparameters and seed give the same bytes in ``pytorch_lora_weights.safetensors``. Every
  random draw comes from a CPU ``torch.Generator`` seeded from ``(seed, step)`` (latent sampling, noise,
  timesteps) or ``(seed, epoch)`` (the data order); nothing reads the global RNG except peft's gaussian LoRA init,
  which runs inside ``torch.random.fork_rng()`` right after ``torch.manual_seed(seed)``, so it is seeded and the
  caller's RNG is left untouched. The adapter metadata's sets are written as sorted lists (diffusers writes
  ``list(set)``, whose order changes with ``PYTHONHASHSEED``), and the file's header is rewritten with its metadata
  keys sorted (safetensors keeps them in a Rust ``HashMap``, whose order changes from one save to the next:
  :func:`canonical_safetensors_header`). The same holds for both recipes. On a GPU the run is seeded the same way
  but its float bits differ from the CPU's; its result is not the canonical one.
- Data order: epoch ``e`` visits the items in ``torch.randperm(n)`` drawn from ``(seed, e)``; step ``s`` takes
  positions ``s*batch_size ...`` of that stream. The per-step index lists are hashed into ``data_order_sha256``.
- Resume: every ``checkpoint_every`` steps (and at the end) the LoRA parameters, the optimizer, the step, the
  losses and the time spent go atomically to ``out_dir/.checkpoint/training-state``. Started again with the same
  arguments, a run resumes there and ends with the same weights as an uninterrupted run; a checkpoint made with
  other arguments (dataset, base, hyperparameters, seed) is refused with a hint. ``steps`` is not part of that
  check: a finished run can be continued to more steps and equals a run that went there at once (the learning rate
  is constant).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.domain import canonical_json
from agent.errors import ConfigError
from agent.training.result import TrainResult, data_order_sha256

if TYPE_CHECKING:
    import torch

TRAINER = "diffusers-lora"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_FILE = "training-state"
"""A ``torch.save`` file with no weight-file suffix, so :func:`agent.generate.runtime.weight_files` (the production
backends' model digest) never counts it."""
TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
"""The denoiser's attention projections (the UNet's, or the SD3 transformer's image stream), as in diffusers'
recipes."""

Progress = Callable[[int, int, float], None]


# --- shared by the trainers ----------------------------------------------------------------------------------


def derived_seed(tag: str, *parts: int) -> int:
    """A 63-bit seed for a CPU ``torch.Generator``: sha256 of ``tag`` and ``parts`` (independent streams per tag)."""
    data = canonical_json([tag, *[int(p) for p in parts]])
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1


def step_generator(tag: str, seed: int, step: int) -> torch.Generator:
    import torch

    return torch.Generator("cpu").manual_seed(derived_seed(tag, seed, step))


def step_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The item indices of ``step``: positions ``step*batch_size...`` of the per-epoch permutations."""
    import torch

    out: list[int] = []
    perms: dict[int, list[int]] = {}
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, k = divmod(pos, n)
        if epoch not in perms:
            g = torch.Generator("cpu").manual_seed(derived_seed("epoch", seed, epoch))
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][k])
    return out


def files_sha256(out_dir: Path, names: Sequence[str]) -> dict[str, str]:
    """``{relative posix path: sha256}`` of the files a trainer wrote (sorted by path)."""
    out = {}
    for rel in sorted(names):
        h = hashlib.sha256()
        with open(out_dir / rel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[rel] = h.hexdigest()
    return out


def canonical_safetensors_header(path: Path) -> None:
    """Rewrite a ``.safetensors`` file's header with its ``__metadata__`` keys sorted (tensor data untouched).

    The safetensors library keeps the metadata in a Rust ``HashMap``, so a file with two or more metadata keys
    gets a different key order (and sha256) from one save to the next. Readers do not care about the order.
    """
    import json

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])
    os.replace(tmp, path)


def check_common(
    *, steps: int, batch_size: int, seed: int, checkpoint_every: int, lr: float, rank: int, alpha: int
) -> None:
    """ConfigError for numbers no trainer can use."""
    for name, v in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name}={v!r} is not a positive integer", hint=f"pass {name} >= 1")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(
            f"rank={rank!r} is not a positive integer", hint="use a LoRA rank such as 4, 8 or 16"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, int) or alpha <= 0:
        raise ConfigError(f"alpha={alpha!r} is not positive", hint="use alpha = rank (scale 1) or 2 x rank")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed={seed!r} is not an unsigned 64-bit integer", hint="pass e.g. --seed 0")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ConfigError(
            f"learning rate {lr!r} is outside (0, 1)", hint="LoRA usually trains at 1e-4 to 1e-3"
        )


@dataclass
class Checkpoint:
    """The resumable part of a LoRA run (only the trainable parameters are stored)."""

    fingerprint: str
    step: int
    params: dict[str, Any]
    optimizer: dict[str, Any]
    losses: list[float]
    orders: list[list[int]]
    train_seconds: float


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config)).hexdigest()


def load_checkpoint(out_dir: Path, expected: str) -> Checkpoint | None:
    import torch

    path = out_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        found = Checkpoint(**ck)
    except Exception as e:
        raise ConfigError(
            f"the checkpoint {path} cannot be read: {e}",
            hint=f"delete {path.parent} to start the run over",
        ) from e
    if found.fingerprint != expected:
        raise ConfigError(
            f"{out_dir} holds the checkpoint of another run (different dataset, base model, hyperparameters or "
            "seed)",
            hint=f"train into an empty out_dir, or delete {path.parent} to start over with these arguments",
        )
    return found


def save_checkpoint(out_dir: Path, ck: Checkpoint) -> None:
    """Atomically write ``out_dir/.checkpoint/training-state``."""
    import torch

    d = out_dir / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (CHECKPOINT_FILE + ".tmp")
    torch.save(ck.__dict__, tmp)
    os.replace(tmp, d / CHECKPOINT_FILE)


def trainable_state(module: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu", copy=True) for n, p in module.named_parameters() if p.requires_grad}


def restore_trainable(module: Any, params: dict[str, Any]) -> None:
    import torch

    own = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(own) != set(params):
        raise ConfigError(
            "the checkpoint's LoRA parameters do not match this model's",
            hint="delete out_dir/.checkpoint to start over",
        )
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(params[n].to(p.device))


def start_or_resume(
    out_dir: Path, fp: str, steps: int, *, module: Any, optimizer: torch.optim.Optimizer
) -> Checkpoint:
    """The run's checkpoint: a fresh one, or the one in ``out_dir`` (same fingerprint ``fp``) restored into
    ``module``'s trainable tensors and ``optimizer``.

    Raises:
        ConfigError: the checkpoint is already past ``steps``.
    """
    ck = load_checkpoint(out_dir, fp)
    if ck is not None and ck.step > steps:
        raise ConfigError(
            f"{out_dir} holds a run already at step {ck.step}, past the {steps} steps asked for",
            hint=f"ask for at least {ck.step} steps, or train into another out_dir",
        )
    if ck is None:
        ck = Checkpoint(fp, 0, {}, {}, [], [], 0.0)
    else:
        restore_trainable(module, ck.params)
        optimizer.load_state_dict(ck.optimizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    return ck


def optimize_and_record(
    ck: Checkpoint,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    idx: list[int],
    t0: float,
    *,
    module: Any,
    out_dir: Path,
    steps: int,
    checkpoint_every: int,
    progress: Progress | None,
) -> None:
    """One optimizer step on ``loss`` (gradients clipped to norm 1), then the step's bookkeeping both LoRA trainers
    share: the loss, the batch's item indices and the time go into ``ck``; a checkpoint of ``module``'s trainable
    tensors and the optimizer every ``checkpoint_every`` steps and at the last; ``progress(step, steps, loss)``."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    value = float(loss.detach().float().cpu())
    ck.step += 1
    ck.losses.append(value)
    ck.orders.append(idx)
    ck.train_seconds += time.monotonic() - t0
    if ck.step % checkpoint_every == 0 or ck.step == steps:
        ck.params, ck.optimizer = trainable_state(module), optimizer.state_dict()
        save_checkpoint(out_dir, ck)
    if progress is not None:
        progress(ck.step, steps, value)


def run_device(device: str) -> torch.device:
    from agent.generate.runtime import resolve_device

    return resolve_device(device)


# --- the diffusers trainer -----------------------------------------------------------------------------------


def item_prompt(item: Any) -> str:
    """An image item's training prompt: its caption, else the production backend's prompt for its traits."""
    from agent.generate.image.diffusers import prompt_from_traits

    if getattr(item, "caption", None):
        return str(item.caption)
    if getattr(item, "traits", None):
        return prompt_from_traits(item.traits)
    raise ConfigError(
        f"dataset item {item.name} has neither a caption nor traits",
        hint='give each labels.jsonl line a "caption" or "traits"',
    )


def _pixels(rgb: Any, resolution: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, R, R) float32 in [-1, 1]: shorter side to ``resolution`` (bilinear), centre crop."""
    import numpy as np
    import torch
    from PIL import Image

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB")
    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _load_pipeline(base: Path) -> tuple[Any, Path]:
    import torch
    from diffusers import DiffusionPipeline

    from agent.generate.image.diffusers import check_pipeline_dir
    from agent.generate.runtime import resolve_model_source

    path = resolve_model_source(str(base), what="base image model", setting="--base")
    name = check_pipeline_dir(path)
    try:
        pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            f"could not load {name} from {path}: {e}",
            hint="point --base at a complete save_pretrained directory of a text-to-image pipeline",
        ) from e
    supported = (
        "use a Stable Diffusion 1.x/2.x or 3.x pipeline as --base, or diffusers' own train_*_lora_* script "
    )
    supported += "for this family"
    if getattr(pipe, "unet", None) is not None:
        if getattr(pipe, "text_encoder_2", None) is not None or getattr(pipe, "text_encoder", None) is None:
            raise ConfigError(
                f"{name} has a UNet but not exactly one text encoder (SDXL-style pipelines need added time ids); "
                "UNet LoRA training here follows diffusers' Stable Diffusion 1.x/2.x recipe",
                hint=supported,
            )
    elif getattr(pipe, "transformer", None) is not None:
        from diffusers import SD3Transformer2DModel
        from diffusers.loaders import SD3LoraLoaderMixin

        if not (isinstance(pipe.transformer, SD3Transformer2DModel) and isinstance(pipe, SD3LoraLoaderMixin)):
            raise ConfigError(
                f"{name} has a {type(pipe.transformer).__name__}; transformer LoRA training here follows diffusers' "
                "Stable Diffusion 3 recipe (SD3Transformer2DModel)",
                hint=supported,
            )
    else:
        raise ConfigError(f"{name} has neither a UNet nor a transformer to adapt", hint=supported)
    if not hasattr(type(pipe), "save_lora_weights"):
        raise ConfigError(f"{name} cannot save LoRA weights", hint="use a pipeline with LoRA support")
    return pipe, path


def _check_image_dataset(dataset: Any) -> list[Any]:
    if getattr(dataset, "kind", None) != "image":
        raise ConfigError(
            f"{getattr(dataset, 'path', dataset)} is a {getattr(dataset, 'kind', '?')} dataset; image LoRA "
            "training needs an image dataset (labels.jsonl)",
            hint="pass a folder with labels.jsonl and its images",
        )
    items = list(dataset.items)
    if not items:
        raise ConfigError(f"dataset {dataset.path} has no items", hint="add images and labels.jsonl lines")
    return items


def train_diffusers_lora(
    dataset: Any,
    base: Path,
    out_dir: Path,
    *,
    rank: int = 4,
    alpha: int = 4,
    lr: float = 1e-4,
    steps: int,
    batch_size: int = 1,
    resolution: int,
    seed: int,
    checkpoint_every: int = 100,
    device: str = "auto",
    progress: Progress | None = None,
) -> TrainResult:
    """Train a LoRA on ``base``'s UNet or SD3 transformer from an image dataset (the recipe follows the pipeline: see
    the module docstring); write ``out_dir/pytorch_lora_weights.safetensors``.

    Args:
        dataset: An :class:`agent.datasets.Dataset` of kind ``image`` (captions or traits).
        base: The pipeline directory (or cached hub id) to adapt.
        out_dir: Where the weights (and ``.checkpoint/``) go.
        rank, alpha: LoRA rank and alpha (scale = alpha / rank).
        lr: AdamW learning rate (constant).
        steps: Optimizer steps in all (a resumed run continues to this step).
        batch_size: Images per step.
        resolution: Training size in pixels (a multiple of 8).
        seed: The run's seed (LoRA init, data order, latents, noise, timesteps).
        checkpoint_every: Steps between checkpoints.
        device: ``auto`` (CUDA/MPS when present), ``cpu`` (canonical) or an explicit device.
        progress: Called after every step with ``(step, steps, loss)``.
    """
    from agent.generate.runtime import torch_threads

    check_common(
        steps=steps, batch_size=batch_size, seed=seed, checkpoint_every=checkpoint_every, lr=lr, rank=rank,
        alpha=alpha,
    )  # fmt: skip
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8 or resolution % 8:
        raise ConfigError(f"resolution={resolution!r} is not a positive multiple of 8", hint="use e.g. 512")
    items = _check_image_dataset(dataset)
    dev = run_device(device)
    out_dir = Path(out_dir)
    with torch_threads(1 if dev.type == "cpu" else None):
        return _train(
            dataset,
            items,
            Path(base),
            out_dir,
            rank,
            alpha,
            lr,
            steps,
            batch_size,
            resolution,
            seed,
            checkpoint_every,
            dev,
            progress,
        )


@dataclass
class _Recipe:
    """What differs between the UNet recipe and the transformer (SD3) recipe; the rest of a run is shared."""

    denoiser: str
    """The pipeline attribute that gets the LoRA (and ``save_lora_weights``' keyword prefix): unet or transformer."""
    frozen: tuple[str, ...]
    """The pipeline attributes used frozen (VAE, text encoders), moved to the run's device."""
    weight_decay: float
    """AdamW weight decay (the recipe script's default)."""
    hyper: dict[str, Any]
    """The recipe's own hyperparameters (part of the run's fingerprint and its result)."""
    encode: Callable[[str], tuple[torch.Tensor, ...]]
    """One prompt -> its conditioning tensors (a batch of one; prompts are encoded one at a time, so a prompt's
    float bits do not depend on its neighbours)."""
    loss: Callable[[torch.Tensor, tuple[torch.Tensor, ...], torch.Generator], torch.Tensor]
    """(pixels on the device, the batch's conditioning rows, the step's generator) -> the step's loss."""
    diffusers_keys: bool
    """Convert peft's state-dict keys with ``convert_state_dict_to_diffusers`` before saving, as the recipe does."""


def _sample_latents(vae: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``vae.encode(x).latent_dist.sample()`` with the noise drawn from ``g`` on the CPU (unscaled)."""
    import torch

    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        return dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(x.device)


def _unet_recipe(pipe: Any, dev: torch.device) -> _Recipe:
    """diffusers' ``train_text_to_image_lora.py``: DDPM noise at uniform timesteps, epsilon or v target, MSE."""
    import torch
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise ConfigError(
            f"the scheduler predicts {prediction!r}; the recipe trains epsilon or v_prediction",
            hint="use a base pipeline whose scheduler config has prediction_type epsilon or v_prediction",
        )
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(dev)
    timesteps_in_all = noise_scheduler.config.num_train_timesteps
    scaling = float(pipe.vae.config.scaling_factor)
    tokenizer = pipe.tokenizer

    def encode(prompt: str) -> tuple[torch.Tensor, ...]:
        ids = tokenizer(
            [prompt],
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return (pipe.text_encoder(ids.to(dev), return_dict=False)[0],)

    def loss(x: torch.Tensor, cond: tuple[torch.Tensor, ...], g: torch.Generator) -> torch.Tensor:
        latents = _sample_latents(pipe.vae, x, g) * scaling
        noise = torch.randn(latents.shape, generator=g).to(dev)
        timesteps = torch.randint(0, timesteps_in_all, (len(x),), generator=g).to(dev)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        pred = pipe.unet(noisy, timesteps, cond[0], return_dict=False)[0]
        return torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="mean")

    return _Recipe(
        denoiser="unet",
        frozen=("vae", "text_encoder"),
        weight_decay=1e-2,
        hyper={
            "prediction_type": prediction,
            "noise_scheduler": "DDPMScheduler.from_config(pipeline scheduler config)",
        },
        encode=encode,
        loss=loss,
        diffusers_keys=True,
    )


SD3_WEIGHTING = "none"
"""The recipe's ``--weighting_scheme``: uniform timesteps (``compute_density_for_timestep_sampling``) and a loss
weight of 1 (``compute_loss_weighting_for_sd3``)."""


def _sd3_recipe(pipe: Any, dev: torch.device) -> _Recipe:
    """diffusers' ``train_dreambooth_lora_sd3.py``: flow matching (``x_t = (1 - sigma) x_0 + sigma noise`` at the
    ``FlowMatchEulerDiscreteScheduler``'s training sigmas), target ``noise - latents`` (no output preconditioning),
    weighting scheme ``none``, latents ``(z - shift_factor) * scaling_factor``; prompts through the pipeline's own
    ``encode_prompt`` (both CLIP encoders and T5, at the ``max_sequence_length`` the pipeline generates with)."""
    import inspect

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

    noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    timesteps_in_all = noise_scheduler.config.num_train_timesteps
    shift = float(getattr(pipe.vae.config, "shift_factor", None) or 0.0)
    scaling = float(pipe.vae.config.scaling_factor)
    max_len = inspect.signature(pipe.__call__).parameters.get("max_sequence_length")
    max_sequence_length = int(max_len.default) if max_len is not None and max_len.default is not None else 256

    def encode(prompt: str) -> tuple[torch.Tensor, ...]:
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=[prompt],
            prompt_2=None,
            prompt_3=None,
            device=dev,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        return embeds, pooled

    def loss(x: torch.Tensor, cond: tuple[torch.Tensor, ...], g: torch.Generator) -> torch.Tensor:
        latents = (_sample_latents(pipe.vae, x, g) - shift) * scaling
        noise = torch.randn(latents.shape, generator=g).to(dev)
        u = compute_density_for_timestep_sampling(
            weighting_scheme=SD3_WEIGHTING, batch_size=len(x), generator=g
        )
        indices = (u * timesteps_in_all).long()
        timesteps = noise_scheduler.timesteps[indices].to(dev)
        # the recipe's get_sigmas looks each timestep up in the schedule: the same index, the timesteps being distinct
        sigmas = noise_scheduler.sigmas[indices].to(dev, latents.dtype).reshape(-1, *[1] * (latents.ndim - 1))
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        pred = pipe.transformer(
            hidden_states=noisy,
            timestep=timesteps,
            encoder_hidden_states=cond[0],
            pooled_projections=cond[1],
            return_dict=False,
        )[0]
        weighting = compute_loss_weighting_for_sd3(weighting_scheme=SD3_WEIGHTING, sigmas=sigmas)
        target = noise - latents
        per_item = (weighting.float() * (pred.float() - target.float()) ** 2).reshape(len(x), -1)
        return torch.mean(per_item, 1).mean()

    return _Recipe(
        denoiser="transformer",
        frozen=("vae", "text_encoder", "text_encoder_2", "text_encoder_3"),
        weight_decay=1e-4,
        hyper={
            "prediction_type": "flow_matching",
            "target": "noise - latents",
            "weighting_scheme": SD3_WEIGHTING,
            "noise_scheduler": "FlowMatchEulerDiscreteScheduler.from_config(pipeline scheduler config)",
            "flow_shift": float(noise_scheduler.config.shift),
            "vae_shift_factor": shift,
            "vae_scaling_factor": scaling,
            "max_sequence_length": max_sequence_length,
        },
        encode=encode,
        loss=loss,
        diffusers_keys=False,
    )


def _train(
    dataset: Any,
    items: list[Any],
    base: Path,
    out_dir: Path,
    rank: int,
    alpha: int,
    lr: float,
    steps: int,
    batch_size: int,
    resolution: int,
    seed: int,
    checkpoint_every: int,
    dev: torch.device,
    progress: Progress | None,
) -> TrainResult:
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from agent.generate.runtime import weight_files, weights_digest

    pipe, base_path = _load_pipeline(base)
    base_files = weight_files(base_path)
    recipe = _unet_recipe(pipe, dev) if getattr(pipe, "unet", None) is not None else _sd3_recipe(pipe, dev)
    hyper = {
        "rank": rank,
        "alpha": alpha,
        "lr": lr,
        "batch_size": batch_size,
        "resolution": resolution,
        "target_modules": list(TARGET_MODULES),
        "init_lora_weights": "gaussian",
        "optimizer": f"AdamW(betas=(0.9, 0.999), weight_decay={recipe.weight_decay}, eps=1e-8), constant lr, "
        "grad clip 1.0",
        **recipe.hyper,
        "pipeline": type(pipe).__name__,
        "base_weights_sha256": weights_digest(base_files),
        "device": dev.type,
        "dtype": "float32",
    }
    fp = fingerprint(
        {
            "trainer": TRAINER,
            "seed": seed,
            "hyperparameters": hyper,
            "dataset": [[it.index, it.name, it.sha256] for it in items],
            # the commitment covers the captions and traits too, which the items' file hashes do not
            "dataset_root": getattr(dataset, "root", None),
        }
    )

    denoiser = getattr(pipe, recipe.denoiser)
    frozen = [m for m in (getattr(pipe, name, None) for name in recipe.frozen) if m is not None]
    for m in (*frozen, denoiser):
        m.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(TARGET_MODULES)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        denoiser.add_adapter(config)
    for m in frozen:
        m.to(dev).eval()
    denoiser.to(dev).train()
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=lr, betas=(0.9, 0.999), weight_decay=recipe.weight_decay, eps=1e-8
    )

    # frozen parts: the prompts' conditioning and the images' pixels are computed once
    with torch.no_grad():
        per_item = [recipe.encode(item_prompt(it)) for it in items]
        conds = tuple(torch.cat(parts) for parts in zip(*per_item, strict=True))
        pixels = torch.stack([_pixels(it.load_rgb(dataset), resolution) for it in items])

    ck = start_or_resume(out_dir, fp, steps, module=denoiser, optimizer=optimizer)
    n = len(items)
    while ck.step < steps:
        t0 = time.monotonic()
        idx = step_indices(n, batch_size, seed, ck.step)
        g = step_generator("diffusers-lora", seed, ck.step)
        loss = recipe.loss(pixels[idx].to(dev), tuple(c[idx] for c in conds), g)
        optimize_and_record(
            ck,
            loss,
            optimizer,
            params,
            idx,
            t0,
            module=denoiser,
            out_dir=out_dir,
            steps=steps,
            checkpoint_every=checkpoint_every,
            progress=progress,
        )

    lora_state = get_peft_model_state_dict(denoiser)
    if recipe.diffusers_keys:
        lora_state = convert_state_dict_to_diffusers(lora_state)
    lora_state = {k: v.detach().to("cpu").contiguous() for k, v in lora_state.items()}
    metadata = _sorted_sets(denoiser.peft_config["default"].to_dict())
    type(pipe).save_lora_weights(
        out_dir,
        safe_serialization=True,
        **{
            f"{recipe.denoiser}_lora_layers": lora_state,
            f"{recipe.denoiser}_lora_adapter_metadata": metadata,
        },
    )
    canonical_safetensors_header(out_dir / LORA_WEIGHTS)
    return TrainResult(
        trainer=TRAINER,
        hyperparameters=hyper,
        seed=seed,
        steps=ck.step,
        losses=tuple(ck.losses),
        data_order_sha256=data_order_sha256(ck.orders),
        weights=files_sha256(out_dir, [LORA_WEIGHTS]),
        train_seconds=ck.train_seconds,
    )


def _sorted_sets(d: dict[str, Any]) -> dict[str, Any]:
    """A LoraConfig dict with its sets as sorted lists (stable bytes whatever ``PYTHONHASHSEED`` is)."""
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in d.items()}


__all__ = [
    "LORA_WEIGHTS",
    "TARGET_MODULES",
    "TRAINER",
    "data_order_sha256",
    "item_prompt",
    "step_indices",
    "train_diffusers_lora",
]
