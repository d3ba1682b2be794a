"""The shipped model's card: ``MODEL_CARD.md`` and ``samples.png`` beside the weights.

``write_model_card(model_dir)`` reads ``manifest.json`` and ``training.json`` (written by the export), samples a
class x seed grid with the exported model itself, and writes what a user needs to trust the weights: the dataset
generator version, the architecture and its parameter count, the training steps and final loss, the weights'
sha256 (the digest the contract's model registry records) and the sample grid.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.generate.sprites.conditioning import ELEMENTS, MOODS, NUM_CLASSES, class_traits

CARD_NAME = "MODEL_CARD.md"
SAMPLES_NAME = "samples.png"


def sample_grid(model_dir: Path, *, per_class: int = 8, scale: int = 2, guidance_scale: float = 1.0) -> bytes:
    """PNG of ``NUM_CLASSES`` rows (mood x element) by ``per_class`` seeds, native pixels scaled ``scale`` times."""
    from agent.generate.base import ImageRequest
    from agent.generate.image.embedded import EmbeddedSpriteGenerator, decode_png

    gen = EmbeddedSpriteGenerator(model_dir, "cpu", guidance_scale=guidance_scale)
    reqs = [
        ImageRequest(traits=class_traits(c), seed=c * 100 + i)
        for c in range(NUM_CLASSES)
        for i in range(per_class)
    ]
    imgs = np.stack([decode_png(g.png) for g in gen.generate(reqs)])
    h, w = imgs.shape[1:3]
    grid = (
        imgs.reshape(NUM_CLASSES, per_class, h, w, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(NUM_CLASSES * h, per_class * w, 3)
    )
    grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render_card(manifest: dict[str, Any], training: dict[str, Any], *, guidance_scale: float) -> str:
    cfg = training["train_config"]
    minutes = training.get("train_seconds", 0) / 60
    rows = "\n".join(
        f"| {i} | {class_traits(i)['mood']} | {class_traits(i)['element']} |" for i in range(NUM_CLASSES)
    )
    loss = training.get("final_loss")
    return f"""# {manifest["model_id"]}: Chrysalis' embedded pixel-sprite diffusion model

A class-conditional `diffusers.UNet2DModel` ({manifest["parameters"]:,} parameters) that draws {manifest["native_size"]}x{manifest["native_size"]}
mirror-symmetric pixel creatures, upscaled with nearest-neighbour to {manifest["output_size"]}x{manifest["output_size"]} PNG. It is the
default image model of Chrysalis, shipped in the repository so that evolutions run with no model hub.

![samples: one row per class, mood x element]({SAMPLES_NAME})

_One row per class (rows 0-15 in the table below), eight seeds each; {cfg["num_train_timesteps"]}-step DDPM training
schedule, sampled with 50 DDIM steps, guidance {guidance_scale:g}._

## Weights
| field | value |
|---|---|
| weights file | `{manifest["weights_file"]}` |
| weights sha256 (the on-chain model registry digest) | `{manifest["weights_sha256"]}` |
| dataset generator version | {manifest["dataset_generator_version"]} (`agent/generate/sprites/dataset.py`) |
| parameters | {manifest["parameters"]:,} |
| training steps | {training["step"]:,} of {cfg["steps"]:,} planned |
| final training loss ({cfg.get("prediction_type", "epsilon")} MSE, mean of the last {cfg["log_every"]} steps) | {loss:.4f} |
| training time | {minutes:.1f} min ({"GPU" if training.get("device", "cpu").startswith("cuda") else "CPU"}) |
| weights | EMA (decay {cfg["ema_decay"]}) |
| licence | same as the Chrysalis repository |

## Conditioning
Class = `index(mood) * 4 + index(element)`; class {manifest["null_class"]} is the unconditional class (label dropout
{cfg["label_dropout"]}) used for classifier-free guidance.

- mood (palette family): {", ".join(MOODS)}
- element (body plan): {", ".join(ELEMENTS)}

| class | mood | element |
|---|---|---|
{rows}

## Training
Dataset: {cfg["n_per_class"]:,} procedural sprites per class (seed {cfg["seed"]}), drawn by the dataset generator above:
mirror-symmetric bodies, a palette family per mood, a body plan per element, and random accessories.

| setting | value |
|---|---|
| UNet blocks | {cfg["block_out_channels"]}, {cfg["layers_per_block"]} layer(s) per block, {cfg["norm_num_groups"]} norm groups |
| batch size | {cfg["batch_size"]} |
| learning rate | {cfg["lr"]} (AdamW, {cfg["warmup_steps"]} warm-up steps, linear decay to 10% over the last quarter) |
| beta schedule | {cfg["beta_schedule"]}, {cfg["num_train_timesteps"]} timesteps |

Reproduce: `.venv/bin/python scripts/train_sprites.py --out runs/sprites32 --steps {cfg["steps"]}` then
`--export agent/generate/shipped/sprites32`. Training is resumable (re-run the same command) and uses CUDA when
it is available.

## Quality
Measured by `python -m bench.image_quality` (symmetry, palette adherence, mood and element accuracy against
training data and noise, and identity kept across an img2img evolution); the tables are in the repository README.

## Files
Every file that decides the output is listed with its sha256 in `manifest.json`; the loader refuses the directory
if any differs.
"""


def write_model_card(model_dir: Path, *, guidance_scale: float = 1.0) -> None:
    """Write ``MODEL_CARD.md`` and ``samples.png`` into an exported model directory."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    training = json.loads((model_dir / "training.json").read_text())
    (model_dir / SAMPLES_NAME).write_bytes(sample_grid(model_dir, guidance_scale=guidance_scale))
    (model_dir / CARD_NAME).write_text(render_card(manifest, training, guidance_scale=guidance_scale))
