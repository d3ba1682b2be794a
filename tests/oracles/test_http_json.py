"""HttpJsonOracle against a real local HTTP server started by the test (stdlib ThreadingHTTPServer)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from agent.errors import ConfigError
from oracles.base import ReadContext
from oracles.errors import OracleUnavailableError
from oracles.guard import AbsurdOracleDataError, MissingOracleDataError
from oracles.http_json import HttpJsonOracle, HttpOracleError, extract, parse_path
from tests.support.http_json import JsonServer, Reply

T_BLOCK = 1_900_000_000


@pytest.fixture
def server() -> Iterator[JsonServer]:
    with JsonServer() as s:
        yield s


def ctx(block: int = 100, timestamp: int = T_BLOCK) -> ReadContext:
    """A context for sources that ignore the chain (HTTP): no node is needed."""
    return ReadContext(
        web3=None,  # type: ignore[arg-type]
        chain_id=31337,
        block_number=block,
        block_hash="0x" + "11" * 32,
        block_timestamp=timestamp,
        token_id=1,
        holder="0x" + "22" * 20,
        collection="0x" + "33" * 20,
    )


class FakeTime:
    """A controllable monotonic clock and a sleep that only records (tests never wait for real)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


PRICE = {
    "ethereum": {"usd": 3012.5, "usd_24h_change": "-2.25", "last_updated_at": T_BLOCK - 30},
    "volume": 123456789,
    "pairs": [{"name": "eth/usd", "rate": 3012.5}, {"name": "eth/eur", "rate": "2790.1"}],
    "odd key": {"a.b": 7},
}


def oracle(server: JsonServer, fake: FakeTime | None = None, **kwargs) -> HttpJsonOracle:
    fake = fake or FakeTime()
    args = {
        "fields": {"usd": "$.ethereum.usd", "change": "ethereum.usd_24h_change", "volume": "$.volume"},
        "name": "cg",
        "timestamp_path": "$.ethereum.last_updated_at",
        "clock": fake.clock,
        "sleep": fake.sleep,
        "backoff_s": 0.5,
    }
    args.update(kwargs)
    return HttpJsonOracle(server.url + "/price?ids=ethereum", **args)


def test_reads_numbers_and_timestamp_stamped_with_the_block(server: JsonServer) -> None:
    server.default = Reply(body=PRICE)
    o = oracle(server, headers={"X-Api-Key": "k"})
    readings = o.read(ctx(block=123))
    assert o.provides == ("cg.usd", "cg.change", "cg.volume", "cg.updated_at")
    assert {r.name: r.value for r in readings} == {
        "cg.usd": 3012.5,
        "cg.change": -2.25,  # a numeric string becomes a float
        "cg.volume": 123456789,  # an integer stays an exact int
        "cg.updated_at": T_BLOCK - 30,
    }
    for r in readings:
        assert r.block_number == 123 and r.source == f"http:{server.url}/price?ids=ethereum"
        assert abs(r.meta["fetched_at"] - time.time()) < 60 and r.meta["path"]
    assert server.requests[0][0] == "/price?ids=ethereum" and server.requests[0][1]["X-Api-Key"] == "k"


def test_paths_reach_into_lists_and_odd_keys(server: JsonServer) -> None:
    server.default = Reply(body=PRICE)
    o = oracle(
        server,
        fields={"usd": "$.pairs[0].rate", "eur": "$.pairs[1]['rate']", "odd": '$["odd key"]["a.b"]'},
        timestamp_path=None,
    )
    assert {r.name: r.value for r in o.read(ctx())} == {"cg.usd": 3012.5, "cg.eur": 2790.1, "cg.odd": 7}


def test_iso_timestamps(server: JsonServer) -> None:
    server.default = Reply(body={"v": 1, "at": "2030-03-17T17:46:40Z"})
    o = oracle(server, fields={"v": "$.v"}, timestamp_path="$.at")
    assert {r.name: r.value for r in o.read(ctx())}["cg.updated_at"] == T_BLOCK


def test_cached_for_the_ttl_then_fetched_again(server: JsonServer) -> None:
    server.default = Reply(body=PRICE)
    fake = FakeTime()
    o = oracle(server, fake, cache_ttl_s=30)
    first = o.read(ctx(block=1))
    fake.now += 29
    second = o.read(ctx(block=2))
    assert len(server.requests) == 1 and o.fetches == 1
    assert [r.value for r in first] == [r.value for r in second] and second[0].block_number == 2
    assert first[0].meta["fetched_at"] == second[0].meta["fetched_at"]
    fake.now += 2
    server.default = Reply(body={**PRICE, "volume": 5})
    assert {r.name: r.value for r in o.read(ctx())}["cg.volume"] == 5
    assert len(server.requests) == 2
    uncached = oracle(server, cache_ttl_s=0)
    uncached.read(ctx())
    uncached.read(ctx())
    assert len(server.requests) == 4


def test_transient_failures_are_retried_with_backoff(server: JsonServer) -> None:
    server.script = [Reply(503, "busy"), Reply(502, "bad gateway"), Reply(body=PRICE)]
    fake = FakeTime()
    o = oracle(server, fake, retries=2, backoff_s=0.5)
    assert {r.name: r.value for r in o.read(ctx())}["cg.usd"] == 3012.5
    assert len(server.requests) == 3 and fake.slept == [0.5, 1.0]


def test_429_honours_retry_after(server: JsonServer) -> None:
    server.script = [Reply(429, "slow down", {"Retry-After": "3"}), Reply(body=PRICE)]
    fake = FakeTime()
    oracle(server, fake, retries=1, backoff_s=0.1).read(ctx())
    assert fake.slept == [3.0]


def test_gives_up_as_retryable_when_the_source_stays_down(server: JsonServer) -> None:
    server.default = Reply(500, "down")
    fake = FakeTime()
    o = oracle(server, fake, retries=2)
    with pytest.raises(OracleUnavailableError, match=r"failed 3 times \(last: HTTP 500\)") as e:
        o.read(ctx(block=9))
    assert e.value.retryable and e.value.block_number == 9 and len(server.requests) == 3


def test_unreachable_host_and_timeouts_are_retryable(server: JsonServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    o = HttpJsonOracle(f"http://127.0.0.1:{closed}/x", {"v": "$.v"}, retries=1, sleep=lambda s: None)
    with pytest.raises(OracleUnavailableError, match="ConnectError"):
        o.read(ctx())
    server.default = Reply(body={"v": 1}, delay_s=1.0)
    slow = oracle(server, fields={"v": "$.v"}, timestamp_path=None, timeout_s=0.2, retries=0)
    with pytest.raises(OracleUnavailableError, match="timed out after 0.2 s"):
        slow.read(ctx())


def test_client_errors_are_permanent_and_not_retried(server: JsonServer) -> None:
    server.default = Reply(404, '{"error": "unknown coin"}')
    o = oracle(server, retries=3)
    with pytest.raises(HttpOracleError, match='answered HTTP 404: {"error": "unknown coin"}') as e:
        o.read(ctx())
    assert not e.value.retryable and e.value.status == 404 and len(server.requests) == 1
    assert "retrying will not help" in (e.value.hint or "")


def test_a_body_past_max_bytes_is_refused_without_being_read_whole(server: JsonServer) -> None:
    big = {"ethereum": {"usd": 1}, "padding": "x" * 200_000}
    server.default = Reply(body=big)
    o = oracle(server, fields={"usd": "$.ethereum.usd"}, timestamp_path=None, max_bytes=64 * 1024, retries=3)
    with pytest.raises(AbsurdOracleDataError, match="larger than 65536 bytes") as e:
        o.read(ctx())
    assert not e.value.retryable and len(server.requests) == 1
    assert "max_bytes" in (e.value.hint or "")
    roomy = oracle(server, fields={"usd": "$.ethereum.usd"}, timestamp_path=None, max_bytes=300_000)
    assert [r.value for r in roomy.read(ctx())] == [1]


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ("<html>maintenance</html>", AbsurdOracleDataError, "the body is not JSON"),
        (
            {"ethereum": {"eur": 1}},
            MissingOracleDataError,
            r"path \$.ethereum.usd is not in the document \(nothing at \$.ethereum.usd\)",
        ),
        ({"ethereum": None}, MissingOracleDataError, r"nothing at \$.ethereum.usd"),
        ({"ethereum": {"usd": None}}, MissingOracleDataError, "is null"),
        (
            {"ethereum": {"usd": "soon"}},
            AbsurdOracleDataError,
            "cg.usd = 'soon': path .* is not a finite number",
        ),
        ({"ethereum": {"usd": True}}, AbsurdOracleDataError, "is not a finite number"),
        ({"ethereum": {"usd": {"v": 1}}}, AbsurdOracleDataError, "is not a finite number"),
        ('{"ethereum": {"usd": NaN}}', AbsurdOracleDataError, "the body is not JSON"),
        ({"ethereum": {"usd": "Infinity"}}, AbsurdOracleDataError, "is not a finite number"),
    ],
)
def test_missing_and_absurd_values_raise_named_errors(server: JsonServer, body, error, match) -> None:
    server.default = Reply(body=body)
    o = oracle(server, fields={"usd": "$.ethereum.usd"}, timestamp_path=None)
    with pytest.raises(error, match=match) as e:
        o.read(ctx())
    assert not e.value.retryable and e.value.oracle == "cg"


def test_a_timestamp_that_is_no_time(server: JsonServer) -> None:
    server.default = Reply(body={"v": 1, "at": "yesterday"})
    with pytest.raises(AbsurdOracleDataError, match="neither unix seconds nor an ISO 8601 time"):
        oracle(server, fields={"v": "$.v"}, timestamp_path="$.at").read(ctx())


def test_path_syntax() -> None:
    doc = {"a": {"b": [10, 11, 12]}, "x y": [{"z": 1}], 'quote " inside': 2, "list": [{"id": "p", "v": 5}]}
    assert extract(doc, parse_path("$.a.b[2]")) == ([12], "")
    assert extract(doc, parse_path("a.b[0]")) == ([10], "")  # the leading $ is optional
    assert extract(doc, parse_path("$[\"x y\"][0]['z']")) == ([1], "")
    assert extract(doc, parse_path('$["quote \\" inside"]')) == ([2], "")
    assert extract(doc, parse_path('$.list[?(@.id == "p")].v')) == ([5], "")
    assert extract(doc, parse_path("$.a.b[*]")) == ([10, 11, 12], "")
    # Where the document ends: the shortest leading part of the path that selects nothing.
    assert extract({"a": []}, parse_path("$.a[0].b")) == ([], "$.a.[0]")
    assert extract({}, parse_path("$.a.b")) == ([], "$.a")
    for bad, problem in (
        ("", "is empty"),
        ("$", "whole document"),
        ("$.a[", "cannot be read"),
        ("$.a[?(@.b ==", "cannot be read"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_path(bad)
        assert problem in e.value.message
        assert "$.ethereum.usd" in (e.value.hint or "") or "inside it" in (e.value.hint or "")


def test_a_filter_picks_a_list_element_by_content_and_ambiguity_is_refused(server: JsonServer) -> None:
    server.default = Reply(
        body={"data": [{"symbol": "BTC", "price": "97000"}, {"symbol": "ETH", "price": "3012.5"}]}
    )
    o = oracle(server, fields={"eth": '$.data[?(@.symbol == "ETH")].price'}, timestamp_path=None)
    assert {r.name: r.value for r in o.read(ctx())} == {"cg.eth": 3012.5}
    server.default = Reply(body={"data": [{"symbol": "ETH", "price": "9"}, {"symbol": "BTC", "price": "1"}]})
    fresh = oracle(server, fields={"eth": '$.data[?(@.symbol == "ETH")].price'}, timestamp_path=None)
    assert {r.name: r.value for r in fresh.read(ctx())} == {"cg.eth": 9.0}  # the list reordered: still ETH
    every = oracle(server, fields={"p": "$.data[*].price"}, timestamp_path=None)
    with pytest.raises(AbsurdOracleDataError, match=r"selects 2 values, not one") as e:
        every.read(ctx())
    assert "filter" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"url": "ftp://x", "fields": {"v": "$.v"}}, "is not http"),
        ({"url": "http://x", "fields": {}}, "has no fields"),
        ({"url": "http://x", "fields": {"v": "$.v["}}, "cannot be read"),
        ({"url": "http://x", "fields": {"a-b": "$.v"}}, "field name 'a-b' is not usable"),
        ({"url": "http://x", "fields": {"updated_at": "$.v"}, "timestamp_path": "$.t"}, "updated_at"),
        ({"url": "http://x", "fields": {"v": "$.v"}, "timeout_s": 0}, "must be positive"),
    ],
)
def test_bad_configuration_is_refused_up_front(args, match) -> None:
    url = args.pop("url")
    fields = args.pop("fields")
    with pytest.raises(ConfigError, match=match):
        HttpJsonOracle(url, fields, **args)
