"""The portable image runtime in Node.js vs headless Chromium: ``.venv/bin/python -m bench.renderer_agreement``.

Exports the embedded sprite model (:func:`agent.generate.portable.onnx_export.export_sprite_model`, into a
temporary directory) and renders the same requests in:

- *Node*: :class:`~agent.generate.portable.wasm_runtime.WasmSpriteRuntime` (``renderer/node_render.mjs``, the
  agent's canonical runtime);
- *Chromium*: :class:`~agent.generate.portable.browser.ChromiumSpriteRuntime` (``renderer/bench.html`` in Debian's
  headless Chromium through playwright, the site served from 127.0.0.1);
- *torch* (timing only; ``--no-torch`` skips it): :class:`EmbeddedSpriteGenerator` on the CPU (1 thread, batch 1),
  which draws torch's own noise, so its pixels are not comparable with the portable runtime's.

Requests: ``--n`` (seed, class) pairs (class ``i mod 16``, 64-bit seeds), each fresh, then evolved (img2img at
``--strength``) to the next mood from that runtime's own fresh image, recoloured as the agent does
(``EmbeddedSpriteGenerator.check_inputs``), with seed + 7; at each of ``--steps``. The table gives, Node vs
Chromium, the share of images whose pixel sha256 is identical, the share of identical pixels, the uint8 values
that differ and the largest difference, and the seconds each runtime spends per image (inside the JS runtime for
Node and Chromium; ``generate`` for torch).

Options: ``--n N`` (32, two seeds per class: about 1.5 minutes on 2 cores), ``--steps 25 50``,
``--strength 0.6``, ``--no-torch``, ``--model-dir DIR``. Exits 1 if any image differs between Node and
Chromium (the portable scheme's goal is 100%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.generate.base import ImageRequest
from agent.generate.image.embedded import SHIPPED_DIR, EmbeddedSpriteGenerator, encode_png
from agent.generate.portable.browser import ChromiumSpriteRuntime, request_json
from agent.generate.portable.onnx_export import export_sprite_model
from agent.generate.portable.onnx_sampler import pixel_agreement
from agent.generate.portable.wasm_runtime import WasmSpriteRuntime
from agent.generate.sprites.conditioning import MOODS, NUM_CLASSES, class_label, class_traits
from bench._table import emit
from bench.onnx_agreement import agreement_cells

NEXT_MOOD = {m: MOODS[(i + 1) % len(MOODS)] for i, m in enumerate(MOODS)}
GOLDEN = 0x9E3779B97F4A7C15  # spreads the seeds over the whole uint64 range (both Philox key words)


def pairs(n: int) -> list[tuple[int, int]]:
    """``n`` (seed, class label) pairs: classes in turn, 64-bit seeds."""
    return [((GOLDEN * (i + 1)) % 2**64, i % NUM_CLASSES) for i in range(n)]


@dataclass(frozen=True)
class Req:
    """One render request for both runtimes."""

    seed: int
    label: int
    steps: int
    init: np.ndarray | None = None
    strength: float | None = None


def evolutions(
    gen: EmbeddedSpriteGenerator, fresh: list[np.ndarray], base: list[tuple[int, int]], strength: float
) -> list[Req]:
    """Each fresh image evolved to the next mood, its start recoloured as the agent prepares it."""
    reqs = []
    for (seed, label), px in zip(base, fresh, strict=True):
        traits = class_traits(label)
        traits = {**traits, "mood": NEXT_MOOD[traits["mood"]]}
        (prep,) = gen.check_inputs(
            [ImageRequest(traits=traits, seed=seed + 7, init_image=encode_png(px), strength=strength)]
        )
        assert prep.init is not None and prep.label == class_label(traits)
        reqs.append(Req(prep.seed, prep.label, gen.num_inference_steps, prep.init, strength))
    return reqs


def run_node(node: WasmSpriteRuntime, reqs: list[Req]) -> tuple[list[np.ndarray], float]:
    """Pixels and mean in-Node seconds per image."""
    out, spent = [], 0.0
    for r in reqs:
        out.append(node.render(r.seed, r.label, r.steps, init=r.init, strength=r.strength))
        spent += node.last_timing["render_s"]
    return out, spent / len(reqs)


def run_chromium(page: ChromiumSpriteRuntime, reqs: list[Req]) -> tuple[list[np.ndarray], float]:
    """Pixels and mean in-page seconds per image."""
    got = page.render_all(
        [request_json(r.seed, r.label, r.steps, init=r.init, strength=r.strength) for r in reqs]
    )
    return [g.pixels for g in got], sum(g.render_s for g in got) / len(got)


def run_torch(gen: EmbeddedSpriteGenerator, reqs: list[ImageRequest]) -> tuple[list[bytes], float]:
    t = time.perf_counter()
    out = gen.generate(reqs)
    return [g.png for g in out], (time.perf_counter() - t) / len(reqs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--n", type=int, default=32, help="(seed, class) pairs; each is rendered fresh and evolved"
    )
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50])
    p.add_argument("--strength", type=float, default=0.6)
    p.add_argument("--no-torch", action="store_true", help="skip the torch timing")
    p.add_argument("--model-dir", type=Path, default=None)
    a = p.parse_args(argv)
    if a.n < 1:
        p.error("--n must be at least 1")

    base = pairs(a.n)
    rows, mismatched = [], 0
    with tempfile.TemporaryDirectory(prefix="chrysalis-renderer-") as tmp:
        exported = export_sprite_model(a.model_dir or SHIPPED_DIR, tmp)
        with WasmSpriteRuntime(tmp) as node, ChromiumSpriteRuntime(tmp) as page:
            chrome = page.info["user_agent"].split("HeadlessChrome/")[-1].split(" ")[0]
            # warm both runtimes (the first image pays onnxruntime's lazy set-up)
            node.render(1, 0, 2)
            page.render_all([request_json(1, 0, 2)])
            for steps in a.steps:
                gen = EmbeddedSpriteGenerator(a.model_dir, "cpu", num_inference_steps=steps)
                fresh_reqs = [Req(seed, label, steps) for seed, label in base]
                node_fresh, t_node = run_node(node, fresh_reqs)
                chrome_fresh, t_chrome = run_chromium(page, fresh_reqs)
                node_evo, t_node_evo = run_node(node, evolutions(gen, node_fresh, base, a.strength))
                chrome_evo, t_chrome_evo = run_chromium(page, evolutions(gen, chrome_fresh, base, a.strength))
                t_torch = t_torch_evo = float("nan")
                if not a.no_torch:
                    torch_reqs = [ImageRequest(traits=class_traits(label), seed=seed) for seed, label in base]
                    pngs, t_torch = run_torch(gen, torch_reqs)
                    _, t_torch_evo = run_torch(
                        gen,
                        [
                            ImageRequest(
                                traits={**r.traits, "mood": NEXT_MOOD[r.traits["mood"]]},
                                seed=r.seed + 7,
                                init_image=png,
                                strength=a.strength,
                            )
                            for r, png in zip(torch_reqs, pngs, strict=True)
                        ],
                    )
                for mode, (x, y, tn, tc, tt) in {
                    "fresh": (node_fresh, chrome_fresh, t_node, t_chrome, t_torch),
                    f"img2img {a.strength:g}": (node_evo, chrome_evo, t_node_evo, t_chrome_evo, t_torch_evo),
                }.items():
                    ag = pixel_agreement(np.stack(x), np.stack(y))
                    mismatched += round((1 - ag["images_identical"]) * len(x))
                    torch_s = "-" if np.isnan(tt) else f"{tt:.3f}"
                    rows.append(
                        [steps, mode, len(x), *agreement_cells(ag), f"{tn:.3f}", f"{tc:.3f}", torch_s]
                    )
            wasm = str(node.wasm_sha256)[:16]
            notes = (
                f"onnxruntime-web {node.ort_version} WASM (1 thread; .wasm sha256 {wasm}...) with "
                f"renderer/sampler.js in Node.js {node.node_version} and in headless Chromium {chrome}; "
                f"unet.onnx sha256 {exported['unet.onnx'][:16]}.... Pixel hash = sha256 of the 32x32x3 native "
                "pixels. img2img evolves each runtime's own fresh image to the next mood (recoloured as the agent "
                "does). torch (EmbeddedSpriteGenerator, 1 thread, batch 1) draws its own noise: time only."
            )
    emit(
        "renderer_agreement",
        "Portable image runtime: Node.js vs headless Chromium (same requests, same .wasm and .onnx)",
        [
            "DDIM steps",
            "mode",
            "images",
            "pixel hash identical",
            "pixels identical",
            "uint8 values off",
            "max abs diff",
            "Node s/image",
            "Chromium s/image",
            "torch s/image",
        ],
        rows,
        notes=notes,
    )
    return 1 if mismatched else 0


if __name__ == "__main__":
    raise SystemExit(main())
