"""The inputs stage's oracles through the real Agent on anvil: extra oracles declared in [oracles] (an HTTP JSON
source served by a local HTTP server, an eth_call view) become rule features, the guard's bounds screen them, and a
price feed younger than its change window degrades to the rules' default instead of failing the evolution."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.app import build_agent
from agent.errors import ConfigError
from agent.jobs import JobState
from agent.metrics import REGISTRY
from agent.pipeline import Agent
from agent.rules import DEFAULT_RULES
from agent.settings import Settings
from tests.support.agent_settings import Keystore, agent_settings
from tests.support.databases import database_url
from tests.support.devchain import CollectionChain
from tests.support.http_json import JsonServer, Reply


def _rules(path: Path) -> Path:
    """The default rules, with the element following the HTTP source's temperature and a new `hoard` trait
    following the eth_call oracle's balanceOf(holder)."""
    text = Path(DEFAULT_RULES).read_text()
    text = text.replace(
        "[features]\n",
        "[features]\n"
        '"weather.temp_c" = { type = "number", description = "air temperature at the source" }\n'
        '"held.value" = { type = "number", description = "tokens the holder has, by eth_call" }\n',
    )
    element = text.index("[traits.element]")
    end = text.index("[traits.aura]")
    text = (
        text[:element]
        + '[traits.element]\nkind = "bands"\nfeature = "weather.temp_c"\nbands = [\n'
        + '  { max = 0.0, value = "water" },\n  { min = 0.0, max = 30.0, value = "air" },\n'
        + '  { min = 30.0, value = "fire" },\n]\n\n'
        + '[traits.hoard]\nkind = "bands"\nfeature = "held.value"\ndefault = "unknown"\nbands = [\n'
        + '  { max = 5, value = "small" },\n  { min = 5, value = "great" },\n]\n\n'
        + text[end:]
    )
    path.write_text(text)
    return path


def _oracles(server: JsonServer, chain: CollectionChain, **guard: dict) -> dict:
    return {
        "http": [
            {
                "name": "weather",
                "url": server.url + "/now",
                "fields": {"temp_c": '$.readings[?(@.kind == "air")].celsius'},
                "retries": 0,
            }
        ],
        "eth_call": [
            {
                "name": "held",
                "address": chain.collection.address,
                "signature": "balanceOf(address)(uint256)",
                "args": ["$holder"],
            }
        ],
        "guard": guard,
    }


def _with(settings: Settings, rules: Path, oracles: dict) -> Settings:
    """``settings`` with other rules and an [oracles] section, validated like a config file's."""
    data = settings.model_dump()
    data["agent"]["rules"] = rules
    data["oracles"] = oracles
    return Settings.model_validate(data)


def _only_job(agent: Agent):
    (job,) = agent.store.list_jobs()
    return job


def test_declared_oracles_become_rule_features_end_to_end(
    chain: CollectionChain, settings: Settings, tmp_path: Path
) -> None:
    with JsonServer() as server:
        server.default = Reply(
            body={"readings": [{"kind": "sea", "celsius": 12}, {"kind": "air", "celsius": 31.5}]}
        )
        configured = _with(settings, _rules(tmp_path / "rules.toml"), _oracles(server, chain))
        rid = chain.request(1)
        with build_agent(configured) as agent:
            agent.run_until_idle(timeout_s=120)
            job = _only_job(agent)
    assert job.state is JobState.CONFIRMED, job.reason
    assert not chain.is_pending(rid)
    inputs = job.inputs
    values = inputs.snapshot.values()
    assert values["weather.temp_c"] == 31.5 and values["held.value"] == 8
    assert values["guard.skipped"] == []
    assert inputs.rules.traits["element"] == "fire" and inputs.rules.traits["hoard"] == "great"
    assert server.requests and server.requests[0][0] == "/now"


def test_guard_bounds_from_settings_leave_an_absurd_reading_out(
    chain: CollectionChain, settings: Settings, tmp_path: Path
) -> None:
    skipped = REGISTRY.get_sample_value(
        "chrysalis_oracle_skipped_total", {"oracle": "held", "reason": "absurd"}
    )
    with JsonServer() as server:
        server.default = Reply(body={"readings": [{"kind": "air", "celsius": 12}]})
        guard = {"held.value": {"max": 3}}
        guarded = _with(settings, _rules(tmp_path / "rules.toml"), _oracles(server, chain, **guard))
        chain.request(1)
        with build_agent(guarded) as agent:
            agent.run_until_idle(timeout_s=120)
            job = _only_job(agent)
    assert job.state is JobState.CONFIRMED, job.reason
    inputs = job.inputs
    values = inputs.snapshot.values()
    assert "held.value" not in values and values["guard.skipped"] == ["held.value"]
    assert inputs.rules.traits["hoard"] == "unknown"  # the rule's default
    assert inputs.rules.traits["element"] == "air"
    after = REGISTRY.get_sample_value(
        "chrysalis_oracle_skipped_total", {"oracle": "held", "reason": "absurd"}
    )
    assert after == (skipped or 0) + 1


def test_a_feed_younger_than_the_window_leaves_only_the_change_out(
    chain: CollectionChain,
    keystore: Keystore,
    tmp_path: Path,
    tiny_lm: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The feed has about an hour of history; the default 24 h window reaches before its first round."""
    key = {"oracle": "price", "reason": "missing"}
    skipped = REGISTRY.get_sample_value("chrysalis_oracle_skipped_total", key) or 0
    with database_url("sqlite", tmp_path) as url:
        settings = agent_settings(chain, keystore, tmp_path / "data", url, tiny_lm, price_window_s=86_400)
        rid = chain.request(1)
        with caplog.at_level(logging.WARNING, logger="oracles.guard"), build_agent(settings) as agent:
            agent.run_until_idle(timeout_s=120)
            job = _only_job(agent)
    assert job.state is JobState.CONFIRMED, job.reason
    assert not chain.is_pending(rid)
    inputs = job.inputs
    snapshot = inputs.snapshot
    values = snapshot.values()
    assert values["price.answer"] == 3150.0 and "price.change_pct" not in values  # the answer itself is kept
    assert values["guard.skipped"] == ["price.change_pct"]
    marker = next(r for r in snapshot.readings if r.name == "guard.skipped")
    assert marker.meta["skipped"]["price"]["reason"] == "missing"
    assert "history starts at round 1" in marker.meta["skipped"]["price"]["detail"]
    assert inputs.rules.traits["mood"] == "serene"  # the default rules' calm mood without a price change
    assert REGISTRY.get_sample_value("chrysalis_oracle_skipped_total", key) == skipped + 1
    assert any(
        "oracle 'price'" in r.getMessage() and "skipped (missing)" in r.getMessage() for r in caplog.records
    )


def test_extra_oracles_are_checked_when_the_agent_starts(
    chain: CollectionChain, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = _rules(tmp_path / "rules.toml")
    monkeypatch.delenv("CHRYSALIS_TEST_NO_KEY", raising=False)
    with JsonServer() as server:
        good = _oracles(server, chain)
        http, call = good["http"][0], good["eth_call"][0]
        cases = [
            ({"http": [{**http, "name": "price"}]}, "are taken"),
            ({"http": [{**http, "fields": {"t": "$.a["}}]}, "cannot be read"),
            ({"eth_call": [{**call, "signature": "balanceOf(address)"}]}, "has no return types"),
            ({"http": [{**http, "headers_env": {"X-Key": "CHRYSALIS_TEST_NO_KEY"}}]},
             "CHRYSALIS_TEST_NO_KEY, which is not set"),
            ({"guard": {"held.value": {"min": 5, "max": 1}}}, "is above max"),
        ]  # fmt: skip
        for change, problem in cases:
            with pytest.raises(ConfigError, match=problem) as err:
                build_agent(_with(settings, rules, {**good, **change}))
            assert err.value.hint
