"""Deployments shared by the contract tests.

The suite runs twice (scripts/test.sh): on Ape's in-process EVM (``--network ethereum:local:test``) and on anvil
(``--network ethereum:local:foundry``). Deployments are session-scoped; Ape's chain isolation snapshots the
chain around every test, so each test starts from the state its fixtures built and nothing leaks between tests.

The shared ``collection`` starts as:

- admin (``accounts[0]``) holds DEFAULT_ADMIN_ROLE, MINTER_ROLE and PAUSER_ROLE; ``agent`` holds AGENT_ROLE and
  REFRESHER_ROLE;
- model 1 (``WEIGHTS_V1``) is registered and active;
- alice minted tokens 1, 2, 3 and bob minted 4, 5 (so ``withdrawableFees() == 5 * MINT_PRICE``).

The treasury account never sends a transaction, so its balance changes are exactly what the contract pays it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contracts.support import (
    AGENT_ROLE,
    BASE_URI,
    EVOLUTION_FEE,
    MANIFEST_V1,
    MAX_PER_WALLET,
    MAX_SUPPLY,
    MINT_PRICE,
    NAME,
    REFRESHER_ROLE,
    REQUEST_TIMEOUT,
    ROYALTY_BPS,
    SYMBOL,
    WEIGHTS_V1,
)

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On ``--network ethereum:local:foundry`` Ape starts anvil for the session: every contract test is ``anvil``."""
    if "foundry" not in (config.getoption("network", default=None) or ""):
        return
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.anvil)


@pytest.fixture(scope="session", autouse=True)
def _no_revert_traces() -> Iterator[None]:
    """Ape prints the call trace of every revert; on anvil fetching and rendering it costs ~0.3 s per expected
    revert (most of this suite's time). The tests check reverts themselves, so the printout is switched off."""
    from ape_ethereum.trace import Trace

    patch = pytest.MonkeyPatch()
    patch.setattr(Trace, "show", lambda self, *args, **kwargs: None)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def admin(accounts: Any) -> Any:
    return accounts[0]


@pytest.fixture(scope="session")
def treasury(accounts: Any) -> Any:
    return accounts[1]


@pytest.fixture(scope="session")
def agent(accounts: Any) -> Any:
    return accounts[2]


@pytest.fixture(scope="session")
def alice(accounts: Any) -> Any:
    return accounts[3]


@pytest.fixture(scope="session")
def bob(accounts: Any) -> Any:
    return accounts[4]


@pytest.fixture(scope="session")
def carol(accounts: Any) -> Any:
    return accounts[5]


@pytest.fixture(scope="session")
def stranger(accounts: Any) -> Any:
    return accounts[6]


@pytest.fixture(scope="session")
def is_anvil(chain: Any) -> bool:
    return chain.provider.name == "foundry"


@pytest.fixture(scope="session")
def deploy(project: Any, admin: Any, treasury: Any) -> Any:
    """Deploys a LivingCollection; keyword arguments override the defaults."""

    def _deploy(sender: Any = None, **overrides: Any) -> Any:
        args = {
            "name_": NAME,
            "symbol_": SYMBOL,
            "admin": admin,
            "treasury_": treasury,
            "maxSupply_": MAX_SUPPLY,
            "mintPrice_": MINT_PRICE,
            "maxPerWallet_": MAX_PER_WALLET,
            "evolutionFee_": EVOLUTION_FEE,
            "requestTimeout_": REQUEST_TIMEOUT,
            "baseURI_": BASE_URI,
            "royaltyBps": ROYALTY_BPS,
        }
        unknown = set(overrides) - set(args)
        assert not unknown, f"unknown constructor arguments {unknown}"
        args.update(overrides)
        return (sender or admin).deploy(project.LivingCollection, *args.values())

    return _deploy


@pytest.fixture(scope="session")
def bare(deploy: Any) -> Any:
    """A fresh collection: no tokens, no agent, no model."""
    return deploy()


@pytest.fixture(scope="session")
def collection(deploy: Any, admin: Any, agent: Any, alice: Any, bob: Any) -> Any:
    """The shared collection described in the module docstring."""
    c = deploy()
    c.grantRole(AGENT_ROLE, agent, sender=admin)
    c.grantRole(REFRESHER_ROLE, agent, sender=admin)
    c.registerModel(WEIGHTS_V1, MANIFEST_V1, sender=admin)
    c.setActiveModel(1, sender=admin)
    c.mint(3, sender=alice, value=3 * MINT_PRICE)
    c.mint(2, sender=bob, value=2 * MINT_PRICE)
    return c


@pytest.fixture(scope="session")
def feed(project: Any, admin: Any) -> Any:
    """A DevPriceFeed: 8 decimals, ETH / USD, round 1 = 3000.00000000."""
    return admin.deploy(project.DevPriceFeed, 8, "ETH / USD", 3000 * 10**8)


@pytest.fixture(scope="session")
def harness(project: Any, admin: Any) -> Any:
    """CIDv1Harness: the contract's CIDv1 library as external pure functions."""
    return admin.deploy(project.CIDv1Harness)


@pytest.fixture
def request_evolution(collection: Any) -> Any:
    """Opens a request for ``token_id`` as ``sender`` with the exact fee; returns (requestId, receipt)."""

    def _request(token_id: int, sender: Any, value: int = EVOLUTION_FEE) -> tuple[int, Any]:
        receipt = collection.requestEvolution(token_id, sender=sender, value=value)
        (log,) = [x for x in receipt.events if x.event_name == "EvolutionRequested"]
        return log.requestId, receipt

    return _request
