"""Train the embedded sprite model: a class-conditional DDPM on the procedural sprites.

Resumable: the checkpoint holds the weights, their EMA, the optimizer, the step, the wall time spent and the global
RNG states. Each step draws its batch, noise and timesteps from a CPU ``torch.Generator`` seeded by
``(seed, step)``, so an interrupted and resumed run takes exactly the same steps as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# From their modules: under TYPE_CHECKING the package root re-exports diffusers' torch-less dummy classes.
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from agent.generate.sprites.conditioning import NULL_CLASS, NUM_CLASSES
from agent.generate.sprites.dataset import GENERATOR_VERSION, SIZE, make_dataset

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored in each checkpoint)."""

    steps: int = 5000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    seed: int = 0
    n_per_class: int = 1024
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    """What the UNet predicts: ``v_prediction`` (default), ``epsilon`` or ``sample``. With epsilon the loss barely
    weighs the high-noise steps where a sprite's flat colours are decided, and the model learned the body plans but
    not the mood palettes; v-prediction weighs every step evenly."""
    checkpoint_every: int = 250
    log_every: int = 50
    dataset_version: str = GENERATOR_VERSION

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["block_out_channels"] = tuple(d["block_out_channels"])
        d.setdefault("prediction_type", "epsilon")  # checkpoints from before the field existed
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass
class TrainState:
    """The mutable part of a run."""

    unet: UNet2DModel
    ema: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    step: int = 0
    train_seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_unet(config: TrainConfig) -> UNet2DModel:
    """The small class-conditional UNet (no attention) for 32x32 RGB."""
    n = len(config.block_out_channels)
    return UNet2DModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        norm_num_groups=config.norm_num_groups,
        num_class_embeds=NUM_CLASSES + 1,  # + the null class for guidance
    )


def make_train_scheduler(config: TrainConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
    )


def make_sample_scheduler(config: TrainConfig) -> DDIMScheduler:
    """DDIM sampler with the training noise schedule."""
    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )


def new_state(config: TrainConfig, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)
    # ModelMixin.to is wrapped with functools.wraps, which typeshed types as the unbound nn.Module.to
    unet = make_unet(config).to(device)  # type: ignore[arg-type]
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return TrainState(unet=unet, ema=ema, optimizer=opt)


def load_checkpoint(
    path: Path, device: torch.device, *, restore_rng: bool = True
) -> tuple[TrainConfig, TrainState]:
    """Restore a run from ``checkpoint.pt`` (and, unless told otherwise, the global RNG states)."""
    ck = torch.load(path, map_location=device, weights_only=False)
    config = TrainConfig.from_json(ck["config"])
    state = new_state(config, device)
    state.unet.load_state_dict(ck["unet"])
    state.ema = {k: v.to(device) for k, v in ck["ema"].items()}
    state.optimizer.load_state_dict(ck["optimizer"])
    state.step = ck["step"]
    state.train_seconds = ck["train_seconds"]
    state.losses = [tuple(x) for x in ck["losses"]]
    if not restore_rng:
        return config, state
    torch.set_rng_state(ck["rng"]["torch"])
    np.random.set_state(ck["rng"]["numpy"])
    random.setstate(ck["rng"]["python"])
    if torch.cuda.is_available() and ck["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
    return config, state


def save_checkpoint(path: Path, config: TrainConfig, state: TrainState) -> None:
    """Atomically write the run to ``path``."""
    ck = {
        "config": config.to_json(),
        "unet": state.unet.state_dict(),
        "ema": state.ema,
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "train_seconds": state.train_seconds,
        "losses": state.losses,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)


def train(
    out_dir: Path,
    config: TrainConfig | None = None,
    *,
    device: str = "auto",
    max_steps: int | None = None,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> TrainState:
    """Train (or resume, if ``out_dir/checkpoint.pt`` exists) until ``config.steps``.

    Args:
        out_dir: Holds ``checkpoint.pt`` and ``loss.jsonl``.
        config: Settings for a new run; ignored when resuming (the checkpoint's own config wins).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        max_steps: Stop (and checkpoint) at this step even if ``config.steps`` is larger.
        max_seconds: Stop (and checkpoint) after this much wall time in this call.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    ck_path = out_dir / CHECKPOINT_NAME
    if ck_path.exists():
        config, state = load_checkpoint(ck_path, dev)
        log(f"resumed at step {state.step} from {ck_path}")
    else:
        config = config or TrainConfig()
        state = new_state(config, dev)
        log(f"new run: {sum(p.numel() for p in state.unet.parameters()):,} parameters on {dev}")

    images, labels = make_dataset(config.n_per_class, seed=config.seed)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(dev)
    labels_t = torch.from_numpy(labels).to(dev)
    sched = make_train_scheduler(config)
    sched.alphas_cumprod = sched.alphas_cumprod.to(dev)
    end = min(config.steps, max_steps) if max_steps is not None else config.steps
    started = time.monotonic()
    last_save = state.step
    running: list[float] = []
    state.unet.train()
    while state.step < end:
        t0 = time.monotonic()
        loss = _train_step(state, config, data, labels_t, sched, dev)
        state.step += 1
        state.train_seconds += time.monotonic() - t0
        running.append(loss)
        if state.step % config.log_every == 0 or state.step == end:
            avg = float(np.mean(running))
            state.losses.append((state.step, avg))
            running = []
            with open(out_dir / "loss.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {"step": state.step, "loss": avg, "train_seconds": round(state.train_seconds, 1)}
                    )
                    + "\n"
                )
            log(f"step {state.step} loss {avg:.4f} ({state.train_seconds / 60:.1f} min)")
        out_of_time = max_seconds is not None and time.monotonic() - started >= max_seconds
        if state.step - last_save >= config.checkpoint_every or state.step == end or out_of_time:
            save_checkpoint(ck_path, config, state)
            last_save = state.step
        if out_of_time:
            log(f"stopping at step {state.step}: time limit")
            break
    if state.step != last_save:
        save_checkpoint(ck_path, config, state)
    return state


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warmup, constant, then a linear decay to 10% over the last quarter of ``config.steps``."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    start = int(config.steps * 0.75)
    tail = 1.0 if step < start else 1.0 - 0.9 * (step - start) / max(1, config.steps - start)
    return config.lr * warm * tail


def step_generator(config: TrainConfig, step: int) -> torch.Generator:
    """The CPU generator behind step ``step``'s batch, label dropout, noise and timesteps (in that order)."""
    return torch.Generator("cpu").manual_seed(config.seed * 1_000_003 + step)


def batch_indices(config: TrainConfig, step: int, n: int, g: torch.Generator | None = None) -> torch.Tensor:
    """The data indices (into ``n`` items) of step ``step``'s batch: the first draw of :func:`step_generator`."""
    g = step_generator(config, step) if g is None else g
    return torch.randint(0, n, (config.batch_size,), generator=g)


def _train_step(state: TrainState, config: TrainConfig, data, labels, sched: DDPMScheduler, dev) -> float:
    g = step_generator(config, state.step)
    idx = batch_indices(config, state.step, data.shape[0], g)
    x0 = data[idx.to(dev)]
    y = labels[idx.to(dev)].clone()
    drop = torch.rand(config.batch_size, generator=g) < config.label_dropout
    y[drop.to(dev)] = NULL_CLASS
    noise = torch.randn(x0.shape, generator=g).to(dev)
    t = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=g).to(dev)
    # diffusers annotates timesteps as torch.IntTensor; any integer tensor (randint's int64) works
    xt = sched.add_noise(x0, noise, t)  # type: ignore[arg-type]

    lr = lr_at(config, state.step)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    pred = state.unet(xt, t, class_labels=y).sample
    if config.prediction_type == "v_prediction":
        target = sched.get_velocity(x0, noise, t)  # type: ignore[arg-type]  # timesteps: as for add_noise
    elif config.prediction_type == "sample":
        target = x0
    else:
        target = noise
    loss = torch.nn.functional.mse_loss(pred, target)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.unet.parameters(), 1.0)
    state.optimizer.step()

    decay = min(config.ema_decay, (1 + state.step) / (10 + state.step))
    with torch.no_grad():
        for k, v in state.unet.state_dict().items():
            if v.dtype.is_floating_point:
                state.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                state.ema[k].copy_(v)
    return float(loss.detach())


def export(checkpoint: Path, dest: Path, *, use_ema: bool = True) -> dict:
    """Write a loadable model dir (UNet weights + config.json, scheduler_config.json) from a checkpoint.

    Returns the training facts worth putting in the model card.
    """
    config, state = load_checkpoint(checkpoint, torch.device("cpu"), restore_rng=False)
    unet = state.unet
    if use_ema:
        unet.load_state_dict(state.ema)
    dest.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(dest, safe_serialization=True)
    make_sample_scheduler(config).save_pretrained(dest)
    (dest / "training.json").write_text(
        json.dumps(
            {
                "train_config": config.to_json(),
                "step": state.step,
                "train_seconds": round(state.train_seconds, 1),
                "final_loss": state.losses[-1][1] if state.losses else None,
                "ema": use_ema,
                "parameters": sum(p.numel() for p in unet.parameters()),
            },
            indent=2,
        )
        + "\n"
    )
    return json.loads((dest / "training.json").read_text())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
