"""The oracle tests' chain: the shared anvil (tests/support/fixtures.py), started before :data:`T0`, with nothing
deployed; each test deploys the DevPriceFeed and LivingCollection it reads (tests/support/devchain.py).

One anvil per module; every test runs between ``evm_snapshot`` and ``evm_revert`` so tests stay independent.
Block times are set explicitly (``evm_setNextBlockTimestamp``) so ages and windows are exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.devchain import DevChain

T0 = 1_900_000_000
"""A fixed start time, well after anvil's genesis, so every test knows its block timestamps."""


@pytest.fixture(scope="module")
def anvil_args() -> tuple[str, ...]:
    return ("--timestamp", str(T0 - 10_000))


@pytest.fixture(scope="module")
def module_chain(anvil_url: str) -> DevChain:
    return DevChain(anvil_url)


@pytest.fixture
def chain(module_chain: DevChain) -> Iterator[DevChain]:
    """The module's chain, reverted after the test. Each test starts at a block at time >= T0."""
    with module_chain.reverting():
        module_chain.mine(at=max(T0, module_chain.w3.eth.get_block("latest")["timestamp"] + 1))
        yield module_chain
