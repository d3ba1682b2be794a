"""Quality of the embedded sprite model, measured: ``.venv/bin/python -m bench.image_quality``.

Three tables (also written to bench/results/):

- image_quality: symmetry, palette adherence, mood accuracy (palette family) and element accuracy (1-NN body plan
  on silhouettes against held-out training sprites) of generated samples, next to training data and to noise.
- image_identity: evolutions (img2img to a new mood, or a new element) at several strengths: identity similarity
  of each evolved image to its own previous stage versus to other tokens' previous stages, and rank-1 retrieval.
- image_determinism: batch-N versus batch-1 outputs at uint8 on this device, and seconds per image.

Options: ``--per-class N`` samples per class, ``--samples PATH`` writes a class x sample grid PNG,
``--model-dir DIR`` benchmarks another export.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from agent.generate.base import ImageRequest
from agent.generate.image.embedded import EmbeddedSpriteGenerator, decode_png
from agent.generate.sprites import quality
from agent.generate.sprites.conditioning import ELEMENTS, MOODS, NUM_CLASSES, class_traits
from agent.generate.sprites.dataset import make_dataset
from agent.generate.sprites.palette import transfer_palette
from bench._table import emit

NEXT_MOOD = {m: MOODS[(i + 1) % len(MOODS)] for i, m in enumerate(MOODS)}
NEXT_ELEMENT = {e: ELEMENTS[(i + 1) % len(ELEMENTS)] for i, e in enumerate(ELEMENTS)}


def _requests(per_class: int, seed0: int) -> list[ImageRequest]:
    return [
        ImageRequest(traits=class_traits(c), seed=seed0 + c * 1000 + i)
        for c in range(NUM_CLASSES)
        for i in range(per_class)
    ]


def _native(images) -> np.ndarray:
    return np.stack([decode_png(g.png) for g in images])


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=6)
    p.add_argument("--tokens", type=int, default=32, help="tokens evolved in the identity table")
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=Path, default=None, help="write a 16-row sample grid PNG here")
    p.add_argument("--guidance", type=float, nargs="*", default=[1.0, 2.0])
    a = p.parse_args(argv)

    ref_imgs, ref_labels = make_dataset(32, seed=999)  # held out: training used seed 0
    clf = quality.ElementClassifier(ref_imgs, [class_traits(int(x))["element"] for x in ref_labels])

    rows = []
    data, labels = make_dataset(a.per_class, seed=12345)
    moods = [class_traits(int(x))["mood"] for x in labels]
    elements = [class_traits(int(x))["element"] for x in labels]
    s = quality.summarize(data, moods, elements, clf)
    rows.append(["training data (held-out seed)", len(data), *map(_fmt, s.values()), "-"])
    noise = np.random.default_rng(0).integers(0, 256, data.shape, dtype=np.uint8)
    s = quality.summarize(noise, moods, elements, clf)
    rows.append(["uniform noise", len(noise), *map(_fmt, s.values()), "-"])

    reqs = _requests(a.per_class, seed0=1)
    settings = [(50, g) for g in a.guidance] + [(25, 1.0)]
    first = None
    for steps, g in settings:
        gen = EmbeddedSpriteGenerator(a.model_dir, a.device, num_inference_steps=steps, guidance_scale=g)
        t = time.perf_counter()
        out = gen.generate(reqs)
        dt = (time.perf_counter() - t) / len(reqs)
        imgs = _native(out)
        first = first if first is not None else (gen, out, imgs)
        s = quality.summarize(
            imgs, [r.traits["mood"] for r in reqs], [r.traits["element"] for r in reqs], clf
        )
        rows.append(
            [f"model, {steps} DDIM steps, guidance {g:g}", len(imgs), *map(_fmt, s.values()), f"{dt:.3f}"]
        )
    emit(
        "image_quality",
        "Embedded sprite model: samples vs training data vs noise",
        ["source", "n", "symmetry", "palette adherence", "mood acc", "element acc", "s/image (batched)"],
        rows,
        notes=(
            "symmetry = 1 - mean|x - mirror(x)|/255; palette adherence = share of pixels within RGB distance 24 of "
            "the requested mood's palette family; mood acc = the best-covering palette family is the requested one; "
            "element acc = 1-NN silhouette IoU against 512 held-out training sprites picks the requested element."
        ),
    )

    gen, out, imgs = first
    if a.samples is not None:
        _write_grid(imgs, a.per_class, a.samples)

    # --- identity across an evolution -------------------------------------------------------------------------
    base_reqs = [ImageRequest(traits=class_traits(i % NUM_CLASSES), seed=500 + i) for i in range(a.tokens)]
    base = gen.generate(base_reqs)
    prev = _native(base)
    id_rows = []
    raw = EmbeddedSpriteGenerator(a.model_dir, a.device, num_inference_steps=50, palette_transfer=False)
    cases = [("mood", s, gen) for s in (0.3, 0.5, 0.7)] + [("mood", s, raw) for s in (0.5, 0.9)]
    cases += [("element", s, gen) for s in (0.5, 0.7)]
    for change, strength, g in cases:
        new_traits = [
            {**r.traits, change: (NEXT_MOOD if change == "mood" else NEXT_ELEMENT)[r.traits[change]]}
            for r in base_reqs
        ]
        evo = g.generate(
            [
                ImageRequest(traits=t, seed=r.seed + 7, init_image=b.png, strength=strength)
                for t, r, b in zip(new_traits, base_reqs, base, strict=False)
            ]
        )
        ev = _native(evo)
        # A new mood means new colours: judge identity against each previous stage recoloured to it.
        ref = (
            prev
            if change == "element"
            else np.stack(
                [
                    transfer_palette(p_, quality.predicted_mood(p_), t["mood"])
                    for p_, t in zip(prev, new_traits, strict=False)
                ]
            )
        )
        ident = quality.identity_retrieval(ev, ref)
        iou_own = np.mean([quality.silhouette_iou(x, y) for x, y in zip(ev, prev, strict=False)])
        if change == "mood":
            acc = np.mean(
                [quality.predicted_mood(x) == t["mood"] for x, t in zip(ev, new_traits, strict=False)]
            )
        else:
            pred = clf.predict(ev)
            acc = np.mean([p_ == t["element"] for p_, t in zip(pred, new_traits, strict=False)])
        id_rows.append(
            [
                change,
                "on" if g.palette_transfer else "off",
                strength,
                _fmt(ident["own"]),
                _fmt(ident["others"]),
                _fmt(iou_own),
                _fmt(ident["rank1"]),
                _fmt(acc),
            ]
        )
    emit(
        "image_identity",
        f"Evolution keeps identity ({a.tokens} tokens, img2img to the next mood / element)",
        [
            "trait changed",
            "palette transfer",
            "strength",
            "sim to own previous",
            "sim to other tokens",
            "silhouette IoU own",
            "rank-1 retrieval",
            "new trait acc",
        ],
        id_rows,
        notes=(
            "sim = mean of silhouette IoU and pixel similarity (1 - mean|a-b|/255); rank-1 = the evolved image is more "
            "similar to its own previous stage than to any other token's; new trait acc = the evolved image shows the "
            "new mood (palette family) or element (1-NN body plan). For a mood change the previous stages are "
            "compared after recolouring them to the new mood (agent.generate.sprites.palette), so colour does not "
            "count as identity; palette transfer on is the generator's default."
        ),
    )

    # --- batch vs single --------------------------------------------------------------------------------------
    det_reqs = reqs[:: max(1, len(reqs) // 16)][:16]
    batched = gen.generate(det_reqs)
    t = time.perf_counter()
    singles = [gen.generate([r])[0] for r in det_reqs]
    dt1 = (time.perf_counter() - t) / len(det_reqs)
    same = sum(x.pixels_sha256 == y.pixels_sha256 for x, y in zip(batched, singles, strict=False))
    nb, ns = _native(batched).astype(int), _native(singles).astype(int)
    diff, px_same = int(np.abs(nb - ns).max()), float((nb == ns).all(-1).mean())
    evo_requests = [
        ImageRequest(r.traits, r.seed, b.png, 0.5) for r, b in zip(det_reqs, batched, strict=True)
    ]
    evo_b = gen.generate(evo_requests)
    evo_s = [gen.generate([request])[0] for request in evo_requests]
    same_e = sum(x.pixels_sha256 == y.pixels_sha256 for x, y in zip(evo_b, evo_s, strict=False))
    eb, es = _native(evo_b).astype(int), _native(evo_s).astype(int)
    threads = gen.threads or torch.get_num_threads()  # the generator pins its own count (default 1)
    emit(
        "image_determinism",
        f"Batch-{len(det_reqs)} vs batch-1 outputs ({gen.device}, {threads} torch threads)",
        ["mode", "identical pixels_sha256", "identical pixels", "max |diff| (uint8)", "s/image batch-1"],
        [
            ["fresh, 50 steps", f"{same}/{len(det_reqs)}", f"{px_same:.4f}", diff, f"{dt1:.3f}"],
            [
                "img2img, strength 0.5",
                f"{same_e}/{len(det_reqs)}",
                f"{float((eb == es).all(-1).mean()):.4f}",
                int(np.abs(eb - es).max()),
                "-",
            ],
        ],
    )
    return 0


def _write_grid(imgs: np.ndarray, per_class: int, path: Path, scale: int = 4) -> None:
    n = min(per_class, 8)
    grid = imgs.reshape(NUM_CLASSES, per_class, 32, 32, 3)[:, :n]
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(NUM_CLASSES * 32, n * 32, 3)
    grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
