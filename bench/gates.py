"""Quality gates: the cost per item of each gate, the near-duplicate lookup at 1k/10k/100k hashes, and the
Hamming distances the duplicate threshold is chosen from (distinct shipped-model sprites vs re-encoded copies).

    python -m bench gates   (or: python -m bench.gates --sprites 64)
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import time

import numpy as np
from PIL import Image

from agent.gates.index import HashIndex
from agent.gates.lore import lore_gates
from agent.gates.metrics import SpriteThresholds, sprite_metrics
from agent.gates.phash import dhash, hamming
from agent.generate.base import ImageRequest
from agent.generate.factory import load_image_generator
from agent.generate.image.embedded import decode_png, encode_png
from agent.generate.sprites.conditioning import ELEMENTS, MOODS
from agent.settings import GatesSettings, ModelSettings

LORE = "It hums beside the quiet river at dusk. The reeds lean toward its warm light."


def _ms(fn, n: int) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


def _jpeg(png: bytes, q: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, format="JPEG", quality=q)
    return buf.getvalue()


def _resized(png: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").resize((300, 300), Image.Resampling.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sprites", type=int, default=32)
    args, _ = parser.parse_known_args()
    s = GatesSettings()
    gen = load_image_generator(ModelSettings(threads=1))
    classes = list(itertools.product(MOODS, ELEMENTS))
    reqs = [ImageRequest({"mood": m, "element": e}, seed=1000 + i) for i, (m, e) in
            zip(range(args.sprites), itertools.cycle(classes))]  # fmt: skip
    pngs = [g.png for g in gen.generate(reqs)]
    hashes = [dhash(p) for p in pngs]

    print("#### Hamming distances of 64-bit dHash (shipped sprite model, 50 DDIM steps)\n")
    print("| pair | n | min | mean | max |\n|---|---|---|---|---|")
    distinct = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    print(
        f"| distinct sprites | {len(distinct)} | {min(distinct)} | {np.mean(distinct):.1f} | {max(distinct)} |"
    )
    for name, f in [
        ("JPEG q85", lambda p: _jpeg(p, 85)),
        ("JPEG q50", lambda p: _jpeg(p, 50)),
        ("rescaled to 300 px (bilinear)", _resized),
        ("2x2 block inverted", lambda p: encode_png(_touch(decode_png(p)))),
    ]:
        d = [hamming(h, dhash(f(p))) for h, p in zip(hashes, pngs, strict=True)]
        print(f"| same sprite, {name} | {len(d)} | {min(d)} | {np.mean(d):.1f} | {max(d)} |")
    print(f"\nthreshold gates.duplicate_distance = {s.duplicate_distance}\n")

    print("#### Cost per item of each gate (ms, one thread)\n")
    print("| gate | ms/item |\n|---|---|")
    t = SpriteThresholds(s.min_symmetry, s.min_palette)
    png = pngs[0]
    dhash_ms = _ms(lambda: dhash(png), 50)
    metrics_ms = _ms(lambda: sprite_metrics(png, {"mood": "serene"}, t), 50)
    lore_ms = _ms(lambda: lore_gates(LORE, min_chars=20, max_chars=1000, blocklist=["gore"]), 500)
    print(f"| dHash of a 512 px PNG (decode + hash) | {dhash_ms:.2f} |")
    print(f"| sprite metrics (symmetry + palette) | {metrics_ms:.2f} |")
    print(f"| lore checks (4) | {lore_ms:.3f} |")

    print("\n#### Near-duplicate lookup (multi-index hashing, random 64-bit hashes)\n")
    print("| entries | threshold | bands | us/lookup | build s |\n|---|---|---|---|---|")
    rng = random.Random(0)
    for n in (1_000, 10_000, 100_000):
        for thr in (3, s.duplicate_distance):
            start = time.perf_counter()
            index = HashIndex(thr)
            for i in range(n):
                index.add(i, 1, "", rng.getrandbits(64))
            build = time.perf_counter() - start
            queries = [rng.getrandbits(64) for _ in range(2000)]
            start = time.perf_counter()
            for q in queries:
                index.near(q)
            us = (time.perf_counter() - start) / len(queries) * 1e6
            print(f"| {n:,} | {thr} | {max(4, thr + 1)} | {us:.1f} | {build:.2f} |")


def _touch(img: np.ndarray) -> np.ndarray:
    img = img.copy()
    img[10:12, 10:12] = 255 - img[10:12, 10:12]
    return img


if __name__ == "__main__":
    main()
