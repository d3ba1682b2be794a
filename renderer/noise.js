// chrysalis-noise/1: standard normal float32 noise, bit for bit the same as the agent's
// agent/generate/portable/noise.py (whose module docstring is the specification). No dependencies.
//
// Only exactly specified operations are used: 32-bit integer arithmetic, and IEEE 754 double
// + - * / and Math.sqrt (all correctly rounded; ECMAScript never fuses a multiply-add). The natural
// logarithm is fdlibm 5.3's __ieee754_log (e_log.c, Copyright (C) 1993 by Sun Microsystems, Inc.:
// "Permission to use, copy, modify, and distribute this software is freely granted, provided that
// this notice is preserved"), written out step for step, because Math.log is not required to be
// correctly rounded and differs between engines.
//
//   portableRandn(seed, count) -> Float32Array   seed: BigInt in [0, 2**64)
//
// Shared test vectors: tests/generate/data/portable_noise_vectors.json (checked by
// tests/generate/portable_noise_check.mjs).

export const SCHEME = "chrysalis-noise/1";

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;
const TWO32 = 4294967296;
const MAX_SEED = (1n << 64n) - 1n;

// High 32 bits of the exact 64-bit product of two uint32 values. a * (b & 0xffff) and
// a * (b >>> 16) are below 2**48, so exact in a double; the split below keeps every sum exact.
function mulhi(a, b) {
  const x = a * (b & 0xffff);
  const y = a * (b >>> 16);
  const yl = y % 65536;
  return (Math.floor(y / 65536) + Math.floor((yl * 65536 + x) / TWO32)) >>> 0;
}

/**
 * Random123's Philox4x32 with `rounds` rounds (10 for Philox4x32-10) of the four counter words
 * under the two key words. Writes the four output words into `out` (any indexable) and returns it.
 */
export function philox4x32(c0, c1, c2, c3, k0, k1, rounds = 10, out = new Uint32Array(4)) {
  for (let r = 0; r < rounds; r++) {
    if (r > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const hi0 = mulhi(PHILOX_M0, c0);
    const lo0 = Math.imul(PHILOX_M0, c0) >>> 0;
    const hi1 = mulhi(PHILOX_M1, c2);
    const lo1 = Math.imul(PHILOX_M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
  return out;
}

// fdlibm e_log.c constants; the hex comments are the intended bits (the decimal literals parse to
// them exactly, as the Python side's tests check for the same literals).
const ln2_hi = 6.93147180369123816490e-01; // 3fe62e42 fee00000
const ln2_lo = 1.90821492927058770002e-10; // 3dea39ef 35793c76
const two54 = 1.80143985094819840000e+16; // 43500000 00000000
const Lg1 = 6.666666666666735130e-01; // 3FE55555 55555593
const Lg2 = 3.999999999940941908e-01; // 3FD99999 9997FA04
const Lg3 = 2.857142874366239149e-01; // 3FD24924 94229359
const Lg4 = 2.222219843214978396e-01; // 3FCC71C5 1D8E78AF
const Lg5 = 1.818357216161805012e-01; // 3FC74664 96CB03DE
const Lg6 = 1.531383769920937332e-01; // 3FC39A09 D078C69F
const Lg7 = 1.479819860511658591e-01; // 3FC2F112 DF3E5244

const view = new DataView(new ArrayBuffer(8)); // big-endian accessors: offset 0 = high word

/** Natural logarithm computed as fdlibm's __ieee754_log (error < 1 ulp, same bits everywhere). */
export function fdlibmLog(x) {
  view.setFloat64(0, x);
  let hx = view.getInt32(0);
  const lx = view.getUint32(4);
  let k = 0;
  if (hx < 0x00100000) { // x < 2**-1022
    if (((hx & 0x7fffffff) | lx) === 0) return -Infinity; // log(+-0) = -inf
    if (hx < 0) return NaN; // log(-#) = NaN
    k -= 54;
    x *= two54; // subnormal: scale up
    view.setFloat64(0, x);
    hx = view.getInt32(0);
  }
  if (hx >= 0x7ff00000) return x + x;
  k += (hx >> 20) - 1023;
  hx &= 0x000fffff;
  let i = (hx + 0x95f64) & 0x100000;
  view.setUint32(0, (hx | (i ^ 0x3ff00000)) >>> 0); // normalize x or x/2 (low word kept)
  x = view.getFloat64(0);
  k += i >> 20;
  const f = x - 1.0;
  if ((0x000fffff & (2 + hx)) < 3) { // -2**-20 <= f < 2**-20
    if (f === 0) {
      if (k === 0) return 0;
      const dk = k;
      return dk * ln2_hi + dk * ln2_lo;
    }
    const R = f * f * (0.5 - 0.33333333333333333 * f);
    if (k === 0) return f - R;
    const dk = k;
    return dk * ln2_hi - ((R - dk * ln2_lo) - f);
  }
  const s = f / (2.0 + f);
  const dk = k;
  const z = s * s;
  i = hx - 0x6147a;
  const w = z * z;
  const j = 0x6b851 - hx;
  const t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
  const t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
  i |= j;
  const R = t2 + t1;
  if (i > 0) {
    const hfsq = 0.5 * f * f;
    if (k === 0) return f - (hfsq - s * (hfsq + R));
    return dk * ln2_hi - ((hfsq - (s * (hfsq + R) + dk * ln2_lo)) - f);
  }
  if (k === 0) return f - s * (f - R);
  return dk * ln2_hi - ((s * (f - R) - dk * ln2_lo) - f);
}

/** The Philox key of a 64-bit seed: [low 32 bits, high 32 bits]. Throws RangeError/TypeError otherwise. */
export function seedKey(seed) {
  if (typeof seed !== "bigint") throw new TypeError(`noise seed must be a BigInt, got ${typeof seed}`);
  if (seed < 0n || seed > MAX_SEED) throw new RangeError(`noise seed ${seed} is not in [0, 2**64)`);
  return [Number(seed & 0xffffffffn), Number(seed >> 32n)];
}

/**
 * The first `count` values of the chrysalis-noise/1 stream for `seed` (a BigInt in [0, 2**64)):
 * the same float32 bits as portable_randn(seed, (count,)) in Python. Reshape in C order.
 */
export function portableRandn(seed, count) {
  const [k0, k1] = seedKey(seed);
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new RangeError(`noise count ${count} is not a non-negative integer`);
  }
  const out = new Float32Array(count);
  const w = new Uint32Array(4);
  let filled = 0;
  for (let n = 0; filled < count; n++) {
    philox4x32(n % TWO32, Math.floor(n / TWO32), 0, 0, k0, k1, 10, w);
    // 53-bit uniforms m in [0, 2**53), mapped exactly to v = m / 2**52 - 1 in [-1, 1).
    const v1 = ((w[0] >>> 5) * 67108864 + (w[1] >>> 6)) / 4503599627370496 - 1;
    const v2 = ((w[2] >>> 5) * 67108864 + (w[3] >>> 6)) / 4503599627370496 - 1;
    const s = v1 * v1 + v2 * v2;
    if (s >= 1 || s === 0) continue;
    const f = Math.sqrt((-2 * fdlibmLog(s)) / s);
    out[filled++] = v1 * f; // a Float32Array store rounds to nearest, ties to even
    if (filled < count) out[filled++] = v2 * f;
  }
  return out;
}
