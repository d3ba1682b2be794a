// The token viewer (renderer/index.html): what a marketplace loads as a token's animation_url. It re-renders the
// token's image in this browser from its inference receipt and the model on IPFS, and shows it beside the
// published image with a badge ("bit-identical", or the share of identical pixels) and the evolution timeline.
//
// Opened from a gateway as /ipfs/<site CID>/?token=<metadata CID>&model=<export CID> (the parameters may also be
// given in the fragment). Every fetch is relative to the page: ../<cid> is /ipfs/<cid> on the same gateway, and
// onnxruntime-web (ort/), sampler.js, noise.js and palettes.json come from the site folder itself.
//
// What it checks, before anything is drawn:
//   - every raw block (bafkrei...: the metadata of each stage, the images) hashes to its CID (sha256 + CIDv1);
//   - the metadata is Chrysalis metadata (properties.schema chrysalis.metadata/1), the parent chain's stages
//     never go up, the receipt is a chrysalis.inference-receipt/1 whose image was made under
//     chrysalis-portable/1 (any other scheme is refused with its name: replay it with `chrysalis verify`);
//   - the model's unet.onnx and scheduler.json have the sha256 the receipt records (and scheduler.json's own
//     digests, in loadModel), the .wasm is the one the receipt records (reported, not fatal);
//   - for an evolution: the previous stage's PNG has the receipt's init_image_sha256, its 32x32 pixels the
//     receipt's init_pixels_sha256, and the start after the recorded palette transfer its start_pixels_sha256
//     (the transfer is palette.py's role-for-role recolouring, in integers, from palettes.json);
//   - the published image's 32x32 pixels (one per 16x16 block of the PNG) against the receipt's pixels_sha256.
// Then it renders with renderer/sampler.js and compares pixel for pixel.
//
// The "what would I become" panel (preview.js; its header says what it can and cannot match) starts once the view
// ends, whichever way: given &rules=<CID of the collection's `chrysalis rules export`> (or the CID typed in) and a
// wallet (read over a JSON-RPC URL, or typed in), it evaluates the rules and, after a successful re-render, renders
// the next stage with the same checked model, labelled "preview, not on-chain".
//
// The page sets body[data-state] to "loading", then "done" or "error"; window.viewerResult (on success) or
// window.viewerError ({kind, error, hint}) say what happened, for tests. Error kinds: missing-token, bad-param,
// fetch, wrong-bytes, not-chrysalis, unknown-scheme, render.

import { configureOrt, loadModel, SamplerError } from "./sampler.js";
import { setupPreview } from "./preview.js";

export const PORTABLE_SCHEME = "chrysalis-portable/1";
export const METADATA_SCHEMA = "chrysalis.metadata/1";
export const RECEIPT_SCHEMA = "chrysalis.inference-receipt/1";
export const PALETTES_FORMAT = "chrysalis-palettes/1";
const NATIVE = 32;
const MAX_CHAIN = 10000;
const RAW = 0x55;
const SHA2_256 = 0x12;
const CID_V1 = /^b[a-z2-7]{58,}$/;
const CID_V0 = /^Qm[1-9A-HJ-NP-Za-km-z]{44}$/;
const URL_HINT = "open the token's animation_url: /ipfs/<site CID>/?token=<metadata CID>&model=<model export CID>";

/** A problem the page shows: `kind` (see the header), the message and how to fix it. */
export class ViewerError extends Error {
  constructor(kind, message, hint) {
    super(message);
    this.name = "ViewerError";
    this.kind = kind;
    this.hint = hint;
  }
}

// -- bytes, hashes, CIDs ------------------------------------------------------------------------------------

export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    throw new ViewerError("fetch", "Web Crypto (crypto.subtle) is not available, so nothing can be checked", "open the page over https or from localhost");
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return hex(digest);
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function base32Decode(text) {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of text) {
    const index = alphabet.indexOf(ch);
    if (index < 0) return null;
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Uint8Array.from(out);
}

/**
 * What a CID string is: {text, version, raw: true when it names one raw block by its sha256, digest (hex) then}.
 * Returns null for a string that is not a CID.
 */
export function parseCid(text) {
  if (typeof text !== "string") return null;
  if (CID_V0.test(text)) return { text, version: 0, raw: false, digest: null };
  if (!CID_V1.test(text)) return null;
  const bytes = base32Decode(text.slice(1));
  if (bytes === null || bytes.length < 4 || bytes[0] !== 1) return null;
  const raw = bytes[1] === RAW && bytes[2] === SHA2_256 && bytes[3] === 32 && bytes.length === 36;
  return { text, version: 1, raw, digest: raw ? hex(bytes.subarray(4)) : null };
}

function requireCid(text, what) {
  const cid = parseCid(text);
  if (cid === null) {
    throw new ViewerError("bad-param", `${what} ${JSON.stringify(text)} is not a CID`, URL_HINT);
  }
  return cid;
}

async function fetchBytes(path, what) {
  const url = new URL(path, location.href).href;
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new ViewerError("fetch", `cannot fetch ${what} from ${url}: ${e.message || e}`, "check that the gateway is up and serves this CID");
  }
  if (!response.ok) {
    throw new ViewerError("fetch", `${what} at ${url} answered HTTP ${response.status}`, "the gateway does not have this CID: pin it (chrysalis ipfs pin add) or use a gateway that does");
  }
  return new Uint8Array(await response.arrayBuffer());
}

/** The bytes of `cid` from this gateway; a raw block's bytes are checked against its CID. */
async function fetchCid(cid, what, checks) {
  const bytes = await fetchBytes(`../${cid.text}`, `${what} ${cid.text}`);
  if (cid.raw) {
    const got = await sha256Hex(bytes);
    if (got !== cid.digest) {
      throw new ViewerError("wrong-bytes", `the gateway returned wrong bytes for ${what} ${cid.text}: their sha256 is ${got}, the CID says ${cid.digest}`, "use a gateway you trust: the content was altered on its way");
    }
    checks.push({ ok: true, what: `${what} ${cid.text}: bytes hash to the CID` });
  } else {
    checks.push({ ok: true, what: `${what} ${cid.text}: a UnixFS DAG (not one raw block), checked against the receipt's sha256 instead`, unchecked: true });
  }
  return bytes;
}

// -- JSON with exact 64-bit integers ------------------------------------------------------------------------

let sourceTextAccess = null;

/** JSON.parse, with integers beyond 2**53 as decimal strings (seeds are unsigned 64-bit). */
export function parseJson(text) {
  if (sourceTextAccess === null) {
    JSON.parse("1", (k, v, context) => {
      sourceTextAccess = Boolean(context && context.source === "1");
      return v;
    });
  }
  if (sourceTextAccess) {
    return JSON.parse(text, (k, v, context) => (typeof v === "number" && !Number.isSafeInteger(v) && /^[0-9]+$/.test(context.source) ? context.source : v));
  }
  // no source access (older browsers): quote 16+ digit integer values, which a double cannot hold exactly
  return JSON.parse(text.replace(/([:[,])([0-9]{16,})(?=[,}\]])/g, '$1"$2"'));
}

function seedText(value) {
  if (typeof value === "string" && /^[0-9]{1,20}$/.test(value)) return value;
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return String(value);
  throw new ViewerError("not-chrysalis", `the receipt's seed ${String(value)} is not an unsigned 64-bit integer`, "this is not a receipt Chrysalis wrote");
}

// -- pixels ------------------------------------------------------------------------------------------------

/** PNG bytes -> Uint8Array(32 * 32 * 3), channels last: the top-left pixel of each block (a nearest upscale). */
export async function decodeNative(bytes, what) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }), {
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch (e) {
    throw new ViewerError("wrong-bytes", `${what} is not an image this browser can decode: ${e.message || e}`, "the receipt names a PNG; this CID holds something else");
  }
  const { width, height } = bitmap;
  if (width !== height || width % NATIVE !== 0) {
    throw new ViewerError("wrong-bytes", `${what} is ${width}x${height}, not a square multiple of ${NATIVE}`, "the sprite model's images are 32x32 upscaled 16x");
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, width, height).data;
  const k = width / NATIVE;
  const out = new Uint8Array(NATIVE * NATIVE * 3);
  for (let y = 0; y < NATIVE; y++) {
    for (let x = 0; x < NATIVE; x++) {
      const i = (y * k * width + x * k) * 4;
      const o = (y * NATIVE + x) * 3;
      out[o] = data[i];
      out[o + 1] = data[i + 1];
      out[o + 2] = data[i + 2];
    }
  }
  return out;
}

function paletteTable(palettes, family, mood) {
  const moods = palettes.families[family];
  if (!moods || !moods[mood]) {
    throw new ViewerError("not-chrysalis", `the receipt's palette transfer names family ${family} mood ${mood}, which palettes.json lacks`, "publish the renderer again (chrysalis renderer publish) from this Chrysalis version");
  }
  return [...moods[mood].flat(), ...palettes.fixed];
}

/**
 * agent/generate/sprites/palette.py transfer_palette in integers: each pixel goes to the nearest colour of the
 * source table (squared distance, first on a tie), then to the same role's colour in the destination table,
 * keeping its offset; clipped to [0, 255]. All values are integers, so numpy's float32 and rint are exact here.
 */
export function transferPalette(pixels, palettes, srcMood, dstMood, family, srcFamily) {
  if (srcFamily === family && srcMood === dstMood) return Uint8Array.from(pixels);
  const src = paletteTable(palettes, srcFamily, srcMood);
  const dst = paletteTable(palettes, family, dstMood);
  const out = new Uint8Array(pixels.length);
  for (let p = 0; p < pixels.length; p += 3) {
    let best = 0;
    let bestD = Infinity;
    for (let j = 0; j < src.length; j++) {
      const dr = pixels[p] - src[j][0];
      const dg = pixels[p + 1] - src[j][1];
      const db = pixels[p + 2] - src[j][2];
      const d = dr * dr + dg * dg + db * db;
      if (d < bestD) {
        bestD = d;
        best = j;
      }
    }
    for (let c = 0; c < 3; c++) {
      const v = dst[best][c] + (pixels[p + c] - src[best][c]);
      out[p + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

/** The img2img start the receipt's palette_transfer record describes, from the previous stage's pixels. */
function startPixels(initPixels, record, mood, palettes) {
  if (record === null || record === undefined || record.from === null || record.from === undefined) {
    return Uint8Array.from(initPixels);
  }
  const family = record.palettes === undefined ? "shipped" : record.palettes;
  if (family === null) return Uint8Array.from(initPixels);
  const srcFamily = record.from_palettes === undefined || record.from_palettes === null ? family : record.from_palettes;
  return transferPalette(initPixels, palettes, record.from, mood, family, srcFamily);
}

// -- the page ------------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function setStatus(text) {
  $("status").textContent = text;
}

function params() {
  const out = new URLSearchParams(location.search);
  for (const [k, v] of new URLSearchParams(location.hash.slice(1))) if (!out.has(k)) out.set(k, v);
  return out;
}

async function readChain(tokenCid, checks) {
  const chain = [];
  let cid = tokenCid;
  while (cid !== null) {
    if (chain.length === MAX_CHAIN) {
      throw new ViewerError("not-chrysalis", `the parent chain of ${tokenCid.text} has more than ${MAX_CHAIN} versions`, "a parent link is wrong");
    }
    const what = chain.length === 0 ? "the token's metadata" : `stage metadata`;
    const bytes = await fetchCid(cid, what, checks);
    let doc;
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      doc = parseJson(text);
    } catch (e) {
      throw new ViewerError("not-chrysalis", `${what} ${cid.text} is not JSON: ${e.message || e}`, "the token parameter must be a Chrysalis metadata CID");
    }
    const props = doc && typeof doc === "object" ? doc.properties : undefined;
    if (!props || props.schema !== METADATA_SCHEMA) {
      const schema = props ? JSON.stringify(props.schema) : "none";
      throw new ViewerError("not-chrysalis", `${what} ${cid.text} is not Chrysalis metadata (properties.schema is ${schema}, not ${METADATA_SCHEMA}): it belongs to another collection`, "open a token of a Chrysalis collection");
    }
    if (chain.length > 0 && !(props.stage <= chain[chain.length - 1].doc.properties.stage)) {
      throw new ViewerError("not-chrysalis", `stage ${props.stage} at ${cid.text} is later than its child's`, "stages never go back; this parent link is wrong");
    }
    chain.push({ cid: cid.text, doc, text });
    cid = props.parent === null ? null : requireCid(props.parent, `properties.parent of ${cid.text}`);
  }
  return chain;
}

function showTimeline(chain, current, modelText) {
  const list = $("timeline");
  list.textContent = "";
  const entries = [];
  for (const { cid, doc } of [...chain].reverse()) {
    const traits = (doc.attributes || []).filter((a) => a.trait_type !== "stage").map((a) => `${a.trait_type}: ${a.value}`);
    const image = typeof doc.image === "string" && doc.image.startsWith("ipfs://") ? doc.image.slice(7) : null;
    const li = document.createElement("li");
    li.dataset.cid = cid;
    if (cid === current) li.className = "current";
    const link = document.createElement("a");
    const query = new URLSearchParams({ token: cid });
    if (modelText) query.set("model", modelText);
    if (params().get("rules")) query.set("rules", params().get("rules")); // the preview's rules follow the links
    link.href = `?${query}`;
    if (image && parseCid(image)) {
      const img = document.createElement("img");
      img.src = `../${image}`;
      img.alt = `stage ${doc.properties.stage}`;
      link.append(img);
    }
    link.append(`stage ${doc.properties.stage}`);
    li.append(link, document.createElement("br"), traits.join(", "));
    list.append(li);
    entries.push({ cid, stage: doc.properties.stage, traits });
  }
  $("timeline-title").hidden = false;
  return entries;
}

function draw(canvasId, pixels) {
  const ctx = $(canvasId).getContext("2d");
  const image = ctx.createImageData(NATIVE, NATIVE);
  for (let p = 0, q = 0; p < pixels.length; p += 3, q += 4) {
    image.data[q] = pixels[p];
    image.data[q + 1] = pixels[p + 1];
    image.data[q + 2] = pixels[p + 2];
    image.data[q + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

function showChecks(checks) {
  const list = $("checks");
  list.textContent = "";
  for (const c of checks) {
    const li = document.createElement("li");
    li.textContent = `${c.ok ? "ok" : "FAILED"}: ${c.what}`;
    if (!c.ok) li.className = "fail";
    list.append(li);
  }
}

async function loadOrt() {
  const base = new URL("./ort/", location.href).href;
  let ort;
  try {
    ort = await import(`${base}ort.wasm.min.mjs`);
  } catch (e) {
    throw new ViewerError("fetch", `cannot load onnxruntime-web from ${base}: ${e.message || e}`, "publish the site with `chrysalis renderer publish`, which bundles it");
  }
  return configureOrt(ort, { wasmPaths: base });
}

async function view() {
  const checks = [];
  const p = params();
  if (!p.get("token")) {
    throw new ViewerError("missing-token", "no token given: this page needs ?token=<metadata CID>", URL_HINT);
  }
  const tokenCid = requireCid(p.get("token"), "the token parameter");
  const modelCid = p.get("model") ? requireCid(p.get("model"), "the model parameter") : null;
  setStatus("fetching the metadata and its parent chain...");
  const chain = await readChain(tokenCid, checks);
  previewContext.chain = chain;
  const doc = chain[0].doc;
  $("title").textContent = `${doc.name} (stage ${doc.properties.stage})`;
  const timeline = showTimeline(chain, tokenCid.text, modelCid && modelCid.text);
  window.viewerTimeline = timeline;

  const receipt = doc.properties.receipt;
  if (!receipt || receipt.schema !== RECEIPT_SCHEMA || !receipt.image || !receipt.image.config) {
    const schema = receipt ? JSON.stringify(receipt.schema) : "none";
    throw new ViewerError("not-chrysalis", `the token's receipt (schema ${schema}) is not a ${RECEIPT_SCHEMA} with an image part`, "open a token whose metadata Chrysalis wrote");
  }
  const image = receipt.image;
  const config = image.config;
  if (config.generator !== PORTABLE_SCHEME) {
    throw new ViewerError(
      "unknown-scheme",
      `unknown receipt scheme ${JSON.stringify(config.generator)}: this page re-renders only ${PORTABLE_SCHEME} images`,
      "replay this receipt with `chrysalis verify` (older schemes replay in Python); new tokens made with models.image_runtime = \"portable\" render here",
    );
  }
  if (modelCid === null) {
    throw new ViewerError("bad-param", "no model given: this page needs &model=<CID of the model's ONNX export>", URL_HINT);
  }

  setStatus("fetching the published image...");
  const imageCid = requireCid(typeof doc.image === "string" ? doc.image.replace(/^ipfs:\/\//, "") : "", "the metadata's image");
  const published = await decodeNative(await fetchCid(imageCid, "the published image", checks), `the published image ${imageCid.text}`);
  previewContext.current = published;
  const publishedSha = await sha256Hex(published);
  checks.push({ ok: publishedSha === image.output.pixels_sha256, what: `the published image's 32x32 pixels ${publishedSha === image.output.pixels_sha256 ? "have" : "do not have"} the receipt's pixels_sha256` });

  let init = null;
  let strength = null;
  if (config.mode === "img2img") {
    setStatus("fetching the previous stage's image...");
    const parentImage = chain.length > 1 && typeof chain[1].doc.image === "string" ? chain[1].doc.image.replace(/^ipfs:\/\//, "") : null;
    const initText = image.request.init_image_cid || parentImage;
    if (!initText) {
      throw new ViewerError("not-chrysalis", "this evolution's receipt names no previous image (init_image_cid) and the metadata has no parent", "open a token published by the Chrysalis pipeline");
    }
    if (parentImage && image.request.init_image_cid && parentImage !== image.request.init_image_cid) {
      checks.push({ ok: false, what: `the receipt's init_image_cid ${image.request.init_image_cid} is not the parent's image ${parentImage}` });
    }
    const initCid = requireCid(initText, "the previous image");
    const initBytes = await fetchCid(initCid, "the previous stage's image", checks);
    const initSha = await sha256Hex(initBytes);
    if (config.init_image_sha256 && initSha !== config.init_image_sha256) {
      throw new ViewerError("wrong-bytes", `the previous stage's image ${initCid.text} has sha256 ${initSha}, but the receipt started from ${config.init_image_sha256}`, "the parent chain does not lead to the image this evolution started from");
    }
    const initPixels = await decodeNative(initBytes, `the previous stage's image ${initCid.text}`);
    const initPixelsSha = await sha256Hex(initPixels);
    if (initPixelsSha !== config.init_pixels_sha256) {
      throw new ViewerError("wrong-bytes", `the previous stage's 32x32 pixels have sha256 ${initPixelsSha}, but the receipt says ${config.init_pixels_sha256}`, "this browser decoded the PNG differently, or the image is not the receipt's");
    }
    checks.push({ ok: true, what: "the previous stage's image and pixels have the receipt's sha256" });
    const record = config.palette_transfer;
    let palettes = null;
    if (record && record.from !== null && record.from !== undefined) {
      palettes = await loadPalettes();
    }
    init = startPixels(initPixels, record, config.traits.mood, palettes);
    if (record) {
      const startSha = await sha256Hex(init);
      if (startSha !== record.start_pixels_sha256) {
        throw new ViewerError("wrong-bytes", `the palette transfer (${record.from} -> ${config.traits.mood}) gave a start with sha256 ${startSha}, but the receipt says ${record.start_pixels_sha256}`, "this page's palettes.json is not the one the agent used: publish the renderer again");
      }
      checks.push({ ok: true, what: `the palette transfer ${record.from === null ? "(none)" : `${record.from} -> ${config.traits.mood}`} gives the receipt's start_pixels_sha256` });
    }
    strength = config.strength;
  }

  setStatus("fetching the model...");
  const [onnx, scheduler] = await Promise.all([
    fetchBytes(`../${modelCid.text}/unet.onnx`, `unet.onnx of model ${modelCid.text}`),
    fetchBytes(`../${modelCid.text}/scheduler.json`, `scheduler.json of model ${modelCid.text}`),
  ]);
  for (const [name, bytes] of [["unet.onnx", onnx], ["scheduler.json", scheduler]]) {
    const got = await sha256Hex(bytes);
    const want = config.onnx && config.onnx[name];
    if (got !== want) {
      throw new ViewerError("wrong-bytes", `${name} of model ${modelCid.text} has sha256 ${got}, but the receipt says ${want}`, "pass the model export this token was made with (&model=<CID>), from a gateway you trust");
    }
  }
  checks.push({ ok: true, what: "unet.onnx and scheduler.json have the receipt's sha256" });
  const ort = await loadOrt();
  let model;
  try {
    model = await loadModel(onnx, new TextDecoder().decode(scheduler), { ort, verifyDigests: true });
  } catch (e) {
    throw new ViewerError("wrong-bytes", e.message || String(e), e.hint || "");
  }
  const recordedOrt = config.onnxruntime_web || {};
  const wasmSha = await sha256Hex(await fetchBytes("./ort/ort-wasm-simd-threaded.wasm", "the onnxruntime-web .wasm"));
  checks.push({
    ok: wasmSha === recordedOrt.wasm_sha256 && model.ortVersion === recordedOrt.version,
    what: `onnxruntime-web ${model.ortVersion} (.wasm ${wasmSha.slice(0, 12)}...) ${wasmSha === recordedOrt.wasm_sha256 && model.ortVersion === recordedOrt.version ? "is" : "is not"} the build the receipt records (${recordedOrt.version})`,
  });

  setStatus("rendering in this browser...");
  const t0 = performance.now();
  let rendered;
  try {
    rendered = await model.sample({
      seed: seedText(config.seed),
      label: config.class_label,
      steps: config.num_inference_steps,
      guidance: config.guidance_scale,
      init,
      strength,
    });
  } catch (e) {
    const hint = e instanceof SamplerError ? e.hint : "report this with the token's CID";
    throw new ViewerError("render", `the render failed: ${e.message || e}`, hint);
  }
  const renderS = (performance.now() - t0) / 1000;
  const total = NATIVE * NATIVE;
  let same = 0;
  for (let i = 0; i < rendered.length; i += 3) {
    if (rendered[i] === published[i] && rendered[i + 1] === published[i + 1] && rendered[i + 2] === published[i + 2]) same++;
  }
  const renderedSha = await sha256Hex(rendered);
  checks.push({ ok: renderedSha === image.output.pixels_sha256, what: `the render ${renderedSha === image.output.pixels_sha256 ? "has" : "does not have"} the receipt's pixels_sha256` });
  draw("rendered", rendered);
  draw("published", published);
  $("pair").hidden = false;
  const identical = same === total;
  const badge = identical ? "bit-identical" : `${((100 * same) / total).toFixed(1)}% of pixels identical`;
  $("badge").textContent = badge;
  $("badge").className = identical ? "identical" : "differs";
  $("badge").hidden = false;
  showChecks(checks);
  setStatus(`rendered in ${renderS.toFixed(2)} s with onnxruntime-web ${model.ortVersion} (${PORTABLE_SCHEME})`);
  previewContext.model = model;
  return { badge, bit_identical: identical, identical_pixels: same, total_pixels: total, render_s: renderS, checks, timeline };
}

let palettesPromise = null;

/** palettes.json from the site folder (once), checked to be chrysalis-palettes/1. */
function loadPalettes() {
  palettesPromise ??= fetchBytes("./palettes.json", "palettes.json").then((bytes) => {
    const palettes = parseJson(new TextDecoder().decode(bytes));
    if (!palettes || palettes.format !== PALETTES_FORMAT) {
      throw new ViewerError("fetch", `palettes.json is not ${PALETTES_FORMAT}`, "publish the renderer again (chrysalis renderer publish)");
    }
    return palettes;
  });
  return palettesPromise;
}

// What the "what would I become" preview (preview.js) reuses: the chain, the current image's pixels and, after a
// successful re-render, the checked model. It is set up once the view ends, whichever way.
const previewContext = {
  chain: null,
  current: null,
  model: null,
  viewError: null,
  params: params(),
  parseCid,
  fetchCid,
  transferPalette,
  loadPalettes,
  policy: async () => (await fetch(location.href, { credentials: "omit" })).headers.get("content-security-policy"),
};

function startPreview() {
  try {
    setupPreview(previewContext);
  } catch (e) {
    window.previewError = { kind: "render", error: `the preview could not start: ${e.message || e}`, hint: "report this with the token's CID" };
  }
}

view().then(
  (result) => {
    window.viewerResult = result;
    document.body.dataset.state = "done";
    startPreview();
  },
  (e) => {
    const kind = e instanceof ViewerError ? e.kind : "render";
    window.viewerError = { kind, error: e.message || String(e), hint: e.hint || "" };
    setStatus(`error: ${window.viewerError.error}${e.hint ? `\nhint: ${e.hint}` : ""}`);
    previewContext.viewError = window.viewerError.error;
    previewContext.model = null;
    document.body.dataset.state = "error";
    startPreview();
  },
);
