"""Public mint (exact price, per-wallet cap, supply cap) and the MINTER_ROLE airdrop."""

from __future__ import annotations

from typing import Any

from tests.contracts.support import (
    DEFAULT_ADMIN_ROLE,
    MAX_PER_WALLET,
    MINT_PRICE,
    MINTER_ROLE,
    UINT96_MAX,
    ZERO_ADDRESS,
    ev,
    events,
    gas_paid,
    norm,
    reverts,
    unauthorized,
)


def test_token_ids_start_at_one(bare: Any, alice: Any, bob: Any) -> None:
    receipt = bare.mint(2, sender=alice, value=2 * MINT_PRICE)
    assert events(receipt, bare) == [
        ev("Transfer", **{"from": ZERO_ADDRESS, "to": alice, "tokenId": 1}),
        ev("Transfer", **{"from": ZERO_ADDRESS, "to": alice, "tokenId": 2}),
    ]
    bare.mint(1, sender=bob, value=MINT_PRICE)
    assert norm([bare.ownerOf(i) for i in (1, 2, 3)]) == norm([alice, alice, bob])
    assert bare.exists(0) is False
    assert bare.totalMinted() == bare.totalSupply() == 3


def test_mint_pays_exact_price_into_withdrawable(collection: Any, carol: Any) -> None:
    before_contract = collection.balance
    before_carol = carol.balance
    withdrawable = collection.withdrawableFees()
    receipt = collection.mint(2, sender=carol, value=2 * MINT_PRICE)
    assert events(receipt, collection) == [
        ev("Transfer", **{"from": ZERO_ADDRESS, "to": carol, "tokenId": 6}),
        ev("Transfer", **{"from": ZERO_ADDRESS, "to": carol, "tokenId": 7}),
    ]
    assert carol.balance == before_carol - 2 * MINT_PRICE - gas_paid(receipt)
    assert collection.balance == before_contract + 2 * MINT_PRICE
    assert collection.withdrawableFees() == withdrawable + 2 * MINT_PRICE
    assert collection.escrowedFees() == 0
    assert collection.balanceOf(carol) == 2
    assert collection.mintedBy(carol) == 2
    assert collection.totalMinted() == collection.totalSupply() == 7


def test_mint_rejects_wrong_payment(collection: Any, carol: Any) -> None:
    for sent in (0, MINT_PRICE - 1, MINT_PRICE + 1, 2 * MINT_PRICE):
        with reverts(collection.LivingCollectionWrongPayment, sent=sent, required=MINT_PRICE):
            collection.mint(1, sender=carol, value=sent)
    with reverts(collection.LivingCollectionWrongPayment, sent=MINT_PRICE, required=3 * MINT_PRICE):
        collection.mint(3, sender=carol, value=MINT_PRICE)
    assert collection.totalMinted() == 5
    assert collection.mintedBy(carol) == 0


def test_mint_zero_quantity(collection: Any, carol: Any) -> None:
    with reverts(collection.LivingCollectionZeroQuantity):
        collection.mint(0, sender=carol, value=0)
    # With money attached, the price check speaks first: zero tokens cost zero.
    with reverts(collection.LivingCollectionWrongPayment, sent=MINT_PRICE, required=0):
        collection.mint(0, sender=carol, value=MINT_PRICE)


def test_per_wallet_cap(collection: Any, alice: Any) -> None:
    # alice minted 3 of MAX_PER_WALLET (5) in the fixture.
    assert collection.mintedBy(alice) == 3
    with reverts(collection.LivingCollectionWalletCapExceeded, wallet=alice, requested=3, remaining=2):
        collection.mint(3, sender=alice, value=3 * MINT_PRICE)
    collection.mint(2, sender=alice, value=2 * MINT_PRICE)
    assert collection.mintedBy(alice) == MAX_PER_WALLET
    with reverts(collection.LivingCollectionWalletCapExceeded, wallet=alice, requested=1, remaining=0):
        collection.mint(1, sender=alice, value=MINT_PRICE)


def test_cap_counts_mints_not_holdings(collection: Any, admin: Any, alice: Any, carol: Any) -> None:
    # Airdrops and transfers do not use up the cap; tokens given away do not give it back.
    collection.airdrop(carol, 3, sender=admin)
    assert collection.mintedBy(carol) == 0
    collection.mint(MAX_PER_WALLET, sender=carol, value=MAX_PER_WALLET * MINT_PRICE)
    for token_id in (1, 2, 3):
        collection.transferFrom(alice, carol, token_id, sender=alice)
    assert collection.mintedBy(alice) == 3
    collection.mint(2, sender=alice, value=2 * MINT_PRICE)
    assert collection.balanceOf(carol) == 3 + MAX_PER_WALLET + 3


def test_supply_cap_and_unlimited_wallet(deploy: Any, admin: Any, alice: Any, bob: Any) -> None:
    c = deploy(maxSupply_=3, maxPerWallet_=0)  # 0 = no per-wallet cap
    c.mint(2, sender=alice, value=2 * MINT_PRICE)
    with reverts(c.LivingCollectionSupplyExceeded, requested=2, remaining=1):
        c.mint(2, sender=bob, value=2 * MINT_PRICE)
    with reverts(c.LivingCollectionSupplyExceeded, requested=2, remaining=1):
        c.airdrop(bob, 2, sender=admin)
    c.mint(1, sender=alice, value=MINT_PRICE)
    assert c.mintedBy(alice) == 3
    with reverts(c.LivingCollectionSupplyExceeded, requested=1, remaining=0):
        c.mint(1, sender=bob, value=MINT_PRICE)
    with reverts(c.LivingCollectionSupplyExceeded, requested=1, remaining=0):
        c.airdrop(bob, 1, sender=admin)
    assert c.totalMinted() == 3


def test_burnt_ids_are_not_reused(collection: Any, alice: Any, carol: Any, request_evolution: Any) -> None:
    collection.fuse(1, 2, sender=alice, value=collection.evolutionFee())
    assert collection.totalSupply() == 4
    assert collection.totalMinted() == 5
    receipt = collection.mint(1, sender=carol, value=MINT_PRICE)
    assert events(receipt, collection) == [
        ev("Transfer", **{"from": ZERO_ADDRESS, "to": carol, "tokenId": 6})
    ]
    assert collection.totalSupply() == 5


def test_mint_free_when_price_is_zero(collection: Any, admin: Any, carol: Any) -> None:
    collection.setMintPrice(0, sender=admin)
    collection.mint(1, sender=carol, value=0)
    with reverts(collection.LivingCollectionWrongPayment, sent=1, required=0):
        collection.mint(1, sender=carol, value=1)


def test_airdrop(collection: Any, admin: Any, carol: Any) -> None:
    withdrawable = collection.withdrawableFees()
    receipt = collection.airdrop(carol, 3, sender=admin)
    assert [args["tokenId"] for _, args in events(receipt, collection)] == [6, 7, 8]
    assert collection.balanceOf(carol) == 3
    assert collection.withdrawableFees() == withdrawable  # free
    # The per-wallet cap does not apply to airdrops.
    collection.airdrop(carol, MAX_PER_WALLET + 1, sender=admin)
    assert collection.balanceOf(carol) == MAX_PER_WALLET + 4


def test_airdrop_rejections(collection: Any, admin: Any, carol: Any, agent: Any, stranger: Any) -> None:
    with reverts(collection.LivingCollectionZeroQuantity):
        collection.airdrop(carol, 0, sender=admin)
    with reverts(collection.ERC721InvalidReceiver, receiver=ZERO_ADDRESS):
        collection.airdrop(ZERO_ADDRESS, 1, sender=admin)
    # A contract that does not implement onERC721Received cannot receive (safe mint).
    with reverts(collection.ERC721InvalidReceiver, receiver=collection.address):
        collection.airdrop(collection.address, 1, sender=admin)
    for account in (agent, stranger, carol):
        with unauthorized(collection, account, MINTER_ROLE):
            collection.airdrop(account, 1, sender=account)
    assert collection.totalMinted() == 5


def test_minter_role_can_be_granted_and_revoked(collection: Any, admin: Any, carol: Any) -> None:
    collection.grantRole(MINTER_ROLE, carol, sender=admin)
    collection.airdrop(carol, 1, sender=carol)
    collection.revokeRole(MINTER_ROLE, carol, sender=admin)
    with unauthorized(collection, carol, MINTER_ROLE):
        collection.airdrop(carol, 1, sender=carol)


def test_set_mint_price(collection: Any, admin: Any, carol: Any, stranger: Any) -> None:
    new_price = 3 * MINT_PRICE
    receipt = collection.setMintPrice(new_price, sender=admin)
    assert events(receipt, collection) == [ev("MintPriceChanged", previousPrice=MINT_PRICE, price=new_price)]
    assert collection.mintPrice() == new_price
    with reverts(collection.LivingCollectionWrongPayment, sent=MINT_PRICE, required=new_price):
        collection.mint(1, sender=carol, value=MINT_PRICE)
    collection.mint(1, sender=carol, value=new_price)
    with reverts(collection.LivingCollectionInvalidFee, fee=UINT96_MAX + 1):
        collection.setMintPrice(UINT96_MAX + 1, sender=admin)
    collection.setMintPrice(UINT96_MAX, sender=admin)
    with unauthorized(collection, stranger, DEFAULT_ADMIN_ROLE):
        collection.setMintPrice(0, sender=stranger)
