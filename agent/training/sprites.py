"""Fine-tune the embedded sprite model on your own art: ``chrysalis model train``.

The trainer starts from a sprite-model directory (the shipped ``sprites32``, another fine-tune, or a published
``ipfs://`` model in the cache) and trains it on a class-conditional image dataset (:mod:`agent.datasets`: 32x32
images whose ``mood``/``element`` traits the model knows). Two methods:

- ``full`` (the default): every weight trains. Measured on the example data it is faster per step than LoRA on
  this tiny UNet and learns the new style in fewer steps (README, "Fine-tuning on your own art").
- ``lora``: a peft LoRA (rank/alpha/targets recorded) on every conv, the time-embedding projections and, where a
  model has attention, q/k/v. Its initial values come from their own generator seeded from ``seed``; the adapter
  is merged into a plain ``UNet2DModel`` at the end, so the embedded backend loads the result unchanged.

Determinism: training always runs in the canonical configuration (CPU, float32, one torch thread). Each step's
batch, label dropout, noise and timesteps come from a CPU ``torch.Generator`` seeded by ``(seed, step)``
(:func:`agent.generate.sprites.training.step_generator`, the step function the shipped model was trained with).
So the same base, dataset bytes, hyperparameters and seed give the same per-step losses and the same weights
bytes, in any process, under any load; a run killed at any point and started again with the same arguments resumes
from its last checkpoint (``OUT/.checkpoint/``, written atomically every ``checkpoint_every`` steps) and ends with
the same weights digest as an uninterrupted run. The thread count changes the bits, so it is not a setting.

Held-out items (every ``holdout_every``-th item of the dataset order) are never trained on; the model card's
quality table compares them with samples of the base and the fine-tuned model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError, IntegrityError, NotFoundError, PermanentError
from agent.training.result import TrainResult, data_order_sha256, loss_curve_sha256

if TYPE_CHECKING:
    import numpy as np

TRAINER = "chrysalis.sprites-finetune/1"
CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
TRAINING_JSON = "training.json"
LORA_TARGETS: tuple[str, ...] = (
    "conv_in", "conv1", "conv2", "conv_shortcut", "conv", "conv_out", "time_emb_proj", "to_q", "to_k", "to_v",
)  # fmt: skip
"""Module-name suffixes a LoRA adapts: every conv (resnets, down/upsamplers, in/out), the time-embedding
projections, and attention q/k/v where the model has attention (the shipped one has none)."""

Progress = Callable[[int, int, float], None]
"""``progress(step, total, loss)`` after each step (steps count from 1)."""


class TrainingError(PermanentError):
    """A fine-tune cannot start or go on (bad base, bad dataset, no disk space, a foreign checkpoint)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Every hyperparameter of a fine-tune (all recorded in the receipt)."""

    method: str = "full"
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 20
    ema_decay: float = 0.99
    label_dropout: float = 0.1
    holdout_every: int = 8
    """Item ``i`` of the dataset is held out when ``i % holdout_every == holdout_every - 1`` (0: none)."""
    loss_every: int = 1
    """The receipt records the loss every this many steps (1: every step), to localise a divergence."""
    checkpoint_every: int = 50
    lora_rank: int = 8
    lora_alpha: int = 8
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        if self.method not in ("full", "lora"):
            raise ConfigError(f"unknown training method {self.method!r}", hint="use --method full or lora")
        for name in ("steps", "batch_size", "loss_every", "checkpoint_every", "lora_rank"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(
                    f"{name} must be at least 1 (got {getattr(self, name)})", hint=f"raise {name}"
                )
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive (got {self.lr})", hint="use e.g. --lr 5e-4")
        if not 0.0 <= self.label_dropout < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(
                "label_dropout and ema_decay must be in [0, 1)", hint="use e.g. 0.1 and 0.99 (0: no EMA)"
            )
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise ConfigError(
                f"holdout_every {self.holdout_every} would hold out every item",
                hint="use 0 (none) or 2 or more",
            )

    def hyperparameters(self) -> dict[str, Any]:
        """All of them, as JSON (LoRA's only with ``method == "lora"``; ``checkpoint_every`` never: it does not
        change the result)."""
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        if self.method != "lora":
            for k in ("lora_rank", "lora_alpha", "lora_targets"):
                d.pop(k)
        else:
            d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_hyperparameters(cls, d: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown hyperparameters {unknown} for {TRAINER}",
                hint=f"a receipt of this trainer holds only {sorted(known - {'checkpoint_every'})}",
            )
        d = dict(d)
        if "lora_targets" in d:
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d)


# -- the base model --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """The sprite model a fine-tune starts from."""

    directory: Path
    name: str
    weights_sha256: str
    cid: str | None
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "cid": self.cid}


def resolve_base(base: str | Path | None, cache_dir: Path | None = None) -> BaseModel:
    """The base model: None -> the shipped sprite model; a sprite-model directory; or ``ipfs://CID`` of a published
    one in the model cache. Every file is checked against its manifest.

    Raises:
        NotFoundError: no such model (the hint lists what is accepted). TrainingError: not a sprite model.
    """
    from agent.generate.factory import model_dir
    from agent.generate.image.embedded import SHIPPED_DIR, verify_model_dir
    from agent.generate.published import is_ipfs_uri, parse_model_uri

    cid = None
    if base is None or str(base) in ("", "shipped"):
        directory = SHIPPED_DIR.resolve()
    elif is_ipfs_uri(str(base)):
        cid = parse_model_uri(str(base))
        directory = model_dir(str(base), cache_dir or Path("models"), setting="--base")
    else:
        directory = Path(base).expanduser()
        if not directory.is_dir():
            raise NotFoundError(
                f"unknown base model {str(base)!r}: no such directory",
                hint="use --base shipped (the embedded sprites32), a sprite-model directory (one with "
                "manifest.json, like agent/generate/shipped/sprites32 or a `chrysalis model train` output), or "
                "ipfs://CID of a published one fetched with `chrysalis model fetch`",
            )
        directory = directory.resolve()
    if not (directory / "manifest.json").is_file() or not (directory / "conditioning.json").is_file():
        raise TrainingError(
            f"{directory} is not a sprite model (no manifest.json and conditioning.json)",
            hint="fine-tuning starts from the embedded sprite model or a fine-tune of it: --base shipped",
        )
    manifest = verify_model_dir(directory)
    return BaseModel(directory, str(manifest["model_id"]), str(manifest["weights_sha256"]), cid, manifest)


# -- the data --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """The dataset as tensors: every item (for the classifier and the card), and which train and which are held
    out."""

    dataset: Any  # agent.datasets.Dataset
    images: np.ndarray  # (N, 32, 32, 3) uint8, in dataset order
    labels: list[int]
    train: list[int]  # dataset indices trained on
    held_out: list[int]


def open_dataset(spec: str | Path, data_dir: Path | None = None, *, resolution: int | None = 32) -> Any:
    """The dataset ``spec`` names: a folder, or the root (or a root prefix of 8+ hex digits) of a dataset recorded
    by ``chrysalis dataset add`` in ``<data_dir>/datasets/`` (its source folder, with its salts when private).

    Raises:
        DatasetError: a bad folder (naming every bad file and line). NotFoundError: an unknown root.
        IntegrityError: the recorded folder no longer gives the recorded root.

    ``resolution``: the size every image must have (default: the sprite model's 32; None: any one size for all).
    """
    from agent.datasets import load_dataset
    from agent.datasets.store import load_record

    path = Path(spec).expanduser()
    text = str(spec).strip().lower().removeprefix("0x")
    if not path.exists() and len(text) >= 8 and all(c in "0123456789abcdef" for c in text):
        if data_dir is None:
            raise NotFoundError(
                f"dataset {spec} is a root, but no data directory was given to look it up in",
                hint="pass the dataset folder instead",
            )
        record = load_record(data_dir, text)
        salts = [bytes.fromhex(s) for s in record["salts"]] if record.get("salts") else None
        ds = load_dataset(Path(record["source"]), resolution=resolution, salts=salts)
        if ds.root != record["root"]:
            raise IntegrityError(
                f"dataset folder {record['source']} now has root {ds.root}, not the recorded {record['root']}",
                hint="restore the folder's files, or add it again (chrysalis dataset add) and train on the new root",
            )
        return ds
    return load_dataset(path, resolution=resolution)


def load_training_data(
    dataset: str | Path, config: FinetuneConfig, *, data_dir: Path | None = None
) -> TrainingData:
    """Load and check a dataset for the sprite model: an image dataset whose items all carry known ``mood`` and
    ``element`` traits and are 32x32 RGB.

    Raises:
        TrainingError: a lore or captioned dataset, a wrong image size, or traits the model does not know (naming
            every bad item, up to ten).
    """
    import numpy as np

    from agent.generate.sprites.conditioning import class_label
    from agent.generate.sprites.dataset import SIZE

    ds = open_dataset(dataset, data_dir)
    if ds.kind != "image":
        raise TrainingError(
            f"{ds.path} is a {ds.kind} dataset; the sprite model trains on images",
            hint="pass an image dataset (labels.jsonl with file and traits per line)",
        )
    bad: list[str] = []
    images, labels = [], []
    for item in ds.items:
        if item.traits is None:
            bad.append(f"{item.name}: a caption, no traits (the sprite model is class-conditional)")
            continue
        try:
            labels.append(class_label(item.traits))
        except ConfigError as exc:
            bad.append(f"{item.name}: {exc.message} ({exc.hint})")
            continue
        img = item.load_rgb(ds)
        if img.shape != (SIZE, SIZE, 3):
            bad.append(
                f"{item.name}: {img.shape[1]}x{img.shape[0]} pixels, the sprite model needs {SIZE}x{SIZE}"
            )
            continue
        images.append(img)
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise TrainingError(
            f"{len(bad)} item(s) of {ds.path} cannot train the sprite model: " + "; ".join(bad[:10]) + more,
            hint=f"give every item a mood and an element the model knows, as {SIZE}x{SIZE} RGB images "
            "(resize with nearest-neighbour to keep pixel art crisp)",
        )
    n = len(ds.items)
    k = config.holdout_every
    held = [i for i in range(n) if k and i % k == k - 1]
    train = [i for i in range(n) if not (k and i % k == k - 1)]
    if not train:
        raise TrainingError(f"{ds.path} holds no items to train on", hint="add images to the dataset")
    return TrainingData(ds, np.stack(images), labels, train, held)


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What :func:`run` returns: the trained (merged) UNet and the run's record."""

    unet: Any
    losses: list[float]
    order: list[list[int]]
    train_seconds: float
    stopped_at: int | None = None
    """The step a ``check`` stopped the run at (verify-training's first divergence), else None."""
    resumed_from: int = 0


@dataclass
class _Run:
    unet: Any
    ema: dict[str, Any]
    optimizer: Any
    step: int = 0
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    order: list[list[int]] = field(default_factory=list)


def step_config(base: BaseModel, config: FinetuneConfig, seed: int) -> Any:
    """The shipped trainer's :class:`~agent.generate.sprites.training.TrainConfig` for the step function: this
    fine-tune's hyperparameters with the base model's noise schedule."""
    from agent.generate.sprites.training import TrainConfig

    sched = json.loads((base.directory / "scheduler_config.json").read_text())
    return TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        ema_decay=config.ema_decay,
        label_dropout=config.label_dropout,
        seed=seed,
        num_train_timesteps=int(sched["num_train_timesteps"]),
        beta_schedule=str(sched["beta_schedule"]),
        prediction_type=str(sched.get("prediction_type", "epsilon")),
    )


def _new_run(base: BaseModel, config: FinetuneConfig, seed: int) -> _Run:
    import torch
    from diffusers.models.unets.unet_2d import UNet2DModel

    unet: Any = UNet2DModel.from_pretrained(base.directory)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in unet.named_modules()}
        targets = [t for t in config.lora_targets if t in names]
        if not targets:
            raise TrainingError(
                f"none of the LoRA targets {list(config.lora_targets)} is a module of {base.name}",
                hint="use --method full, or name module suffixes the model has",
            )
        lora = LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=targets, lora_dropout=0.0
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 7_919 + 1)  # the LoRA's own generator: A's initial values
            unet = get_peft_model(unet, lora)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    return _Run(unet, ema, torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0))


def _fingerprint(base: BaseModel, root: str, config: FinetuneConfig, seed: int) -> str:
    from agent.training.result import canonical_json

    key = {"base": base.weights_sha256, "dataset": root, "hp": config.hyperparameters(), "seed": seed}
    return hashlib.sha256(canonical_json(key)).hexdigest()


def _save(path: Path, run: _Run, fingerprint: str) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "fingerprint": fingerprint,
            "unet": run.unet.state_dict(),
            "ema": run.ema,
            "optimizer": run.optimizer.state_dict(),
            "step": run.step,
            "train_seconds": run.train_seconds,
            "losses": run.losses,
            "order": run.order,
        },
        tmp,
    )
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(path: Path, run: _Run, fingerprint: str) -> None:
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a torn or foreign file
        raise TrainingError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})",
            hint=f"delete {path.parent} to start the run over",
        ) from None
    if ck.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"{path} is the checkpoint of another run (other base, dataset, hyperparameters or seed)",
            hint=f"train into another --out, run again with the same arguments, or delete {path.parent}",
        )
    run.unet.load_state_dict(ck["unet"])
    run.ema = ck["ema"]
    run.optimizer.load_state_dict(ck["optimizer"])
    run.step, run.train_seconds = int(ck["step"]), float(ck["train_seconds"])
    run.losses, run.order = list(ck["losses"]), [list(o) for o in ck["order"]]


def run(
    base: BaseModel,
    data: TrainingData,
    config: FinetuneConfig,
    seed: int,
    *,
    checkpoint_dir: Path | None = None,
    progress: Progress | None = None,
    check: Callable[[int, float], bool] | None = None,
    stop_after: int | None = None,
) -> RunOutcome:
    """Train canonically (CPU, float32, one thread); resume from ``checkpoint_dir`` when it holds this run's
    checkpoint. ``check(step, loss)`` returning False stops the run there (verify-training); ``stop_after`` stops
    (with a checkpoint) after that many steps in total."""
    import torch

    from agent.generate.runtime import torch_threads
    from agent.generate.sprites.training import TrainState, _train_step, batch_indices, make_train_scheduler

    tcfg = step_config(base, config, seed)
    fingerprint = _fingerprint(base, data.dataset.root, config, seed)
    with torch_threads(1):
        r = _new_run(base, config, seed)
        ck_path = None
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            ck_path = checkpoint_dir / CHECKPOINT_NAME
            if ck_path.exists():
                _load(ck_path, r, fingerprint)
        resumed_from = r.step
        x = torch.from_numpy(data.images[data.train]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        y = torch.tensor([data.labels[i] for i in data.train], dtype=torch.long)
        sched = make_train_scheduler(tcfg)
        dev = torch.device("cpu")
        state = TrainState(unet=r.unet, ema=r.ema, optimizer=r.optimizer, step=r.step)
        end = config.steps if stop_after is None else min(config.steps, stop_after)
        stopped = None
        while state.step < end:
            idx = batch_indices(tcfg, state.step, len(data.train))
            t0 = time.perf_counter()
            loss = float(torch.tensor(_train_step(state, tcfg, x, y, sched, dev), dtype=torch.float32))
            state.step += 1
            r.train_seconds += time.perf_counter() - t0
            r.order.append([data.train[int(i)] for i in idx])
            r.losses.append(loss)
            r.step = state.step
            if progress is not None:
                progress(state.step, config.steps, loss)
            if check is not None and not check(state.step, loss):
                stopped = state.step
                break
            if ck_path is not None and (state.step % config.checkpoint_every == 0 or state.step == end):
                r.ema = state.ema
                _save(ck_path, r, fingerprint)
        r.ema = state.ema
        unet = r.unet
        if config.ema_decay > 0:
            unet.load_state_dict(r.ema)
        if config.method == "lora":
            unet = unet.merge_and_unload()
        unet.eval()
    return RunOutcome(unet, r.losses, r.order, r.train_seconds, stopped, resumed_from)


def save_weights(unet: Any, dest: Path) -> str:
    """Save a (merged) UNet as ``config.json`` + safetensors; returns the weights' sha256."""
    from agent.generate.sprites.training import file_sha256

    dest.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(dest, safe_serialization=True)
    return file_sha256(dest / WEIGHTS_NAME)


# -- the whole command ------------------------------------------------------------------------------------------


def estimate_bytes(base: BaseModel, config: FinetuneConfig) -> int:
    """Disk a fine-tune needs at its peak: the checkpoint (weights, EMA, two Adam moments, and a temporary copy
    while it is replaced) plus the output directory, with 1 MiB for the card and samples."""
    w = (base.directory / WEIGHTS_NAME).stat().st_size
    return 2 * 4 * w + 2 * w + (1 << 20) + config.steps * config.batch_size * 8


def check_disk(out_dir: Path, need: int) -> None:
    """Raise :class:`TrainingError` unless the filesystem of ``out_dir`` has ``need`` bytes free."""
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise TrainingError(
            f"too little disk space for the fine-tune: {free:,} bytes free on the filesystem of {probe}, "
            f"{need:,} needed (checkpoint and output)",
            hint="free some space, or train into another --out on a disk with room",
        )


def check_out_dir(out_dir: Path) -> None:
    """Refuse a finished model directory (one with a manifest and no checkpoint) or a file as ``--out``."""
    if (out_dir / "manifest.json").exists() and not (out_dir / CHECKPOINT_DIR).exists():
        raise TrainingError(
            f"{out_dir} holds a finished model already",
            hint="train into a new --out (a model directory is immutable once written), or delete it first",
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"--out {out_dir} is a file", hint="name a directory to write the model into")


def finetune_sprites(
    dataset: str | Path,
    out_dir: Path,
    *,
    base: str | Path | None = None,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    model_id: str | None = None,
    cache_dir: Path | None = None,
    data_dir: Path | None = None,
    min_free_bytes: int | None = None,
    progress: Progress | None = None,
    stop_after: int | None = None,
    card: bool = True,
    palettes: str | None = None,
) -> TrainResult:
    """Fine-tune the sprite model on ``dataset`` (a folder or a recorded root, see :func:`open_dataset`) into the
    model directory ``out_dir`` (resuming a killed run with the same arguments). Writes the weights,
    ``config.json``, the base's scheduler and conditioning configs, ``training-receipt.json``, ``manifest.json``
    and (with ``card``) ``MODEL_CARD.md`` and ``samples.png``.

    ``palettes`` names the palette families the dataset is drawn in (a key of
    :data:`agent.generate.sprites.palette.PALETTE_FAMILIES`, e.g. ``neon`` for ``examples/finetune/neon``); the
    manifest then declares it, and evolutions recolour within it. None (the default): the manifest declares none
    (nor inherits the base's), and evolutions keep the previous image's colours
    (:func:`agent.generate.image.embedded.model_palettes`). It changes no weight.

    Raises:
        NotFoundError: unknown base model. TrainingError: bad dataset, too little disk space (below
            ``min_free_bytes``, default :func:`estimate_bytes`), a foreign checkpoint or a finished ``out_dir``.
        ConfigError: ``palettes`` is not a known palette family.
    """
    if palettes is not None:
        from agent.generate.sprites.palette import palette_families

        palette_families(palettes)
    config = config or FinetuneConfig()
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    b = resolve_base(base, cache_dir)
    data = load_training_data(dataset, config, data_dir=data_dir)
    check_disk(out_dir, estimate_bytes(b, config) if min_free_bytes is None else min_free_bytes)
    out_dir.mkdir(parents=True, exist_ok=True)
    ck_dir = out_dir / CHECKPOINT_DIR
    outcome = run(b, data, config, seed, checkpoint_dir=ck_dir, progress=progress, stop_after=stop_after)
    if len(outcome.losses) < config.steps:  # stopped early on purpose: the checkpoint holds the run
        return TrainResult(
            TRAINER, config.hyperparameters(), seed, len(outcome.losses), tuple(outcome.losses),
            data_order_sha256(outcome.order), {}, outcome.train_seconds,
        )  # fmt: skip
    weights = write_model_dir(
        out_dir, b, data, config, seed, outcome, model_id=model_id, card=card, palettes=palettes
    )
    shutil.rmtree(ck_dir, ignore_errors=True)
    return TrainResult(
        TRAINER, config.hyperparameters(), seed, config.steps, tuple(outcome.losses),
        data_order_sha256(outcome.order), weights, outcome.train_seconds,
    )  # fmt: skip


def build_receipt(
    base: BaseModel, data: TrainingData, config: FinetuneConfig, seed: int, outcome: RunOutcome, weights: str
) -> Any:
    from agent.training.receipt import TrainingReceipt, dataset_record, library_versions, machine

    ds = data.dataset
    k = config.loss_every
    checkpoints = [
        [i + 1, v] for i, v in enumerate(outcome.losses) if (i + 1) % k == 0 or i + 1 == config.steps
    ]
    return TrainingReceipt(
        trainer=TRAINER,
        base=base.to_json(),
        dataset=dataset_record(ds),
        hyperparameters=config.hyperparameters(),
        seed=seed,
        steps=config.steps,
        data_order_sha256=data_order_sha256(outcome.order),
        loss_curve_sha256=loss_curve_sha256(outcome.losses),
        loss_every=k,
        loss_checkpoints=checkpoints,
        weights_sha256=weights,
        libraries=library_versions(),
        device="cpu",
        dtype="float32",
        threads=1,
        machine=machine(),
        train_seconds=round(outcome.train_seconds, 3),
    )


def write_model_dir(
    out_dir: Path,
    base: BaseModel,
    data: TrainingData,
    config: FinetuneConfig,
    seed: int,
    outcome: RunOutcome,
    *,
    model_id: str | None = None,
    card: bool = True,
    palettes: str | None = None,
) -> dict[str, str]:
    """Write the loadable model directory; returns relative file -> sha256 of what was written. The manifest
    declares ``palettes`` (the dataset's palette families) when given, never the base's."""
    from agent.generate.image.embedded import HASHED_FILES, MANIFEST_NAME, file_sha256
    from agent.training.receipt import RECEIPT_NAME

    weights = save_weights(outcome.unet, out_dir)
    for name in ("scheduler_config.json", "conditioning.json"):
        shutil.copyfile(base.directory / name, out_dir / name)
    receipt = build_receipt(base, data, config, seed, outcome, weights)
    receipt_sha = receipt.write(out_dir / RECEIPT_NAME)
    n_params = sum(p.numel() for p in outcome.unet.parameters())
    (out_dir / TRAINING_JSON).write_text(
        json.dumps(
            {
                "trainer": TRAINER,
                "train_config": dataclasses.asdict(step_config(base, config, seed)),
                "finetune": config.hyperparameters(),
                "step": config.steps,
                "final_loss": outcome.losses[-1],
                "ema": config.ema_decay > 0,
                "parameters": n_params,
                "device": "cpu",
            },
            indent=2,
        )
        + "\n"
    )
    files = {name: file_sha256(out_dir / name) for name in HASHED_FILES}
    base_id = base.name.split("@", 1)[0]
    manifest = {
        **{
            k: v
            for k, v in base.manifest.items()
            if k not in ("files", "weights_sha256", "training_receipt", "palettes")
        },
        "model_id": model_id or f"{base_id}+{data.dataset.path.name}@{weights[:8]}",
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": weights,
        "files": files,
        "parameters": n_params,
        "training_steps": config.steps,
        "training_receipt": RECEIPT_NAME,
        "training_receipt_sha256": receipt_sha,
        "base_model": {"model_id": base.name, "weights_sha256": base.weights_sha256, "cid": base.cid},
        "dataset_root": data.dataset.root,
        **({"palettes": palettes} if palettes is not None else {}),
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    if card:
        from agent.training.card import write_finetune_card

        write_finetune_card(out_dir, base, data)
    return {
        p.relative_to(out_dir).as_posix(): file_sha256(p) for p in sorted(out_dir.iterdir()) if p.is_file()
    }


# -- lineage ---------------------------------------------------------------------------------------------------


MANIFEST_NAME = "manifest.json"


def lineage(model_dir_or_manifest: Path | str) -> dict[str, Any]:
    """A fine-tuned model's lineage for the studio: weights -> manifest -> training receipt -> dataset root.

    Takes a model directory or its ``manifest.json``; checks that the receipt's bytes are the ones the manifest
    names and that the receipt's weights digest is the manifest's (the checks of :func:`lineage_from_directory`).
    A model without a receipt (the shipped one) gives ``{"trained_on": None}``.

    Raises:
        NotFoundError: no manifest or no receipt file. IntegrityError: the receipt or weights differ.
    """
    path = Path(model_dir_or_manifest)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    if not manifest_path.is_file():
        raise NotFoundError(
            f"no model manifest at {manifest_path}", hint="pass a model directory or its manifest"
        )
    manifest = _manifest(manifest_path.read_bytes(), where=str(manifest_path))
    name = manifest.get("training_receipt")
    if not name:
        return _checked_lineage(manifest, None, manifest_where=str(manifest_path))
    receipt_path = manifest_path.parent / _receipt_name(name, where=str(manifest_path))
    if not receipt_path.is_file():
        raise NotFoundError(
            f"{manifest_path} names training receipt {name}, which is not in {manifest_path.parent}",
            hint="fetch the whole model directory (`chrysalis model fetch`)",
        )
    return _checked_lineage(
        manifest,
        (name, receipt_path.read_bytes()),
        manifest_where=str(manifest_path),
        receipt_where=str(receipt_path),
    )


def lineage_from_directory(
    files: Mapping[str, bytes],
    *,
    weights_sha256: str | None = None,
    where: str = "the model directory",
) -> dict[str, Any]:
    """:func:`lineage` of a model directory given as relative path -> bytes (a published directory read from
    IPFS, e.g. :meth:`agent.ops.models.FileByFile.fetch_directory`, which fetches a file only when it is read:
    only ``manifest.json`` and the training receipt are read here). With ``weights_sha256`` (hex, e.g. the on-chain
    record's digest) the manifest and the receipt must both name those weights. Same bytes -> same result.

    Raises:
        NotFoundError: no ``manifest.json``, or no receipt file where the manifest names one. IntegrityError: the
            manifest is not JSON, the receipt's bytes or weights differ from what the manifest (or
            ``weights_sha256``) says. ReceiptError: the receipt is not a training receipt.
    """
    if MANIFEST_NAME not in files:
        raise NotFoundError(
            f"{where} has no {MANIFEST_NAME}",
            hint="publish the whole model directory (`chrysalis model publish DIR`)",
        )
    manifest_where = f"{MANIFEST_NAME} of {where}"
    manifest = _manifest(files[MANIFEST_NAME], where=manifest_where)
    expected = weights_sha256.lower().removeprefix("0x") if weights_sha256 else None
    if expected is not None and manifest.get("weights_sha256") != expected:
        raise IntegrityError(
            f"{manifest_where} is the manifest of weights {manifest.get('weights_sha256')}, not of {expected}",
            hint="the record points at another model's directory",
        )
    name = manifest.get("training_receipt")
    if not name:
        return _checked_lineage(manifest, None, manifest_where=manifest_where)
    name = _receipt_name(name, where=manifest_where)
    if name not in files:
        raise NotFoundError(
            f"{manifest_where} names training receipt {name}, which is not in {where}",
            hint="publish the whole model directory, receipt included (`chrysalis model publish DIR`)",
        )
    return _checked_lineage(
        manifest, (name, files[name]), manifest_where=manifest_where, receipt_where=f"{name} of {where}"
    )


def _manifest(raw: bytes, *, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(
            f"{where} is not JSON ({exc})", hint="restore the model's manifest.json"
        ) from None
    if not isinstance(manifest, dict):
        raise IntegrityError(f"{where} is not a JSON object", hint="restore the model's manifest.json")
    return manifest


def _receipt_name(name: object, *, where: str) -> str:
    if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
        raise IntegrityError(
            f"{where} names training receipt {name!r}, which is not a file name inside the model directory",
            hint="restore the model's manifest.json",
        )
    return name


def _checked_lineage(
    manifest: dict[str, Any],
    receipt_file: tuple[str, bytes] | None,
    *,
    manifest_where: str,
    receipt_where: str = "",
) -> dict[str, Any]:
    """The checks both :func:`lineage` and :func:`lineage_from_directory` make: the receipt's bytes hash to the
    manifest's ``training_receipt_sha256`` and the receipt is of the manifest's weights."""
    from agent.training.receipt import ReceiptError, TrainingReceipt

    out: dict[str, Any] = {
        "model_id": manifest.get("model_id"),
        "weights_sha256": manifest.get("weights_sha256"),
        "trained_on": None,
    }
    if receipt_file is None:
        return out
    name, raw = receipt_file
    got = hashlib.sha256(raw).hexdigest()
    if got != manifest.get("training_receipt_sha256"):
        raise IntegrityError(
            f"{receipt_where} has sha256 {got}, but {manifest_where} records "
            f"{manifest.get('training_receipt_sha256')}",
            hint="the receipt was changed after training; fetch the published directory again",
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReceiptError(
            f"{receipt_where} is not JSON ({exc})", hint="restore the training receipt"
        ) from None
    receipt = TrainingReceipt.from_json(data, where=receipt_where)
    if receipt.weights_sha256 != manifest.get("weights_sha256"):
        raise IntegrityError(
            f"{receipt_where} is the receipt of weights {receipt.weights_sha256}, "
            f"not of {manifest.get('weights_sha256')}",
            hint="the manifest and the receipt come from different runs",
        )
    dataset = receipt.dataset if isinstance(receipt.dataset, dict) else {}
    if "root" not in dataset or "n" not in dataset:
        raise ReceiptError(
            f"{receipt_where} names no dataset root and item count", hint="restore the training receipt"
        )
    out.update(
        trained_on={
            "dataset_root": dataset["root"],
            "items": dataset["n"],
            "mode": dataset.get("mode"),
            "cid": dataset.get("cid"),
        },
        training_receipt={"file": name, "sha256": got},
        base_model=receipt.base,
        trainer=receipt.trainer,
        seed=receipt.seed,
        steps=receipt.steps,
    )
    return out
