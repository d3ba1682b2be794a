"""The suite's shared fixtures, a pytest plugin every package gets (tests/conftest.py names it in
``pytest_plugins``), so that no package imports another's conftest.

Chain (tests/support/devchain.py):

* ``anvil``: one anvil per module, started by :func:`agent.devnet.start_anvil` with ``anvil_args`` (none by
  default), stopped after the module; ``anvil_url`` is its URL.
* ``module_chain``: the module's :class:`~tests.support.devchain.CollectionChain`, as
  :func:`~tests.support.devchain.deploy_collection` makes it by default, with an agent key of its own.
* ``chain``: the module chain, reverted after each test (:meth:`~tests.support.devchain.DevChain.reverting`).
* ``keystore``: the module chain's agent key, encrypted, and its password file.

Models: ``tiny_lm``, the tiny lore model (tests/support/models.py), built once per session. Databases:
``backend`` (SQLite; parametrise it over :data:`tests.support.databases.BACKENDS` for PostgreSQL too) and
``db_url``, a fresh database on it.

A package changes one by defining a fixture of the same name in its conftest: ``anvil_args`` for another node,
``module_chain`` for another deployment (a bare :class:`~tests.support.devchain.DevChain`, say).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.devnet import AnvilNode, start_anvil
from tests.support.agent_settings import Keystore, write_keystore
from tests.support.databases import database_url
from tests.support.devchain import CollectionChain, DevChain, deploy_collection
from tests.support.models import build_tiny_lm


@pytest.fixture(scope="module")
def anvil_args() -> tuple[str, ...]:
    """Extra command-line arguments of the module's anvil."""
    return ()


@pytest.fixture(scope="module")
def anvil(anvil_args: tuple[str, ...]) -> Iterator[AnvilNode]:
    """A fresh anvil on a free port with a throwaway HOME (nothing left under ~/.foundry)."""
    with start_anvil(*anvil_args) as node:
        yield node


@pytest.fixture(scope="module")
def anvil_url(anvil: AnvilNode) -> str:
    return anvil.url


@pytest.fixture(scope="module")
def module_chain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> DevChain:
    """DevPriceFeed and LivingCollection with a model active, 8 tokens for each of two holders, an hour of price
    history (+5 %), an agent key of its own, and the record on disk."""
    out = tmp_path_factory.mktemp("deployments")
    return deploy_collection(anvil_url, out, agent_key=secrets.token_bytes(32))


@pytest.fixture
def chain(module_chain: DevChain) -> Iterator[DevChain]:
    """The module's chain, reverted after the test (automine back on, pool emptied, base fee restored)."""
    with module_chain.reverting():
        yield module_chain


@pytest.fixture(scope="module")
def keystore(module_chain: CollectionChain, tmp_path_factory: pytest.TempPathFactory) -> Keystore:
    """The module chain's agent key as an encrypted V3 keystore, and the file holding its password."""
    assert module_chain.agent_key is not None, "this module's agent has no key of its own"
    return write_keystore(tmp_path_factory.mktemp("keys"), module_chain.agent_key)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on ``backend``."""
    with database_url(backend, tmp_path) as url:
        yield url
