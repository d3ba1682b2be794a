"""Palette transfer: recolour a sprite from one mood's palette family to another's, role for role.

Moods are palette families (:data:`agent.generate.sprites.dataset.PALETTES`): three palettes of five roles each
(background, outline, body, shade, accent). Colour is what diffusion decides first, at the noisiest steps, so an
image-to-image evolution that keeps a token's identity (moderate strength) also keeps its old colours, and one that
changes the colours (strength near 1) loses the identity (measured: bench/results/image_identity.md). Evolving to a
new mood therefore recolours the previous stage first: every pixel is matched to the nearest colour of the old
family, and moved to the colour with the same palette and role in the new family, keeping its offset from it. The
denoising that follows cleans up whatever the mapping left. It is plain deterministic numpy on the uint8 pixels, so
a verifier replays it exactly.

The same role-for-role mapping draws the example fine-tuning set ``examples/finetune/neon``: each mood's shipped
family recoloured into its :data:`NEON_PALETTES` family (:func:`to_neon`), a style the shipped model never draws.

A model draws in one set of families (:data:`PALETTE_FAMILIES`): the shipped model in ``shipped``, a fine-tune in
the one its manifest declares (``"palettes": "neon"``), and the transfer maps within that set
(:func:`transfer_palette` with ``family``).
"""

from __future__ import annotations

import numpy as np

from agent.errors import ConfigError
from agent.generate.sprites.dataset import EYE_WHITE, PALETTES, PUPIL, Color

_FIXED = (EYE_WHITE, PUPIL)

Family = tuple[tuple[Color, Color, Color, Color, Color], ...]

# Per palette: background, outline, body, shade, accent (the roles of PALETTES). Three palettes per mood family.
NEON_PALETTES: dict[str, Family] = {
    "serene": (
        ((14, 0, 110), (0, 255, 255), (0, 150, 255), (0, 90, 220), (0, 255, 160)),
        ((0, 40, 120), (120, 255, 200), (0, 220, 170), (0, 150, 140), (180, 255, 0)),
        ((40, 0, 140), (60, 255, 255), (90, 120, 255), (60, 60, 230), (0, 255, 190)),
    ),
    "radiant": (
        ((110, 0, 100), (255, 255, 0), (255, 60, 200), (200, 0, 160), (0, 255, 255)),
        ((150, 0, 110), (255, 255, 0), (255, 130, 0), (200, 0, 120), (0, 255, 255)),
        ((90, 0, 140), (255, 200, 255), (255, 0, 255), (180, 0, 220), (255, 255, 0)),
    ),
    "fierce": (
        ((0, 70, 0), (255, 40, 0), (255, 0, 90), (200, 0, 130), (255, 255, 0)),
        ((0, 90, 30), (255, 0, 60), (255, 130, 0), (220, 0, 0), (0, 255, 120)),
        ((30, 90, 0), (255, 200, 0), (255, 0, 0), (180, 0, 0), (255, 0, 255)),
    ),
    "gloomy": (
        ((0, 100, 100), (160, 0, 255), (0, 255, 120), (0, 170, 80), (200, 0, 255)),
        ((0, 110, 60), (120, 120, 255), (120, 255, 0), (70, 180, 0), (255, 0, 150)),
        ((0, 80, 130), (0, 200, 255), (180, 0, 255), (120, 0, 190), (0, 255, 255)),
    ),
}
"""The neon palette families of the example fine-tuning set: glowing, fully saturated outlines, bodies and accents
on deep saturated backgrounds, role for role with :data:`PALETTES` (same moods, same three palettes of five roles).
Every colour is at least 48 RGB away (twice ``PALETTE_TOLERANCE``) from every colour of every shipped family, so
the shipped model's sprites score under 0.1 (their eyes) in :func:`agent.generate.sprites.quality.neon_adherence`."""


SHIPPED_FAMILY = "shipped"
"""The name of the shipped model's palette families (:data:`~agent.generate.sprites.dataset.PALETTES`)."""

PALETTE_FAMILIES: dict[str, dict[str, Family]] = {SHIPPED_FAMILY: PALETTES, "neon": NEON_PALETTES}
"""Every named set of mood palette families a model may draw in (a model manifest's ``palettes`` names one)."""


def palette_families(name: str) -> dict[str, Family]:
    """The mood -> palette family mapping called ``name``.

    Raises:
        ConfigError: ``name`` is not one of :data:`PALETTE_FAMILIES` (the hint lists them).
    """
    if not isinstance(name, str) or name not in PALETTE_FAMILIES:
        raise ConfigError(
            f"unknown palette family {name!r}",
            hint=f"use one of {sorted(PALETTE_FAMILIES)} (agent/generate/sprites/palette.py PALETTE_FAMILIES)",
        )
    return PALETTE_FAMILIES[name]


def _table(mood: str, families: dict[str, Family] = PALETTES) -> np.ndarray:
    """(15 + 2, 3) float colours: the family's 3 x 5 palette roles in order, then the eye colours."""
    cols = [c for pal in families[mood] for c in pal] + list(_FIXED)
    return np.array(cols, dtype=np.float32)


def _recolor(img: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    px = img.reshape(-1, 3).astype(np.float32)
    nearest = np.argmin(((px[:, None, :] - src[None, :, :]) ** 2).sum(-1), axis=1)
    out = dst[nearest] + (px - src[nearest])  # keep each pixel's offset from its palette colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(img.shape)


def transfer_palette(
    img: np.ndarray,
    src_mood: str,
    dst_mood: str,
    family: str = SHIPPED_FAMILY,
    *,
    src_family: str | None = None,
) -> np.ndarray:
    """``img`` (H, W, 3) uint8 recoloured from ``src_mood``'s palette family to ``dst_mood``'s, role for role,
    both taken from the families named ``family`` (:data:`PALETTE_FAMILIES`; the shipped ones by default), or the
    source from ``src_family`` when the image was drawn in other families (a token made by the shipped model,
    evolving under a fine-tune that draws in neon)."""
    src_family = src_family or family
    if (src_family, src_mood) == (family, dst_mood):
        return img.copy()
    return _recolor(
        img, _table(src_mood, palette_families(src_family)), _table(dst_mood, palette_families(family))
    )


def to_neon(img: np.ndarray, mood: str) -> np.ndarray:
    """``img`` (H, W, 3) uint8 recoloured from ``mood``'s shipped palette family to its :data:`NEON_PALETTES`
    family, role for role (exact on the procedural sprites, whose pixels are all palette or eye colours)."""
    return _recolor(img, _table(mood), _table(mood, NEON_PALETTES))


__all__ = [
    "NEON_PALETTES",
    "PALETTE_FAMILIES",
    "SHIPPED_FAMILY",
    "palette_families",
    "to_neon",
    "transfer_palette",
]
