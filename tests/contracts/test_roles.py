"""Role boundaries: what the agent, a stranger and the role holders may and may not do."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.contracts.support import (
    ADMIN_TRANSFER_DELAY,
    AGENT_ROLE,
    DEFAULT_ADMIN_ROLE,
    EVOLUTION_FEE,
    MINTER_ROLE,
    PAUSER_ROLE,
    REFRESHER_ROLE,
    REQUEST_TIMEOUT,
    WEIGHTS_V2,
    digest_of,
    gas_paid,
    reverts,
    seed_of,
    unauthorized,
)

DIGEST = hashlib.sha256(b"x").digest()

# (function, arguments, role it needs); each is called by accounts lacking that role.
ADMIN_ONLY = [
    ("setMintPrice", (1,)),
    ("setEvolutionFee", (1,)),
    ("setRequestTimeout", (1,)),
    ("setTreasury", ("self",)),
    ("setBaseURI", ("x/",)),
    ("setDefaultRoyalty", ("self", 1)),
    ("registerModel", (WEIGHTS_V2, "m")),
    ("setActiveModel", (1,)),
    ("grantRole", (AGENT_ROLE, "self")),
    ("revokeRole", (AGENT_ROLE, "agent")),
]
GUARDED = [
    *[(fn, args, DEFAULT_ADMIN_ROLE) for fn, args in ADMIN_ONLY],
    ("airdrop", ("self", 1), MINTER_ROLE),
    ("pause", (), PAUSER_ROLE),
    ("fulfillEvolution", (1 << 32 | 1, DIGEST, DIGEST, DIGEST), AGENT_ROLE),
    ("fulfillEvolutions", ([], [], [], []), AGENT_ROLE),
    ("refreshMetadata", ([1], [DIGEST], DIGEST), REFRESHER_ROLE),
    ("commitReveal", (DIGEST, 10**6), DEFAULT_ADMIN_ROLE),
]


def _args(args: tuple, caller: Any, agent: Any) -> list:
    return [caller if a == "self" else agent if a == "agent" else a for a in args]


@pytest.mark.parametrize(("fn", "args", "role"), GUARDED, ids=[g[0] for g in GUARDED])
def test_guarded_functions_reject_strangers(
    collection: Any, agent: Any, alice: Any, stranger: Any, fn: str, args: tuple, role: bytes
) -> None:
    callers = [stranger, alice] + ([] if role in (AGENT_ROLE, REFRESHER_ROLE) else [agent])
    for caller in callers:
        with unauthorized(collection, caller, role):
            getattr(collection, fn)(*_args(args, caller, agent), sender=caller)


def test_agent_cannot_unpause(collection: Any, admin: Any, agent: Any) -> None:
    collection.pause(sender=admin)
    with unauthorized(collection, agent, PAUSER_ROLE):
        collection.unpause(sender=agent)


def test_agent_cannot_move_tokens(collection: Any, agent: Any, alice: Any) -> None:
    with reverts(collection.ERC721InsufficientApproval, operator=agent, tokenId=1):
        collection.transferFrom(alice, agent, 1, sender=agent)
    with reverts(collection.ERC721InsufficientApproval, operator=agent, tokenId=1):
        collection.safeTransferFrom(alice, agent, 1, sender=agent)
    with reverts(collection.ERC721InvalidApprover, approver=agent):
        collection.approve(agent, 1, sender=agent)
    with reverts(collection.LivingCollectionNotHolder, tokenId=1, caller=agent):
        collection.fuse(1, 2, sender=agent, value=EVOLUTION_FEE)


def test_agent_cannot_cancel_or_redirect_refunds(
    collection: Any, chain: Any, agent: Any, alice: Any, request_evolution: Any
) -> None:
    rid, receipt = request_evolution(1, alice)
    chain.pending_timestamp = receipt.timestamp + REQUEST_TIMEOUT
    with reverts(collection.LivingCollectionNotRequester, requestId=rid, caller=agent):
        collection.cancelEvolution(rid, sender=agent)
    # Fulfilling pays the agent nothing: the fee becomes withdrawable for the treasury.
    before = agent.balance
    r = collection.fulfillEvolution(rid, seed_of(collection, rid), digest_of(b"x"), DIGEST, sender=agent)
    assert agent.balance == before - gas_paid(r)


def test_admin_needs_refresher_role_to_refresh(collection: Any, admin: Any, alice: Any) -> None:
    with unauthorized(collection, admin, REFRESHER_ROLE):
        collection.refreshMetadata([1], [DIGEST], DIGEST, sender=admin)
    collection.grantRole(REFRESHER_ROLE, admin, sender=admin)
    collection.refreshMetadata([1], [DIGEST], DIGEST, sender=admin)


def test_fulfilment_and_refresh_roles_are_separate(
    collection: Any, admin: Any, agent: Any, carol: Any, alice: Any, request_evolution: Any
) -> None:
    """AGENT_ROLE alone may fulfil but not rewrite tokens at will; REFRESHER_ROLE alone may refresh, not fulfil."""
    collection.grantRole(REFRESHER_ROLE, carol, sender=admin)
    collection.revokeRole(REFRESHER_ROLE, agent, sender=admin)
    rid, _ = request_evolution(1, alice)
    with unauthorized(collection, agent, REFRESHER_ROLE):
        collection.refreshMetadata([2], [DIGEST], DIGEST, sender=agent)
    with unauthorized(collection, carol, AGENT_ROLE):
        collection.fulfillEvolution(rid, seed_of(collection, rid), DIGEST, DIGEST, sender=carol)
    collection.refreshMetadata([2], [DIGEST], DIGEST, sender=carol)
    collection.fulfillEvolution(rid, seed_of(collection, rid), DIGEST, DIGEST, sender=agent)
    assert collection.metadataDigestOf(1) == collection.metadataDigestOf(2) == DIGEST


def test_revoked_agent_is_locked_out(collection: Any, admin: Any, agent: Any) -> None:
    collection.revokeRole(AGENT_ROLE, agent, sender=admin)
    assert collection.hasRole(AGENT_ROLE, agent) is False
    with unauthorized(collection, agent, AGENT_ROLE):
        collection.fulfillEvolutions([], [], [], [], sender=agent)


def test_agent_may_renounce_but_not_grant(collection: Any, admin: Any, agent: Any, stranger: Any) -> None:
    with unauthorized(collection, agent, DEFAULT_ADMIN_ROLE):
        collection.grantRole(AGENT_ROLE, stranger, sender=agent)
    with reverts(collection.AccessControlBadConfirmation):
        collection.renounceRole(AGENT_ROLE, stranger, sender=agent)
    collection.renounceRole(AGENT_ROLE, agent, sender=agent)
    assert collection.hasRole(AGENT_ROLE, agent) is False


def test_admin_role_cannot_be_granted_in_one_step(collection: Any, admin: Any, carol: Any) -> None:
    with reverts(collection.AccessControlEnforcedDefaultAdminRules):
        collection.grantRole(DEFAULT_ADMIN_ROLE, carol, sender=admin)
    with reverts(collection.AccessControlEnforcedDefaultAdminRules):
        collection.revokeRole(DEFAULT_ADMIN_ROLE, admin, sender=admin)
    assert collection.defaultAdmin() == admin and not collection.hasRole(DEFAULT_ADMIN_ROLE, carol)
    assert collection.defaultAdminDelay() == ADMIN_TRANSFER_DELAY


def test_admin_transfer(collection: Any, chain: Any, admin: Any, carol: Any, stranger: Any) -> None:
    """Two steps: the admin begins, the new admin accepts once the delay has passed; until then the old admin rules
    and may cancel."""
    receipt = collection.beginDefaultAdminTransfer(carol, sender=admin)
    schedule = receipt.timestamp + ADMIN_TRANSFER_DELAY
    assert collection.pendingDefaultAdmin() == (carol, schedule)
    with reverts(collection.AccessControlInvalidDefaultAdmin, defaultAdmin=stranger):
        collection.acceptDefaultAdminTransfer(sender=stranger)
    with reverts(collection.AccessControlEnforcedDefaultAdminDelay, schedule=schedule):
        collection.acceptDefaultAdminTransfer(sender=carol)
    collection.setMintPrice(2, sender=admin)  # still the admin
    chain.pending_timestamp = schedule + 1
    collection.acceptDefaultAdminTransfer(sender=carol)
    assert collection.defaultAdmin() == carol
    with unauthorized(collection, admin, DEFAULT_ADMIN_ROLE):
        collection.setMintPrice(1, sender=admin)
    collection.setMintPrice(1, sender=carol)
    assert collection.mintPrice() == 1
    # The old admin keeps the operational roles it was given until they are revoked.
    assert collection.hasRole(MINTER_ROLE, admin) and collection.hasRole(PAUSER_ROLE, admin)
    collection.revokeRole(MINTER_ROLE, admin, sender=carol)
    with unauthorized(collection, admin, MINTER_ROLE):
        collection.airdrop(admin, 1, sender=admin)
