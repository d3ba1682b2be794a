// Checks renderer/rules.js against the shared vectors written by scripts/rules_vectors.py.
// Run by tests/rules/test_rules_js.py:   node tests/rules/rules_check.mjs VECTORS.json
// Prints one JSON report on stdout: {format, checked, failures: [{set, index, expected, got}]}.
import { readFileSync } from "node:fs";
import { Decimal, evaluate, FORMAT, MissingFeatureError, pyFloatRepr, RuleEvaluationError } from "../../renderer/rules.js";

const FLOATS = { inf: Infinity, "-inf": -Infinity, nan: NaN };
const decode = (typed) => {
  if (typed === null) return null;
  const [[kind, text]] = Object.entries(typed);
  if (kind === "int") return BigInt(text);
  if (kind === "float") return text in FLOATS ? FLOATS[text] : Number(text);
  if (kind === "decimal") return new Decimal(text);
  if (kind === "str" || kind === "bool") return text;
  throw new Error(`unknown typed value ${JSON.stringify(typed)}`);
};
// JSON with sorted keys, so that two results compare by content.
const canonical = (v) =>
  Array.isArray(v)
    ? `[${v.map(canonical).join(",")}]`
    : v !== null && typeof v === "object"
      ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`
      : JSON.stringify(v);

const vectors = JSON.parse(readFileSync(process.argv[2], "utf8"));
const report = { format: FORMAT, vectors_rules_format: vectors.rules_format, checked: 0, failures: [] };
for (const set of vectors.sets) {
  set.cases.forEach((c, index) => {
    const inputs = Object.fromEntries(Object.entries(c.inputs).map(([k, v]) => [k, decode(v)]));
    let got;
    try {
      const r = evaluate(set.rules, inputs, { stage: decode(c.stage), tokenId: decode(c.token_id), previous: c.previous });
      got = { ...r, strength: pyFloatRepr(r.strength) };
    } catch (err) {
      if (!(err instanceof RuleEvaluationError)) throw err;
      const reason = err instanceof MissingFeatureError ? "missing" : err.reason;
      got = { error: { type: err.name, rule: err.rule, feature: err.feature, reason } };
    }
    report.checked += 1;
    if (canonical(got) !== canonical(c.expected)) report.failures.push({ set: set.name, index, expected: c.expected, got });
  });
}
process.stdout.write(JSON.stringify(report));
