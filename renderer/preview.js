// "What would I become": the token viewer's preview of a token's next stage (renderer/index.html, #preview).
// Given a wallet (read over JSON-RPC, or typed in), it evaluates the collection's evolution rules exactly as the
// agent does (renderer/rules.js on a `chrysalis-rules/1` export) and renders the next stage in this browser with
// the same model, sampler and noise the viewer checked the token with (img2img from the token's current image,
// with the agent's palette transfer). The result is labelled "preview, not on-chain": it is never published.
//
// Where every input comes from (as the agent's inputs stage, agent/pipeline/inputs.py, builds them):
//   - wallet.balance_eth, wallet.tx_count: eth_getBalance / eth_getTransactionCount of the typed address at
//     "latest" over the typed JSON-RPC URL (the agent reads them at the request's block, oracles/wallet.py);
//     balance_eth is float(Fraction(wei, 10**18)) there, weiToEth() here: the same float64, exactly;
//   - every other feature the rules declare (price.change_pct, wallet.held_seconds, wallet.tokens_held, extra
//     oracles): the token's recorded input snapshot (its metadata's properties.inputs), unless typed over;
//     held_seconds and tokens_held need the collection's logs and balanceOf, which a bare RPC URL cannot name;
//   - token.stage = the token's stage + 1, token.id = the receipt's seed.token_id, previous = its traits;
//   - the rules: the export given as ?rules=<CID> (or typed), fetched from this gateway by relative path and,
//     for a raw block, checked against its CID like every other fetch. Rules are per collection (an agent may
//     run its own rules file), not per model, so the viewer site does not carry them: publish yours with
//     `chrysalis rules export --out rules.json`, then `chrysalis ipfs add rules.json` (CIDv1 with raw leaves: a
//     small file is one raw block, bafkrei..., which the page checks against its CID).
//
// What it can and cannot match (also said on the page):
//   - traits, conditioning, strength and lore facts equal the agent's for the same feature values (rules.js is
//     held to agent/rules/engine.py by tests/rules/data/rules_vectors.json); values read at "latest" are not
//     the request block's, and the snapshot's price is the one recorded for the current stage, not tomorrow's;
//   - the image is the agent's exactly only when the seed is known: the real seed is
//     derive_seed(on-chain request seed, token id), and the on-chain seed is drawn when the request is mined.
//     Type it (0x + 64 hex) to reproduce a pending request; otherwise an illustrative seed (derive_seed of
//     sha256("chrysalis.preview.v1:" + metadata CID)) is used and the picture shows the kind of change only;
//   - a fusion (a kin token burnt) raises strength to at least 0.85 and is not previewed; curator re-rolls and
//     gates re-rolls change the seed; the agent's steps and guidance are assumed to be this token's.
//
// preview.js has no DOM access at import time: Node.js imports it to test weiToEth, predictedPalette, deriveSeed.
// The page sets #preview[data-state] to "idle", "running", "done" or "error"; window.previewResult (on success)
// or window.previewError ({kind, error, hint}) say what happened. Error kinds: bad-address, bad-rpc-url,
// rpc-blocked, rpc-unreachable, rpc-error, bad-feature, bad-seed, no-rules, rules, render.

import { evaluate, RulesFormatError, RuleEvaluationError } from "./rules.js";

export const MOODS = ["serene", "radiant", "fierce", "gloomy"];
export const ELEMENTS = ["fire", "water", "earth", "air"];
export const SEED_DOMAIN = "chrysalis.seed.v1";
export const PREVIEW_SEED_DOMAIN = "chrysalis.preview.v1:";
export const PREVIEW_LABEL = "preview, not on-chain";
const PALETTE_TOLERANCE_SQ = 24 * 24; // quality.PALETTE_TOLERANCE, squared: the float32 norm <= 24 exactly when this holds
const WEI_PER_ETH = 10n ** 18n;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const SEED32 = /^0x[0-9a-fA-F]{64}$/;
const FLOAT_TEXT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INT_TEXT = /^[+-]?\d+$/;
export const RPC_TIMEOUT_MS = 15000;

/** A problem the preview shows: `kind` (see the header), the message and how to fix it. */
export class PreviewError extends Error {
  constructor(kind, message, hint) {
    super(message);
    this.name = "PreviewError";
    this.kind = kind;
    this.hint = hint;
  }
}

// -- exact numbers -------------------------------------------------------------------------------------------

function bitLength(n) {
  return n === 0n ? 0 : n.toString(2).length;
}

/** 2**k as a float64, exactly, for a normal k (-1022..1023). */
function pow2(k) {
  const view = new DataView(new ArrayBuffer(8));
  view.setUint32(0, (k + 1023) << 20);
  view.setUint32(4, 0);
  return view.getFloat64(0);
}

/**
 * A wei amount (BigInt) in ETH as Python's float(Fraction(wei, 10**18)): the float64 nearest to wei / 10**18,
 * ties to even (CPython's int / int is correctly rounded). Exact for every wei a chain can hold (|wei| < 2**256).
 */
export function weiToEth(wei) {
  if (typeof wei !== "bigint") throw new TypeError("weiToEth takes a BigInt");
  if (wei === 0n) return 0;
  const negative = wei < 0n;
  const num = negative ? -wei : wei;
  // find s with 2**52 <= num * 2**s / 10**18 < 2**53, so the quotient holds the 53 significant bits
  let s = 53 - (bitLength(num) - bitLength(WEI_PER_ETH));
  let q;
  let r;
  let d;
  for (;;) {
    const n = s >= 0 ? num << BigInt(s) : num;
    d = s >= 0 ? WEI_PER_ETH : WEI_PER_ETH << BigInt(-s);
    q = n / d;
    r = n % d;
    if (q >= 1n << 53n) s -= 1;
    else if (q < 1n << 52n) s += 1;
    else break;
  }
  const twice = 2n * r;
  if (twice > d || (twice === d && (q & 1n) === 1n)) q += 1n; // round half to even; 2**53 is still exact
  const value = Number(q) * pow2(-s);
  return negative ? -value : value;
}

/** The feature text a person typed, as the value Python would hold (int -> BigInt, float -> number), or undefined. */
export function parseFeature(name, text, type) {
  const t = String(text ?? "").trim();
  if (t === "") return undefined;
  if (type !== "number") return t;
  if (INT_TEXT.test(t)) return BigInt(t);
  if (FLOAT_TEXT.test(t)) return Number(t);
  if (/^[+-]?(inf|infinity)$/i.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
  throw new PreviewError("bad-feature", `${name} = ${JSON.stringify(t)} is not a number`, `type a decimal number for ${name} (like 12 or 0.5), or leave it empty to use the rule's default`);
}

/** Python's text of a feature value, for the form. */
export function featureText(value) {
  if (value === undefined || value === null) return "";
  return String(value);
}

// -- the wallet over JSON-RPC --------------------------------------------------------------------------------

/** A 20-byte address ("0x" + 40 hex), lower-cased; anything else is a bad-address error. */
export function parseAddress(text) {
  const t = String(text ?? "").trim();
  if (!ADDRESS.test(t)) {
    const why = t === "" ? "no wallet address given" : `${JSON.stringify(t)} is not a wallet address`;
    throw new PreviewError("bad-address", why, "type the holder's address: 0x followed by 40 hex digits (an ENS name cannot be resolved here)");
  }
  return t.toLowerCase();
}

/** The typed JSON-RPC URL (http or https), or null when none was typed. */
export function parseRpcUrl(text, base) {
  const t = String(text ?? "").trim();
  if (t === "") return null;
  let url;
  try {
    url = new URL(t, base);
  } catch {
    url = null;
  }
  if (url === null || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new PreviewError("bad-rpc-url", `${JSON.stringify(t)} is not an http(s) URL`, "type a public JSON-RPC URL such as https://<provider>/<key>, or leave it empty and type the wallet's values");
  }
  return url;
}

/**
 * Whether a Content-Security-Policy's connect-src (or default-src) lets this page fetch `url`. `self` is the
 * page's origin. A policy without either directive allows everything.
 */
export function cspAllowsConnect(policy, url, self) {
  if (!policy) return true;
  const directives = new Map();
  for (const part of policy.split(";")) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name && !directives.has(name.toLowerCase())) directives.set(name.toLowerCase(), values);
  }
  const sources = directives.get("connect-src") || directives.get("default-src");
  if (!sources) return true;
  const target = new URL(url);
  for (const raw of sources) {
    const src = raw.toLowerCase();
    if (src === "*") return target.protocol === "http:" || target.protocol === "https:";
    if (src === "'self'" && target.origin === new URL(self).origin) return true;
    if (/^[a-z][a-z0-9+.-]*:$/.test(src) && target.protocol === src) return true;
    const m = /^(?:([a-z][a-z0-9+.-]*):\/\/)?(\*\.)?([^:/]+)(?::(\*|\d+))?(\/.*)?$/.exec(src);
    if (!m || src.startsWith("'")) continue;
    const [, scheme, wild, host, port] = m;
    if (scheme && `${scheme}:` !== target.protocol) continue;
    if (!scheme && target.protocol !== new URL(self).protocol && !(new URL(self).protocol === "http:" && target.protocol === "https:")) continue;
    const hostOk = wild ? target.hostname.endsWith(`.${host}`) : target.hostname === host;
    const defaultPort = target.protocol === "https:" ? "443" : "80";
    const portOk = port === "*" || (port || defaultPort) === (target.port || defaultPort);
    if (hostOk && portOk) return true;
  }
  return false;
}

/** One JSON-RPC call; errors name the URL, the method and the fix. */
export async function rpcCall(url, method, params, { timeoutMs = RPC_TIMEOUT_MS, fetchImpl = globalThis.fetch } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetchImpl(url.href, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
      signal: controller.signal,
      credentials: "omit",
    });
  } catch (e) {
    const why = controller.signal.aborted ? `did not answer within ${timeoutMs / 1000} s` : `cannot be reached (${e.message || e})`;
    throw new PreviewError("rpc-unreachable", `the JSON-RPC URL ${url.href} ${why} (${method})`, "check the URL, or use another public RPC that allows browser requests (CORS); or leave it empty and type the wallet's values");
  } finally {
    clearTimeout(timer);
  }
  let body;
  try {
    body = JSON.parse(await response.text());
  } catch {
    body = null;
  }
  if (!response.ok || body === null || typeof body !== "object") {
    throw new PreviewError("rpc-error", `${url.href} answered ${method} with HTTP ${response.status}${body === null ? ", not JSON-RPC" : ""}`, "this is not a JSON-RPC endpoint: type an Ethereum node's URL");
  }
  if (body.error) {
    const message = typeof body.error === "object" ? body.error.message : String(body.error);
    throw new PreviewError("rpc-error", `${url.href} refused ${method}: ${message}`, "check the address, or use another RPC");
  }
  if (typeof body.result !== "string" || !/^0x[0-9a-fA-F]+$/.test(body.result)) {
    throw new PreviewError("rpc-error", `${url.href} answered ${method} with ${JSON.stringify(body.result)}, not a hex quantity`, "this is not an Ethereum JSON-RPC endpoint");
  }
  return BigInt(body.result);
}

/** The wallet's readings at "latest": {wei, nonce, chainId, "wallet.balance_eth", "wallet.tx_count"}. */
export async function readWallet(url, address, options = {}) {
  const [wei, nonce, chainId] = await Promise.all([
    rpcCall(url, "eth_getBalance", [address, "latest"], options),
    rpcCall(url, "eth_getTransactionCount", [address, "latest"], options),
    rpcCall(url, "eth_chainId", [], options),
  ]);
  return { wei, nonce, chainId, "wallet.balance_eth": weiToEth(wei), "wallet.tx_count": nonce };
}

// -- the snapshot --------------------------------------------------------------------------------------------

/** JSON.parse with Python's number types: an integer literal -> BigInt (a Python int), else a number (float). */
export function parseTypedJson(text) {
  let access = false;
  JSON.parse("1", (k, v, context) => {
    access = Boolean(context && context.source === "1");
    return v;
  });
  if (!access) return JSON.parse(text, (k, v) => (typeof v === "number" && Number.isInteger(v) ? BigInt(v) : v));
  return JSON.parse(text, (k, v, context) => (typeof v === "number" && /^-?[0-9]+$/.test(context.source) ? BigInt(context.source) : v));
}

/** properties.inputs (a snapshot's JSON) -> Map of reading name -> value, as InputSnapshot.values() has them. */
export function snapshotFeatures(inputs) {
  const out = new Map();
  for (const r of (inputs && inputs.readings) || []) {
    if (r && typeof r.name === "string") out.set(r.name, r.value);
  }
  return out;
}

// -- seeds, labels, palettes ---------------------------------------------------------------------------------

function hexBytes(text) {
  const h = text.replace(/^0x/, "");
  return Uint8Array.from(h.match(/../g) || [], (b) => parseInt(b, 16));
}

async function sha256(bytes) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) throw new PreviewError("render", "Web Crypto (crypto.subtle) is not available", "open the page over https or from localhost");
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

/** agent/generate/seed.py derive_seed: the first 8 bytes of sha256(DOMAIN || seed32 || tokenId (32 bytes BE)). */
export async function deriveSeed(onchainSeed, tokenId) {
  const seed = onchainSeed instanceof Uint8Array ? onchainSeed : hexBytes(onchainSeed);
  if (seed.length !== 32) throw new PreviewError("bad-seed", "the on-chain seed must be 32 bytes", "type it as 0x followed by 64 hex digits");
  const domain = new TextEncoder().encode(SEED_DOMAIN);
  const id = new Uint8Array(32);
  let t = BigInt(tokenId);
  for (let i = 31; i >= 0; i--, t >>= 8n) id[i] = Number(t & 0xffn);
  const digest = await sha256(new Uint8Array([...domain, ...seed, ...id]));
  let out = 0n;
  for (let i = 0; i < 8; i++) out = (out << 8n) | BigInt(digest[i]);
  return out;
}

/** The on-chain seed a preview renders with: the typed one, or an illustrative one fixed per token version. */
export async function previewOnchainSeed(text, metadataCid) {
  const t = String(text ?? "").trim();
  if (t !== "") {
    if (!SEED32.test(t)) throw new PreviewError("bad-seed", `${JSON.stringify(t)} is not a bytes32 seed`, "type the request's on-chain seed as 0x followed by 64 hex digits, or leave it empty for an illustrative preview");
    return { seed: hexBytes(t), known: true };
  }
  return { seed: await sha256(new TextEncoder().encode(PREVIEW_SEED_DOMAIN + metadataCid)), known: false };
}

/** agent/generate/sprites/conditioning.py class_label. */
export function classLabel(conditioning) {
  const m = MOODS.indexOf(conditioning.mood);
  const e = ELEMENTS.indexOf(conditioning.element);
  if (m < 0 || e < 0) {
    throw new PreviewError("rules", `the rules condition the image on mood ${JSON.stringify(conditioning.mood)} and element ${JSON.stringify(conditioning.element)}, which the sprite model does not know`, `the sprite model takes mood in ${MOODS.join("/")} and element in ${ELEMENTS.join("/")}`);
  }
  return m * ELEMENTS.length + e;
}

function familyColors(palettes, family, mood) {
  const moods = palettes.families[family];
  if (!moods || !moods[mood]) throw new PreviewError("render", `palettes.json lacks family ${family} mood ${mood}`, "publish the renderer again (chrysalis renderer publish)");
  const seen = new Set();
  const out = [];
  for (const c of [...moods[mood].flat(), ...palettes.fixed]) {
    const key = c.join(",");
    if (!seen.has(key)) {
      seen.add(key);
      out.push(c);
    }
  }
  return out;
}

/** Pixels (of 32 * 32) within 24 (RGB distance) of a colour of `mood` in `family`: quality.palette_adherence * 1024. */
function adherence(pixels, colors) {
  let n = 0;
  for (let p = 0; p < pixels.length; p += 3) {
    for (const c of colors) {
      const dr = pixels[p] - c[0];
      const dg = pixels[p + 1] - c[1];
      const db = pixels[p + 2] - c[2];
      if (dr * dr + dg * dg + db * db <= PALETTE_TOLERANCE_SQ) {
        n++;
        break;
      }
    }
  }
  return n;
}

function predictedMood(pixels, palettes, family) {
  let best = MOODS[0];
  let score = -1;
  for (const mood of MOODS) {
    const s = adherence(pixels, familyColors(palettes, family, mood));
    if (s > score) [best, score] = [mood, s];
  }
  return [best, score];
}

/** agent/generate/sprites/quality.py predicted_palette: [family, mood] whose colours cover most pixels. */
export function predictedPalette(pixels, palettes, prefer) {
  const [mood, first] = predictedMood(pixels, palettes, prefer);
  let best = [prefer, mood];
  let score = first;
  for (const family of Object.keys(palettes.families).sort()) {
    if (family === prefer) continue;
    const [m, s] = predictedMood(pixels, palettes, family);
    if (s > score) {
      best = [family, m];
      score = s;
    }
  }
  return best;
}

/**
 * The palette families the token's model recolours within, as the receipt shows them: its palette_transfer
 * record's `palettes` (absent: the shipped ones; null: none), else the model's declared extra.palettes, else
 * "shipped" (the shipped model; a fine-tune declaring none would be null, which a fresh token's receipt cannot
 * tell: the page says so).
 */
export function modelFamily(image) {
  const record = image.config && image.config.palette_transfer;
  if (record && typeof record === "object") return record.palettes === undefined ? "shipped" : record.palettes;
  const extra = image.model && image.model.extra;
  if (extra && Object.prototype.hasOwnProperty.call(extra, "palettes")) return extra.palettes;
  return "shipped";
}

/**
 * The img2img start the agent would make from the current pixels for `mood` (embedded.py check_inputs): recoloured
 * to the new mood within the model's families when the image reads as another family or mood.
 */
export function evolutionStart(pixels, palettes, family, mood, transferPalette) {
  if (family === null || family === undefined) return { start: Uint8Array.from(pixels), from: null, fromFamily: null };
  const [seenFamily, seen] = predictedPalette(pixels, palettes, family);
  if (seenFamily === family && seen === mood) return { start: Uint8Array.from(pixels), from: null, fromFamily: null };
  return { start: transferPalette(pixels, palettes, seen, mood, family, seenFamily), from: seen, fromFamily: seenFamily };
}

// -- the page ------------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function setPreviewStatus(text) {
  $("preview-status").textContent = text;
}

function fieldRows(rules, snapshot, block) {
  const table = $("preview-features");
  table.textContent = "";
  for (const [name, spec] of Object.entries(rules.features).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const tr = document.createElement("tr");
    const label = document.createElement("td");
    label.textContent = name;
    label.title = spec.description || "";
    const cell = document.createElement("td");
    const input = document.createElement("input");
    input.dataset.feature = name;
    input.dataset.type = spec.type;
    input.value = featureText(snapshot.get(name));
    input.placeholder = "missing: the rule's default";
    input.size = 24;
    cell.append(input);
    const source = document.createElement("td");
    source.className = "source";
    source.textContent = snapshot.has(name) ? `from the token's snapshot (block ${block})` : "not in the snapshot: type it";
    input.addEventListener("input", () => {
      source.textContent = "typed";
    });
    tr.append(label, cell, source);
    table.append(tr);
  }
}

function readFields(rules) {
  const values = new Map();
  for (const input of document.querySelectorAll("#preview-features input[data-feature]")) {
    const value = parseFeature(input.dataset.feature, input.value, rules.feature_types[input.dataset.feature]);
    if (value !== undefined) values.set(input.dataset.feature, value);
  }
  return values;
}

function showOutcome(outcome, changed) {
  const list = $("preview-traits");
  list.textContent = "";
  for (const [name, value] of Object.entries(outcome.traits)) {
    const li = document.createElement("li");
    li.dataset.trait = name;
    li.textContent = `${name}: ${value}${changed.includes(name) ? " (changes)" : ""}`;
    list.append(li);
  }
  const facts = $("preview-facts");
  facts.textContent = Object.values(outcome.facts).join("; ");
}

function drawPreview(pixels) {
  const canvas = $("preview-canvas");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(32, 32);
  for (let p = 0, q = 0; p < pixels.length; p += 3, q += 4) {
    image.data[q] = pixels[p];
    image.data[q + 1] = pixels[p + 1];
    image.data[q + 2] = pixels[p + 2];
    image.data[q + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

/**
 * Wire the preview panel. `ctx` comes from the viewer: {chain (entries {cid, doc, text}), tokenCid, params,
 * fetchCid(cid, what, checks), parseCid, transferPalette, loadPalettes(), model (after a successful view, else
 * null), current (the current image's 32x32 pixels, or null), viewError (the view's error, or null)}.
 */
export function setupPreview(ctx) {
  const panel = $("preview");
  if (!panel || !ctx.chain || ctx.chain.length === 0) return;
  const entry = ctx.chain[0];
  const doc = entry.doc;
  const props = doc.properties;
  const receipt = props.receipt || {};
  // the snapshot with Python's types (an int reading is a BigInt, a float a number), from the metadata's own text
  const inputs = entry.text ? parseTypedJson(entry.text).properties.inputs : props.inputs;
  const snapshot = snapshotFeatures(inputs);
  const block = inputs ? String(inputs.block_number) : "?";
  const previous = {};
  for (const a of doc.attributes || []) if (a.trait_type !== "stage") previous[a.trait_type] = a.value;
  let rulesLoad = null; // [CID text, Promise of the export]

  panel.hidden = false;
  panel.dataset.state = "idle";
  $("preview-rules").value = ctx.params.get("rules") || "";
  if (!ctx.model) {
    $("preview-render-note").textContent = ctx.viewError
      ? `the image cannot be previewed: the token itself could not be re-rendered (${ctx.viewError}); traits still are`
      : "";
  }

  function loadRules() {
    const text = $("preview-rules").value.trim();
    if (rulesLoad === null || rulesLoad[0] !== text) {
      const load = fetchRules(text).catch((e) => {
        if (rulesLoad && rulesLoad[1] === load) rulesLoad = null; // a failed load is tried again next time
        throw e;
      });
      rulesLoad = [text, load];
    }
    return rulesLoad[1];
  }

  async function fetchRules(text) {
    if (text === "") {
      throw new PreviewError("no-rules", "no rules given: the preview needs the collection's rules export", "add &rules=<CID> to the URL (publish it with `chrysalis rules export --out rules.json`, then `chrysalis ipfs add rules.json`), or type the CID");
    }
    const cid = ctx.parseCid(text);
    if (cid === null) throw new PreviewError("no-rules", `the rules ${JSON.stringify(text)} is not a CID`, "type the CID of the rules export (chrysalis rules export)");
    let bytes;
    try {
      bytes = await ctx.fetchCid(cid, "the rules export", []);
    } catch (e) {
      throw new PreviewError("rules", e.message || String(e), e.hint || "");
    }
    let data;
    try {
      data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch (e) {
      throw new PreviewError("rules", `the rules export ${cid.text} is not JSON: ${e.message || e}`, "export the rules with `chrysalis rules export`");
    }
    if (!data || data.format !== "chrysalis-rules/1") {
      throw new PreviewError("rules", `${cid.text} is not a chrysalis-rules/1 export (format ${JSON.stringify(data && data.format)})`, "export the rules with `chrysalis rules export`");
    }
    fieldRows(data, snapshot, block);
    $("preview-rules-sha").textContent = `rules_sha256 ${data.rules_sha256}`;
    panel.dataset.rules = "loaded";
    return data;
  }

  async function run() {
    panel.dataset.state = "running";
    delete window.previewResult;
    delete window.previewError;
    const r = await loadRules();
    const addressText = $("preview-address").value;
    const rpc = parseRpcUrl($("preview-rpc").value, location.href);
    const address = rpc !== null || addressText.trim() !== "" ? parseAddress(addressText) : null;
    let wallet = null;
    if (rpc !== null) {
      const local = ["localhost", "127.0.0.1", "[::1]"].includes(rpc.hostname);
      if (location.protocol === "https:" && rpc.protocol === "http:" && !local) {
        throw new PreviewError("bad-rpc-url", `${rpc.href} is plain http, which a page served over https may not fetch (mixed content)`, "use the provider's https:// URL");
      }
      let policy = null;
      try {
        policy = ctx.policy ? await ctx.policy() : null;
      } catch {
        policy = null; // the policy could not be read: try the fetch, whose failure is then reported as such
      }
      if (!cspAllowsConnect(policy, rpc.href, location.href)) {
        throw new PreviewError("rpc-blocked", `this gateway's Content-Security-Policy (${(policy.match(/connect-src[^;]*/) || [policy])[0]}) does not let the page reach ${rpc.origin}`, "leave the RPC URL empty and type the wallet's values, or open the viewer from a gateway that allows it");
      }
      setPreviewStatus(`reading ${address} at "latest" from ${rpc.origin}...`);
      wallet = await readWallet(rpc, address, { timeoutMs: Number(ctx.params.get("rpc_timeout_ms")) || RPC_TIMEOUT_MS });
      for (const name of ["wallet.balance_eth", "wallet.tx_count"]) {
        const input = document.querySelector(`#preview-features input[data-feature="${name}"]`);
        if (input) {
          input.value = featureText(wallet[name]);
          input.parentElement.nextElementSibling.textContent = `from ${rpc.origin} (chain ${wallet.chainId}, latest)`;
        }
      }
    }
    const features = readFields(r);
    const tokenId = BigInt(receipt.seed && receipt.seed.token_id !== undefined ? receipt.seed.token_id : 0);
    const stage = BigInt(props.stage) + 1n;
    let outcome;
    try {
      outcome = evaluate(r, features, { stage, tokenId, previous });
    } catch (e) {
      if (e instanceof RuleEvaluationError || e instanceof RulesFormatError) throw new PreviewError("rules", e.message, e.hint || "");
      throw e;
    }
    showOutcome(outcome, outcome.changed);
    const result = {
      traits: outcome.traits,
      conditioning: outcome.conditioning,
      strength: outcome.strength,
      facts: outcome.facts,
      changed: outcome.changed,
      stage: Number(stage),
      features: Object.fromEntries([...features].map(([k, v]) => [k, typeof v === "bigint" ? v.toString() : v])),
      chain_note: wallet && inputs && String(wallet.chainId) !== String(inputs.chain_id) ? `the RPC serves chain ${wallet.chainId}, but the token's snapshot is from chain ${inputs.chain_id}: is this the collection's chain?` : null,
      wallet: wallet && { address, wei: wallet.wei.toString(), nonce: wallet.nonce.toString(), chain_id: wallet.chainId.toString(), balance_eth: wallet["wallet.balance_eth"] },
      rendered: false,
      label: PREVIEW_LABEL,
    };
    if (ctx.model && ctx.current) {
      const image = receipt.image;
      const config = image.config;
      const label = classLabel(outcome.conditioning);
      const { seed: onchain, known } = await previewOnchainSeed($("preview-seed").value, entry.cid);
      const seed = await deriveSeed(onchain, tokenId);
      const family = modelFamily(image);
      const palettes = family === null ? null : await ctx.loadPalettes();
      const mood = MOODS[Math.floor(label / ELEMENTS.length)];
      const start = evolutionStart(ctx.current, palettes, family, mood, ctx.transferPalette);
      setPreviewStatus("rendering the preview in this browser...");
      const t0 = performance.now();
      let pixels;
      try {
        pixels = await ctx.model.sample({ seed, label, steps: config.num_inference_steps, guidance: config.guidance_scale, init: start.start, strength: outcome.strength });
      } catch (e) {
        throw new PreviewError("render", `the preview render failed: ${e.message || e}`, e.hint || "report this with the token's CID");
      }
      drawPreview(pixels);
      $("preview-figure").hidden = false;
      $("preview-caption").textContent = `${PREVIEW_LABEL}: stage ${stage} with ${known ? "the typed on-chain seed (what the agent would render)" : "an illustrative seed (the real one is drawn on-chain)"}`;
      Object.assign(result, {
        rendered: true,
        seed_known: known,
        seed: seed.toString(),
        class_label: label,
        palette_from: start.from,
        render_s: (performance.now() - t0) / 1000,
        pixels_sha256: Array.from(await sha256(pixels), (b) => b.toString(16).padStart(2, "0")).join(""),
      });
    }
    return result;
  }

  $("preview-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run().then(
      (result) => {
        window.previewResult = result;
        const done = result.rendered ? `${PREVIEW_LABEL}: rendered in ${result.render_s.toFixed(2)} s` : `${PREVIEW_LABEL}: traits only`;
        setPreviewStatus(result.chain_note ? `${done}\nnote: ${result.chain_note}` : done);
        panel.dataset.state = "done";
      },
      (e) => {
        const kind = e instanceof PreviewError ? e.kind : "render";
        window.previewError = { kind, error: e.message || String(e), hint: e.hint || "" };
        setPreviewStatus(`error: ${window.previewError.error}${e.hint ? `\nhint: ${e.hint}` : ""}`);
        panel.dataset.state = "error";
      },
    );
  });
  if ($("preview-rules").value.trim() !== "") {
    loadRules().catch((e) => {
      window.previewError = { kind: e.kind || "rules", error: e.message || String(e), hint: e.hint || "" };
      setPreviewStatus(`error: ${window.previewError.error}${e.hint ? `\nhint: ${e.hint}` : ""}`);
    });
  }
}
