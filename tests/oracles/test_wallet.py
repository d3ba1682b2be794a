"""WalletOracle against the real LivingCollection on anvil."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from oracles.base import ReadContext
from oracles.errors import HolderMismatchError, OracleUnavailableError
from oracles.wallet import WalletOracle
from tests.oracles.conftest import T0
from tests.support.devchain import DevChain

pytestmark = pytest.mark.anvil

ETH = 10**18


@dataclass
class Story:
    """Token 1 goes A -> B -> A; A also holds tokens 2 and 3."""

    collection: object
    a: str
    b: str
    minted: int  # block of the airdrop to A (T0 + 100)
    to_b: int  # block of A -> B (T0 + 1000)
    b_holds: int  # empty block at T0 + 1500
    back_to_a: int  # block of B -> A (T0 + 2000)
    a_holds: int  # empty block at T0 + 2600


@pytest.fixture
def story(chain: DevChain) -> Story:
    a, b = chain.accounts[1], chain.accounts[2]
    c = chain.deploy_collection()
    chain.at_time(T0 + 100)
    minted = chain.transact(c.functions.airdrop(a, 3))["blockNumber"]
    chain.at_time(T0 + 1_000)
    to_b = chain.transact(c.functions.transferFrom(a, b, 1), sender=a)["blockNumber"]
    b_holds = chain.mine(at=T0 + 1_500)
    chain.at_time(T0 + 2_000)
    back = chain.transact(c.functions.transferFrom(b, a, 1), sender=b)["blockNumber"]
    a_holds = chain.mine(at=T0 + 2_600)
    return Story(c, a, b, minted, to_b, b_holds, back, a_holds)


def read(chain: DevChain, story: Story, block: int, holder: str | None, token_id: int = 1, **kw) -> dict:
    ctx = ReadContext.at(
        chain.w3, block, token_id=token_id, collection=story.collection.address, holder=holder
    )
    return {r.name: r for r in WalletOracle(**kw).read(ctx)}


def test_holding_time_counts_from_the_latest_transfer_in(chain: DevChain, story: Story) -> None:
    b = read(chain, story, story.b_holds, story.b)
    assert b["wallet.held_seconds"].value == 500
    assert b["wallet.held_blocks"].value == story.b_holds - story.to_b
    assert b["wallet.held_seconds"].meta["acquired_block"] == story.to_b
    assert b["wallet.held_seconds"].meta["from"] == story.a

    # A sent it away and got it back: the clock restarted at the return, not at the airdrop.
    a = read(chain, story, story.a_holds, story.a)
    assert a["wallet.held_seconds"].value == 600
    assert a["wallet.held_seconds"].meta["from"] == story.b
    assert a["wallet.held_seconds"].meta["acquired_at"] == T0 + 2_000

    # Token 2 never moved: held since the airdrop.
    a2 = read(chain, story, story.a_holds, story.a, token_id=2)
    assert a2["wallet.held_seconds"].value == 2_500
    assert a2["wallet.held_blocks"].value == story.a_holds - story.minted
    assert a2["wallet.held_seconds"].meta["from"] == "0x" + "00" * 20


def test_values_at_an_earlier_block_differ_from_latest(chain: DevChain, story: Story) -> None:
    early = read(chain, story, story.b_holds, story.b)
    late_block = chain.w3.eth.block_number
    assert late_block > story.b_holds
    # Reading the earlier block again after B moved the token on still sees B as the holder, for 500 s.
    again = read(chain, story, story.b_holds, story.b)
    assert {k: r.value for k, r in again.items()} == {k: r.value for k, r in early.items()}
    assert early["wallet.tokens_held"].value == 1
    assert read(chain, story, late_block, story.a)["wallet.tokens_held"].value == 3
    assert read(chain, story, story.b_holds, story.a, token_id=2)["wallet.tokens_held"].value == 2


def test_balance_and_nonce_are_read_at_the_block(chain: DevChain, story: Story) -> None:
    before = chain.mine(at=T0 + 3_000)
    chain.at_time(T0 + 3_100)
    chain.pay(story.a, chain.accounts[5], 2 * ETH)
    after = chain.mine(at=T0 + 3_200)
    old = read(chain, story, before, story.a)
    new = read(chain, story, after, story.a)
    assert new["wallet.tx_count"].value == old["wallet.tx_count"].value + 1
    spent = old["wallet.balance_eth"].meta["wei"] - new["wallet.balance_eth"].meta["wei"]
    assert 2 * ETH < spent < 2 * ETH + 10**16  # the transfer plus its gas
    assert old["wallet.balance_eth"].value == old["wallet.balance_eth"].meta["wei"] / ETH
    assert chain.w3.eth.get_balance(story.a) == new["wallet.balance_eth"].meta["wei"]


def test_context_looks_up_the_holder_at_the_block(chain: DevChain, story: Story) -> None:
    ctx = ReadContext.at(chain.w3, story.b_holds, token_id=1, collection=story.collection.address)
    assert ctx.holder == story.b
    ctx = ReadContext.at(chain.w3, story.a_holds, token_id=1, collection=story.collection.address)
    assert ctx.holder == story.a
    header = chain.w3.eth.get_block(story.a_holds)
    assert (ctx.block_hash, ctx.block_timestamp, ctx.chain_id) == (
        "0x" + header["hash"].hex(),
        T0 + 2_600,
        31337,
    )
    with pytest.raises(ValueError, match="pin"):
        ReadContext.at(chain.w3, "latest", token_id=1, collection=story.collection.address)


def test_holder_who_does_not_hold_the_token_is_refused(chain: DevChain, story: Story) -> None:
    with pytest.raises(HolderMismatchError) as info:
        read(chain, story, story.b_holds, story.a)
    assert info.value.owner == story.b
    with pytest.raises(HolderMismatchError, match="does not exist") as info:
        read(chain, story, story.b_holds, story.a, token_id=99)
    assert info.value.owner is None


def test_small_log_chunks_search_backwards(chain: DevChain, story: Story) -> None:
    got = read(chain, story, story.a_holds, story.a, token_id=2, log_chunk=1)
    assert got["wallet.held_seconds"].meta["acquired_block"] == story.minted


def test_from_block_after_the_transfer_names_the_fix(chain: DevChain, story: Story) -> None:
    with pytest.raises(OracleUnavailableError, match="from_block"):
        read(chain, story, story.a_holds, story.a, token_id=2, from_block=story.minted + 1)


def test_provides_and_sources(chain: DevChain, story: Story) -> None:
    got = read(chain, story, story.b_holds, story.b, name="holder")
    assert tuple(got) == WalletOracle(name="holder").provides
    assert {r.block_number for r in got.values()} == {story.b_holds}
    assert got["holder.balance_eth"].source == f"eth_getBalance:{story.b}"


def test_unknown_block_is_retryable(chain: DevChain, story: Story) -> None:
    with pytest.raises(OracleUnavailableError, match="not known") as info:
        ReadContext.at(chain.w3, 10**9, token_id=1, collection=story.collection.address)
    assert info.value.retryable
