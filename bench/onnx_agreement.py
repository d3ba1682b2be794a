"""ONNX Runtime vs torch on the CPU for the embedded sprite model: ``.venv/bin/python -m bench.onnx_agreement``.

Exports the model (:func:`agent.generate.portable.onnx_export.export_sprite_model`, into a temporary directory),
then renders the same tokens twice:

- *torch*: :class:`EmbeddedSpriteGenerator` itself, on the CPU (1 thread, each image alone: the canonical
  configuration receipts record);
- *onnx*: :class:`agent.generate.portable.onnx_sampler.OnnxSpriteSampler` (onnxruntime, 1 thread) fed the noise
  the torch generator draws for the same seed (``torch_noise``) and the same class label.

Fresh images: ``--seeds`` seeds for each of ``--classes`` classes. Evolutions (img2img): each fresh torch image
evolved to the next mood (palette transfer on, as the agent runs it) at ``--strength``; the start the ONNX sampler
denoises from is the one the torch generator prepares (``check_inputs``: decode, recolour). For each number of
steps, the table gives the share of images bit-identical, the share of pixels identical, the uint8 values that
differ and the largest difference, and seconds per image for each runtime.

Options: ``--seeds N`` (2), ``--classes N`` (16), ``--steps 25 50``, ``--strength 0.6``,
``--optimization basic`` (onnxruntime graph optimisation level), ``--model-dir DIR``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.generate.base import GeneratedImage, ImageRequest
from agent.generate.image.embedded import SHIPPED_DIR, EmbeddedSpriteGenerator, decode_png
from agent.generate.portable.onnx_export import export_sprite_model
from agent.generate.portable.onnx_sampler import (
    OPTIMIZATION_LEVELS,
    OnnxSpriteSampler,
    pixel_agreement,
    torch_noise,
)
from agent.generate.sprites.conditioning import MOODS, NUM_CLASSES, class_traits
from bench._table import emit

NEXT_MOOD = {m: MOODS[(i + 1) % len(MOODS)] for i, m in enumerate(MOODS)}


def agreement_cells(ag: dict[str, float]) -> list[object]:
    """The agreement columns both agreement benches print, from :func:`pixel_agreement`: images identical, pixels
    identical, uint8 values off, max abs diff."""
    return [
        f"{ag['images_identical']:.1%}",
        f"{ag['pixels_identical']:.3%}",
        int(ag["values_off"]),
        int(ag["max_abs_diff"]),
    ]


def _timed_torch(
    gen: EmbeddedSpriteGenerator, reqs: list[ImageRequest]
) -> tuple[np.ndarray, float, list[GeneratedImage]]:
    t = time.perf_counter()
    out = gen.generate(reqs)
    dt = (time.perf_counter() - t) / len(reqs)
    return np.stack([decode_png(g.png) for g in out]), dt, out


def _timed_onnx(
    sampler: OnnxSpriteSampler, gen: EmbeddedSpriteGenerator, reqs: list[ImageRequest]
) -> tuple[np.ndarray, float]:
    # the labels and, for img2img, the (recoloured) start, exactly as the torch path prepares them
    prepared = gen.check_inputs(reqs)
    t = time.perf_counter()
    imgs = [
        sampler.sample(
            torch_noise(p.seed),
            p.label,
            num_inference_steps=gen.num_inference_steps,
            guidance_scale=gen.guidance_scale,
            init=p.init,
            strength=None if p.init is None else p.strength,
        )
        for p in prepared
    ]
    return np.stack(imgs), (time.perf_counter() - t) / len(reqs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2, help="seeds per class")
    p.add_argument("--classes", type=int, default=NUM_CLASSES)
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50])
    p.add_argument("--strength", type=float, default=0.6)
    p.add_argument("--optimization", choices=OPTIMIZATION_LEVELS, default="basic")
    p.add_argument("--model-dir", type=Path, default=None)
    a = p.parse_args(argv)

    reqs = [
        ImageRequest(traits=class_traits(c), seed=7_000 + c * 1000 + i)
        for c in range(min(a.classes, NUM_CLASSES))
        for i in range(a.seeds)
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="chrysalis-onnx-") as tmp:
        t = time.perf_counter()
        exported = export_sprite_model(a.model_dir or SHIPPED_DIR, tmp)
        export_s = time.perf_counter() - t
        sampler = OnnxSpriteSampler(tmp, optimization=a.optimization)
        for steps in a.steps:
            gen = EmbeddedSpriteGenerator(a.model_dir, "cpu", num_inference_steps=steps)
            ref, t_torch, fresh = _timed_torch(gen, reqs)
            got, t_onnx = _timed_onnx(sampler, gen, reqs)
            evo_reqs = [
                ImageRequest(
                    traits={**r.traits, "mood": NEXT_MOOD[r.traits["mood"]]},
                    seed=r.seed + 7,
                    init_image=f.png,
                    strength=a.strength,
                )
                for r, f in zip(reqs, fresh, strict=True)
            ]
            evo_ref, t_torch_evo, _ = _timed_torch(gen, evo_reqs)
            evo_got, t_onnx_evo = _timed_onnx(sampler, gen, evo_reqs)
            for mode, (x, y, tt, to) in {
                "fresh": (ref, got, t_torch, t_onnx),
                f"img2img {a.strength:g}": (evo_ref, evo_got, t_torch_evo, t_onnx_evo),
            }.items():
                ag = pixel_agreement(x, y)
                rows.append([steps, mode, len(x), *agreement_cells(ag), f"{tt:.3f}", f"{to:.3f}"])
    emit(
        "onnx_agreement",
        "Embedded sprite model: ONNX Runtime vs torch on the CPU (same seeds, noise and conditioning)",
        [
            "DDIM steps",
            "mode",
            "images",
            "bit-identical",
            "pixels identical",
            "uint8 values off",
            "max abs diff",
            "torch s/image",
            "onnx s/image",
        ],
        rows,
        notes=(
            f"torch {EmbeddedSpriteGenerator.__name__} (1 thread, batch 1) vs onnxruntime "
            f"(opset {exported['opset']}, 1 thread, graph optimisation '{a.optimization}'), both from the noise "
            f"torch draws for each seed; unet.onnx sha256 {exported['unet.onnx'][:16]}..., exported in "
            f"{export_s:.1f} s. img2img evolves each fresh torch image to the next mood (palette transfer on)."
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
