"""Deterministic procedural 32x32 pixel creatures: the embedded model's training data.

Every sprite is exactly left-right mirror-symmetric (masks are built from the distance to the vertical axis),
drawn with a handful of flat colours from its mood's palette family, on a plain background:

- ``element`` picks the body plan: fire = teardrop flame with flame tips, water = round body with fins and a
  droplet antenna, earth = blocky body with legs and horns/crystal, air = small body with wings and a tuft.
- ``mood`` picks one of three palettes of its family and the face: serene closed eyes and a smile, radiant big
  eyes and a smile, fierce eyes with angry brows, gloomy half-closed eyes and a frown.

Same (mood, element, seed) -> same pixels on every machine: only numpy's PCG64 ``integers``/``random`` and
integer/float comparisons are used. Bump :data:`GENERATOR_VERSION` whenever the output changes.
"""

from __future__ import annotations

import numpy as np

from agent.generate.sprites.conditioning import ELEMENTS, MOODS, NUM_CLASSES, class_index, class_traits

GENERATOR_VERSION = "1"
SIZE = 32

Color = tuple[int, int, int]

# Per palette: background, outline, body, shade, accent. Three palettes per mood family.
PALETTES: dict[str, tuple[tuple[Color, Color, Color, Color, Color], ...]] = {
    "serene": (
        ((206, 232, 240), (28, 52, 74), (86, 160, 200), (52, 112, 156), (170, 222, 206)),
        ((214, 236, 222), (30, 60, 56), (96, 176, 150), (60, 126, 110), (200, 236, 180)),
        ((200, 228, 228), (26, 56, 70), (120, 190, 210), (72, 138, 170), (236, 244, 210)),
    ),
    "radiant": (
        ((255, 244, 200), (92, 56, 20), (250, 200, 60), (220, 150, 40), (255, 120, 150)),
        ((255, 232, 214), (100, 48, 40), (255, 168, 96), (226, 118, 66), (255, 236, 120)),
        ((252, 240, 220), (90, 60, 30), (255, 220, 120), (232, 176, 70), (130, 210, 255)),
    ),
    "fierce": (
        ((48, 20, 20), (12, 6, 6), (206, 40, 40), (140, 20, 28), (255, 160, 40)),
        ((36, 30, 30), (10, 8, 8), (230, 90, 30), (160, 50, 20), (255, 220, 80)),
        ((60, 16, 30), (14, 4, 8), (180, 30, 70), (120, 16, 44), (250, 110, 60)),
    ),
    "gloomy": (
        ((54, 56, 72), (20, 20, 30), (120, 110, 150), (84, 76, 110), (170, 180, 200)),
        ((70, 70, 76), (22, 22, 26), (140, 140, 150), (98, 98, 108), (110, 150, 140)),
        ((44, 40, 60), (16, 12, 24), (96, 80, 130), (66, 54, 94), (190, 170, 210)),
    ),
}
EYE_WHITE: Color = (250, 250, 250)
PUPIL: Color = (16, 16, 16)

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
_DX = np.abs(_X - (SIZE - 1) / 2.0)  # 0.5, 1.5, ... 15.5: distance of a column's centre from the mirror axis


def palette_colors(mood: str) -> np.ndarray:
    """Every colour a sprite of ``mood`` may use (its three palettes, eye white and pupil), as (K, 3) uint8."""
    cols = [c for pal in PALETTES[mood] for c in pal] + [EYE_WHITE, PUPIL]
    return np.array(sorted(set(cols)), dtype=np.uint8)


def sprite_rng(label: int, index: int, seed: int = 0) -> np.random.Generator:
    """The generator behind sprite ``index`` of class ``label`` in the data set drawn with ``seed``."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(GENERATOR_VERSION), seed, label, index]))
    )


def make_sprite(mood: str, element: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one sprite. Returns (32, 32, 3) uint8, mirror-symmetric about the vertical axis."""
    class_index(mood, element)  # validates
    bg, outline, body_c, shade_c, accent_c = PALETTES[mood][int(rng.integers(0, 3))]
    img = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    img[:] = bg

    body, shade, accent, face = _ELEMENT_DRAW[element](rng)
    fg = body | accent
    img[body] = body_c
    img[shade & body] = shade_c
    img[accent] = accent_c
    img[_dilate(fg) & ~fg] = outline
    _draw_face(img, mood, face, rng, outline, shade_c)
    return img


def make_dataset(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` sprites of each of the 16 classes. Returns images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    images = np.empty((NUM_CLASSES * n_per_class, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.empty(NUM_CLASSES * n_per_class, dtype=np.int64)
    k = 0
    for label in range(NUM_CLASSES):
        t = class_traits(label)
        for i in range(n_per_class):
            images[k] = make_sprite(t["mood"], t["element"], sprite_rng(label, i, seed))
            labels[k] = label
            k += 1
    return images, labels


# --- body plans: each returns (body, shade, accent, face) where face = (eye_y, eye_dx, mouth_y) -----------------


def _fire(rng: np.random.Generator):
    a = int(rng.integers(6, 9)) + 0.5
    b = int(rng.integers(5, 8)) + 0.5
    cy = int(rng.integers(17, 21))
    tip_h = int(rng.integers(9, 13))
    lower = _ellipse(cy, a, b) & (_Y >= cy)
    upper = (_Y < cy) & (_Y > cy - tip_h) & (_DX < a * (1.0 - (cy - _Y) / tip_h) + 0.5)
    body = lower | upper
    accent = body & (_Y < cy - tip_h * 0.55)
    if rng.random() < 0.7:  # side flames
        h = int(rng.integers(4, 7))
        accent |= _spike(cy - 1, a - 0.5, 1.5, h) & ~body
    feet = (_DX > 1.5) & (_DX < 4.0) & (_Y > cy + b - 1) & (_Y < cy + b + 1.5)
    body = (body & ~accent) | feet
    shade = _Y > cy + b * 0.4
    eye_y = cy - 3
    return body, shade, accent, (eye_y, int(rng.integers(1, 3)), cy + 1)


def _water(rng: np.random.Generator):
    a = int(rng.integers(7, 11)) + 0.5
    b = int(rng.integers(6, 9)) + 0.5
    cy = int(rng.integers(16, 20))
    body = _ellipse(cy, a, b)
    scallop = (_Y > cy + b - 1.5) & ((_DX.astype(int) % 3) == 0)
    body &= ~scallop
    fy = cy + int(rng.integers(-2, 2))
    fin_len = int(rng.integers(2, 5))
    fin = (_DX >= a - 1) & (_DX < a + fin_len) & (np.abs(_Y - fy) <= (a + fin_len - _DX) * 0.7)
    accent = fin & ~body
    if rng.random() < 0.6:  # droplet antenna
        top = int(np.floor(cy - b))
        stalk = (_DX < 1) & (_Y < top + 1) & (_Y >= top - 2)
        drop = _ellipse(top - 4, 1.6, 1.6) | ((_DX < 1) & (_Y == top - 6))
        accent |= stalk | drop
    shade = _Y > cy + b * 0.35
    eye_y = cy - int(rng.integers(2, 4))
    return body, shade, accent & ~body, (eye_y, int(rng.integers(2, 5)), eye_y + 3)


def _earth(rng: np.random.Generator):
    w = int(rng.integers(6, 10))
    top = int(rng.integers(9, 13))
    bottom = int(rng.integers(21, 25))
    body = (_DX < w) & (_Y >= top) & (_Y <= bottom)
    body &= ~((_DX > w - 1) & ((_Y == top) | (_Y == bottom)))
    legs = (_DX > w - 4) & (_DX < w - 1.5) & (_Y > bottom) & (_Y <= bottom + 3)
    body |= legs
    accent = np.zeros_like(body)
    if rng.random() < 0.65:  # horns
        accent |= _spike(top - 1, w - 2.5, 1.5, int(rng.integers(3, 6)))
    else:  # crystal
        accent |= _spike(top - 1, 0.0, 2.5, int(rng.integers(4, 7)))
    if rng.random() < 0.5:  # belly plate
        accent |= (_DX < w - 3.5) & (_Y >= (top + bottom) // 2 + 1) & (_Y <= bottom - 2)
    shade = (_Y > bottom - 2) | legs
    eye_y = top + int(rng.integers(2, 4))
    return body & ~accent, shade, accent, (eye_y, int(rng.integers(1, max(2, w - 3))), eye_y + 3)


def _air(rng: np.random.Generator):
    a = int(rng.integers(4, 7)) + 0.5
    b = int(rng.integers(5, 7)) + 0.5
    cy = int(rng.integers(16, 20))
    span = int(rng.integers(6, 10))
    body = _ellipse(cy, a, b)
    k = _DX - a
    wing = (_DX >= a - 1) & (k < span) & (_Y >= cy - 5 - k * 0.6) & (_Y <= cy + 1 - k * 0.2)
    notches = (_Y > cy - 1 - k * 0.2) & ((_DX.astype(int) % 2) == 0) & (k > 0)
    accent = wing & ~notches & ~body
    top = int(np.floor(cy - b))
    if rng.random() < 0.7:  # tuft
        accent |= _spike(top + 1, 0.0, 1.5, int(rng.integers(3, 5))) & ~body
    feet = (_DX > 0.5) & (_DX < 2.5) & (_Y > cy + b - 1) & (_Y < cy + b + 2)
    body |= feet & ~accent
    shade = (_Y > cy + b * 0.4) | feet
    eye_y = cy - int(rng.integers(1, 3))
    if rng.random() < 0.5:  # beak
        accent |= (_DX < 1) & (_Y == eye_y + 2)
        body &= ~accent
    return body, shade, accent, (eye_y, int(rng.integers(1, 3)), eye_y + 3)


_ELEMENT_DRAW = {"fire": _fire, "water": _water, "earth": _earth, "air": _air}
assert set(_ELEMENT_DRAW) == set(ELEMENTS)


def _draw_face(
    img: np.ndarray, mood: str, face: tuple[int, int, int], rng, outline: Color, shade: Color
) -> None:
    ey, ex, my = face
    eye = (_DX > ex) & (_DX < ex + 2) & (_Y >= ey) & (_Y < ey + 2)
    inner = (_DX > ex) & (_DX < ex + 1)
    if mood == "serene":  # closed, content eyes
        img[(_DX > ex) & (_DX < ex + 2) & (_Y == ey + 1)] = outline
    else:
        img[eye] = EYE_WHITE
        pupil_col = inner if rng.random() < 0.5 else (_DX > ex + 1) & (_DX < ex + 2)
        img[pupil_col & (_Y == ey + 1)] = PUPIL
        if mood == "fierce":  # angry brows, lower on the inside
            img[inner & (_Y == ey - 1)] = outline
            img[(_DX > ex + 1) & (_DX < ex + 2) & (_Y == ey - 2)] = outline
        elif mood == "gloomy":  # heavy lids
            img[eye & (_Y == ey)] = shade
    half = int(rng.integers(1, 3))
    mouth = (_DX < half) & (_Y == my)
    img[mouth] = outline
    corners = (_DX > half) & (_DX < half + 1)
    if mood in ("serene", "radiant"):  # smile: corners one row up
        img[corners & (_Y == my - 1)] = outline
    elif mood == "gloomy":  # frown: corners one row down
        img[corners & (_Y == my + 1)] = outline
    else:  # fierce: teeth
        img[(_DX < half) & (_Y == my + 1) & ((_DX.astype(int) % 2) == 0)] = EYE_WHITE


def _ellipse(cy: float, a: float, b: float) -> np.ndarray:
    return (_DX / a) ** 2 + ((_Y - cy) / b) ** 2 <= 1.0


def _spike(base_y: float, cx: float, half_base: float, height: int) -> np.ndarray:
    """An upward triangle standing on row ``base_y`` centred ``cx`` columns from the axis (mirrored)."""
    up = base_y - _Y  # 0 on the base row
    half = half_base * (1.0 - up / height)
    return (up >= 0) & (up < height) & (np.abs(_DX - cx) <= half + 0.01)


def _dilate(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]


__all__ = [
    "ELEMENTS",
    "EYE_WHITE",
    "GENERATOR_VERSION",
    "MOODS",
    "PALETTES",
    "PUPIL",
    "SIZE",
    "make_dataset",
    "make_sprite",
    "palette_colors",
    "sprite_rng",
]
