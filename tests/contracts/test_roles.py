"""Role boundaries: what the agent, a stranger and the role holders may and may not do."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.contracts.support import (
    AGENT_ROLE,
    DEFAULT_ADMIN_ROLE,
    EVOLUTION_FEE,
    MINTER_ROLE,
    PAUSER_ROLE,
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
    ("refreshMetadata", ([1], [DIGEST], DIGEST), AGENT_ROLE),
]


def _args(args: tuple, caller: Any, agent: Any) -> list:
    return [caller if a == "self" else agent if a == "agent" else a for a in args]


@pytest.mark.parametrize(("fn", "args", "role"), GUARDED, ids=[g[0] for g in GUARDED])
def test_guarded_functions_reject_strangers(
    collection: Any, agent: Any, alice: Any, stranger: Any, fn: str, args: tuple, role: bytes
) -> None:
    callers = [stranger, alice] + ([] if role == AGENT_ROLE else [agent])
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


def test_admin_needs_agent_role_to_write_metadata(collection: Any, admin: Any, alice: Any) -> None:
    with unauthorized(collection, admin, AGENT_ROLE):
        collection.refreshMetadata([1], [DIGEST], DIGEST, sender=admin)
    collection.grantRole(AGENT_ROLE, admin, sender=admin)
    collection.refreshMetadata([1], [DIGEST], DIGEST, sender=admin)


def test_revoked_agent_is_locked_out(collection: Any, admin: Any, agent: Any) -> None:
    collection.revokeRole(AGENT_ROLE, agent, sender=admin)
    assert collection.hasRole(AGENT_ROLE, agent) is False
    with unauthorized(collection, agent, AGENT_ROLE):
        collection.refreshMetadata([1], [DIGEST], DIGEST, sender=agent)


def test_agent_may_renounce_but_not_grant(collection: Any, admin: Any, agent: Any, stranger: Any) -> None:
    with unauthorized(collection, agent, DEFAULT_ADMIN_ROLE):
        collection.grantRole(AGENT_ROLE, stranger, sender=agent)
    with reverts(collection.AccessControlBadConfirmation):
        collection.renounceRole(AGENT_ROLE, stranger, sender=agent)
    collection.renounceRole(AGENT_ROLE, agent, sender=agent)
    assert collection.hasRole(AGENT_ROLE, agent) is False


def test_admin_transfer(collection: Any, admin: Any, carol: Any) -> None:
    collection.grantRole(DEFAULT_ADMIN_ROLE, carol, sender=admin)
    collection.renounceRole(DEFAULT_ADMIN_ROLE, admin, sender=admin)
    with unauthorized(collection, admin, DEFAULT_ADMIN_ROLE):
        collection.setMintPrice(1, sender=admin)
    collection.setMintPrice(1, sender=carol)
    assert collection.mintPrice() == 1
    # The old admin keeps the operational roles it was given until they are revoked.
    assert collection.hasRole(MINTER_ROLE, admin) and collection.hasRole(PAUSER_ROLE, admin)
    collection.revokeRole(MINTER_ROLE, admin, sender=carol)
    with unauthorized(collection, admin, MINTER_ROLE):
        collection.airdrop(admin, 1, sender=admin)
