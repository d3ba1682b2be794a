// A long-lived Node.js renderer for the agent: renderer/sampler.js over onnxruntime-web's WASM build
// (one thread, no proxy worker), speaking JSON lines on stdin/stdout so Python pays Node's start-up once.
// Started by agent/generate/portable/wasm_runtime.py:
//
//   node renderer/node_render.mjs          (onnxruntime-web from $CHRYSALIS_NODE_MODULES or ../node_modules)
//
// First line out: {"ready": true, "ort_version", "node_version", "wasm_sha256", "noise_scheme", "sampler_scheme"}
// (or {"ready": false, "error", "hint"} and exit 1 when onnxruntime-web cannot be loaded).
// Then one request per line in:
//   {"id": any, "model_dir": "DIR with unet.onnx + scheduler.json", "seed": "decimal uint64", "label": int,
//    "steps": int, "guidance": number, "init": base64 of 32*32*3 RGB bytes (channels last) or null,
//    "strength": number or null}
// and one reply per line out, in order:
//   {"id", "ok": true, "pixels": base64 of 32*32*3 RGB bytes, "ort_version", "timing": {"load_s", "render_s"}}
//   {"id", "ok": false, "error": "...", "hint": "..."}
// With "trace": true the reply also holds "trace": base64 of float32 little-endian [steps run, 1, 3, 32, 32],
// the scheduler's state before each UNet pass (to compare the float32 loop with another implementation).
// A request with "op": "unet" runs one UNet pass instead: {"id", "op": "unet", "model_dir", "sample": base64
// of float32 little-endian [B, 3, 32, 32], "timestep": int, "class_labels": [B ints]} -> {"id", "ok", "output":
// base64 of float32 little-endian [B, 3, 32, 32]}.
// Models are loaded once per model_dir (and reloaded if unet.onnx or scheduler.json changes on disk). Nothing
// but replies is written to stdout; diagnostics go to stderr. EOF on stdin ends the process.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { configureOrt, loadModel, NOISE_SCHEME, SAMPLER_SCHEME, SamplerError } from "./sampler.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeModules = process.env.CHRYSALIS_NODE_MODULES || path.join(here, "..", "node_modules");
const dist = path.join(nodeModules, "onnxruntime-web", "dist");
const WASM = "ort-wasm-simd-threaded.wasm";
const SETUP_HINT = "run `make setup` (npm install puts onnxruntime-web in node_modules), or set CHRYSALIS_NODE_MODULES";

const send = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

let ort;
try {
  if (!existsSync(path.join(dist, "ort.wasm.min.mjs")) || !existsSync(path.join(dist, WASM))) {
    throw new Error(`onnxruntime-web is not installed under ${nodeModules}`);
  }
  ort = await import(pathToFileURL(path.join(dist, "ort.wasm.min.mjs")).href);
  configureOrt(ort, { wasmPaths: pathToFileURL(dist + path.sep).href });
} catch (e) {
  send({ ready: false, error: `cannot load onnxruntime-web: ${e.message || e}`, hint: SETUP_HINT });
  process.exit(1);
}

send({
  ready: true,
  ort_version: ort.env.versions.web,
  node_version: process.version,
  wasm_sha256: createHash("sha256").update(readFileSync(path.join(dist, WASM))).digest("hex"),
  noise_scheme: NOISE_SCHEME,
  sampler_scheme: SAMPLER_SCHEME,
});

const models = new Map(); // model_dir -> { stamp, model }

async function model(dir) {
  const hint =
    "export the model first: agent.generate.portable.onnx_export.export_sprite_model(model_dir, out_dir)";
  if (typeof dir !== "string" || !dir) throw new SamplerError("model_dir is missing", hint);
  const onnx = path.join(dir, "unet.onnx");
  const consts = path.join(dir, "scheduler.json");
  if (!existsSync(onnx) || !existsSync(consts)) {
    throw new SamplerError(`no exported sprite model at ${dir} (missing unet.onnx or scheduler.json)`, hint);
  }
  const stamp = [onnx, consts].map((p) => `${statSync(p).mtimeMs}:${statSync(p).size}`).join("|");
  const cached = models.get(dir);
  if (cached && cached.stamp === stamp) return { model: cached.model, loadS: 0 };
  const t0 = performance.now();
  const loaded = await loadModel(readFileSync(onnx), readFileSync(consts, "utf8"), { ort });
  models.set(dir, { stamp, model: loaded });
  return { model: loaded, loadS: (performance.now() - t0) / 1000 };
}

// {"op": "unet"}: one UNet forward pass, for comparing the WASM model with other runtimes step by step.
async function unet(m, req) {
  if (typeof req.sample !== "string" || !Array.isArray(req.class_labels)) {
    throw new SamplerError("a unet request needs sample (base64 float32) and class_labels", "see node_render.mjs");
  }
  const bytes = Buffer.from(req.sample, "base64");
  const input = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const out = await m.unet(input, req.timestep, req.class_labels);
  return { output: Buffer.from(out.buffer, out.byteOffset, out.byteLength).toString("base64") };
}

async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    return { id: null, ok: false, error: "the request is not one JSON object", hint: "send one JSON object per line" };
  }
  const id = req && req.id !== undefined ? req.id : null;
  try {
    const { model: m, loadS } = await model(req.model_dir);
    if (req.op === "unet") return { id, ok: true, ...(await unet(m, req)) };
    let init = null;
    if (req.init !== null && req.init !== undefined) {
      if (typeof req.init !== "string") throw new SamplerError("init is not base64", "send raw RGB bytes as base64");
      init = new Uint8Array(Buffer.from(req.init, "base64"));
    }
    const states = [];
    const t0 = performance.now();
    const px = await m.sample({
      onStep: req.trace ? (_t, x) => states.push(x) : null,
      seed: req.seed,
      label: req.label,
      steps: req.steps,
      guidance: req.guidance === undefined ? 1 : req.guidance,
      init,
      strength: req.strength === undefined ? null : req.strength,
    });
    const renderS = (performance.now() - t0) / 1000;
    return {
      id,
      ok: true,
      pixels: Buffer.from(px).toString("base64"),
      ort_version: m.ortVersion,
      timing: { load_s: loadS, render_s: renderS },
      ...(req.trace ? { trace: Buffer.concat(states.map((x) => Buffer.from(x.buffer))).toString("base64") } : {}),
    };
  } catch (e) {
    const hint = e instanceof SamplerError ? e.hint : "this is a bug in the renderer: report it with the request";
    return { id, ok: false, error: e.message || String(e), hint };
  }
}

// Requests are answered one at a time, in order (the WASM runtime is single-threaded anyway).
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (line.trim()) send(await handle(line));
}
