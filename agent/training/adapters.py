"""``chrysalis model train`` for the production models: a LoRA on a diffusers pipeline, or on the lore LM.

:func:`finetune_adapter` wraps the two LoRA trainers (:func:`agent.training.diffusers_lora.train_diffusers_lora`,
:func:`agent.training.lore_lora.train_lore_lora`) in what :func:`agent.training.sprites.finetune_sprites` gives the
sprite model: the dataset's commitment (a folder, or a root recorded by ``chrysalis dataset add``), a base model
identified by its weights digest, a disk check, a training receipt, a model directory with ``manifest.json`` and
a model card, and a replay for ``chrysalis model verify-training`` (:func:`replay`).

The model directory:

- image (``diffusers-lora``): ``pytorch_lora_weights.safetensors``, which the production image backend loads as
  ``models.image_lora`` (the base pipeline stays ``models.image_model``);
- lore (``lore-lora``): the merged causal LM and its tokenizer, which ``models.lore_backend = "transformers"``
  with ``models.lore_model = DIR`` loads;
- both: ``training-receipt.json``; ``manifest.json`` (``model_id``, ``kind``, ``backend``, ``adapter``, the weights
  digest by the registry's rule, every file's sha256, the receipt's sha256, the base model and the dataset root),
  so ``chrysalis model publish DIR`` registers the directory with the right kind and the on-chain record reaches
  the training data in two hops, as for a sprite fine-tune; ``MODEL_CARD.md`` (items per label, every
  hyperparameter, the loss curve, a quality table on held-out items, intended use and limits; for images also
  ``samples.png``, a base-vs-fine-tune grid for held-out prompts).

Held-out items: every ``holdout_every``-th item (by dataset index) is left out of training and scored on the card
(lore: mean per-token loss of the lore text, base vs fine-tune; images: the production backend's image for the
item's prompt, base vs fine-tune, compared with the held-out image by mean absolute pixel difference at 64x64).

Canonical configuration: ``device="cpu"`` (the default) trains at one torch thread in float32, so the same
dataset, base, hyperparameters and seed give the same weights bit for bit; any other device is recorded in the
receipt and verify-training reports that it cannot reproduce it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ChrysalisError, ConfigError, NotFoundError
from agent.training.diffusers_lora import CHECKPOINT_DIR, LORA_WEIGHTS
from agent.training.diffusers_lora import TRAINER as IMAGE_TRAINER
from agent.training.lore_lora import TRAINER as LORE_TRAINER
from agent.training.receipt import RECEIPT_NAME, TrainingReceipt, dataset_record, library_versions, machine
from agent.training.result import TrainResult, loss_curve_sha256
from agent.training.sprites import MANIFEST_NAME, TrainingError, check_disk, check_out_dir, open_dataset

TRAINERS = (IMAGE_TRAINER, LORE_TRAINER)
SHIPPED_LORE = "shipped"
"""``--base shipped`` for a lore dataset: the shipped SmolLM2-135M-Instruct GGUF, converted into the model cache."""
SAMPLES_NAME = "samples.png"
CARD_NAME = "MODEL_CARD.md"

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class AdapterConfig:
    """Hyperparameters of a LoRA run. ``None`` fields take the trainer's default (:meth:`resolved`)."""

    steps: int | None = None
    """None: one epoch of the training items."""
    rank: int | None = None
    alpha: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    resolution: int | None = None
    """Images only. None: the pipeline's native size (its UNet's or transformer's sample size x the VAE scale)."""
    max_length: int = 384
    """Lore only: most tokens per pair."""
    holdout_every: int = 8
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise ConfigError(
                f"holdout_every {self.holdout_every} would hold out every item",
                hint="use 0 (none) or 2 or more",
            )

    DEFAULTS = {
        IMAGE_TRAINER: {"rank": 4, "alpha": 4, "lr": 1e-4, "batch_size": 1},
        LORE_TRAINER: {"rank": 8, "alpha": 16, "lr": 2e-3, "batch_size": 4},
    }

    def resolved(self, trainer: str, n_train: int, base_dir: Path) -> AdapterConfig:
        d = self.DEFAULTS[trainer]
        batch = self.batch_size or int(d["batch_size"])
        return dataclasses.replace(
            self,
            rank=self.rank or int(d["rank"]),
            alpha=self.alpha or int(d["alpha"]),
            lr=self.lr or float(d["lr"]),
            batch_size=batch,
            steps=self.steps or max(1, math.ceil(n_train / batch)),
            resolution=(self.resolution or native_resolution(base_dir)) if trainer == IMAGE_TRAINER else None,
        )

    def hyperparameters(self, trainer: str) -> dict[str, Any]:
        """What the receipt records for the replay (``checkpoint_every`` does not change the bits)."""
        out: dict[str, Any] = {
            "rank": self.rank, "alpha": self.alpha, "lr": self.lr, "batch_size": self.batch_size,
            "steps": self.steps, "holdout_every": self.holdout_every,
        }  # fmt: skip
        if trainer == IMAGE_TRAINER:
            out["resolution"] = self.resolution
        else:
            out["max_length"] = self.max_length
        return out

    @classmethod
    def from_hyperparameters(cls, hp: dict[str, Any]) -> AdapterConfig:
        names = {"rank", "alpha", "lr", "batch_size", "steps", "holdout_every", "resolution", "max_length"}
        return cls(**{k: hp[k] for k in names if k in hp and hp[k] is not None})


def native_resolution(base_dir: Path) -> int:
    """The pipeline's own image size from its configs (512 when they don't say)."""

    def config(sub: str) -> dict[str, Any]:
        try:
            return dict(json.loads((base_dir / sub / "config.json").read_text()))
        except (OSError, ValueError):
            return {}

    vae = config("vae")
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    for sub in ("unet", "transformer"):
        size = config(sub).get("sample_size")
        if isinstance(size, int) and size > 0:
            return int(size * scale)
    return 512


# -- the base model --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterBase:
    """The model a LoRA adapts, named by its weights digest (the registry's rule)."""

    directory: Path
    name: str
    weights_sha256: str
    cid: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "cid": self.cid}


def trainer_for(base: str | None, dataset_kind: str, cache_dir: Path | None = None) -> str | None:
    """The LoRA trainer for this base and dataset: ``lore-lora`` for a lore dataset, ``diffusers-lora`` for a
    diffusers pipeline (a directory with ``model_index.json``, or ``ipfs://CID`` of one in the model cache); None:
    the sprite model's own trainer."""
    if dataset_kind == "lore":
        return LORE_TRAINER
    if not base:
        return None
    from agent.generate.published import cache_path, is_ipfs_uri, parse_model_uri

    try:
        path = (
            cache_path(parse_model_uri(base), cache_dir or Path("models"))
            if is_ipfs_uri(base)
            else Path(base)
        )
    except ChrysalisError:
        return None  # a malformed URI: the sprite path names it
    return IMAGE_TRAINER if (path.expanduser() / "model_index.json").is_file() else None


def is_adapter_run(
    base: str | None, dataset: str | Path, data_dir: Path | None, cache_dir: Path | None = None
) -> bool:
    """Whether ``chrysalis model train`` with this base and dataset is a LoRA run (a diffusers pipeline base, or a
    lore dataset: a folder with ``lore.jsonl``, or a recorded root of kind ``lore``) rather than a sprite
    fine-tune. Looks at the files only; the dataset is checked when it is loaded."""
    if trainer_for(base, "image", cache_dir) is not None:
        return True
    path = Path(dataset).expanduser()
    if path.is_dir():
        return (path / "lore.jsonl").is_file()
    text = str(dataset).strip().lower().removeprefix("0x")
    if data_dir is not None and len(text) >= 8 and all(c in "0123456789abcdef" for c in text):
        from agent.datasets.store import load_record

        try:
            return load_record(data_dir, text).get("kind") == "lore"
        except NotFoundError:
            return False  # the sprite path loads it again and names the problem
    return False


def resolve_adapter_base(trainer: str, base: str | None, cache_dir: Path | None) -> AdapterBase:
    """The base: a directory, ``ipfs://CID`` of a fetched model, or (lore) ``shipped``, the shipped lore LM.

    Raises:
        NotFoundError: no such model, with what is accepted.
    """
    from agent.generate.factory import model_dir
    from agent.generate.published import is_ipfs_uri, parse_model_uri
    from agent.generate.runtime import weight_files, weights_digest

    cache = cache_dir or Path("models")
    cid = None
    if trainer == LORE_TRAINER and (base is None or base in ("", SHIPPED_LORE)):
        from agent.generate.lore.gguf import ensure_converted, smollm2_gguf_path

        gguf = smollm2_gguf_path()
        directory, _ = ensure_converted(gguf, cache)
        name = f"{gguf.stem} (shipped GGUF, converted)"
    elif base and is_ipfs_uri(base):
        cid = parse_model_uri(base)
        directory = model_dir(base, cache, setting="--base")
        name = base
    else:
        what = "a causal LM directory (with its tokenizer), ipfs://CID or shipped" if trainer == LORE_TRAINER else (
            "a diffusers pipeline directory (model_index.json) or ipfs://CID of a fetched one"
        )  # fmt: skip
        directory = Path(base or "").expanduser()
        if not base or not directory.is_dir():
            raise NotFoundError(f"unknown base model {base!r}: no such directory", hint=f"pass --base {what}")
        directory = directory.resolve()
        name = directory.name
    files = {k: v for k, v in weight_files(directory).items() if CHECKPOINT_DIR not in k.split("/")}
    if not files:
        raise NotFoundError(
            f"base model {directory} holds no weight file", hint="point --base at the model itself"
        )
    return AdapterBase(directory, name, weights_digest(files), cid)


# -- the run ---------------------------------------------------------------------------------------------------


def split(items: tuple[Any, ...], holdout_every: int) -> tuple[list[Any], list[Any]]:
    """(train, held out): every ``holdout_every``-th item by index is held out (0: none)."""
    k = holdout_every
    held = [it for it in items if k and it.index % k == k - 1]
    train = [it for it in items if not (k and it.index % k == k - 1)]
    return train, held


def _train(
    trainer: str,
    ds: Any,
    base: AdapterBase,
    out_dir: Path,
    cfg: AdapterConfig,
    seed: int,
    device: str,
    progress: Progress | None,
) -> TrainResult:
    train, _ = split(ds.items, cfg.holdout_every)
    if not train:
        raise TrainingError(
            f"{ds.path} holds no items to train on", hint="add items, or lower --holdout-every"
        )
    view = dataclasses.replace(ds, items=tuple(train))
    assert cfg.steps and cfg.rank and cfg.alpha and cfg.lr and cfg.batch_size
    common: dict[str, Any] = {
        "rank": cfg.rank, "alpha": cfg.alpha, "lr": cfg.lr, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "seed": seed, "checkpoint_every": cfg.checkpoint_every, "device": device, "progress": progress,
    }  # fmt: skip
    if trainer == IMAGE_TRAINER:
        from agent.training.diffusers_lora import train_diffusers_lora

        assert cfg.resolution
        return train_diffusers_lora(view, base.directory, out_dir, resolution=cfg.resolution, **common)
    from agent.training.lore_lora import train_lore_lora

    return train_lore_lora(view, base.directory, out_dir, max_length=cfg.max_length, **common)


def loss_every(steps: int) -> int:
    """Losses kept in the receipt: every step up to 200 steps, then about 200 of them."""
    return max(1, steps // 200)


def build_receipt(
    result: TrainResult, base: AdapterBase, ds: Any, cfg: AdapterConfig, weights_sha256: str
) -> TrainingReceipt:
    import torch

    k = loss_every(result.steps)
    libraries = library_versions()
    device = str(result.hyperparameters.get("device", "cpu"))
    return TrainingReceipt(
        trainer=result.trainer,
        base=base.to_json(),
        dataset=dataset_record(ds),  # fmt: skip
        hyperparameters={**result.hyperparameters, **cfg.hyperparameters(result.trainer)},
        seed=result.seed,
        steps=result.steps,
        data_order_sha256=result.data_order_sha256,
        loss_curve_sha256=loss_curve_sha256(result.losses),
        loss_every=k,
        loss_checkpoints=[
            [i + 1, v] for i, v in enumerate(result.losses) if (i + 1) % k == 0 or i + 1 == result.steps
        ],
        weights_sha256=weights_sha256,
        libraries=libraries,
        device=device,
        dtype="float32",
        threads=1 if device == "cpu" else int(torch.get_num_threads()),
        machine=machine(),
        train_seconds=round(result.train_seconds, 3),
    )


def model_weights_sha256(out_dir: Path) -> str:
    """The weights digest of a trained directory by the registry's rule (its checkpoint left out)."""
    from agent.generate.runtime import weight_files, weights_digest

    files = {k: v for k, v in weight_files(out_dir).items() if CHECKPOINT_DIR not in k.split("/")}
    return weights_digest(files)


def estimate_bytes(trainer: str, base: AdapterBase) -> int:
    """Disk at the peak: a LoRA and its optimizer state are small next to the base; the lore output is a merged
    copy of the base weights (float32)."""
    from agent.generate.runtime import weight_files

    size = sum((base.directory / p).stat().st_size for p in weight_files(base.directory))
    return (2 * size if trainer == LORE_TRAINER else size // 4) + (16 << 20)


def finetune_adapter(
    dataset: str | Path,
    out_dir: Path,
    *,
    base: str | None,
    config: AdapterConfig | None = None,
    seed: int = 0,
    device: str = "cpu",
    model_id: str | None = None,
    cache_dir: Path | None = None,
    data_dir: Path | None = None,
    min_free_bytes: int | None = None,
    progress: Progress | None = None,
    card: bool = True,
) -> TrainResult:
    """Train a LoRA for the production image pipeline or the lore LM and write a publishable model directory
    (see the module docstring). A killed run resumes with the same arguments; a finished ``out_dir`` is refused.

    Raises:
        NotFoundError: unknown base. TrainingError / ConfigError / DatasetError: bad dataset, arguments or disk.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    ds = open_dataset(dataset, data_dir, resolution=None)
    trainer = trainer_for(base, ds.kind, cache_dir)
    if trainer is None:
        raise TrainingError(
            f"--base {base!r} is neither a diffusers pipeline directory nor a lore model for this {ds.kind} dataset",
            hint="the sprite model trains with --base shipped (or a sprite-model directory)",
        )
    b = resolve_adapter_base(trainer, base, cache_dir)
    train, _ = split(ds.items, (config or AdapterConfig()).holdout_every)
    cfg = (config or AdapterConfig()).resolved(trainer, len(train), b.directory)
    check_disk(out_dir, estimate_bytes(trainer, b) if min_free_bytes is None else min_free_bytes)
    result = _train(trainer, ds, b, out_dir, cfg, seed, device, progress)
    weights = write_model_dir(out_dir, result, b, ds, cfg, model_id=model_id, card=card)
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return dataclasses.replace(result, weights=weights)


def write_model_dir(
    out_dir: Path,
    result: TrainResult,
    base: AdapterBase,
    ds: Any,
    cfg: AdapterConfig,
    *,
    model_id: str | None = None,
    card: bool = True,
) -> dict[str, str]:
    """Receipt, card and manifest beside the trainer's weights; returns relative file -> sha256."""
    from agent.generate.image.embedded import file_sha256

    weights = model_weights_sha256(out_dir)
    receipt = build_receipt(result, base, ds, cfg, weights)
    receipt_sha = receipt.write(out_dir / RECEIPT_NAME)
    lore = result.trainer == LORE_TRAINER
    if card:
        write_card(out_dir, receipt, base, ds, cfg)
    files = {
        p.relative_to(out_dir).as_posix(): file_sha256(p)
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME and CHECKPOINT_DIR not in p.relative_to(out_dir).parts
    }
    manifest = {
        "model_id": model_id or f"{base.name.split(' ')[0]}+{ds.path.name}@{weights[:8]}",
        "kind": "lore" if lore else "image",
        "backend": "transformers" if lore else "diffusers",
        "adapter": "merged lora" if lore else "lora",
        "weights_file": None if lore else LORA_WEIGHTS,
        "weights_sha256": weights,
        "files": files,
        "training_steps": result.steps,
        "training_receipt": RECEIPT_NAME,
        "training_receipt_sha256": receipt_sha,
        "base_model": {"model_id": base.name, "weights_sha256": base.weights_sha256, "cid": base.cid},
        "dataset_root": ds.root,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return {**files, MANIFEST_NAME: file_sha256(out_dir / MANIFEST_NAME)}


# -- the model card --------------------------------------------------------------------------------------------


def lore_heldout_loss(model_dir: Path, items: list[Any], max_length: int) -> float:
    """Mean per-token loss of the lore tokens of ``items`` under the model in ``model_dir`` (the training
    prompt; canonical CPU, one thread)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.generate.runtime import torch_threads
    from agent.training.lore_lora import IGNORE, encode_pairs

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    total, count = 0.0, 0
    with torch_threads(1), torch.no_grad():
        for ids, labels in encode_pairs(tokenizer, items, max_length):
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            n = sum(1 for x in labels[1:] if x != IGNORE)
            total += float(out.loss) * n
            count += n
    return total / max(count, 1)


def image_samples(
    base_dir: Path, lora_dir: Path, ds: Any, items: list[Any], resolution: int
) -> tuple[bytes, dict[str, float]]:
    """A grid (rows: held-out image, base, fine-tune) for up to four held-out items, and the mean absolute pixel
    difference (0-255, at 64x64) of base and fine-tune to the held-out images."""
    import io

    import numpy as np
    from PIL import Image

    from agent.generate.base import ImageRequest
    from agent.generate.image.diffusers import DiffusersImageGenerator
    from agent.training.diffusers_lora import item_prompt

    chosen = items[:4]
    real = [np.asarray(Image.fromarray(it.load_rgb(ds)).resize((resolution, resolution))) for it in chosen]
    rows, scores = [real], {}
    for label, lora in (("base", None), ("fine-tuned", lora_dir)):
        gen = DiffusersImageGenerator(
            str(base_dir), device="cpu", lora=str(lora) if lora else None, width=resolution, height=resolution,
            num_inference_steps=20, threads=1,
        )  # fmt: skip
        got = gen.generate(
            [
                ImageRequest(traits=dict(it.traits or {}), seed=it.index, prompt=item_prompt(it))
                for it in chosen
            ]
        )
        imgs = [
            np.asarray(Image.open(io.BytesIO(g.png)).convert("RGB").resize((resolution, resolution)))
            for g in got
        ]
        rows.append(imgs)
        scores[label] = float(
            np.mean([
                np.abs(_small(a).astype(np.float32) - _small(b).astype(np.float32)).mean()
                for a, b in zip(imgs, real, strict=True)
            ])
        )  # fmt: skip
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue(), scores


def _small(img: Any) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((64, 64), Image.Resampling.BILINEAR))


def write_card(
    out_dir: Path, receipt: TrainingReceipt, base: AdapterBase, ds: Any, cfg: AdapterConfig
) -> None:
    """``MODEL_CARD.md`` (and ``samples.png`` for images): see the module docstring."""
    _, held = split(ds.items, cfg.holdout_every)
    lore = receipt.trainer == LORE_TRAINER
    quality = "No items were held out (`--holdout-every 0`): no quality table.\n"
    samples = ""
    if held and lore:
        before = lore_heldout_loss(base.directory, held, cfg.max_length)
        after = lore_heldout_loss(out_dir, held, cfg.max_length)
        quality = (
            f"Mean per-token loss of the lore text of the {len(held)} held-out pairs, with the training prompt "
            "(lower: closer to the project's voice):\n\n| model | held-out loss |\n|---|---:|\n"
            f"| base | {before:.4f} |\n| fine-tuned | {after:.4f} |\n"
        )
    elif held:
        assert cfg.resolution
        png, scores = image_samples(base.directory, out_dir, ds, held, cfg.resolution)
        (out_dir / SAMPLES_NAME).write_bytes(png)
        n = min(4, len(held))
        samples = (
            f"\n![held-out images, then the base and the fine-tune for their prompts]({SAMPLES_NAME})\n\n"
            f"_Rows: {n} held-out images, the base pipeline, the fine-tune (same prompt and seed)._\n"
        )
        quality = (
            f"Mean absolute pixel difference (0-255, at 64x64) to {n} held-out images, the production backend "
            "drawing each item's prompt with seed = item index (lower: closer to the project's art):\n\n"
            "| model | difference to held-out |\n|---|---:|\n"
            f"| base | {scores['base']:.2f} |\n| fine-tuned | {scores['fine-tuned']:.2f} |\n"
        )
    hp_md = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in sorted(receipt.hyperparameters.items()))
    k = cfg.holdout_every
    held_note = f"{len(held)} held out: each item whose index % {k} is {k - 1}" if k else "none held out"
    counts_md = "\n".join(f"| {k} | {v} |" for k, v in ds.counts().items())
    every = max(1, len(receipt.loss_checkpoints) // 10)
    curve = ", ".join(f"{s}: {v:.4f}" for s, v in receipt.loss_checkpoints[::every])
    libs = ", ".join(f"{k} {v}" for k, v in sorted(receipt.libraries.items()))
    use = (
        '`models.lore_backend = "transformers"` and `models.lore_model = "<this directory>"`'
        if lore
        else f'`models.image_model = "{base.directory}"` with `models.image_lora = "<this directory>"`'
    )
    what = "lore LM (merged LoRA)" if lore else "diffusers pipeline (LoRA)"
    text = f"""# A fine-tune of {base.name}: {what}

Trained on dataset `{ds.root}` ({len(ds.items)} {ds.kind} items, {ds.mode}). Use it with {use}.
{samples}
## Lineage
| field | value |
|---|---|
| weights sha256 (the on-chain model registry digest) | `{receipt.weights_sha256}` |
| base model | {base.name} (weights `{base.weights_sha256}`{", CID " + base.cid if base.cid else ""}) |
| dataset root (the training data's commitment) | `{ds.root}` |
| training receipt | `{RECEIPT_NAME}` (its sha256 is in `manifest.json`) |

Check it: `chrysalis model verify-training {RECEIPT_NAME} --dataset DIR` trains again in the canonical
configuration and compares the weights bit for bit.

## Training data
Items per label value ({held_note}):

| label | items |
|---|---:|
{counts_md}

## Training configuration
Trainer `{receipt.trainer}`, seed {receipt.seed}, {receipt.steps} steps, {receipt.device} / {receipt.dtype} /
{receipt.threads} thread(s), {receipt.train_seconds:.0f} s on {receipt.machine}; {libs}.

| hyperparameter | value |
|---|---|
{hp_md}

Loss (step: value): {curve}.

## Quality
{quality}
## Intended use and limits
For {"writing the lore" if lore else "drawing the images"} of Chrysalis tokens in the style of the training data.
It learned from {len(ds.items)} items: it copies their style, and with few items it may copy the items themselves.
Outputs are deterministic on the CPU in the canonical configuration; GPU outputs differ in the last bits.
"""
    (out_dir / CARD_NAME).write_text(text)


# -- verify-training's replay ----------------------------------------------------------------------------------


@dataclass
class Replay:
    """What a replay made: its losses (up to a divergence), its data order and weights digest."""

    losses: list[float]
    data_order_sha256: str | None
    weights_sha256: str | None
    diverged_at: int | None


class _Diverged(Exception):
    pass


def replay(
    receipt: TrainingReceipt,
    ds: Any,
    base: str | None,
    cache_dir: Path | None,
    *,
    progress: Progress | None = None,
) -> Replay:
    """Train again from ``receipt`` (canonical CPU) into a temporary directory, stopping at the first recorded loss
    that differs.

    Raises:
        NotFoundError: the base model is not found, or its weights are not the receipt's.
    """
    want = receipt.base["weights_sha256"]
    spec = base
    if spec is None:
        if receipt.base.get("cid"):
            spec = f"ipfs://{receipt.base['cid']}"
        elif receipt.trainer == LORE_TRAINER and "shipped" in str(receipt.base.get("name")):
            spec = SHIPPED_LORE
        else:
            raise NotFoundError(
                f"the receipt's base model {receipt.base['name']} (weights {want}) has no CID",
                hint="pass its directory with --base DIR",
            )
    b = resolve_adapter_base(receipt.trainer, spec, cache_dir)
    if b.weights_sha256 != want:
        raise NotFoundError(
            f"base model {b.directory} has weights {b.weights_sha256}, the receipt's base {receipt.base['name']} "
            f"has {want}",
            hint="pass the base the receipt names with --base DIR (or ipfs://CID)",
        )
    cfg = AdapterConfig.from_hyperparameters(receipt.hyperparameters)
    cfg = dataclasses.replace(cfg, checkpoint_every=max(1, receipt.steps))
    recorded = {int(s): float(v) for s, v in receipt.loss_checkpoints}
    losses: list[float] = []

    def check(step: int, total: int, loss: float) -> None:
        losses.append(loss)
        if progress is not None:
            progress(step, total, loss)
        if step in recorded and recorded[step] != loss:
            raise _Diverged(step)

    with tempfile.TemporaryDirectory(prefix="chrysalis-verify-") as tmp:
        try:
            result = _train(receipt.trainer, ds, b, Path(tmp), cfg, receipt.seed, "cpu", check)
        except _Diverged as d:
            return Replay(losses, None, None, int(d.args[0]))
        return Replay(list(result.losses), result.data_order_sha256, model_weights_sha256(Path(tmp)), None)


__all__ = [
    "AdapterBase",
    "is_adapter_run",
    "AdapterConfig",
    "Replay",
    "finetune_adapter",
    "native_resolution",
    "replay",
    "resolve_adapter_base",
    "trainer_for",
]
