"""Fine-tuning the sprite model on the neon example set: does it learn the style and keep the body plans?

    python -m bench.finetune                              # train full and LoRA (150 steps each) and compare
    python -m bench.finetune --model runs/finetune/model  # evaluate a model trained already (make example-finetune)

Each model draws ``--per-class`` samples per class (seeds never used in training); measured: the neon-style rate
(share of samples whose ``neon_adherence``, the share of pixels in the mood's neon palette family, is at least
``NEON_THRESHOLD``), the mean neon adherence, element accuracy (a 1-NN silhouette classifier fitted on procedural
sprites: recolouring keeps the silhouettes), mood accuracy read from the shipped and from the neon palette
families, symmetry and palette adherence (to the shipped families), and the training time (canonical: CPU,
float32, one thread). Writes ``bench/results/finetune.md`` (or ``finetune_methods.md`` for the method comparison).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench._table import emit

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "examples" / "finetune" / "neon"


def classifier() -> object:
    from agent.generate.sprites.conditioning import class_traits
    from agent.generate.sprites.dataset import make_dataset
    from agent.generate.sprites.quality import ElementClassifier

    images, labels = make_dataset(32, seed=123)
    return ElementClassifier(images, [class_traits(int(y))["element"] for y in labels])


def evaluate(model_dir: Path, per_class: int, clf: object) -> dict[str, float]:
    from agent.generate.sprites.conditioning import MOODS, NUM_CLASSES, class_traits
    from agent.generate.sprites.quality import neon_adherence
    from agent.training.card import sample_for, score

    traits = [class_traits(c) for c in range(NUM_CLASSES) for _ in range(per_class)]
    seeds = [10_000 + i for i in range(len(traits))]
    t0 = time.perf_counter()
    imgs = sample_for(model_dir, traits, seeds)
    sample_s = time.perf_counter() - t0
    out = score(imgs, traits, clf)
    neon_mood = [MOODS[int(np.argmax([neon_adherence(im, m) for m in MOODS]))] for im in imgs]
    out["neon_mood_acc"] = float(np.mean([p == t["mood"] for p, t in zip(neon_mood, traits, strict=True)]))
    out["sample_s"] = sample_s / len(imgs)
    return out


def train(method: str, steps: int, lr: float, out: Path) -> tuple[Path, float]:
    from agent.training.sprites import FinetuneConfig, finetune_sprites

    dest = out / method
    shutil.rmtree(dest, ignore_errors=True)
    config = FinetuneConfig(method=method, steps=steps, lr=lr)
    t0 = time.perf_counter()
    result = finetune_sprites(DATASET, dest, config=config, card=False)
    print(f"{method}: {steps} steps in {time.perf_counter() - t0:.0f} s (train {result.train_seconds:.0f} s)")
    return dest, result.train_seconds


def row(
    name: str, m: dict[str, float], steps: object, seconds: float | None, delta: float | None
) -> list[object]:
    return [
        name,
        steps,
        "-" if seconds is None else f"{seconds:.0f}",
        "-" if seconds is None or not isinstance(steps, int) else f"{seconds / steps:.3f}",
        f"{m['neon_rate']:.0%}",
        f"{m['neon']:.3f}",
        f"{m['element_acc']:.3f}" + ("" if delta is None else f" ({delta:+.3f})"),
        f"{m['mood_acc']:.3f}",
        f"{m['neon_mood_acc']:.3f}",
        f"{m['symmetry']:.3f}",
        f"{m['palette']:.3f}",
    ]


def columns() -> list[str]:
    from agent.generate.sprites.quality import NEON_THRESHOLD

    return [
        "model", "steps", "train s", "s/step", f"neon (>= {NEON_THRESHOLD})", "neon adherence",
        "element acc. (vs base)", "mood acc. (shipped palettes)", "mood acc. (neon palettes)", "symmetry",
        "palette (shipped)",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from agent.generate.image.embedded import SHIPPED_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="a fine-tuned model directory to evaluate (no training)")
    p.add_argument("--steps", type=int, default=150, help="steps per method in the comparison")
    p.add_argument("--methods", default="full,lora")
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--lr-full", type=float, default=2e-3)
    p.add_argument("--lr-lora", type=float, default=5e-3)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune-bench")
    a = p.parse_args(argv)
    clf = classifier()
    base = evaluate(SHIPPED_DIR, a.per_class, clf)
    rows = [row("shipped base", base, "-", None, None)]
    if a.model is not None:
        receipt = json.loads((a.model / "training-receipt.json").read_text())
        m = evaluate(a.model, a.per_class, clf)
        hp = receipt["hyperparameters"]
        name = f"fine-tuned ({hp['method']}, batch {hp['batch_size']}, lr {hp['lr']:g})"
        rows.append(
            row(name, m, receipt["steps"], receipt["train_seconds"], m["element_acc"] - base["element_acc"])
        )
        target = m["neon_rate"] >= 0.9 and abs(m["element_acc"] - base["element_acc"]) <= 0.05
        notes = (
            f"{a.per_class * 16} samples per model (seeds 10000+), 50 DDIM steps; training canonical (CPU, float32, "
            f"1 thread). Target (>= 90% of samples neon, element accuracy within 0.05 of the base): "
            f"{'met' if target else 'NOT met'}."
        )
        emit("finetune", "Fine-tuning on the neon example set", columns(), rows, notes)
        return 0
    for method in a.methods.split(","):
        dest, seconds = train(method, a.steps, a.lr_full if method == "full" else a.lr_lora, a.out)
        m = evaluate(dest, a.per_class, clf)
        rows.append(row(method, m, a.steps, seconds, m["element_acc"] - base["element_acc"]))
    notes = (
        f"{a.steps} steps of batch 32 each (full: lr {a.lr_full:g}; LoRA rank 8 on convs and time_emb_proj: "
        f"lr {a.lr_lora:g}), "
        f"canonical CPU training at 1 thread; {a.per_class * 16} samples per model."
    )
    emit("finetune_methods", "Full fine-tune vs LoRA on the neon example set", columns(), rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
