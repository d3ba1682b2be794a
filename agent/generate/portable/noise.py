"""``chrysalis-noise/1``: standard normal float32 noise that numpy and JavaScript produce bit for bit.

torch's CPU ``randn`` (MT19937 plus its own vectorised Box-Muller) cannot be reproduced outside torch, so an image
that starts from it cannot be regenerated in a browser. This scheme uses only 32-bit integer operations and IEEE 754
double arithmetic that is exactly specified in both languages (``+ - * /`` and ``sqrt`` are correctly rounded; no
fused multiply-add anywhere); the one transcendental function, the natural logarithm, is computed from those
operations (fdlibm's algorithm) instead of the platform's ``log``, which JavaScript does not require to be correctly
rounded. ``renderer/noise.js`` implements the same specification; the shared test vectors in
``tests/generate/data/portable_noise_vectors.json`` (``scripts/portable_noise_vectors.py``) hold both to it.

Specification (all integers unsigned 32-bit unless stated; ``>>`` is a logical shift; doubles are IEEE 754
binary64 with round-to-nearest-even; every arithmetic step is one rounded operation, in the order written):

1. **Key.** The seed is an integer ``0 <= seed < 2**64``. ``key = (seed mod 2**32, seed >> 32)`` (low half first).

2. **Blocks.** Block ``n`` (``n = 0, 1, 2, ...``) is ``Philox4x32-10(counter, key)`` with
   ``counter = (n mod 2**32, n >> 32, 0, 0)``: four words ``w0..w3``. Philox4x32-10 is Random123's (Salmon et al.,
   SC'11) and matches its known-answer vectors: ten rounds; before every round but the first, the key is bumped,
   ``k0 += 0x9E3779B9``, ``k1 += 0xBB67AE85`` (mod 2**32); a round maps ``(c0, c1, c2, c3)`` to
   ``(hi(B*c2) ^ c1 ^ k0, lo(B*c2), hi(A*c0) ^ c3 ^ k1, lo(A*c0))`` with ``A = 0xD2511F53``, ``B = 0xCD9E8D57`` and
   ``hi``/``lo`` the upper/lower 32 bits of the exact 64-bit product.

3. **Uniforms.** A block gives two doubles in ``[-1, 1)``: ``v1`` from ``(w0, w1)`` and ``v2`` from ``(w2, w3)``,
   where for a pair ``(a, b)``: ``m = (a >> 5) * 2**26 + (b >> 6)`` (an integer in ``[0, 2**53)``, the 53-bit
   construction of MT19937's ``genrand_res53``), ``u = m * 2**-53`` in ``[0, 1)`` and ``v = 2*u - 1``. Every step
   is exact, so ``v = m / 2**52 - 1``.

4. **Polar Box-Muller.** Each block is one attempt. ``s = v1*v1 + v2*v2`` (two rounded products, one rounded
   sum). If ``s >= 1`` or ``s == 0`` the block is rejected and produces nothing. Otherwise
   ``f = sqrt((-2 * log(s)) / s)`` and the block produces ``v1 * f`` then ``v2 * f``, each a rounded double
   product, then rounded to float32 (round-to-nearest-even, as numpy's ``astype`` and JS's ``Math.fround`` or a
   ``Float32Array`` store do). ``log`` is :func:`fdlibm_log` below, ``sqrt`` the correctly rounded square root.
   ``s`` is at least ``2**-104`` when non-zero, so ``log`` only ever sees normal doubles in ``(0, 1)``.

5. **Output.** The values of the accepted blocks, in block order, form the stream; a request for ``count``
   values takes its first ``count`` (if ``count`` is odd, the last block's second value is dropped). A shaped
   request fills the array in C (row-major) order, so ``portable_randn(seed, (3, 32, 32))`` is the first 3072
   values reshaped. Noise for a smaller request is a prefix of the noise for a larger one.

The logarithm (:func:`fdlibm_log`) is ``__ieee754_log`` from fdlibm 5.3's ``e_log.c`` (Sun Microsystems, 1993:
"Permission to use, copy, modify, and distribute this software is freely granted, provided that this notice is
preserved"), step for step, including its argument reduction by bit manipulation of the high word, its two
polynomial branches and its ``k == 0`` special forms; its error is below 1 ulp. The constants are given there in
hex; :data:`_LOG_CONSTANTS` holds them with their bit patterns.

Changing any of this changes the bits: it needs a new :data:`SCHEME` string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.errors import ConfigError

SCHEME = "chrysalis-noise/1"
"""The name receipts record for this noise. The specification above is version 1; any change to the bits it
produces (key, counter layout, uniform construction, rejection rule, logarithm, rounding) must bump it."""

MAX_SEED = 2**64 - 1

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
_MASK32 = 0xFFFFFFFF

_ACCEPT = np.pi / 4
"""Share of Box-Muller attempts accepted (area of the unit disc over that of the square)."""

# fdlibm e_log.c constants (decimal as in the source; the hex comments there are the intended bits, checked by the
# tests through _LOG_CONSTANTS).
_LN2_HI = 6.93147180369123816490e-01  # 3fe62e42 fee00000
_LN2_LO = 1.90821492927058770002e-10  # 3dea39ef 35793c76
_TWO54 = 1.80143985094819840000e16  # 43500000 00000000
_LG1 = 6.666666666666735130e-01  # 3FE55555 55555593
_LG2 = 3.999999999940941908e-01  # 3FD99999 9997FA04
_LG3 = 2.857142874366239149e-01  # 3FD24924 94229359
_LG4 = 2.222219843214978396e-01  # 3FCC71C5 1D8E78AF
_LG5 = 1.818357216161805012e-01  # 3FC74664 96CB03DE
_LG6 = 1.531383769920937332e-01  # 3FC39A09 D078C69F
_LG7 = 1.479819860511658591e-01  # 3FC2F112 DF3E5244
_THIRD = 0.33333333333333333  # the literal in e_log.c's |f| < 2**-20 branch

_LOG_CONSTANTS: dict[str, tuple[float, int]] = {
    "ln2_hi": (_LN2_HI, 0x3FE62E42FEE00000),
    "ln2_lo": (_LN2_LO, 0x3DEA39EF35793C76),
    "two54": (_TWO54, 0x4350000000000000),
    "Lg1": (_LG1, 0x3FE5555555555593),
    "Lg2": (_LG2, 0x3FD999999997FA04),
    "Lg3": (_LG3, 0x3FD2492494229359),
    "Lg4": (_LG4, 0x3FCC71C51D8E78AF),
    "Lg5": (_LG5, 0x3FC7466496CB03DE),
    "Lg6": (_LG6, 0x3FC39A09D078C69F),
    "Lg7": (_LG7, 0x3FC2F112DF3E5244),
    "third": (_THIRD, 0x3FD5555555555555),
}
"""Each fdlibm constant with the IEEE bit pattern it must have (what the JS module's literals must parse to)."""


def philox4x32_10(counter: ArrayLike, key: Sequence[int]) -> NDArray[np.uint32]:
    """Random123's Philox4x32-10 of ``counter`` (four words, or an array of them with the words on the last axis)
    under ``key`` (two words). Exact: the 32x32 -> 64-bit products are done in uint64, which cannot overflow.

    Raises:
        ConfigError: a word is not an unsigned 32-bit integer, or the shapes are wrong.
    """
    return _philox(_words(counter, 4, "counter"), _key(key), PHILOX_ROUNDS)


def _philox(ctr: NDArray[np.uint64], key: tuple[int, int], rounds: int) -> NDArray[np.uint32]:
    """Philox4x32 with ``rounds`` rounds over validated uint64 words (values < 2**32), last axis 4."""
    c0, c1, c2, c3 = (ctr[..., i] for i in range(4))
    k0, k1 = key
    m0, m1, mask = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1), np.uint64(_MASK32)
    shift = np.uint64(32)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & _MASK32, (k1 + PHILOX_W1) & _MASK32
        p0 = m0 * c0
        p1 = m1 * c2
        c0, c1, c2, c3 = (
            (p1 >> shift) ^ c1 ^ np.uint64(k0),
            p1 & mask,
            (p0 >> shift) ^ c3 ^ np.uint64(k1),
            p0 & mask,
        )
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _words(value: ArrayLike, width: int, what: str) -> NDArray[np.uint64]:
    try:
        arr = np.asarray(value)
        ok = (
            arr.ndim >= 1
            and arr.shape[-1] == width
            and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer))
        )
        if ok and arr.size:
            ok = bool(arr.min() >= 0) and int(arr.max()) <= _MASK32
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(
            f"Philox {what} {value!r} is not {width} unsigned 32-bit integers",
            hint=f"pass {width} ints in [0, 2**32) (or an array with {width} on its last axis)",
        )
    return arr.astype(np.uint64)


def _key(key: Sequence[int]) -> tuple[int, int]:
    k0, k1 = (int(w) for w in _words(key, 2, "key").reshape(2))
    return k0, k1


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key for a 64-bit seed: ``(low 32 bits, high 32 bits)``.

    Raises:
        ConfigError: ``seed`` is not an int in ``[0, 2**64)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"noise seed {seed!r} is not an unsigned 64-bit integer",
            hint="pass the token's 64-bit seed (0 <= seed < 2**64), e.g. from agent.generate.seed.derive_seed",
        )
    return seed & _MASK32, seed >> 32


def philox_blocks(seed: int, start: int, count: int) -> NDArray[np.uint32]:
    """Blocks ``start .. start+count-1`` of the seed's stream (step 2 of the specification), shape ``(count, 4)``."""
    n = np.arange(start, start + count, dtype=np.uint64)
    ctr = np.zeros((count, 4), dtype=np.uint64)
    ctr[:, 0] = n & np.uint64(_MASK32)
    ctr[:, 1] = n >> np.uint64(32)
    return _philox(ctr, seed_key(seed), PHILOX_ROUNDS)


def _uniform_pm1(a: NDArray[np.uint32], b: NDArray[np.uint32]) -> NDArray[np.float64]:
    """Step 3: ``m = (a >> 5) * 2**26 + (b >> 6)``, returned as ``m / 2**52 - 1`` in ``[-1, 1)`` (exact)."""
    m = (a >> np.uint32(5)).astype(np.uint64) * np.uint64(1 << 26) + (b >> np.uint32(6)).astype(np.uint64)
    return m.astype(np.float64) * 2.0**-52 - 1.0


def _box_muller(blocks: NDArray[np.uint32]) -> NDArray[np.float32]:
    """Step 4 over consecutive blocks: the values of the accepted ones, in order."""
    v1 = _uniform_pm1(blocks[:, 0], blocks[:, 1])
    v2 = _uniform_pm1(blocks[:, 2], blocks[:, 3])
    s = v1 * v1 + v2 * v2
    keep = (s < 1.0) & (s != 0.0)
    v1, v2, s = v1[keep], v2[keep], s[keep]
    f = np.sqrt((-2.0 * fdlibm_log(s)) / s)
    pairs = np.empty((s.size, 2), dtype=np.float64)
    pairs[:, 0] = v1 * f
    pairs[:, 1] = v2 * f
    return pairs.reshape(-1).astype(np.float32)


def portable_randn(seed: int, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Standard normal float32 noise of ``shape`` for ``seed`` under :data:`SCHEME` (the module's specification):
    the same bits as ``portableRandn`` in ``renderer/noise.js``, on every machine.

    Raises:
        ConfigError: ``seed`` is not a uint64, or ``shape`` is not a tuple of non-negative ints.
    """
    seed_key(seed)
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ConfigError(
            f"noise shape {shape!r} is not a tuple of non-negative ints", hint="pass e.g. (4, 64, 64)"
        )
    count = math.prod(shape)
    out = np.empty(count, dtype=np.float32)
    filled, block = 0, 0
    while filled < count:
        need = count - filled
        # Enough attempts for the remaining values with a wide margin; a short draw just loops again.
        attempts = int(need / 2 / _ACCEPT * 1.05) + 16
        values = _box_muller(philox_blocks(seed, block, attempts))
        take = min(need, values.size)
        out[filled : filled + take] = values[:take]
        filled += take
        block += attempts
    return out.reshape(shape)


def fdlibm_log(values: ArrayLike) -> NDArray[np.float64]:
    """Natural logarithm of each double in ``values`` (same shape), computed as fdlibm 5.3's ``__ieee754_log``
    does, so its bits are defined by the algorithm, not by the platform's libm (error < 1 ulp). Special values as
    fdlibm: ``log(0) = -inf``, ``log(negative) = nan``, ``log(inf) = inf``, ``log(nan) = nan``; subnormals are handled.
    """
    shape = np.shape(values)
    x: NDArray[np.float64] = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    out = np.empty_like(x)
    hx = (x.view(np.uint64) >> np.uint64(32)).astype(np.int64)
    hx = np.where(hx >= 2**31, hx - 2**32, hx)  # the signed high word
    lx = (x.view(np.uint64) & np.uint64(_MASK32)).astype(np.int64)
    k = np.zeros(x.shape, dtype=np.int64)

    tiny = hx < 0x00100000  # x < 2**-1022, zero or negative
    zero = tiny & (((hx & 0x7FFFFFFF) | lx) == 0)
    negative = tiny & ~zero & (hx < 0)
    special = zero | negative | (hx >= 0x7FF00000)
    with np.errstate(invalid="ignore"):
        out[zero] = -np.inf
        out[negative] = np.nan
        big = hx >= 0x7FF00000
        out[big] = x[big] + x[big]
    subnormal = tiny & ~zero & ~negative
    if subnormal.any():
        x[subnormal] *= _TWO54
        k[subnormal] -= 54
        hx[subnormal] = (x[subnormal].view(np.uint64) >> np.uint64(32)).astype(np.int64)
        lx[subnormal] = (x[subnormal].view(np.uint64) & np.uint64(_MASK32)).astype(np.int64)

    go = ~special
    x, hx, lx, k = x[go], hx[go], lx[go], k[go]
    k = k + (hx >> 20) - 1023
    hx = hx & 0x000FFFFF
    i = (hx + 0x95F64) & 0x100000
    x = ((((hx | (i ^ 0x3FF00000)) << 32) | lx).astype(np.uint64)).view(np.float64)  # normalize x or x/2
    k = k + (i >> 20)
    f = x - 1.0
    dk = k.astype(np.float64)
    k0 = k == 0
    result = np.empty_like(x)

    near1 = (0x000FFFFF & (2 + hx)) < 3  # -2**-20 <= f < 2**-20
    fa, dka, k0a = f[near1], dk[near1], k0[near1]
    r = fa * fa * (0.5 - _THIRD * fa)
    near = np.where(k0a, fa - r, dka * _LN2_HI - ((r - dka * _LN2_LO) - fa))
    exact = fa == 0.0
    near[exact] = np.where(k0a[exact], 0.0, dka[exact] * _LN2_HI + dka[exact] * _LN2_LO)
    result[near1] = near

    far = ~near1
    f, dk, k0, hx = f[far], dk[far], k0[far], hx[far]
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    wide = ((hx - 0x6147A) | (0x6B851 - hx)) > 0
    hfsq = 0.5 * f * f
    with_hfsq = np.where(
        k0, f - (hfsq - s * (hfsq + r)), dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)
    )
    without = np.where(k0, f - s * (f - r), dk * _LN2_HI - ((s * (f - r) - dk * _LN2_LO) - f))
    result[far] = np.where(wide, with_hfsq, without)

    out[go] = result
    return out.reshape(shape)
