"""Write the shared test vectors of the portable noise (``chrysalis-noise/1``) from the Python implementation.

    .venv/bin/python scripts/portable_noise_vectors.py          # rewrite the vector file (VECTORS)
    .venv/bin/python scripts/portable_noise_vectors.py --check  # exit 1 if it differs from what Python computes

Both implementations are held to the file: ``tests/generate/test_portable_noise.py`` recomputes it in Python (so it
cannot drift silently) and runs ``tests/generate/portable_noise_check.mjs`` under Node.js on ``renderer/noise.js``.

Contents:

- ``noise``: for each seed (edge cases, then seeds derived from sha256 so the list is fixed), the sha256 of the
  first ``count`` = 3*32*32 values as float32 little-endian bytes, and the first 8 values' float32 bit patterns.
- ``log``: fdlibm's logarithm on ``count`` inputs built from Philox blocks by :func:`log_inputs` (a recipe the JS
  check repeats), as sha256 of the inputs' and outputs' float64 little-endian bytes, plus ``samples``: a few
  inputs (special values, subnormals, values next to 1 and the first generated ones) with their result bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.generate.portable.noise import SCHEME, fdlibm_log, philox_blocks, portable_randn  # noqa: E402

VECTORS = ROOT / "tests" / "generate" / "data" / "portable_noise_vectors.json"
SHAPE = (3, 32, 32)
HEAD = 8
EDGE_SEEDS = [0, 1, 2, 3, 42, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
DERIVED_SEEDS = 37
LOG_SEED = 0x636872792D6C6F67  # b"chry-log"
LOG_COUNT = 4096
LOG_SPECIAL = [
    0.0,
    -0.0,
    -1.0,
    math.inf,
    -math.inf,
    5e-324,
    2.2250738585072014e-308 / 3,
    2.2250738585072014e-308,
]
LOG_SPECIAL += [
    1.0,
    2.0,
    0.5,
    math.e,
    1 + 2**-52,
    1 - 2**-53,
    1 + 2**-21,
    1 - 2**-21,
    1.7976931348623157e308,
    2**-104,
]


def seeds() -> list[int]:
    """The edge seeds, then ``DERIVED_SEEDS`` seeds: the first 8 bytes (big-endian) of sha256("<scheme> seed i")."""
    derived = [
        int.from_bytes(hashlib.sha256(f"{SCHEME} seed {i}".encode()).digest()[:8], "big")
        for i in range(DERIVED_SEEDS)
    ]
    return EDGE_SEEDS + derived


def log_inputs() -> NDArray[np.float64]:
    """``LOG_COUNT`` positive doubles from Philox blocks 0.. of ``LOG_SEED``, so that every branch of fdlibm's log
    is taken. Block ``n`` = (w0, w1, w2, w3) gives the double with high word ``(e << 20) | mant`` and low word
    ``w2``, where by ``n mod 4``:

    - 0: ``e = 1 + w0 mod 2046``, ``mant = w1 & 0xFFFFF`` (any normal double);
    - 1: ``e = 1022 - w0 mod 104``, ``mant = w1 & 0xFFFFF`` (``[2**-104, 1)``, the range Box-Muller uses);
    - 2: ``e = 1022 + (w0 & 1)``, ``mant = w1 & 0xFFFFF`` (``[0.5, 2)``, around ``k = 0``);
    - 3: next to a power of two (fdlibm's ``|f| < 2**-20`` branch): ``e = 1022 + (w0 & 1)`` if ``w0 & 0x800``
      else ``1 + w0 mod 2046``; ``mant = 0xFFFFF - (w1 & 3)`` if ``w1 & 4`` else ``w1 & 3``.
    """
    b = philox_blocks(LOG_SEED, 0, LOG_COUNT).astype(np.uint64)
    w0, w1, w2 = b[:, 0], b[:, 1], b[:, 2]
    kind = np.arange(LOG_COUNT) % 4
    any_e = 1 + w0 % 2046
    near_one = 1022 + (w0 & 1)
    e = np.select(
        [kind == 0, kind == 1, kind == 2],
        [any_e, 1022 - w0 % 104, near_one],
        np.where((w0 & 0x800) != 0, near_one, any_e),
    )
    edge = np.where((w1 & 4) != 0, 0xFFFFF - (w1 & 3), w1 & 3)
    mant = np.where(kind == 3, edge, w1 & 0xFFFFF)
    bits = (((e << np.uint64(20)) | mant) << np.uint64(32)) | w2
    return bits.astype(np.uint64).view(np.float64)


def _f64_hex(values: NDArray[np.float64]) -> list[str]:
    return [f"{int(v):016x}" for v in np.asarray(values, dtype=np.float64).view(np.uint64)]


def build() -> dict[str, object]:
    """The vector file's content, computed from the Python implementation."""
    count = math.prod(SHAPE)
    noise = []
    for seed in seeds():
        values = portable_randn(seed, SHAPE).reshape(-1)
        noise.append(
            {
                "seed": str(seed),
                "sha256": hashlib.sha256(values.astype("<f4").tobytes()).hexdigest(),
                "head": [f"{int(v):08x}" for v in values[:HEAD].view(np.uint32)],
            }
        )
    xs = log_inputs()
    ys = fdlibm_log(xs)
    sample_in = np.concatenate([np.array(LOG_SPECIAL, dtype=np.float64), xs[:12]])
    with np.errstate(invalid="ignore"):
        sample_out = fdlibm_log(sample_in)
    return {
        "scheme": SCHEME,
        "generated_by": "scripts/portable_noise_vectors.py",
        "noise": {"shape": list(SHAPE), "count": count, "seeds": noise},
        "log": {
            "seed": str(LOG_SEED),
            "count": LOG_COUNT,
            "inputs_sha256": hashlib.sha256(xs.astype("<f8").tobytes()).hexdigest(),
            "outputs_sha256": hashlib.sha256(ys.astype("<f8").tobytes()).hexdigest(),
            "samples": [[x, y] for x, y in zip(_f64_hex(sample_in), _f64_hex(sample_out), strict=True)],
        },
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the vector file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = VECTORS.read_text() if VECTORS.is_file() else ""
        if current != text:
            print(
                f"{VECTORS.relative_to(ROOT)} is out of date: run scripts/portable_noise_vectors.py",
                file=sys.stderr,
            )
            return 1
        return 0
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(text)
    print(f"wrote {VECTORS.relative_to(ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
