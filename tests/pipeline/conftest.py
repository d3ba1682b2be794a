"""The pipeline tests run the real agent on the shared chain (tests/support/fixtures.py): a real anvil with the
real LivingCollection and DevPriceFeed, the deployment record, an encrypted agent keystore.

One anvil per module; every test runs between ``evm_snapshot`` and ``evm_revert`` with its own data directory
and database (SQLite by default; ``backend`` parametrises PostgreSQL too). Images come from the shipped sprite
model; lore from the tiny random-weight causal LM (tests/support/models.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import Settings
from tests.support.agent_settings import Keystore, agent_settings
from tests.support.devchain import CollectionChain


@pytest.fixture
def settings(
    chain: CollectionChain, keystore: Keystore, tmp_path: Path, tiny_lm: Path, db_url: str
) -> Settings:
    return agent_settings(chain, keystore, tmp_path / "data", db_url, tiny_lm)
