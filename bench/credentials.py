"""What Content Credentials cost per image: ``.venv/bin/python -m bench.credentials [--n N]``.

Signs C2PA manifests (:class:`agent.credentials.ContentCredentials`, development credentials made on the spot) into
PNGs and reads them back (:func:`agent.credentials.inspect_png`, with the development CA as trust anchor), the
way the generate stage and a verifier do. Rows:

- the shipped sprite model's real output: a 32x32 image upscaled to 512x512 (a few KB of PNG);
- 64x64 and 512x512 PNGs of random pixels (incompressible: the size a diffusers model's output has);
- an evolution: the 512x512 image signed with its parent (itself signed) as ``parentOf`` ingredient, and the
  fifth stage of a chain of evolutions, whose manifest store carries every ancestor's manifest;
- the 512x512 image with the SDK's automatic thumbnail on, the setting Chrysalis turns off.

Each timing is the median (and best) of ``--n`` runs after a warm-up; bytes are what the manifest adds to the
PNG. Written to bench/results/credentials.md, which the README quotes.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from agent.credentials import (
    ContentCredentials,
    CredentialClaim,
    ParentImage,
    create_dev_credentials,
    inspect_png,
)
from bench._table import emit

CLAIM = CredentialClaim(
    chain_id=31337,
    contract="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    token_id=1,
    stage=1,
    receipt_sha256="ab" * 32,
    weights_sha256="9178ee7d48c09dc62d601e9713d2f8f61d556abdeb379770cf7242edfd9d7d30",
    model_id="chrysalis/sprites-32@1",
)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _sprite_pngs(count: int) -> list[bytes]:
    """Real images of the shipped sprite model (CPU, its default settings)."""
    from agent.generate.base import ImageRequest
    from agent.generate.factory import load_image_generator
    from agent.settings import ModelSettings

    gen = load_image_generator(ModelSettings(device="cpu"))
    traits = [
        {"mood": m, "element": e} for m, e in (("serene", "fire"), ("fierce", "water"), ("gloomy", "air"))
    ]
    return [img.png for img in gen.generate([ImageRequest(traits[i % 3], seed=i) for i in range(count)])]


def _timed_ms(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Median and best of ``n`` runs after a warm-up, in ms."""
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, min(times) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.credentials", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="timed runs per row (median)")
    args, _ = ap.parse_known_args(argv)  # `python -m bench credentials` leaves its own argv here

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        dev = create_dev_credentials(Path(tmp) / "dev")
        anchors = dev.trust_anchors
        t0 = time.perf_counter()
        signer = ContentCredentials.from_files(dev.key_file, dev.certificate_chain, trust_anchors=anchors)
        load_ms = (time.perf_counter() - t0) * 1000

        sprite = _sprite_pngs(3)
        small = _png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        large = _png(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
        parent = signer.sign(large, CLAIM)
        chain = parent
        for stage in range(2, 5):  # stages 2-4: each lists the one before
            chain = signer.sign(
                large, CLAIM, parent=ParentImage(chain, f"bafkreistage{stage - 1}", stage - 1)
            )
        cases: list[tuple[str, bytes, ParentImage | None]] = [
            ("shipped sprite model, 512x512 (32x32 upscaled)", sprite[0], None),
            ("random pixels, 64x64", small, None),
            ("random pixels, 512x512", large, None),
            ("512x512 evolution (parent as ingredient)", large, ParentImage(parent, "bafkreiparent", 1)),
            ("512x512, 5th stage of an evolution chain", large, ParentImage(chain, "bafkreistage4", 4)),
        ]
        rows = []
        for name, png, ingredient in cases:
            signed = signer.sign(png, CLAIM, parent=ingredient)
            report = inspect_png(signed, trust_anchors=anchors)
            assert report.valid and report.trusted, (name, report.problems)
            sign_ms = _timed_ms(
                lambda png=png, ingredient=ingredient: signer.sign(png, CLAIM, parent=ingredient), args.n
            )
            read_ms = _timed_ms(lambda signed=signed: inspect_png(signed, trust_anchors=anchors), args.n)
            rows.append(_row(name, png, signed, sign_ms, read_ms))
        for other in sprite[1:]:  # the other sprites sign the same: checked, not shown
            assert inspect_png(signer.sign(other, CLAIM), trust_anchors=anchors).valid

        # the SDK's default: an automatic thumbnail in every manifest
        thumbed = ContentCredentials.from_files(
            dev.key_file, dev.certificate_chain, trust_anchors=anchors, thumbnail=True
        )
        signed = thumbed.sign(large, CLAIM)
        sign_ms = _timed_ms(lambda: thumbed.sign(large, CLAIM), args.n)
        read_ms = _timed_ms(lambda: inspect_png(signed, trust_anchors=anchors), args.n)
        rows.append(_row("512x512 with the automatic thumbnail (not used)", large, signed, sign_ms, read_ms))

    emit(
        "credentials",
        "Content Credentials (C2PA) per image: sign, then read back and validate",
        ["image", "PNG", "manifest adds", "sign ms", "read back ms", "sign + read ms"],
        rows,
        f"ES256 development certificate, no time-stamp authority, thumbnail off unless said; median (best) of "
        f"{args.n} runs, c2pa-python {_version()}; load average {os.getloadavg()[0]:.1f} when it finished. Loading "
        f"the key and chain (checks and a test signature): {load_ms:.0f} ms once at start-up.",
    )
    return 0


def _row(
    name: str, png: bytes, signed: bytes, sign_ms: tuple[float, float], read_ms: tuple[float, float]
) -> list[str]:
    return [
        name,
        f"{len(png) / 1024:.1f} KB",
        f"+{(len(signed) - len(png)) / 1024:.1f} KB",
        f"{sign_ms[0]:.1f} ({sign_ms[1]:.1f})",
        f"{read_ms[0]:.1f} ({read_ms[1]:.1f})",
        f"{sign_ms[0] + read_ms[0]:.1f} ({sign_ms[1] + read_ms[1]:.1f})",
    ]


def _version() -> str:
    from importlib.metadata import version

    return version("c2pa-python")


if __name__ == "__main__":
    sys.exit(main())
