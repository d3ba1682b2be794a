"""ERC-165 interface ids, construction, ERC-2981 royalties and the plain ERC-721 surface."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import keccak

from tests.contracts.support import (
    ADMIN_TRANSFER_DELAY,
    AGENT_ROLE,
    BASE_URI,
    DEFAULT_ADMIN_ROLE,
    EVOLUTION_FEE,
    MAX_PER_WALLET,
    MAX_REQUEST_TIMEOUT,
    MAX_ROYALTY_BPS,
    MAX_SUPPLY,
    MINT_PRICE,
    MINTER_ROLE,
    NAME,
    PAUSER_ROLE,
    REFRESHER_ROLE,
    REQUEST_TIMEOUT,
    ROYALTY_BPS,
    SYMBOL,
    UINT96_MAX,
    ZERO_ADDRESS,
    ev,
    events,
    norm,
    reverts,
    unauthorized,
)

SUPPORTED = {
    "ERC-165": "0x01ffc9a7",
    "ERC-721": "0x80ac58cd",
    "ERC-721 Metadata": "0x5b5e139f",
    "ERC-2981": "0x2a55205a",
    "ERC-4906": "0x49064906",
    "ERC-7007": "0x702c55a6",
    "ERC-7572": "0xe8a3d485",
    "IAccessControl": "0x7965db0b",
    "IAccessControlDefaultAdminRules": "0x31498786",
}


@pytest.mark.parametrize("interface_id", SUPPORTED.values(), ids=SUPPORTED.keys())
def test_supports_interface(collection: Any, interface_id: str) -> None:
    assert collection.supportsInterface(interface_id) is True


def test_supports_its_own_interface(project: Any, collection: Any) -> None:
    """ILivingCollection's ERC-165 id: the XOR of its functions' selectors, computed here from its ABI."""
    interface_id = 0
    for abi in project.ILivingCollection.contract_type.abi:
        if abi.type == "function":
            interface_id ^= int.from_bytes(keccak(text=abi.selector)[:4], "big")
    assert interface_id != 0
    assert collection.supportsInterface(interface_id.to_bytes(4, "big")) is True


@pytest.mark.parametrize(
    "interface_id",
    [
        "0xdeadbeef",
        "0xffffffff",
        "0x00000000",
        "0x780e9d63",
    ],  # random, ERC-165's invalid id, zero, Enumerable
)
def test_does_not_support_other_interfaces(collection: Any, interface_id: str) -> None:
    assert collection.supportsInterface(interface_id) is False


def test_constructor_sets_configuration(bare: Any, admin: Any, treasury: Any) -> None:
    assert bare.name() == NAME
    assert bare.symbol() == SYMBOL
    assert bare.maxSupply() == MAX_SUPPLY
    assert bare.mintPrice() == MINT_PRICE
    assert bare.maxPerWallet() == MAX_PER_WALLET
    assert bare.evolutionFee() == EVOLUTION_FEE
    assert bare.requestTimeout() == REQUEST_TIMEOUT
    assert bare.baseURI() == BASE_URI
    assert norm(bare.treasury()) == norm(treasury)
    assert bare.totalMinted() == bare.totalSupply() == 0
    assert bare.escrowedFees() == bare.withdrawableFees() == 0
    assert bare.activeModel() == bare.modelCount() == 0
    assert bare.paused() is False
    assert bare.MAX_REQUEST_TIMEOUT() == MAX_REQUEST_TIMEOUT
    assert bare.MAX_ROYALTY_BPS() == MAX_ROYALTY_BPS
    assert bare.owedRefunds() == 0
    assert bare.revealCommitment() == (b"\x00" * 32, 0, b"\x00" * 32)
    # Royalty: ROYALTY_BPS of the sale price, paid to the treasury.
    assert norm(bare.royaltyInfo(1, 10_000)) == norm((treasury, ROYALTY_BPS))


def test_constructor_roles(bare: Any, admin: Any, treasury: Any) -> None:
    assert bare.AGENT_ROLE() == AGENT_ROLE
    assert bare.MINTER_ROLE() == MINTER_ROLE
    assert bare.PAUSER_ROLE() == PAUSER_ROLE
    assert bare.REFRESHER_ROLE() == REFRESHER_ROLE
    assert bare.DEFAULT_ADMIN_ROLE() == DEFAULT_ADMIN_ROLE
    for role in (DEFAULT_ADMIN_ROLE, MINTER_ROLE, PAUSER_ROLE):
        assert bare.hasRole(role, admin) is True
        assert bare.hasRole(role, treasury) is False
    # One default admin, moved in two steps after a delay.
    assert norm(bare.defaultAdmin()) == norm(admin) and norm(bare.owner()) == norm(admin)
    assert bare.defaultAdminDelay() == bare.ADMIN_TRANSFER_DELAY() == ADMIN_TRANSFER_DELAY
    # The agent and refresher roles are granted separately, never by construction.
    assert bare.hasRole(AGENT_ROLE, admin) is False
    assert bare.hasRole(REFRESHER_ROLE, admin) is False


def test_constructor_events(bare: Any, treasury: Any) -> None:
    """Every setting is announced from the start, the base URI and the royalty included."""
    receipt = bare.creation_metadata.receipt
    configuration = [e for e in events(receipt, bare) if not e[0].startswith("Role")]
    assert configuration == [
        ev("TreasuryChanged", previousTreasury=ZERO_ADDRESS, treasury=treasury),
        ev("MintPriceChanged", previousPrice=0, price=MINT_PRICE),
        ev("EvolutionFeeChanged", previousFee=0, fee=EVOLUTION_FEE),
        ev("RequestTimeoutChanged", previousTimeout=0, timeout=REQUEST_TIMEOUT),
        ev("BaseURIChanged", baseURI=BASE_URI),
        ev("DefaultRoyaltyChanged", receiver=treasury, feeNumerator=ROYALTY_BPS),
    ]


@pytest.mark.parametrize("field", ["admin", "treasury_"])
def test_constructor_rejects_zero_addresses(deploy: Any, project: Any, field: str) -> None:
    with reverts(project.LivingCollection.LivingCollectionZeroAddress):
        deploy(**{field: ZERO_ADDRESS})


@pytest.mark.parametrize("field", ["mintPrice_", "evolutionFee_"])
def test_constructor_rejects_fees_over_96_bits(deploy: Any, project: Any, field: str) -> None:
    with reverts(project.LivingCollection.LivingCollectionInvalidFee, fee=UINT96_MAX + 1):
        deploy(**{field: UINT96_MAX + 1})


def test_constructor_rejects_long_timeout(deploy: Any, project: Any) -> None:
    with reverts(project.LivingCollection.LivingCollectionInvalidTimeout, timeout=MAX_REQUEST_TIMEOUT + 1):
        deploy(requestTimeout_=MAX_REQUEST_TIMEOUT + 1)


@pytest.mark.parametrize("bps", [MAX_ROYALTY_BPS + 1, 10_000, 10_001])
def test_constructor_rejects_royalty_over_the_cap(deploy: Any, project: Any, bps: int) -> None:
    with reverts(
        project.LivingCollection.LivingCollectionRoyaltyTooHigh, feeNumerator=bps, max=MAX_ROYALTY_BPS
    ):
        deploy(royaltyBps=bps)


def test_constructor_accepts_limits(deploy: Any, treasury: Any) -> None:
    c = deploy(
        mintPrice_=UINT96_MAX,
        evolutionFee_=UINT96_MAX,
        requestTimeout_=MAX_REQUEST_TIMEOUT,
        royaltyBps=MAX_ROYALTY_BPS,
    )
    assert c.mintPrice() == c.evolutionFee() == UINT96_MAX
    assert c.requestTimeout() == MAX_REQUEST_TIMEOUT
    assert norm(c.royaltyInfo(7, 12_345)) == norm((treasury, 1_234))


def test_set_default_royalty(collection: Any, admin: Any, carol: Any) -> None:
    receipt = collection.setDefaultRoyalty(carol, 250, sender=admin)
    assert events(receipt, collection) == [ev("DefaultRoyaltyChanged", receiver=carol, feeNumerator=250)]
    # 2.5% of 1 ether, rounded down for odd prices.
    assert norm(collection.royaltyInfo(3, 10**18)) == norm((carol, 25 * 10**15))
    assert norm(collection.royaltyInfo(3, 39)) == norm((carol, 0))


def test_set_default_royalty_rejections(collection: Any, admin: Any, carol: Any, stranger: Any) -> None:
    for bps in (MAX_ROYALTY_BPS + 1, 10_000):
        with reverts(collection.LivingCollectionRoyaltyTooHigh, feeNumerator=bps, max=MAX_ROYALTY_BPS):
            collection.setDefaultRoyalty(carol, bps, sender=admin)
    collection.setDefaultRoyalty(carol, MAX_ROYALTY_BPS, sender=admin)
    assert norm(collection.royaltyInfo(1, 10_000)) == norm((carol, MAX_ROYALTY_BPS))
    with reverts(collection.ERC2981InvalidDefaultRoyaltyReceiver, receiver=ZERO_ADDRESS):
        collection.setDefaultRoyalty(ZERO_ADDRESS, 100, sender=admin)
    with unauthorized(collection, stranger, DEFAULT_ADMIN_ROLE):
        collection.setDefaultRoyalty(stranger, 100, sender=stranger)


def test_erc721_transfers_and_approvals(collection: Any, alice: Any, bob: Any, carol: Any) -> None:
    assert norm(collection.ownerOf(1)) == norm(alice)
    assert collection.balanceOf(alice) == 3
    receipt = collection.transferFrom(alice, carol, 1, sender=alice)
    assert events(receipt, collection) == [ev("Transfer", **{"from": alice, "to": carol, "tokenId": 1})]
    assert norm(collection.ownerOf(1)) == norm(carol)
    assert collection.balanceOf(alice) == 2
    # An approved address may move the token, once.
    collection.approve(bob, 2, sender=alice)
    collection.safeTransferFrom(alice, bob, 2, sender=bob)
    assert norm(collection.ownerOf(2)) == norm(bob)
    with reverts(collection.ERC721InsufficientApproval, operator=bob, tokenId=3):
        collection.transferFrom(alice, bob, 3, sender=bob)
    # Unknown tokens keep OpenZeppelin's error in the inherited ERC-721 entry points.
    with reverts(collection.ERC721NonexistentToken, tokenId=99):
        collection.ownerOf(99)
    assert collection.exists(3) is True
    assert collection.exists(99) is False
    assert collection.exists(0) is False
