"""``chrysalis rules check``: the rules against the oracles the agent is configured with (A-M9, row 87)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.ops.rules_check import check_rules, provided_features
from agent.rules import DEFAULT_RULES, RulesConfigError
from agent.settings import load_settings
from tests.support.cli import invoke_cli

TYPO = "wallet.tx_cuont"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CHRYSALIS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def invoke(*args: str) -> tuple[int, str]:
        r = invoke_cli(capsys, *args)
        return r.code, r.text

    return invoke


def _typo_rules(path: Path) -> Path:
    """The shipped rules with one feature misspelt the same way where it is declared and where it is read."""
    text = DEFAULT_RULES.read_text().replace('"wallet.tx_count"', f'"{TYPO}"')
    assert text.count(TYPO) >= 2
    path.write_text(text)
    return path


def test_the_shipped_rules_pass(workdir: Path, run) -> None:  # type: ignore[no-untyped-def]
    code, text = run("rules", "check")
    assert code == 0, text
    assert "ok: rules file" in text and "provided by the configured oracles (price, wallet)" in text
    assert "assuming the deployment has a price feed" in text  # no deployment record here: said so


def test_a_consistent_feature_typo_fails_with_the_right_name(workdir: Path, run) -> None:  # type: ignore[no-untyped-def]
    code, text = run("rules", "check", str(_typo_rules(workdir / "typo.toml")))
    assert code == 1
    assert f"error: rules file {workdir / 'typo.toml'} has 1 problem" in text
    assert f'[features."{TYPO}"] is not provided by any configured oracle' in text
    assert "did you mean 'wallet.tx_count'?" in text
    assert "Traceback" not in text


def test_json_lists_every_problem(workdir: Path, run) -> None:  # type: ignore[no-untyped-def]
    bad = _typo_rules(workdir / "typo.toml")
    bad.write_text(bad.read_text().replace('feature = "price.change_pct"', 'feature = "price.chnage"'))
    code, text = run("rules", "check", str(bad), "--json")
    assert code == 1
    report = json.loads(text)
    assert report["ok"] is False
    rules = [p["rule"] for p in report["problems"]]
    assert f'[features."{TYPO}"]' in rules and "[traits.mood]" in rules
    assert all(p["fix"] for p in report["problems"])


def test_an_extra_oracle_provides_its_readings(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CHRYSALIS_ORACLES__ETH_CALL",
        json.dumps(
            [{"name": "held", "address": "0x" + "11" * 20, "signature": "balanceOf(address)(uint256)",
              "args": ["$holder"]}]
        ),
    )  # fmt: skip
    provided = provided_features(load_settings())
    assert provided.features["held.value"] == "held"
    rules = workdir / "held.toml"
    rules.write_text(
        DEFAULT_RULES.read_text().replace(
            "[features]\n", '[features]\n"held.valeu" = { type = "number", description = "typo" }\n'
        )
    )
    with pytest.raises(RulesConfigError, match="held.valeu"):
        check_rules(load_settings(), rules)
    rules.write_text(rules.read_text().replace("held.valeu", "held.value"))
    assert check_rules(load_settings(), rules).path == rules


def test_a_missing_file_is_a_clear_error(workdir: Path, run) -> None:  # type: ignore[no-untyped-def]
    code, text = run("rules", "check", "nothere.toml")
    assert code == 1
    assert "error: rules file nothere.toml does not exist" in text and "hint:" in text
