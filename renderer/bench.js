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
// "init": base64 RGB bytes or null, "strength": number or null}.
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

async function renderOne(req) {
  try {
    if (req.init !== null && req.init !== undefined && typeof req.init !== "string") {
      throw new SamplerError("init is not base64", "send raw RGB bytes as base64");
    }
    const t0 = performance.now();
    const px = await model.sample({
      seed: req.seed,
      label: req.label,
      steps: req.steps,
      guidance: req.guidance === undefined ? 1 : req.guidance,
      init: typeof req.init === "string" ? fromBase64(req.init) : null,
      strength: req.strength === undefined ? null : req.strength,
    });
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
