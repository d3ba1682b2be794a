// Checks renderer/noise.js against the shared vectors written by scripts/portable_noise_vectors.py.
// Run by tests/generate/test_portable_noise.py:
//   node tests/generate/portable_noise_check.mjs VECTORS.json < kat.json
// stdin: [[counter4, key2, rounds, expected4], ...] (Random123 known answers, hex strings).
// Prints one JSON report on stdout; the pytest side asserts on it.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fdlibmLog, philox4x32, portableRandn, SCHEME } from "../../renderer/noise.js";

const vectors = JSON.parse(readFileSync(process.argv[2], "utf8"));
const kat = JSON.parse(readFileSync(0, "utf8"));
const hex32 = (v) => v.toString(16).padStart(8, "0");
const f64Hex = (values) => {
  const view = new DataView(new ArrayBuffer(8));
  return Array.from(values, (v) => {
    view.setFloat64(0, v);
    return hex32(view.getUint32(0)) + hex32(view.getUint32(4));
  });
};
const sha256 = (typed) =>
  createHash("sha256").update(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength)).digest("hex");
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!littleEndian) throw new Error("this check hashes typed arrays as little-endian bytes");

const report = { scheme: SCHEME, kat_failures: [], noise_checked: 0, noise_failures: [], log: {} };

for (const [ctr, key, rounds, expected] of kat) {
  const p = (h) => parseInt(h, 16);
  const got = Array.from(philox4x32(...ctr.map(p), ...key.map(p), rounds), hex32);
  if (got.join(" ") !== expected.join(" ")) report.kat_failures.push({ ctr, key, rounds, expected, got });
}

const { count, seeds } = vectors.noise;
for (const { seed, sha256: want, head } of seeds) {
  const values = portableRandn(BigInt(seed), count);
  const got = sha256(values);
  const gotHead = Array.from(new Uint32Array(values.buffer, 0, head.length), hex32);
  report.noise_checked += 1;
  if (got !== want || gotHead.join(" ") !== head.join(" ")) {
    report.noise_failures.push({ seed, want, got, head, gotHead });
  }
}

// The log inputs, rebuilt from Philox blocks with the recipe of log_inputs() in the script.
const log = vectors.log;
const inputs = new Float64Array(log.count);
const bitsView = new DataView(inputs.buffer);
const [lk0, lk1] = [Number(BigInt(log.seed) & 0xffffffffn), Number(BigInt(log.seed) >> 32n)];
for (let n = 0; n < log.count; n++) {
  const [w0, w1, w2] = philox4x32(n, 0, 0, 0, lk0, lk1);
  const kind = n % 4;
  const anyE = 1 + (w0 % 2046);
  const nearOne = 1022 + (w0 & 1);
  const e = [anyE, 1022 - (w0 % 104), nearOne, w0 & 0x800 ? nearOne : anyE][kind];
  const edge = w1 & 4 ? 0xfffff - (w1 & 3) : w1 & 3;
  const mant = kind === 3 ? edge : w1 & 0xfffff;
  bitsView.setUint32(n * 8 + 4, ((e << 20) | mant) >>> 0, true); // high word (little-endian layout)
  bitsView.setUint32(n * 8, w2, true);
}
const outputs = inputs.map(fdlibmLog);
const sampleIn = log.samples.map(([x]) => {
  const v = new DataView(new ArrayBuffer(8));
  v.setUint32(0, parseInt(x.slice(0, 8), 16));
  v.setUint32(4, parseInt(x.slice(8), 16));
  return v.getFloat64(0);
});
const sampleOut = f64Hex(sampleIn.map(fdlibmLog));
report.log = {
  inputs_match: sha256(inputs) === log.inputs_sha256,
  outputs_match: sha256(outputs) === log.outputs_sha256,
  sample_failures: log.samples
    .map(([x, y], i) => ({ x, want: y, got: sampleOut[i] }))
    .filter(({ want, got }) => want !== got),
  // How many of the inputs Math.log rounds differently (informational: engines differ here).
  math_log_differs: inputs.filter((x, i) => Math.log(x) !== outputs[i]).length,
};

// Timing: 3x32x32 values, the latent of one 32x32 image.
const reps = 200;
portableRandn(123n, count);
const t0 = process.hrtime.bigint();
for (let i = 0; i < reps; i++) portableRandn(BigInt(i), count);
report.ms_per_latent = Number(process.hrtime.bigint() - t0) / 1e6 / reps;

process.stdout.write(JSON.stringify(report) + "\n");
