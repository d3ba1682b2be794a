"""Rules as data (``chrysalis-rules/1``): the export, and ``renderer/rules.js`` against the Python engine on the shared
vector file written by ``scripts/rules_vectors.py``."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest

from agent.rules import DEFAULT_RULES, RulesConfigError, load_rules
from agent.rules.model import BandsRule, RulesSpec
from agent.rules.rules_data import FORMAT, rules_from_json, rules_json_bytes, rules_to_json
from tests.support.cli import invoke_cli

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "rules" / "data" / "rules_vectors.json"
EDGE = ROOT / "tests" / "rules" / "data" / "edge_rules.toml"
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "rules_vectors.py"))
NODE_CHECK = ROOT / "tests" / "rules" / "rules_check.mjs"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def _node(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JS side (renderer/rules.js) cannot be checked")
    return subprocess.run(
        [node, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def _node_check(vector_file: Path) -> dict[str, Any]:
    proc = _node(str(NODE_CHECK), str(vector_file))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- the vector file -----------------------------------------------------------------------------------------------


def test_vector_file_is_what_python_computes(vectors: dict[str, Any]) -> None:
    assert vectors["rules_format"] == FORMAT
    assert [s["name"] for s in vectors["sets"]] == ["default", "edge"]
    assert SCRIPT["build"]() == vectors, "the vectors drifted: run scripts/rules_vectors.py and review why"
    assert SCRIPT["render"](vectors) == VECTORS.read_text(encoding="utf-8")
    assert SCRIPT["main"](["--check"]) == 0


def test_vectors_reach_every_branch(vectors: dict[str, Any]) -> None:
    """Every band of every rule, every map key, otherwise, default, constant and every error reason is expected by
    some case, so JS agreeing on the file means agreeing on every branch."""
    for entry in vectors["sets"]:
        reached: set[tuple[str, str]] = set()
        reasons: set[str] = set()
        for case in entry["cases"]:
            exp = case["expected"]
            if "error" in exp:
                reasons.add(exp["error"]["reason"])
                continue
            for where, how in exp["why"].items():
                reached.add(
                    (
                        where,
                        json.dumps(
                            {k: v for k, v in how.items() if k != "key" or how["via"] == "map"},
                            sort_keys=True,
                        ),
                    )
                )
        for section in ("traits", "facts"):
            for rule in entry["rules"][section]:
                where = f"[{section}.{rule['name']}]"
                want: list[dict[str, Any]] = [{"via": "constant"}] if rule["kind"] == "constant" else []
                if rule["kind"] == "bands":
                    want = [{"via": "band", "band": i} for i in range(1, len(rule["bands"]) + 1)]
                if rule["kind"] == "map":
                    want = [{"via": "map", "key": k} for k in rule["map"]]
                    want += [{"via": "otherwise"}] if rule["otherwise"] is not None else []
                want += [{"via": "default"}] if rule.get("default") is not None else []
                missing = [w for w in want if (where, json.dumps(w, sort_keys=True)) not in reached]
                assert not missing, f"{entry['name']} {where}: no case reaches {missing}"
        assert {"missing", "nan", "not_a_number"} <= reasons
    assert {"not_a_string", "not_in_map"} <= reasons  # the edge rules have string and strict maps


# -- the export ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DEFAULT_RULES, EDGE], ids=["default", "edge"])
def test_export_is_deterministic_and_complete(path: Path) -> None:
    engine = load_rules(path)
    data = rules_json_bytes(engine)
    assert data == rules_json_bytes(load_rules(path)) == rules_json_bytes(engine.spec)
    exported = json.loads(data)
    assert exported["format"] == FORMAT and exported["rules_sha256"] == engine.sha256
    assert [r["name"] for r in exported["traits"]] == sorted(engine.spec.traits)
    # Everything the engine reads survives: the rules rebuilt from the export hash like the original.
    assert rules_from_json(exported).sha256 == engine.sha256


def test_rules_from_json_refuses_another_format_and_a_hand_edit() -> None:
    exported = rules_to_json(load_rules())
    with pytest.raises(RulesConfigError, match="not 'chrysalis-rules/1'") as err:
        rules_from_json({**exported, "format": "chrysalis-rules/9"})
    assert "chrysalis rules export" in err.value.fix
    edited = json.loads(json.dumps(exported))
    edited["traits"][0]["bands"][0]["value"] = "glowing"  # still valid rules, but not the ones hashed
    with pytest.raises(RulesConfigError, match="rules_sha256"):
        rules_from_json(edited)


class _Tilted(BandsRule):
    """A rule with a field the format does not carry (as if agent.rules.model grew one)."""

    tilt: float = 0.5


class _Script(BandsRule):
    kind: Literal["script"]  # type: ignore[assignment]


def _spec_with(rule: object) -> RulesSpec:
    spec = load_rules().spec
    return RulesSpec.model_construct(**{**dict(spec), "traits": {**spec.traits, "mood": rule}})


def test_export_refuses_what_js_cannot_evaluate() -> None:
    mood = load_rules().spec.traits["mood"].model_dump()
    with pytest.raises(RulesConfigError, match=r"\[traits.mood\] has field\(s\) tilt") as err:
        rules_to_json(_spec_with(_Tilted(**mood)))
    assert "renderer/rules.js" in err.value.fix
    with pytest.raises(RulesConfigError, match=r"\[traits.mood\] is of kind 'script'"):
        rules_to_json(_spec_with(_Script.model_construct(**{**mood, "kind": "script"})))


def test_cli_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rules.json"
    r = invoke_cli(capsys, "rules", "export", str(EDGE), "--out", str(out))
    assert r.code == 0, r.text
    assert out.read_bytes() == rules_json_bytes(load_rules(EDGE))
    bad = tmp_path / "bad.toml"
    bad.write_text(
        EDGE.read_text().replace("min = 0, min_inclusive = false", "min = -1, min_inclusive = false")
    )
    r = invoke_cli(capsys, "rules", "export", str(bad), "--out", str(tmp_path / "no.json"))
    assert r.code == 1 and "overlaps" in r.text and "Traceback" not in r.text
    assert not (tmp_path / "no.json").exists()


# -- JavaScript ----------------------------------------------------------------------------------------------------


def test_javascript_gives_the_same_results(vectors: dict[str, Any]) -> None:
    report = _node_check(VECTORS)
    assert report["format"] == vectors["rules_format"] == FORMAT
    assert report["checked"] == sum(len(s["cases"]) for s in vectors["sets"]) > 400
    assert report["failures"] == []


def test_the_javascript_check_fails_on_a_wrong_vector(vectors: dict[str, Any], tmp_path: Path) -> None:
    tampered = json.loads(json.dumps(vectors))
    default = tampered["sets"][0]["cases"]
    ok = [i for i, c in enumerate(default) if "traits" in c["expected"]]
    default[ok[3]]["expected"]["traits"]["mood"] = "not-a-mood"
    default[ok[5]]["expected"]["strength"] = "0.7000000000000001"  # one ulp off
    edge = tampered["sets"][1]["cases"]
    err = next(i for i, c in enumerate(edge) if "error" in c["expected"])
    edge[err]["expected"]["error"]["reason"] = (
        "nan" if edge[err]["expected"]["error"]["reason"] != "nan" else "missing"
    )
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(tampered))
    report = _node_check(path)
    assert [(f["set"], f["index"]) for f in report["failures"]] == [
        ("default", ok[3]),
        ("default", ok[5]),
        ("edge", err),
    ]


def test_javascript_refuses_an_unknown_format() -> None:
    script = (
        "import { evaluate, RulesFormatError } from './renderer/rules.js';"
        "try { evaluate({ format: 'chrysalis-rules/2' }, {}, { stage: 1, tokenId: 1 }); console.log('evaluated'); }"
        "catch (e) { console.log(e instanceof RulesFormatError ? e.message : 'other ' + e); }"
    )
    proc = _node("--input-type=module", "-e", script)
    assert proc.returncode == 0, proc.stderr
    assert 'the rules are "chrysalis-rules/2", not chrysalis-rules/1' in proc.stdout
    assert "chrysalis rules export" in proc.stdout
