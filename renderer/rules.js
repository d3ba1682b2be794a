// Chrysalis evolution rules in the browser: evaluates a `chrysalis-rules/1` export (agent/rules/rules_data.py,
// `chrysalis rules export`) exactly as agent/rules/engine.py's RuleEngine.evaluate does. No dependencies; an ES
// module for Node.js and browsers. Held to Python by tests/rules/data/rules_vectors.json (scripts/rules_vectors.py).
//
//   import { evaluate, Decimal } from "./rules.js";
//   const r = evaluate(rulesJson, { "price.change_pct": 3.2, "wallet.tx_count": 12n }, { stage: 2, tokenId: 7n,
//                      previous: { mood: "serene" } });
//   r.traits, r.conditioning, r.strength, r.facts, r.changed (sorted array), r.why ({"[traits.mood]": {...}})
//
// Feature values carry Python's types, because the engine's results depend on them:
//   number  -> a Python float (a float64; NaN is an error, as in Python)
//   bigint  -> a Python int (exact at any size; pass wallet counts and token ids as BigInt when they may be big)
//   Decimal -> a Python decimal.Decimal (new Decimal("0.1"); what [[oracles.http]] readings are)
//   string  -> a str; boolean -> a bool (never a number, as in Python); null/undefined -> missing (None)
// Band ends are float64 and are compared exactly with ints, floats and Decimals, as Python compares them
// (Decimal("0.1") < 0.1 is true in both). Map keys of number features are Python's text of the value: str(int(x))
// for an integral value, else repr(float) / str(Decimal), reproduced here.
//
// Errors mirror Python's: MissingFeatureError (a missing feature without `default`) and FeatureValueError with
// `reason` one of not_a_number, nan, not_a_string, not_in_map, band_count; both carry `rule`, `feature`, `hint`.
// RulesFormatError: the export is not chrysalis-rules/1 (re-export it with `chrysalis rules export`).

export const FORMAT = "chrysalis-rules/1";

const hasOwn = (obj, key) => obj != null && Object.prototype.hasOwnProperty.call(obj, key);

export class RulesFormatError extends Error {
  constructor(message) {
    super(`${message} (export the rules with \`chrysalis rules export\`)`);
    this.name = "RulesFormatError";
  }
}

export class RuleEvaluationError extends Error {
  constructor(message, { rule, feature, hint }) {
    super(`${rule}: ${message}`);
    this.name = "RuleEvaluationError";
    this.rule = rule;
    this.feature = feature;
    this.hint = hint;
  }
}

export class MissingFeatureError extends RuleEvaluationError {
  constructor({ rule, feature, available }) {
    super(`feature '${feature}' is missing from the inputs (they have: ${available.join(", ") || "nothing"})`, {
      rule,
      feature,
      hint: `add an oracle that provides '${feature}' to the snapshot, or declare \`default = "..."\` in ${rule}`,
    });
    this.name = "MissingFeatureError";
    this.available = available;
  }
}

export class FeatureValueError extends RuleEvaluationError {
  constructor(message, { rule, feature, value, hint, reason }) {
    super(message, { rule, feature, hint });
    this.name = "FeatureValueError";
    this.value = value;
    this.reason = reason;
  }
}

// -- Python's decimal.Decimal, as far as the rules read it ------------------------------------------------------

const DECIMAL = /^([+-])?(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/;
const DECIMAL_SPECIAL = /^([+-])?(?:(inf|infinity)|(s?nan)\d*)$/i;

/** A decimal number with Python's Decimal semantics for comparison and text: new Decimal("0.10"). */
export class Decimal {
  constructor(text) {
    const s = String(text).trim();
    let m = DECIMAL_SPECIAL.exec(s);
    this.negative = false;
    if (m) {
      this.negative = m[1] === "-";
      this.special = m[2] ? "inf" : "nan";
      return Object.freeze(this);
    }
    m = DECIMAL.exec(s);
    if (!m) throw new TypeError(`invalid Decimal text ${JSON.stringify(text)}: write digits like "12.50" or "1E-7"`);
    const whole = m[2] ?? "";
    const frac = m[3] ?? m[4] ?? "";
    this.negative = m[1] === "-";
    this.special = null;
    this.coefficient = BigInt((whole + frac) || "0");
    this.exponent = Number(m[5] ?? 0) - frac.length;
    if (!Number.isSafeInteger(this.exponent)) throw new TypeError(`Decimal exponent out of range in ${text}`);
    Object.freeze(this);
  }

  /** Python's str(Decimal): the decimal specification's to-scientific-string. */
  toString() {
    const sign = this.negative ? "-" : "";
    if (this.special === "inf") return `${sign}Infinity`;
    if (this.special === "nan") return `${sign}NaN`;
    const digits = this.coefficient.toString();
    const adjusted = this.exponent + digits.length - 1;
    if (this.exponent <= 0 && adjusted >= -6) {
      const point = digits.length + this.exponent;
      if (this.exponent === 0) return sign + digits;
      if (point > 0) return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
      return `${sign}0.${"0".repeat(-point)}${digits}`;
    }
    const mantissa = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${mantissa}E${adjusted >= 0 ? "+" : "-"}${Math.abs(adjusted)}`;
  }
}

// -- exact numbers: value = sign * n * 2^p2 * 10^p10 -------------------------------------------------------------

function exact(x) {
  if (typeof x === "bigint") return { inf: 0, sign: x < 0n ? -1 : x > 0n ? 1 : 0, n: x < 0n ? -x : x, p2: 0, p10: 0 };
  if (x instanceof Decimal) {
    if (x.special === "inf") return { inf: x.negative ? -1 : 1 };
    const sign = x.coefficient === 0n ? 0 : x.negative ? -1 : 1;
    return { inf: 0, sign, n: x.coefficient, p2: 0, p10: x.exponent };
  }
  if (x === Infinity || x === -Infinity) return { inf: x > 0 ? 1 : -1 };
  if (x === 0) return { inf: 0, sign: 0, n: 0n, p2: 0, p10: 0 };
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const biased = (hi >>> 20) & 0x7ff;
  let n = (BigInt(hi & 0xfffff) << 32n) | BigInt(view.getUint32(4));
  if (biased !== 0) n |= 1n << 52n;
  return { inf: 0, sign: hi >>> 31 ? -1 : 1, n, p2: biased === 0 ? -1074 : biased - 1075, p10: 0 };
}

const LOG10_2 = Math.log10(2);
const magnitude = (e) => (e.n.toString(16).length * 4 + e.p2) * LOG10_2 + e.p10; // log10 of |value|, +-2

/** -1, 0 or 1 as the exact values of a and b (bigint, number or Decimal; not NaN) compare, as Python does. */
export function compareExact(a, b) {
  const x = exact(a);
  const y = exact(b);
  if (x.inf || y.inf) return Math.sign((x.inf || 0) - (y.inf || 0)); // a finite value counts as 0 here
  if (x.sign !== y.sign) return x.sign < y.sign ? -1 : 1;
  if (x.sign === 0) return 0;
  const gap = magnitude(x) - magnitude(y); // decides far-apart values without 10^huge BigInts
  if (gap > 8) return x.sign;
  if (gap < -8) return -x.sign;
  const p2 = Math.min(x.p2, y.p2);
  const p10 = Math.min(x.p10, y.p10);
  const scaled = (e) => (e.n << BigInt(e.p2 - p2)) * 10n ** BigInt(e.p10 - p10);
  const u = scaled(x);
  const v = scaled(y);
  return u === v ? 0 : (u > v ? 1 : -1) * x.sign;
}

// -- Python's text of numbers --------------------------------------------------------------------------------------

/** Python's repr(float) for a JS number (shortest round-trip digits, Python's layout: 1e-05, 1e+16, 2.5). */
export function pyFloatRepr(x) {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mant, exp] = Math.abs(x).toExponential().split("e");
  const digits = mant.replace(".", "");
  const e = Number(exp);
  const point = e + 1;
  if (point <= -4 || point > 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${"0".repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** str(int(x)) when x is integral and finite, else null. */
function integerText(x) {
  if (typeof x === "bigint") return x.toString();
  if (typeof x === "number") return Number.isFinite(x) && Number.isInteger(x) ? BigInt(x).toString() : null;
  if (x instanceof Decimal && x.special === null) {
    const { coefficient: c, exponent: e } = x;
    let n;
    if (e >= 0) n = c * 10n ** BigInt(e);
    else {
      const unit = 10n ** BigInt(-e);
      if (c % unit !== 0n) return null;
      n = c / unit;
    }
    return (x.negative ? -n : n).toString();
  }
  return null;
}

const describe = (value) =>
  typeof value === "string" ? JSON.stringify(value) : typeof value === "bigint" ? `${value}` : String(value);

// -- evaluation ----------------------------------------------------------------------------------------------------

function asNumber(where, feature, value) {
  const ok = typeof value === "number" || typeof value === "bigint" || value instanceof Decimal;
  if (!ok) {
    throw new FeatureValueError(`${feature} = ${describe(value)} is not a number`, {
      rule: where,
      feature,
      value,
      hint: `make the oracle return a number for '${feature}', or use a map rule`,
      reason: "not_a_number",
    });
  }
  if (Number.isNaN(value) || (value instanceof Decimal && value.special === "nan")) {
    throw new FeatureValueError(`${feature} is NaN`, {
      rule: where,
      feature,
      value,
      hint: "the oracle must raise instead of returning NaN",
      reason: "nan",
    });
  }
  return value;
}

function mapKey(where, feature, value, types) {
  if (types[feature] === "number") {
    const x = asNumber(where, feature, value);
    const whole = integerText(x);
    if (whole !== null) return whole;
    return typeof x === "number" ? pyFloatRepr(x) : x.toString();
  }
  if (typeof value !== "string") {
    throw new FeatureValueError(`${feature} = ${describe(value)} is not a string, as [features] declares`, {
      rule: where,
      feature,
      value,
      hint: `declare ${feature} with type = "number", or make the oracle return text`,
      reason: "not_a_string",
    });
  }
  return value;
}

function inBand(band, x) {
  const lo = band.min === null ? 1 : compareExact(x, band.min);
  const hi = band.max === null ? -1 : compareExact(x, band.max);
  const above = band.min === null || lo > 0 || (lo === 0 && band.min_inclusive);
  const below = band.max === null || hi < 0 || (hi === 0 && band.max_inclusive);
  return above && below;
}

function apply(where, rule, values, types) {
  if (rule.kind === "constant") return [rule.value, { via: "constant" }];
  if (rule.kind !== "bands" && rule.kind !== "map") throw new RulesFormatError(`${where} has unknown kind ${rule.kind}`);
  const value = values.get(rule.feature);
  if (value === undefined || value === null) {
    if (rule.default !== null && rule.default !== undefined) return [rule.default, { via: "default" }];
    throw new MissingFeatureError({ rule: where, feature: rule.feature, available: [...values.keys()].sort() });
  }
  if (rule.kind === "bands") {
    const x = asNumber(where, rule.feature, value);
    const matches = [];
    rule.bands.forEach((band, i) => inBand(band, x) && matches.push(i + 1));
    if (matches.length !== 1) {
      throw new FeatureValueError(`${rule.feature} = ${describe(value)} matches ${matches.length} bands`, {
        rule: where,
        feature: rule.feature,
        value,
        hint: "the bands were changed after validation; re-export the rules",
        reason: "band_count",
      });
    }
    return [rule.bands[matches[0] - 1].value, { via: "band", band: matches[0] }];
  }
  const key = mapKey(where, rule.feature, value, types);
  if (hasOwn(rule.map, key)) return [rule.map[key], { via: "map", key }];
  if (rule.otherwise !== null && rule.otherwise !== undefined) return [rule.otherwise, { via: "otherwise", key }];
  throw new FeatureValueError(`${rule.feature} = ${describe(value)} is not in the map (${Object.keys(rule.map).join(", ")})`, {
    rule: where,
    feature: rule.feature,
    value,
    hint: `add "${key}" to the map, or declare \`otherwise = "..."\` in ${where}`,
    reason: "not_in_map",
  });
}

/**
 * Evaluate a chrysalis-rules/1 export on one token's inputs, exactly as RuleEngine.evaluate does.
 *
 * @param {object} rules The export (parsed JSON).
 * @param {object|Map} inputs Reading name -> value (types as in the header).
 * @param {{stage: number|bigint, tokenId: number|bigint, previous?: object|null}} token The stage evolved into,
 *   the token id, and its traits before this evolution (null/absent for its first image).
 * @returns {{traits: object, conditioning: object, strength: number, facts: object, changed: string[], why: object}}
 * @throws {MissingFeatureError|FeatureValueError|RulesFormatError}
 */
export function evaluate(rules, inputs, { stage, tokenId, previous = null } = {}) {
  if (rules === null || typeof rules !== "object" || rules.format !== FORMAT) {
    throw new RulesFormatError(`the rules are ${JSON.stringify(rules?.format ?? null)}, not ${FORMAT}`);
  }
  if (stage === undefined || tokenId === undefined) throw new TypeError("evaluate needs { stage, tokenId }");
  const values = new Map(inputs instanceof Map ? inputs : Object.entries(inputs ?? {}));
  values.set("token.stage", stage);
  values.set("token.id", tokenId);
  const types = rules.feature_types;

  const why = {};
  const run = (section) => {
    const out = {};
    for (const rule of rules[section]) {
      const where = `[${section}.${rule.name}]`;
      [out[rule.name], why[where]] = apply(where, rule, values, types);
    }
    return out;
  };
  const traits = run("traits");
  const facts = run("facts");
  const names = Object.keys(traits).sort();
  const changed =
    previous === null || previous === undefined
      ? names
      : names.filter((name) => !hasOwn(previous, name) || previous[name] !== traits[name]);

  const { conditioning: feeds, strength: spec } = rules.image;
  const conditioning = {};
  for (const key of Object.keys(feeds).sort()) conditioning[key] = traits[feeds[key]];
  const stageKey = integerText(stage);
  let strength = stageKey !== null && hasOwn(spec.by_stage, stageKey) ? spec.by_stage[stageKey] : spec.default;
  for (const name of changed) {
    const raise = hasOwn(spec.by_trait_change, name) ? spec.by_trait_change[name] : 0.0;
    if (raise > strength) strength = raise; // Python's max(strength, raise): keeps the first of equals (-0.0)
  }
  return { traits, conditioning, strength, facts, changed, why };
}
