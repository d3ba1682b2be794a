"""Fixtures for the ops commands: the shared anvil (tests/support/fixtures.py) with the collection deployed through
the product's deploy path and its record on disk, settings pointed at them through ``CHRYSALIS_*`` env vars, and a
helper that runs ``chrysalis`` in-process the way a user sees it (stdout, stderr, exit code).

Accounts are anvil's development accounts (the same mnemonic as ``chrysalis evolve --from N``): 0 admin,
1 holds tokens 1-4, 2 holds tokens 5-6, 9 is the agent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.deployment import DeployParams
from agent.ops.accounts import dev_address
from tests.support.cli import invoke_cli
from tests.support.devchain import TEST_DEPLOY, CollectionChain, deploy_collection

ADMIN, HOLDER, OTHER, AGENT = 0, 1, 2, 9


def deploy(
    url: str, out_dir: Path, *, model_digest: str | None = TEST_DEPLOY.model_digest
) -> CollectionChain:
    """The collection (admin: dev 0, agent: dev 9, the model ``model_digest`` active), tokens minted, an hour of
    price history (+5 %), the record in ``out_dir``."""
    params = DeployParams.model_validate(
        {**TEST_DEPLOY.model_dump(), "agent": dev_address(AGENT), "model_digest": model_digest}
    )
    return deploy_collection(url, out_dir, params, mints={HOLDER: 4, OTHER: 2})


@pytest.fixture(scope="module")
def module_devchain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> CollectionChain:
    return deploy(anvil_url, tmp_path_factory.mktemp("deployments"))


@pytest.fixture
def devchain(module_devchain: CollectionChain) -> Iterator[CollectionChain]:
    """The module's chain, reverted to its deployed state after the test."""
    with module_devchain.reverting():
        yield module_devchain


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory with no chrysalis.toml and no CHRYSALIS_* settings from the environment."""
    for name in list(os.environ):
        if name.startswith("CHRYSALIS_") and name != "CHRYSALIS_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def configured(workdir: Path, devchain: CollectionChain, monkeypatch: pytest.MonkeyPatch) -> CollectionChain:
    """Settings (env vars) pointing at the devchain, its deployment record and a SQLite file in ``workdir``."""
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", devchain.url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(devchain.record))
    monkeypatch.setenv("CHRYSALIS_DATABASE__URL", f"sqlite:///{workdir / 'agent.db'}")
    monkeypatch.setenv("CHRYSALIS_SUBMIT__POLL_INTERVAL_S", "0.05")
    return devchain


@pytest.fixture
def chrysalis(capsys: pytest.CaptureFixture[str]) -> Any:
    """``chrysalis(*args)``: run the CLI in-process as ``chrysalis`` would, returning a :class:`CliResult`."""
    return lambda *args: invoke_cli(capsys, *args)
