"""The reading guard on anvil: stale, missing and absurd data is skipped (logged, counted) and never evolved on."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pytest

from agent.domain import OracleReading
from agent.errors import ConfigError
from agent.metrics import REGISTRY
from agent.rules.loader import load_rules
from oracles.base import Oracle, ReadContext
from oracles.chainlink import ChainlinkOracle
from oracles.errors import OracleUnavailableError
from oracles.eth_call import EthCallOracle
from oracles.guard import GUARD_READING, GuardRejectedError, OracleGuard, ReadingCheck
from oracles.http_json import HttpJsonOracle
from oracles.wallet import WalletOracle
from tests.oracles.conftest import T0
from tests.support.devchain import DevChain
from tests.support.http_json import JsonServer, Reply

pytestmark = pytest.mark.anvil

USD = 10**8


def skipped_count(oracle: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("chrysalis_oracle_skipped_total", {"oracle": oracle, "reason": reason})
        or 0.0
    )


@pytest.fixture
def collection(chain: DevChain):
    c = chain.deploy_collection()
    chain.transact(c.functions.airdrop(chain.accounts[1], 1))
    return c


@pytest.fixture
def server() -> Iterator[JsonServer]:
    with JsonServer() as s:
        yield s


def rising_feed(chain: DevChain):
    """3,000 at T0+10, 3,400 (+13.3 %) at T0+3,700: over a one-hour window the market looks fierce."""
    feed = chain.deploy_feed(3_000 * USD, at=T0 + 10)
    chain.at_time(T0 + 3_700)
    chain.transact(feed.functions.updateAnswer(3_400 * USD))
    return feed


def ctx_at(chain: DevChain, collection, timestamp: int) -> ReadContext:
    block = chain.mine(at=timestamp)
    return ReadContext.at(chain.w3, block, token_id=1, collection=collection.address)


def test_a_good_feed_drives_the_rules_but_an_absurd_one_never_does(
    chain: DevChain, collection, caplog
) -> None:
    feed = rising_feed(chain)
    ctx = ctx_at(chain, collection, T0 + 3_710)
    oracles = [WalletOracle(), ChainlinkOracle(feed.address, max_age_s=7_200, window_s=3_600)]
    rules = load_rules()

    good = OracleGuard([ReadingCheck("price.answer", min=100, max=100_000)]).snapshot(oracles, ctx)
    assert good.skipped == () and good.snapshot.values()[GUARD_READING] == []
    assert rules.evaluate(good.snapshot, stage=1, token_id=1).traits["mood"] == "fierce"  # +13.3 %

    before = skipped_count("price", "absurd")
    with caplog.at_level(logging.WARNING, logger="oracles.guard"):
        guarded = OracleGuard([ReadingCheck("price.answer", min=100, max=3_300)]).snapshot(oracles, ctx)
    values = guarded.snapshot.values()
    assert not any(name.startswith("price.") for name in values) and values["wallet.tokens_held"] == 1
    assert values[GUARD_READING] == [
        "price.age_s",
        "price.answer",
        "price.change_pct",
        "price.round_id",
        "price.updated_at",
    ]
    (skip,) = guarded.skipped
    assert (skip.oracle, skip.reason) == (
        "price",
        "absurd",
    ) and "3400.0 is above the maximum 3300" in skip.detail
    assert skipped_count("price", "absurd") == before + 1
    assert (
        f"oracle 'price' at block {ctx.block_number} skipped (absurd): price.answer: 3400.0 is above the maximum 3300; "
        "left out of the snapshot: price.answer, price.updated_at" in caplog.text
    )
    # the rules see no price: the mood falls back to its declared default instead of following garbage
    result = rules.evaluate(guarded.snapshot, stage=1, token_id=1)
    assert result.traits["mood"] == "serene" and result.facts["season"] == "an uncertain season"
    # and the snapshot records why, so the receipt's input hash covers the skip
    marker = next(r for r in guarded.snapshot.readings if r.name == GUARD_READING)
    assert marker.meta["skipped"]["price"]["reason"] == "absurd"


def test_a_feed_younger_than_its_window_keeps_its_answer_and_skips_only_the_change(
    chain: DevChain, collection, caplog
) -> None:
    feed = rising_feed(chain)  # first round at T0+10: a day's window reaches before it
    ctx = ctx_at(chain, collection, T0 + 3_710)
    oracles = [WalletOracle(), ChainlinkOracle(feed.address, max_age_s=7_200, window_s=86_400)]
    before = skipped_count("price", "missing")
    with caplog.at_level(logging.WARNING, logger="oracles.guard"):
        guarded = OracleGuard([ReadingCheck("price.answer", min=100, max=100_000)]).snapshot(oracles, ctx)
    values = guarded.snapshot.values()
    assert (
        values["price.answer"] == 3_400.0
        and values["price.round_id"] == 2
        and "price.change_pct" not in values
    )
    assert values[GUARD_READING] == ["price.change_pct"]
    (skip,) = guarded.skipped
    assert (skip.oracle, skip.reason, skip.readings) == ("price", "missing", ("price.change_pct",))
    assert "history starts at round 1" in skip.detail
    assert skipped_count("price", "missing") == before + 1
    assert "left out of the snapshot: price.change_pct" in caplog.text
    assert (
        load_rules().evaluate(guarded.snapshot, stage=1, token_id=1).traits["mood"] == "serene"
    )  # the default

    # The kept readings are screened like any other: an absurd answer still leaves the whole feed out.
    absurd = OracleGuard([ReadingCheck("price.answer", max=3_000)]).snapshot(oracles, ctx)
    assert not any(n.startswith("price.") for n in absurd.snapshot.values())
    assert absurd.skipped[0].reason == "absurd" and "price.change_pct" in absurd.skipped[0].readings
    # And an operator who would rather wait for the history marks the change required.
    with pytest.raises(GuardRejectedError, match="history starts at round 1"):
        OracleGuard([ReadingCheck("price.change_pct", required=True)]).snapshot(oracles, ctx)


def test_a_stale_feed_is_skipped(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(3_000 * USD, at=T0 + 10)
    ctx = ctx_at(chain, collection, T0 + 10 + 7_200)
    before = skipped_count("price", "stale")
    guarded = OracleGuard().snapshot(
        [WalletOracle(), ChainlinkOracle(feed.address, max_age_s=3_600, window_s=None)], ctx
    )
    (skip,) = guarded.skipped
    assert skip.reason == "stale" and "answer is stale: updated 7200 s before the block" in skip.detail
    assert skipped_count("price", "stale") == before + 1
    assert "wallet.held_blocks" in guarded.snapshot.values()


def test_http_data_stale_missing_or_from_the_future(chain: DevChain, collection, server: JsonServer) -> None:
    ctx = ctx_at(chain, collection, T0 + 100)
    guard = OracleGuard.from_mapping({"fx.updated_at": {"max_age_s": 600}, "fx.usd": {"min": 0}})
    fx = HttpJsonOracle(server.url, {"usd": "$.usd"}, name="fx", timestamp_path="$.at", cache_ttl_s=0)

    server.default = Reply(body={"usd": 3000, "at": T0 + 90})
    assert guard.snapshot([fx], ctx).snapshot.values()["fx.usd"] == 3000

    cases = [
        (
            {"usd": 3000, "at": T0 + 100 - 601},
            "stale",
            "fx.updated_at: updated 601 s before the block, the limit is 600 s",
        ),
        ({"usd": 3000, "at": T0 + 160}, "absurd", f"timestamp {T0 + 160} is 60 s after the block"),
        ({"at": T0 + 90}, "missing", "fx.usd: path $.usd is not in the document"),
        ({"usd": -5, "at": T0 + 90}, "absurd", "fx.usd: -5 is below the minimum 0"),
        ({"usd": "n/a", "at": T0 + 90}, "absurd", "is not a finite number"),
    ]
    for body, reason, detail in cases:
        server.default = Reply(body=body)
        before = skipped_count("fx", reason)
        guarded = guard.snapshot([fx], ctx)
        (skip,) = guarded.skipped
        assert (skip.reason, skip.readings) == (reason, ("fx.usd", "fx.updated_at")), skip
        assert detail in skip.detail
        assert "fx.usd" not in guarded.snapshot.values() and skipped_count("fx", reason) == before + 1


def test_a_required_reading_rejects_the_snapshot_so_the_evolution_waits(
    chain: DevChain, collection, server
) -> None:
    ctx = ctx_at(chain, collection, T0 + 100)
    server.default = Reply(body={"usd": 3000})
    guard = OracleGuard([ReadingCheck("fx.usd", max=1000, required=True)])
    with pytest.raises(
        GuardRejectedError, match=r"required oracle data at block \d+ was skipped: fx \(absurd\)"
    ) as e:
        guard.snapshot([HttpJsonOracle(server.url, {"usd": "$.usd"}, name="fx")], ctx)
    assert e.value.retryable and e.value.skipped[0].required


def test_an_unreachable_source_is_retried_not_skipped(
    chain: DevChain, collection, server: JsonServer
) -> None:
    ctx = ctx_at(chain, collection, T0 + 100)
    server.default = Reply(503, "down")
    before = sum(skipped_count("fx", r) for r in ("stale", "missing", "absurd", "failed"))
    fx = HttpJsonOracle(server.url, {"usd": "$.usd"}, name="fx", retries=1, sleep=lambda s: None)
    with pytest.raises(OracleUnavailableError):
        OracleGuard().snapshot([fx], ctx)
    assert sum(skipped_count("fx", r) for r in ("stale", "missing", "absurd", "failed")) == before


def test_eth_call_readings_get_bounds_too(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(1, at=T0 + 10)  # 0.00000001 USD: a broken feed
    ctx = ctx_at(chain, collection, T0 + 20)
    answer = EthCallOracle(feed.address, "latestAnswer()(int256)", name="raw", decimals=8)
    guard = OracleGuard([ReadingCheck("raw.value", min=1.0)])
    (skip,) = guard.snapshot([answer], ctx).skipped
    assert skip.reason == "absurd" and "1e-08 is below the minimum 1.0" in skip.detail


class Scripted(Oracle):
    """An oracle returning fixed values: the guard's universal checks need values no real source gives."""

    def __init__(self, values: dict[str, object], provides: tuple[str, ...] | None = None) -> None:
        self.values = values
        self._provides = provides or tuple(values)

    @property
    def name(self) -> str:
        return "x"

    @property
    def provides(self) -> tuple[str, ...]:
        return self._provides

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        return [OracleReading(k, v, "test", ctx.block_number) for k, v in self.values.items()]


@pytest.mark.parametrize(
    ("oracle", "reason", "detail"),
    [
        (Scripted({"x.a": math.nan}), "absurd", "x.a: nan is not a finite number"),
        (Scripted({"x.a": math.inf}), "absurd", "x.a: inf is not a finite number"),
        (Scripted({"x.a": None}), "missing", "x.a: no value (null)"),
        (Scripted({"x.a": 1}, provides=("x.a", "x.b")), "missing", "x.b was not returned"),
        (Scripted({"x.a": "high"}), "absurd", "x.a: 'high' is not a number"),
    ],
)
def test_universal_checks(chain: DevChain, collection, oracle, reason, detail) -> None:
    ctx = ctx_at(chain, collection, T0 + 100)
    readings, skip = OracleGuard([ReadingCheck("x.a", min=0)]).screen(oracle, ctx)
    assert readings == [] and skip is not None and (skip.reason, skip.detail) == (reason, detail)


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"p.a": {"minimum": 1}}, "guard.p.a.minimum is not a guard setting"),
        ({"p.a": {"min": 5, "max": 1}}, "min 5 is above max 1"),
        ({"p.a": {"max": "big"}}, "max = 'big' is not a finite number"),
        ({"p.a": {"max_age_s": -1}}, "max_age_s = -1"),
        ({"p.a": {"required": "yes"}}, "required = 'yes'"),
        ({"p.a": 5}, "guard.p.a is not a table"),
    ],
)
def test_guard_configuration_errors(mapping, match) -> None:
    with pytest.raises(ConfigError, match=match):
        OracleGuard.from_mapping(mapping)


def test_a_young_feed_warns_once_then_logs_its_skips_at_debug_until_it_passes(
    chain: DevChain, collection, caplog
) -> None:
    """A fresh local chain skips ``price.change_pct`` at every evolution for a window's length: one WARNING says
    so, the rest are DEBUG lines (still counted); once the oracle passes, the next skip warns again."""
    feed = rising_feed(chain)
    ctx = ctx_at(chain, collection, T0 + 3_710)
    young = [ChainlinkOracle(feed.address, max_age_s=7_200, window_s=86_400)]  # the window reaches before it
    guard = OracleGuard([ReadingCheck("price.answer", min=100, max=100_000)])
    before = skipped_count("price", "missing")
    with caplog.at_level(logging.DEBUG, logger="oracles.guard"):
        for _ in range(3):
            assert guard.snapshot(young, ctx).skipped
        skips = [r for r in caplog.records if "skipped (missing)" in r.getMessage()]
        assert [r.levelno for r in skips] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
        assert "later skips of 'price' for this reason are logged at DEBUG" in skips[0].getMessage()
        assert skipped_count("price", "missing") == before + 3  # every skip still counts

        caplog.clear()
        settled = [ChainlinkOracle(feed.address, max_age_s=7_200, window_s=3_600)]  # same name, passes whole
        assert guard.snapshot(settled, ctx).skipped == ()
        assert any(
            r.getMessage() == f"oracle 'price' passes again at block {ctx.block_number}"
            for r in caplog.records
        )
        assert guard.snapshot(young, ctx).skipped
        again = [r for r in caplog.records if "skipped (missing)" in r.getMessage()]
        assert [r.levelno for r in again] == [logging.WARNING]
