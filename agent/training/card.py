"""The model card of a fine-tuned sprite model: ``MODEL_CARD.md`` and ``samples.png``.

The card says what the model was trained on (items per label value, the dataset root), how (base model, method,
every hyperparameter, seed, steps, time), how well (a quality table: the held-out real items, the base model and
the fine-tuned model sampled for the held-out items' traits, scored with the measures of
:mod:`agent.generate.sprites.quality`), what it looks like (the class x seed sample grid of
:func:`agent.generate.sprites.card.sample_grid`) and what it is for. Samples are drawn in the canonical
configuration, so the card of the same weights is the same bytes (except the recorded training time).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from agent.training.sprites import BaseModel, TrainingData


def sample_for(model_dir: Path, traits: Sequence[dict[str, str]], seeds: Sequence[int]) -> np.ndarray:
    """Native (N, 32, 32, 3) samples of ``model_dir`` for ``traits[i]`` with ``seeds[i]`` (canonical config)."""
    import numpy as np

    from agent.generate.base import ImageRequest
    from agent.generate.image.embedded import EmbeddedSpriteGenerator, decode_png

    gen = EmbeddedSpriteGenerator(model_dir, "cpu")
    got = gen.generate([ImageRequest(traits=dict(t), seed=s) for t, s in zip(traits, seeds, strict=True)])
    return np.stack([decode_png(g.png) for g in got])


def score(images: np.ndarray, traits: Sequence[dict[str, str]], classifier: Any) -> dict[str, float]:
    """Symmetry, palette adherence, mood and element accuracy, and the example set's neon style: the mean
    :func:`~agent.generate.sprites.quality.neon_adherence` and the share of images at or above
    :data:`~agent.generate.sprites.quality.NEON_THRESHOLD`."""
    import numpy as np

    from agent.generate.sprites import quality

    moods = [t["mood"] for t in traits]
    out = quality.summarize(images, moods, [t["element"] for t in traits], classifier)
    s = np.array([quality.neon_adherence(im, m) for im, m in zip(images, moods, strict=True)])
    out["neon"] = float(s.mean())
    out["neon_rate"] = float((s >= quality.NEON_THRESHOLD).mean())
    return out


def evaluate(model_dir: Path, base: BaseModel, data: TrainingData) -> dict[str, dict[str, float]]:
    """The quality table: rows ``held-out items``, ``base model``, ``fine-tuned`` (see the module docstring). The
    element classifier is fitted on the training items only. With no held-out items, every item is used."""
    from agent.generate.sprites.quality import ElementClassifier

    ds = data.dataset
    eval_idx = data.held_out or data.train
    traits = [dict(ds.items[i].traits) for i in eval_idx]
    seeds = [int(i) for i in eval_idx]
    clf = ElementClassifier(data.images[data.train], [ds.items[i].traits["element"] for i in data.train])
    return {
        "held-out items": score(data.images[eval_idx], traits, clf),
        "base model": score(sample_for(base.directory, traits, seeds), traits, clf),
        "fine-tuned": score(sample_for(model_dir, traits, seeds), traits, clf),
    }


def quality_table(rows: dict[str, dict[str, float]]) -> str:
    from agent.generate.sprites.quality import NEON_THRESHOLD

    cols = [
        ("neon_rate", f"neon (adherence >= {NEON_THRESHOLD})"),
        ("neon", "neon adherence"),
        ("element_acc", "element acc."),
        ("mood_acc", "mood acc."),
        ("symmetry", "symmetry"),
        ("palette", "palette"),
    ]
    cols = [c for c in cols if all(c[0] in r for r in rows.values())]
    head = "| set | " + " | ".join(t for _, t in cols) + " |\n|---|" + "---:|" * len(cols) + "\n"
    body = "".join(
        f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k, _ in cols) + " |\n" for name, r in rows.items()
    )
    return head + body


def render(
    manifest: dict[str, Any],
    receipt: dict[str, Any],
    counts: dict[str, int],
    rows: dict[str, dict[str, float]],
    n_eval: int,
    held_out: bool,
) -> str:
    from agent.generate.sprites.card import SAMPLES_NAME

    hp = receipt["hyperparameters"]
    base = receipt["base"]
    ds = receipt["dataset"]
    counts_md = "\n".join(f"| {k} | {v} |" for k, v in counts.items())
    hp_md = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in sorted(hp.items()))
    libs = ", ".join(f"{k} {v}" for k, v in sorted(receipt["libraries"].items()))
    evaluated = f"the {n_eval} held-out items" if held_out else f"all {n_eval} items (none held out)"
    return f"""# {manifest["model_id"]}: a fine-tune of {base["name"]}

A class-conditional `diffusers.UNet2DModel` ({manifest["parameters"]:,} parameters), the embedded sprite model
fine-tuned ({hp["method"]}) on dataset `{ds["root"]}` ({ds["n"]} {ds["kind"]} items, {ds["mode"]}). It loads like the
shipped model: `models.image_model = "<this directory>"` (or `ipfs://<CID>` once published and fetched).

![samples: one row per class, mood x element]({SAMPLES_NAME})

_One row per class (mood x element), eight seeds each, 50 DDIM steps._

## Lineage
| field | value |
|---|---|
| weights sha256 (the on-chain model registry digest) | `{manifest["weights_sha256"]}` |
| base model | {base["name"]} (weights `{base["weights_sha256"]}`{", CID " + base["cid"] if base.get("cid") else ""}) |
| dataset root (the training data's commitment) | `{ds["root"]}` |
| training receipt | `training-receipt.json` (sha256 `{manifest["training_receipt_sha256"]}`, in `manifest.json`) |

Check it: `chrysalis model verify-training training-receipt.json --dataset DIR` trains again in the canonical
configuration and compares the weights bit for bit.

## Training data
Items per label value:

| label | items |
|---|---:|
{counts_md}

## Training configuration
Seed {receipt["seed"]}, {receipt["steps"]} steps, {receipt["device"]} / {receipt["dtype"]} /
{receipt["threads"]} thread,
{receipt["train_seconds"]:.0f} s on {receipt["machine"]}; {libs}.

| hyperparameter | value |
|---|---|
{hp_md}

## Quality
Scored on {evaluated}: the real images, and the base and fine-tuned models sampled for their traits (seed = item
index). Element accuracy uses a nearest-silhouette classifier fitted on the training items; palette and neon
adherence are the shares of pixels in the mood's shipped and neon (the example set's) palette families.

{quality_table(rows)}
## Intended use and limits
For drawing the sprites of Chrysalis tokens in the style of the training art. It knows only the classes of its
base model (mood x element); it draws 32x32 pixels, upscaled to 512x512. It learned from {ds["n"]} images: it
copies their style, and with few images per class it may copy the images themselves. Sampling is deterministic
on the CPU (same seed and traits, same pixels); GPU output differs in the last bits.
"""


def write_finetune_card(model_dir: Path, base: BaseModel, data: TrainingData) -> dict[str, dict[str, float]]:
    """Write ``MODEL_CARD.md`` and ``samples.png`` into a fine-tuned model directory; returns the quality rows."""
    from agent.generate.sprites.card import CARD_NAME, SAMPLES_NAME, sample_grid
    from agent.training.receipt import RECEIPT_NAME

    manifest = json.loads((model_dir / "manifest.json").read_text())
    receipt = json.loads((model_dir / RECEIPT_NAME).read_text())
    rows = evaluate(model_dir, base, data)
    (model_dir / SAMPLES_NAME).write_bytes(sample_grid(model_dir))
    n_eval = len(data.held_out or data.train)
    text = render(manifest, receipt, data.dataset.counts(), rows, n_eval, bool(data.held_out))
    (model_dir / CARD_NAME).write_text(text)
    (model_dir / "quality.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    return rows
