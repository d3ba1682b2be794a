"""A 64-bit perceptual hash (dHash) of an image, with numpy and PIL only.

:func:`dhash`: the image is decoded (PIL), turned to grey with fixed BT.601 weights in float64, averaged over an
8 x 9 grid of equal-area blocks (numpy, no resampling filter, so no PIL version changes it), and each of the 64
bits says whether a block is darker than its right neighbour (row-major, most significant bit first). The same
PNG always gives the same hash; a re-encoded, rescaled or slightly edited copy stays within a few bits
(:func:`hamming`), distinct creatures are tens of bits apart (measured in ``bench/gates.py``).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from agent.errors import ConfigError

GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float64)

FLAT = 1.0
"""Grey levels a block must be brighter than its left neighbour by for its bit to be set: flat areas (a plain
background) give stable 0 bits instead of bits that flip with re-encoding noise."""


def decode_rgb(png: bytes) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8.

    Raises:
        ConfigError: the bytes are not an image PIL can read.
    """
    try:
        with Image.open(io.BytesIO(bytes(png))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data
        raise ConfigError(
            f"the candidate's image cannot be decoded: {exc}",
            hint="the image generator must return PNG bytes",
        ) from None


def dhash_array(rgb: np.ndarray) -> int:
    """The 64-bit difference hash of an (H, W, 3) uint8 array (H, W >= 9)."""
    gray = rgb[..., :3].astype(np.float64) @ GRAY
    h, w = gray.shape
    rows = np.linspace(0, h, 9).round().astype(int)
    cols = np.linspace(0, w, 10).round().astype(int)
    # block sums via an integral image: exact, order-independent means
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = gray.cumsum(0).cumsum(1)
    s = integral[rows][:, cols]
    sums = s[1:, 1:] - s[:-1, 1:] - s[1:, :-1] + s[:-1, :-1]
    area = np.outer(np.diff(rows), np.diff(cols)).astype(np.float64)
    means = sums / np.maximum(area, 1.0)
    bits = (means[:, :-1] < means[:, 1:]).reshape(-1)
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def dhash(png: bytes) -> int:
    """The 64-bit difference hash of image bytes (:func:`dhash_array` of the decoded image)."""
    return dhash_array(decode_rgb(png))


def hamming(a: int, b: int) -> int:
    """Bits in which two 64-bit hashes differ."""
    return (a ^ b).bit_count()
