"""PNG plumbing around a C2PA manifest: where it sits, taking it out, and what pixels a PNG shows.

C2PA embeds its manifest store in PNG as one ``caBX`` chunk right after ``IHDR`` and changes nothing else, so
removing that chunk gives back the exact bytes that were signed. Receipts hash the unsigned PNG
(``output.png_sha256``) and its pixels (``output.pixels_sha256``); the published image is the signed PNG.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from agent.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANIFEST_CHUNK = b"caBX"
"""The PNG chunk type C2PA stores its JUMBF manifest store in."""


def is_png(data: bytes) -> bool:
    return bytes(data[:8]) == PNG_SIGNATURE


def chunks(png: bytes) -> list[tuple[bytes, int, int]]:
    """Each chunk of ``png`` as (type, start, end) byte offsets (length and CRC included).

    Raises:
        ConfigError: not PNG data, or a chunk runs past the end.
    """
    if not is_png(png):
        raise ConfigError("the data is not a PNG image", hint="pass the PNG file itself (it starts \\x89PNG)")
    out = []
    i = 8
    while i < len(png):
        if i + 8 > len(png):
            raise ConfigError(f"the PNG is truncated at byte {i}", hint="fetch the image again")
        (length,) = struct.unpack(">I", png[i : i + 4])
        end = i + 12 + length
        if end > len(png):
            raise ConfigError(
                f"the PNG is truncated in a {png[i + 4 : i + 8]!r} chunk", hint="fetch it again"
            )
        out.append((bytes(png[i + 4 : i + 8]), i, end))
        i = end
    return out


def has_manifest(png: bytes) -> bool:
    """Whether ``png`` holds a C2PA manifest chunk."""
    return any(kind == MANIFEST_CHUNK for kind, _, _ in chunks(png))


def strip_manifest(png: bytes) -> bytes:
    """``png`` without its C2PA manifest chunk(s): for an image Chrysalis signed, the exact bytes it signed."""
    parts = chunks(png)
    return png[:8] + b"".join(png[a:b] for kind, a, b in parts if kind != MANIFEST_CHUNK)


def with_chunk(png: bytes, kind: bytes, data: bytes, *, after: bytes = b"IHDR") -> bytes:
    """``png`` with one chunk inserted after the first ``after`` chunk (tests move a manifest between files)."""
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    parts = chunks(png)
    at = next(end for k, _, end in parts if k == after)
    return png[:at] + chunk + png[at:]


def manifest_chunk(png: bytes) -> bytes | None:
    """The data of the first C2PA manifest chunk, if any."""
    for kind, a, b in chunks(png):
        if kind == MANIFEST_CHUNK:
            return png[a + 8 : b - 4]
    return None


def png_pixels_sha256(png: bytes, *, width: int, height: int) -> str:
    """sha256 of the native uint8 (height, width, 3) pixels a PNG shows: what a receipt's ``pixels_sha256`` is.

    A PNG at the native size is hashed as decoded. A larger one must be an exact nearest-neighbour upscale by one
    integer factor (the shipped sprite model publishes its 32x32 images at 512x512): every block of k x k pixels
    one colour. Metadata, chunk order and compression (and a C2PA manifest) do not change the result.

    Raises:
        ConfigError: not a PNG, or neither the native size nor an exact integer upscale of it (the message says
            which size it is).
    """
    try:
        with Image.open(io.BytesIO(png)) as img:
            img.load()
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(
            f"the image cannot be decoded as PNG: {exc}", hint="fetch the image again; it may be damaged"
        ) from None
    h, w = pixels.shape[:2]
    if (h, w) != (height, width):
        k = h // height if height else 0
        exact = k >= 1 and h == k * height and w == k * width
        native = pixels[::k, ::k] if exact else None
        if native is None or not np.array_equal(np.repeat(np.repeat(native, k, axis=0), k, axis=1), pixels):
            raise ConfigError(
                f"the image is {w}x{h}, neither the receipt's {width}x{height} nor an exact upscale of it",
                hint="compare the image the metadata names, unedited",
            )
        pixels = native
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
