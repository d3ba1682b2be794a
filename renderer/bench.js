// The renderer benchmark page (renderer/bench.html): renderer/sampler.js over onnxruntime-web's WASM build (one
// thread, no proxy worker) in a browser, on the same requests the Node process (node_render.mjs) answers, so a
// test or bench/renderer_agreement.py can compare the two byte for byte. Everything is fetched by relative URL
// from the page's own origin; the layout agent.generate.portable.browser.assemble_site() writes is the default:
//
//   bench.html, bench.js, sampler.js, noise.js     this directory's modules
//   ort/ort.wasm.min.mjs, ort/ort-wasm-simd-threaded.{mjs,wasm}     onnxruntime-web's ESM build and its .wasm
//   model/unet.onnx, model/scheduler.json          the exported model (digests checked by loadModel)
//
// Fragment parameters (all optional): #model=DIR/&ort=DIR/&requests=BASE64URL(JSON array of requests).
// Requests have node_render.mjs's fields: {"seed": "decimal uint64", "label", "steps", "guidance",
// "init": base64 RGB bytes or null, "strength": number or null}, and optionally "noise": base64 of the
// 3 * 32 * 32 float32 values (little-endian, [1, 3, 32, 32] in C order) to start from instead of
// chrysalis-noise/1's for the seed. Only bench/token_agreement.py sends it: receipts of the older torch scheme
// drew their noise from torch's CPU generator, which JavaScript cannot reproduce, so the bench computes it in
// Python from the receipt's seed and the page runs the sampler's loop from it (sampleWithNoise).
//
// The page sets, on window:
//   benchReady        a promise of {ort_version, sampler_scheme, noise_scheme, load_s, user_agent}; it rejects
//                     (and the page shows the error and its hint in #status, body[data-state="error"]) when
//                     onnxruntime-web or the model cannot be loaded, or a digest does not match scheduler.json
//   benchError        {error, hint} after such a failure, else undefined
//   renderAll(reqs)   renders the requests in order, one at a time; resolves to one reply per request:
//                     {ok: true, pixels: base64 of 32*32*3 RGB bytes, timing: {render_s}} or {ok: false, error, hint}
//   benchResult       with a requests fragment: renderAll's replies (also written to #result as JSON)

import { configureOrt, loadModel, NOISE_SCHEME, SAMPLER_SCHEME, SamplerError } from "./sampler.js";

const params = new URLSearchParams(location.hash.slice(1));
const dirUrl = (name, fallback) => new URL(params.get(name) || fallback, location.href).href;
const MODEL = dirUrl("model", "model/");
const ORT = dirUrl("ort", "ort/");
const status = document.getElementById("status");

let model = null;

async function fetchBytes(url, what) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new SamplerError(`cannot fetch ${what} from ${url}: ${e.message || e}`, "serve the page over http(s) with the model beside it");
  }
  if (!response.ok) {
    throw new SamplerError(`${what} at ${url} answered HTTP ${response.status}`, "assemble the site with assemble_site()");
  }
  return new Uint8Array(await response.arrayBuffer());
}

async function start() {
  const t0 = performance.now();
  let ort;
  try {
    ort = await import(`${ORT}ort.wasm.min.mjs`);
  } catch (e) {
    throw new SamplerError(`cannot load onnxruntime-web from ${ORT}: ${e.message || e}`, "copy ort.wasm.min.mjs and ort-wasm-simd-threaded.{mjs,wasm} there");
  }
  configureOrt(ort, { wasmPaths: ORT });
  const [onnx, constants] = await Promise.all([
    fetchBytes(`${MODEL}unet.onnx`, "unet.onnx"),
    fetchBytes(`${MODEL}scheduler.json`, "scheduler.json"),
  ]);
  model = await loadModel(onnx, new TextDecoder().decode(constants), { ort, verifyDigests: true });
  return {
    ort_version: model.ortVersion,
    sampler_scheme: SAMPLER_SCHEME,
    noise_scheme: NOISE_SCHEME,
    load_s: (performance.now() - t0) / 1000,
    user_agent: navigator.userAgent,
  };
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

const f = Math.fround;

/** Round half to even, as sampler.js does for the final pixels. */
function rintHalfEven(v) {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * SpriteSampler.sample's loop (renderer/sampler.js) from given noise (a Float32Array of 3 * S * S values) instead
 * of chrysalis-noise/1's: the same model methods (timesteps, denoiseSteps, unet, step, the sqrt tables) and the
 * same float32 arithmetic; the same request with portableRandn's noise gives model.sample's bytes (the bench and
 * tests/generate/test_token_agreement_bench.py check it).
 */
async function sampleWithNoise(m, noise, { label, steps, guidance = 1, init = null, strength = null }) {
  const S = m.size;
  const plane = S * S;
  const count = 3 * plane;
  if (noise.length !== count) {
    throw new SamplerError(`noise has ${noise.length} values, not ${count}`, "send 3 x 32 x 32 float32 values, little-endian");
  }
  if (!Number.isInteger(label) || label < 0 || label >= m.nullClass) {
    throw new SamplerError(`class label ${label} is outside [0, ${m.nullClass})`, "use class_label(traits)");
  }
  if (typeof guidance !== "number" || !(guidance >= 1)) throw new SamplerError(`guidance ${guidance}`, "use 1.0 (off) or more");
  const hasInit = init !== null && init !== undefined;
  if (hasInit !== (strength !== null && strength !== undefined)) {
    throw new SamplerError("init and strength go together", "pass both for an evolution (img2img), neither for a fresh image");
  }
  const ts = m.timesteps(steps);
  const nRun = m.denoiseSteps(steps, strength);
  const run = ts.slice(ts.length - nRun);
  let x = new Float32Array(count);
  if (!hasInit) {
    const sigma = f(m.constants.init_noise_sigma);
    for (let i = 0; i < count; i++) x[i] = f(noise[i] * sigma);
  } else {
    if (init.length !== count) throw new SamplerError(`init is not ${S}x${S} RGB`, "send the start's native pixels");
    for (let ch = 0; ch < 3; ch++) {
      for (let p = 0; p < plane; p++) x[ch * plane + p] = f(f(init[p * 3 + ch] / 127.5) - 1);
    }
    if (nRun > 0) {
      const sa = m.sqrtA[run[0]];
      const sb = m.sqrt1mA[run[0]];
      for (let i = 0; i < count; i++) x[i] = f(f(sa * x[i]) + f(sb * noise[i]));
    }
  }
  const cfg = guidance !== 1;
  const g = f(guidance);
  const labels = cfg ? [label, m.nullClass] : [label];
  const stepBack = Math.floor(m.numTrainTimesteps / steps);
  const input = new Float32Array(count * labels.length);
  for (const t of run) {
    input.set(x, 0);
    if (cfg) input.set(x, count);
    const raw = await m.unet(input, t, labels);
    let out = raw;
    if (cfg) {
      out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = f(raw[count + i] + f(g * f(raw[i] - raw[count + i])));
    }
    x = m.step(out, t, t - stepBack, x);
  }
  const px = new Uint8Array(count);
  for (let ch = 0; ch < 3; ch++) {
    for (let p = 0; p < plane; p++) {
      const v = x[ch * plane + p];
      const clamped = v < -1 ? -1 : v > 1 ? 1 : v;
      px[p * 3 + ch] = rintHalfEven(f(f(clamped + 1) * 127.5));
    }
  }
  return px;
}

function float32s(text) {
  const bytes = fromBase64(text);
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(bytes.length >> 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

async function renderOne(req) {
  try {
    if (req.init !== null && req.init !== undefined && typeof req.init !== "string") {
      throw new SamplerError("init is not base64", "send raw RGB bytes as base64");
    }
    if (req.noise !== undefined && req.noise !== null && typeof req.noise !== "string") {
      throw new SamplerError("noise is not base64", "send float32 little-endian bytes as base64");
    }
    const fields = {
      seed: req.seed,
      label: req.label,
      steps: req.steps,
      guidance: req.guidance === undefined ? 1 : req.guidance,
      init: typeof req.init === "string" ? fromBase64(req.init) : null,
      strength: req.strength === undefined ? null : req.strength,
    };
    const t0 = performance.now();
    const px = typeof req.noise === "string" ? await sampleWithNoise(model, float32s(req.noise), fields) : await model.sample(fields);
    return { ok: true, pixels: toBase64(px), timing: { render_s: (performance.now() - t0) / 1000 } };
  } catch (e) {
    const hint = e instanceof SamplerError ? e.hint : "this is a bug in the renderer: report it with the request";
    return { ok: false, error: e.message || String(e), hint };
  }
}

window.renderAll = async (requests) => {
  await window.benchReady;
  if (!Array.isArray(requests)) throw new SamplerError("renderAll takes an array of requests", "pass [request, ...]");
  const replies = [];
  for (const req of requests) replies.push(await renderOne(req));
  return replies;
};

window.benchReady = start();
window.benchReady.then(
  (info) => {
    status.textContent = `ready: onnxruntime-web ${info.ort_version}, ${info.sampler_scheme}, ${info.noise_scheme}`;
    document.body.dataset.state = "ready";
  },
  (e) => {
    window.benchError = { error: e.message || String(e), hint: e.hint || "" };
    status.textContent = `error: ${window.benchError.error}${e.hint ? ` (hint: ${e.hint})` : ""}`;
    document.body.dataset.state = "error";
  },
);

if (params.has("requests")) {
  const encoded = params.get("requests").replace(/-/g, "+").replace(/_/g, "/");
  window.benchResult = window.renderAll(JSON.parse(new TextDecoder().decode(fromBase64(encoded)))).then((r) => {
    document.getElementById("result").textContent = JSON.stringify(r);
    document.body.dataset.state = "done";
    return r;
  });
}
