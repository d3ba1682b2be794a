"""EthCallOracle against the real DevPriceFeed and LivingCollection on anvil."""

from __future__ import annotations

import socket

import pytest
from web3 import Web3

from agent.errors import ConfigError
from oracles.base import ReadContext
from oracles.errors import OracleCallError, OracleUnavailableError
from oracles.eth_call import EthCallOracle
from oracles.snapshot import take_snapshot
from tests.oracles.conftest import T0
from tests.support.devchain import DevChain

pytestmark = pytest.mark.anvil

ROUND = "latestRoundData()(uint80 roundId,int256 answer,uint256 startedAt,uint256 updatedAt,uint80 answeredInRound)"


@pytest.fixture
def collection(chain: DevChain):
    c = chain.deploy_collection()
    chain.transact(c.functions.airdrop(chain.accounts[1], 3))
    return c


def values(readings) -> dict:
    return {r.name: r.value for r in readings}


def test_feed_round_at_the_context_block_with_scaling(chain: DevChain, collection) -> None:
    feed = chain.deploy_feed(3_000 * 10**8, at=T0 + 10)
    before = chain.w3.eth.block_number
    chain.at_time(T0 + 20)
    chain.transact(feed.functions.updateAnswer(3_123_45678900))
    after = chain.w3.eth.block_number
    oracle = EthCallOracle(feed.address, ROUND, name="feed", decimals={"answer": 8})
    assert oracle.provides == (
        "feed.roundId",
        "feed.answer",
        "feed.startedAt",
        "feed.updatedAt",
        "feed.answeredInRound",
    )

    old = oracle.read(ReadContext.at(chain.w3, before, token_id=1, collection=collection.address))
    new = oracle.read(ReadContext.at(chain.w3, after, token_id=1, collection=collection.address))
    assert values(old) == {
        "feed.roundId": 1,
        "feed.answer": 3000.0,
        "feed.startedAt": T0 + 10,
        "feed.updatedAt": T0 + 10,
        "feed.answeredInRound": 1,
    }
    assert values(new)["feed.answer"] == 3123.456789 and values(new)["feed.roundId"] == 2
    answer = next(r for r in new if r.name == "feed.answer")
    assert answer.meta == {"signature": ROUND, "raw": 3_123_45678900, "decimals": 8}
    assert answer.block_number == after and answer.source == f"eth_call:{feed.address}.latestRoundData"


def test_collection_views_with_context_placeholders(chain: DevChain, collection) -> None:
    holder = chain.accounts[1]
    block = chain.w3.eth.block_number
    ctx = ReadContext.at(chain.w3, block, token_id=2, collection=collection.address)
    assert ctx.holder == holder
    oracles = [
        EthCallOracle(collection.address, "balanceOf(address)(uint256)", ["$holder"], name="held"),
        EthCallOracle(collection.address, "ownerOf(uint256)(address)", ["$token_id"], name="owner"),
        EthCallOracle(collection.address, "name()(string)", name="coll"),
        EthCallOracle(
            collection.address, "supportsInterface(bytes4)(bool)", [bytes.fromhex("49064906")], name="erc4906"
        ),
        EthCallOracle(
            collection.address, "pendingRequestOf(uint256)(uint256,address,uint256,uint256)", [2], name="req"
        ),
    ]
    got = {}
    for o in oracles:
        got.update(values(o.read(ctx)))
    assert got == {
        "held.value": 3,
        "owner.value": holder,  # checksummed
        "coll.value": "Chrysalis",
        "erc4906.value": True,
        "req.out0": 0,
        "req.out1": "0x0000000000000000000000000000000000000000",
        "req.out2": 0,
        "req.out3": 0,
    }
    # they are ordinary oracles: a snapshot bundles them, pinned to the block
    snapshot = take_snapshot(oracles[:2], ctx)
    assert snapshot.values()["held.value"] == 3 and snapshot.block_hash == ctx.block_hash


def test_reverts_and_empty_returns_are_call_errors(chain: DevChain, collection) -> None:
    ctx = ReadContext.at(chain.w3, chain.w3.eth.block_number, token_id=1, collection=collection.address)
    with pytest.raises(OracleCallError, match=r"ownerOf\(999\) on .* failed") as e:
        EthCallOracle(collection.address, "ownerOf(uint256)(address)", [999], name="o").read(ctx)
    assert not e.value.retryable and e.value.oracle == "o"
    nobody = Web3.to_checksum_address("0x" + "44" * 20)
    with pytest.raises(OracleCallError, match="returned no data") as e:
        EthCallOracle(nobody, "totalSupply()(uint256)").read(ctx)
    assert "no contract" in (e.value.hint or "")
    with pytest.raises(OracleCallError, match="does not decode as"):
        EthCallOracle(collection.address, "maxSupply()(string)").read(ctx)


def test_an_unreachable_node_is_retryable(collection, chain: DevChain) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = ReadContext(
        web3=Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 2})),
        chain_id=31337,
        block_number=1,
        block_hash="0x" + "11" * 32,
        block_timestamp=T0,
        token_id=1,
        holder=chain.admin,
        collection=collection.address,
    )
    with pytest.raises(OracleUnavailableError) as e:
        EthCallOracle(collection.address, "maxSupply()(uint256)").read(ctx)
    assert e.value.retryable


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("0x12", "f()(uint256)"), {}, "is not an address"),
        (("0x" + "44" * 20, "balanceOf(address)"), {}, "has no return types"),
        (
            ("0x" + "44" * 20, "balanceOf(address)(uint256)"),
            {},
            r"takes 1 argument\(s\) \(address\), 0 given",
        ),
        (("0x" + "44" * 20, "balanceOf(address)(uint256)", ["$owner"]), {}, "unknown placeholder '\\$owner'"),
        (("0x" + "44" * 20, "ownerOf(uint256)(address)", [-1]), {}, "is not a valid uint256"),
        (("0x" + "44" * 20, "f()(uint256,uint256)"), {"outputs": ["a"]}, "returns 2"),
        (("0x" + "44" * 20, "f()(uint256 a,uint256 a)"), {}, "not distinct"),
        (("0x" + "44" * 20, "f()(address)"), {"decimals": 8}, "not an integer"),
        (("0x" + "44" * 20, "f()(uint256,uint256)"), {"decimals": 8}, "single output"),
        (("0x" + "44" * 20, "f()(uint256 x)"), {"decimals": {"y": 2}}, "not an output"),
    ],
)
def test_bad_configuration_is_refused_up_front(args, kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        EthCallOracle(*args, **kwargs)
