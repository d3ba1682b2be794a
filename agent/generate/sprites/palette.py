"""Palette transfer: recolour a sprite from one mood's palette family to another's, role for role.

Moods are palette families (:data:`agent.generate.sprites.dataset.PALETTES`): three palettes of five roles each
(background, outline, body, shade, accent). Colour is what diffusion decides first, at the noisiest steps, so an
image-to-image evolution that keeps a token's identity (moderate strength) also keeps its old colours, and one that
changes the colours (strength near 1) loses the identity (measured: bench/results/image_identity.md). Evolving to a
new mood therefore recolours the previous stage first: every pixel is matched to the nearest colour of the old
family, and moved to the colour with the same palette and role in the new family, keeping its offset from it. The
denoising that follows cleans up whatever the mapping left. It is plain deterministic numpy on the uint8 pixels, so
a verifier replays it exactly.
"""

from __future__ import annotations

import numpy as np

from agent.generate.sprites.dataset import EYE_WHITE, PALETTES, PUPIL

_FIXED = (EYE_WHITE, PUPIL)


def _table(mood: str) -> np.ndarray:
    """(16 + 2, 3) float colours: the family's 3 x 5 palette roles in order, then the eye colours."""
    cols = [c for pal in PALETTES[mood] for c in pal] + list(_FIXED)
    return np.array(cols, dtype=np.float32)


def transfer_palette(img: np.ndarray, src_mood: str, dst_mood: str) -> np.ndarray:
    """``img`` (H, W, 3) uint8 recoloured from ``src_mood``'s palette family to ``dst_mood``'s, role for role."""
    if src_mood == dst_mood:
        return img.copy()
    src, dst = _table(src_mood), _table(dst_mood)
    px = img.reshape(-1, 3).astype(np.float32)
    nearest = np.argmin(((px[:, None, :] - src[None, :, :]) ** 2).sum(-1), axis=1)
    out = dst[nearest] + (px - src[nearest])  # keep each pixel's offset from its palette colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(img.shape)
