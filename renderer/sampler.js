// The embedded sprite model's DDIM loop in float32 JavaScript over onnxruntime-web (WASM backend): the
// canonical portable image runtime. The same file runs in Node.js (renderer/node_render.mjs, which the agent
// drives) and in a browser; it has no Node-only import and no bare import specifier.
//
// It is agent/generate/portable/onnx_sampler.py operation for operation, in float32:
//   - the timesteps for n steps (scheduler.json's timestep_spacing: "leading" or "trailing");
//   - the start: fresh, x = noise * init_noise_sigma; img2img (init with strength), denoise_steps =
//     min(n, round_half_even(n * strength)) and x = sqrt(a[t0]) * x0 + sqrt(1 - a[t0]) * noise with
//     x0 = init / 127.5 - 1 (channels first) and t0 the first timestep run (x = x0 when denoise_steps is 0);
//   - each step: classifier-free guidance when guidance != 1 (one batch-2 run: [x, x] with labels
//     [label, null_class]; out = uncond + g * (cond - uncond)), then DDIM with eta 0 (v / epsilon / sample
//     prediction, clip_sample);
//   - pixels: uint8 = round_half_even((clamp(x, -1, 1) + 1) * 127.5), channels last (as torch's
//     ((x.clamp(-1, 1) + 1.0) * 127.5).round() in EmbeddedSpriteGenerator).
// Every arithmetic result is rounded to float32 (Math.fround) right after the operation, which for + - * /
// gives the correctly rounded float32 result (a double holds the exact product of two floats, and double
// rounding is innocuous for these operations); no square root is ever computed: they come from
// scheduler.json's tables, which hold torch's own float32 values.
//
// Noise (chrysalis-noise/1, renderer/noise.js): portableRandn(seed, 3072), the shape [1, 3, 32, 32] in C order.
// It is used once, at the start: as x_T for a fresh image, or to noise the img2img start to t0. With eta 0
// the DDIM step adds no noise, so nothing else is drawn (the stream's later values are never used).
//
// onnxruntime-web is passed in (options.ort), not imported here, so the module resolves the same way in
// Node (the agent imports node_modules/onnxruntime-web/dist/ort.wasm.min.mjs by path) and in a page (which
// imports its bundled copy by a relative URL). configureOrt() sets the canonical WASM settings: one thread,
// no proxy worker. The session runs with graph optimisation "basic" (constant folding and redundant-node
// removal), the level the Python sampler uses; the WASM build gives the same bits at every level.
//
//   const model = await loadModel(onnxBytes, schedulerJson, { ort });
//   const rgb = await model.sample({ seed: "123", label: 3, steps: 25, guidance: 1, init: null, strength: null });
//   // rgb: Uint8Array(32 * 32 * 3), channels last

import { portableRandn, SCHEME as NOISE_SCHEME } from "./noise.js";

export const SAMPLER_SCHEME = "chrysalis-ddim-f32/1";
export const CONSTANTS_FORMAT = "chrysalis.ddim-constants/1";
export const INPUT_NAMES = ["sample", "timestep", "class_labels"];
export { NOISE_SCHEME };

const f = Math.fround;

/** A bad request or model; `hint` says how to fix it (node_render.mjs passes both to Python). */
export class SamplerError extends Error {
  constructor(message, hint) {
    super(message);
    this.name = "SamplerError";
    this.hint = hint;
  }
}

/** The canonical onnxruntime-web settings: WASM, one thread, no proxy worker; optional wasmPaths. */
export function configureOrt(ort, { wasmPaths } = {}) {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  if (wasmPaths !== undefined) ort.env.wasm.wasmPaths = wasmPaths;
  ort.env.logLevel = "error";
  return ort;
}

/** Round half to even, for a finite value (Math.round rounds halves up). */
function rintHalfEven(v) {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** sha256 hex of bytes, via Web Crypto (globalThis.crypto.subtle: Node >= 19 and secure browser contexts). */
async function sha256Hex(bytes) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    throw new SamplerError(
      "Web Crypto (crypto.subtle) is not available, so the model's digests cannot be checked",
      "serve the page from https or localhost, or pass { verifyDigests: false } only for a model you trust",
    );
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function f32LeBytes(table) {
  const out = new Uint8Array(table.length * 4);
  const view = new DataView(out.buffer);
  table.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

const EXPORT_HINT =
  "re-export the model with agent.generate.portable.onnx_export.export_sprite_model(model_dir, out_dir)";

/**
 * Load an exported sprite model: `onnxBytes` (unet.onnx, a Uint8Array or ArrayBuffer) and `schedulerJson`
 * (scheduler.json, as a string or the parsed object). Checks the constants' format, their float32 tables
 * against tables_f32le_sha256 and the ONNX file against files["unet.onnx"] (unless verifyDigests is false).
 * Returns a SpriteSampler.
 */
export async function loadModel(onnxBytes, schedulerJson, { ort, verifyDigests = true } = {}) {
  if (!ort || !ort.InferenceSession) {
    throw new SamplerError("loadModel needs the onnxruntime-web module", "pass { ort } (import it, then configureOrt(ort))");
  }
  const c = typeof schedulerJson === "string" ? JSON.parse(schedulerJson) : schedulerJson;
  if (!c || c.format !== CONSTANTS_FORMAT) {
    throw new SamplerError(`the scheduler constants are not a ${CONSTANTS_FORMAT} file`, EXPORT_HINT);
  }
  const bytes = onnxBytes instanceof Uint8Array ? onnxBytes : new Uint8Array(onnxBytes);
  const tables = {};
  for (const name of ["alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"]) {
    tables[name] = Float32Array.from(c.tables[name]); // exact float32 decimals: parse, then round
  }
  if (verifyDigests) {
    for (const [name, want] of Object.entries(c.tables_f32le_sha256)) {
      const table = tables[name] || Float32Array.from(c.tables[name]);
      if ((await sha256Hex(f32LeBytes(table))) !== want) {
        throw new SamplerError(`scheduler tables.${name} do not match tables_f32le_sha256.${name}`, EXPORT_HINT);
      }
    }
    const got = await sha256Hex(bytes);
    if (got !== c.files["unet.onnx"]) {
      throw new SamplerError(`unet.onnx has sha256 ${got}, but scheduler.json says ${c.files["unet.onnx"]}`, EXPORT_HINT);
    }
  }
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "basic",
      executionMode: "sequential",
    });
  } catch (e) {
    throw new SamplerError(`onnxruntime-web cannot load unet.onnx: ${e.message || e}`, EXPORT_HINT);
  }
  if (session.inputNames.join(",") !== INPUT_NAMES.join(",")) {
    throw new SamplerError(`unet.onnx takes inputs ${session.inputNames}, not ${INPUT_NAMES}`, EXPORT_HINT);
  }
  return new SpriteSampler(ort, session, c, tables);
}

export class SpriteSampler {
  constructor(ort, session, constants, tables) {
    const c = constants;
    this.ort = ort;
    this.session = session;
    this.constants = c;
    this.size = c.native_size;
    this.numTrainTimesteps = c.num_train_timesteps;
    this.nullClass = c.null_class;
    // sqrt(a) and sqrt(1 - a) per timestep, then the final alpha's at index numTrainTimesteps (the "-1" entry)
    const n = this.numTrainTimesteps;
    this.sqrtA = new Float32Array(n + 1);
    this.sqrtA.set(tables.sqrt_alphas_cumprod);
    this.sqrtA[n] = c.sqrt_final_alpha_cumprod;
    this.sqrt1mA = new Float32Array(n + 1);
    this.sqrt1mA.set(tables.sqrt_one_minus_alphas_cumprod);
    this.sqrt1mA[n] = c.sqrt_one_minus_final_alpha_cumprod;
  }

  /** The ort version running the model. */
  get ortVersion() {
    return this.ort.env.versions.web;
  }

  /** The n DDIM timesteps, descending (DDIMScheduler.set_timesteps), as plain integers. */
  timesteps(n) {
    checkSteps(n);
    const c = this.constants;
    const T = this.numTrainTimesteps;
    const ts = [];
    if (c.timestep_spacing === "leading") {
      const ratio = Math.floor(T / n);
      for (let i = n - 1; i >= 0; i--) ts.push(i * ratio + c.steps_offset);
    } else if (c.timestep_spacing === "trailing") {
      // numpy.arange(T, 0, -T / n): length ceil((0 - T) / step), values start + i * (next - start)
      const step = -T / n;
      const len = Math.ceil((0 - T) / step);
      const delta = T + step - T;
      for (let i = 0; i < len; i++) ts.push(rintHalfEven(T + i * delta) - 1);
    } else {
      throw new SamplerError(`unknown timestep_spacing ${c.timestep_spacing}`, EXPORT_HINT);
    }
    return ts;
  }

  /** Steps an image runs: n for a fresh image (strength null), else min(n, round_half_even(n * strength)). */
  denoiseSteps(n, strength) {
    checkSteps(n);
    if (strength === null || strength === undefined) return n;
    if (typeof strength !== "number" || !(strength >= 0 && strength <= 1)) {
      throw new SamplerError(`strength ${strength} is outside [0, 1]`, "evolutions usually use 0.4-0.7");
    }
    return Math.min(n, rintHalfEven(n * strength));
  }

  /**
   * One image: Uint8Array(size * size * 3), channels last. seed: BigInt or decimal string in [0, 2**64);
   * label: class in [0, null_class); steps: DDIM steps (>= 1); guidance: >= 1 (1 = off); init: the img2img
   * start (Uint8Array size * size * 3, channels last, already palette-transferred) with strength in [0, 1],
   * or both null for a fresh image. onStep(t, x), if given, sees each step's state x (a copy, float32
   * [1, 3, S, S]) before its UNet pass.
   */
  async sample({ seed, label, steps, guidance = 1, init = null, strength = null, onStep = null }) {
    const S = this.size;
    const plane = S * S;
    const count = 3 * plane;
    const seedBig = parseSeed(seed);
    if (!Number.isInteger(label) || label < 0 || label >= this.nullClass) {
      throw new SamplerError(`class label ${label} is outside [0, ${this.nullClass})`, "use class_label(traits)");
    }
    if (typeof guidance !== "number" || !(guidance >= 1)) {
      throw new SamplerError(`guidance ${guidance}`, "use 1.0 (off) or more");
    }
    const hasInit = init !== null && init !== undefined;
    if (hasInit !== (strength !== null && strength !== undefined)) {
      throw new SamplerError("init and strength go together", "pass both for an evolution (img2img), neither for a fresh image");
    }
    const ts = this.timesteps(steps);
    const nRun = this.denoiseSteps(steps, strength);
    const run = ts.slice(ts.length - nRun);
    const noise = portableRandn(seedBig, count); // [1, 3, S, S] in C order
    let x = new Float32Array(count);
    if (!hasInit) {
      const sigma = f(this.constants.init_noise_sigma);
      for (let i = 0; i < count; i++) x[i] = f(noise[i] * sigma);
    } else {
      if (!(init instanceof Uint8Array) || init.length !== count) {
        throw new SamplerError(
          `init is not ${S}x${S} RGB (a Uint8Array of ${count} bytes, channels last)`,
          "pass the previous stage's native pixels, palette-transferred as the torch generator does",
        );
      }
      for (let ch = 0; ch < 3; ch++) {
        for (let p = 0; p < plane; p++) x[ch * plane + p] = f(f(init[p * 3 + ch] / 127.5) - 1);
      }
      if (nRun > 0) {
        const t0 = run[0];
        const sa = this.sqrtA[t0];
        const sb = this.sqrt1mA[t0];
        for (let i = 0; i < count; i++) x[i] = f(f(sa * x[i]) + f(sb * noise[i]));
      }
    }
    const cfg = guidance !== 1;
    const g = f(guidance);
    const labels = cfg ? [BigInt(label), BigInt(this.nullClass)] : [BigInt(label)];
    const labelTensor = new this.ort.Tensor("int64", BigInt64Array.from(labels), [labels.length]);
    const stepBack = Math.floor(this.numTrainTimesteps / steps);
    const input = new Float32Array(count * labels.length);
    for (const t of run) {
      if (onStep) onStep(t, Float32Array.from(x));
      input.set(x, 0);
      if (cfg) input.set(x, count);
      const raw = await this.unet(input, t, labelTensor);
      let out = raw;
      if (cfg) {
        out = new Float32Array(count);
        for (let i = 0; i < count; i++) {
          const cond = raw[i];
          const uncond = raw[count + i];
          out[i] = f(uncond + f(g * f(cond - uncond)));
        }
      }
      x = this.step(out, t, t - stepBack, x);
    }
    const px = new Uint8Array(count);
    for (let ch = 0; ch < 3; ch++) {
      for (let p = 0; p < plane; p++) {
        const v = x[ch * plane + p];
        const clamped = v < -1 ? -1 : v > 1 ? 1 : v; // NaN stays NaN and then maps to 0, as in numpy's cast
        px[p * 3 + ch] = rintHalfEven(f(f(clamped + 1) * 127.5));
      }
    }
    return px;
  }

  /**
   * One UNet forward pass: `input` float32 [B, 3, S, S] (B = labels' length), one timestep (integer), labels
   * (an int64 ort.Tensor [B], or an array of integers). Returns the model output as a Float32Array (a copy).
   */
  async unet(input, timestep, labels) {
    const S = this.size;
    const labelTensor =
      labels instanceof this.ort.Tensor
        ? labels
        : new this.ort.Tensor("int64", BigInt64Array.from(labels, (v) => BigInt(v)), [labels.length]);
    const batch = labelTensor.dims[0];
    if (!Number.isInteger(timestep) || input.length !== batch * 3 * S * S) {
      throw new SamplerError(
        `a UNet call needs ${batch} x 3 x ${S} x ${S} float32 values and an integer timestep`,
        "pass one sample per class label",
      );
    }
    const result = await this.session.run({
      sample: new this.ort.Tensor("float32", input, [batch, 3, S, S]),
      timestep: new this.ort.Tensor("int64", BigInt64Array.from([BigInt(timestep)]), []),
      class_labels: labelTensor,
    });
    const tensor = result[this.session.outputNames[0]];
    const out = Float32Array.from(tensor.data);
    if (tensor.dispose) tensor.dispose();
    return out;
  }

  /** DDIMScheduler.step with eta 0, each operation rounded to float32. Returns a new Float32Array. */
  step(out, t, prevT, x) {
    const n = x.length;
    const sa = this.sqrtA[t];
    const sb = this.sqrt1mA[t];
    const p = prevT >= 0 ? prevT : this.numTrainTimesteps; // the final alpha
    const sap = this.sqrtA[p];
    const sbp = this.sqrt1mA[p];
    const kind = this.constants.prediction_type;
    const clip = this.constants.clip_sample;
    const r = f(this.constants.clip_sample_range);
    const prev = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const xi = x[i];
      const oi = out[i];
      let x0;
      let eps;
      if (kind === "v_prediction") {
        x0 = f(f(sa * xi) - f(sb * oi));
        eps = f(f(sa * oi) + f(sb * xi));
      } else if (kind === "epsilon") {
        x0 = f(f(xi - f(sb * oi)) / sa);
        eps = oi;
      } else if (kind === "sample") {
        x0 = oi;
        eps = f(f(xi - f(sa * x0)) / sb);
      } else {
        throw new SamplerError(`unknown prediction_type ${kind}`, EXPORT_HINT);
      }
      if (clip) x0 = x0 < -r ? -r : x0 > r ? r : x0;
      prev[i] = f(f(sap * x0) + f(sbp * eps));
    }
    return prev;
  }
}

function checkSteps(n) {
  if (!Number.isInteger(n) || n < 1) {
    throw new SamplerError(`steps=${n}`, "use a whole number of at least 1 (50 is the default)");
  }
}

/** A seed as a BigInt in [0, 2**64): a BigInt, or a decimal string (JSON cannot carry 64-bit integers). */
export function parseSeed(seed) {
  let value = seed;
  if (typeof seed === "string" && /^[0-9]{1,20}$/.test(seed)) value = BigInt(seed);
  if (typeof value !== "bigint" || value < 0n || value >= 1n << 64n) {
    throw new SamplerError(
      `seed ${String(seed)} is not an unsigned 64-bit integer`,
      "pass the token's seed as a decimal string (or a BigInt) in [0, 2**64)",
    );
  }
  return value;
}
