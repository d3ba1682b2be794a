"""Fixtures for the ops commands: a real anvil with LivingCollection deployed from the compiled artifact and a
deployment record on disk, settings pointed at them through ``CHRYSALIS_*`` env vars, and a helper that runs
``chrysalis`` in-process the way a user sees it (stdout, stderr, exit code).

Accounts are anvil's development accounts (the same mnemonic as ``chrysalis evolve --from N``): 0 admin,
1 holds tokens 1-4, 2 holds tokens 5-6, 9 is the agent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agent.deployment import COLLECTION, PRICE_FEED, ContractRecord, Deployment, write_abi
from agent.ops.accounts import dev_address
from tests.support.cli import invoke_cli

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / ".build" / "__local__.json"
ANVIL = shutil.which("anvil", path=str(ROOT / ".venv" / "bin")) or shutil.which("anvil")
FEE = 5 * 10**14
MINT_PRICE = 10**15
FEED_START = 3_000 * 10**8
ADMIN, HOLDER, OTHER, AGENT = 0, 1, 2, 9

#: The anvil process behind each URL this module started (tests pause it to make the node stall).
ANVIL_PROCESSES: dict[str, subprocess.Popen[bytes]] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Devchain:
    """anvil with the collection deployed and its record written to ``record``."""

    url: str
    w3: Web3
    collection: Contract
    deployment: Deployment
    record: Path
    feed: Contract

    def transact(self, fn: Any, sender: str, value: int = 0) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(
            fn.transact({"from": sender, "value": value}), timeout=10
        )
        assert receipt["status"] == 1, receipt
        return receipt

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        assert "error" not in reply, reply
        return reply["result"]


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """A fresh anvil (chain 31337, the default dev mnemonic) on a free port, with a throwaway HOME."""
    if ANVIL is None:
        pytest.skip("anvil is not installed: run `make setup`")
    port = _free_port()
    home = tempfile.mkdtemp(prefix="chrysalis-ops-anvil-")
    proc = subprocess.Popen(
        [ANVIL, "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": home},
    )
    url = f"http://127.0.0.1:{port}"
    ANVIL_PROCESSES[url] = proc
    try:
        w3 = Web3(Web3.HTTPProvider(url))
        deadline = time.monotonic() + 15
        while True:
            try:
                _ = w3.eth.block_number
                break
            except Exception:  # noqa: BLE001 - not up yet (connection refused) until the deadline
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"anvil did not start on port {port}") from None
                time.sleep(0.05)
        yield url
    finally:
        ANVIL_PROCESSES.pop(url, None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def deploy(url: str, out_dir: Path, *, model_digest: bytes = b"\x11" * 32) -> Devchain:
    """Deploy LivingCollection (admin: dev 0, agent: dev 9, an active model) and mint; write the record."""
    if not MANIFEST.is_file():
        pytest.skip(f"{MANIFEST} is missing: run `make setup` to compile the contracts")
    types = json.loads(MANIFEST.read_text())["contractTypes"]
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    admin, holder, other, agent = (dev_address(i) for i in (ADMIN, HOLDER, OTHER, AGENT))

    def deploy_one(name: str, *args: Any) -> tuple[Contract, Any]:
        art = types[name]
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["deploymentBytecode"]["bytecode"])
        receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact({"from": admin}))
        return w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"]), receipt

    feed, first = deploy_one(PRICE_FEED, 8, "ETH / USD (dev)", FEED_START)
    collection, _ = deploy_one(
        COLLECTION, "Chrysalis", "CHRYS", admin, admin, 1_000, MINT_PRICE, 0, FEE, 3_600, "", 500
    )
    block = w3.eth.get_block(first["blockNumber"])
    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        network="ethereum:local:foundry",
        contracts={
            name: ContractRecord(address=c.address, abi=write_abi(name, c.abi, out_dir))
            for name, c in ((PRICE_FEED, feed), (COLLECTION, collection))
        },
        deploy_block=first["blockNumber"],
        deploy_block_hash="0x" + bytes(block["hash"]).hex(),
        deployer=admin,
        agent=agent,
    )
    record = out_dir / "local.json"
    deployment.save(record)
    chain = Devchain(url, w3, collection, deployment, record, feed)
    f = collection.functions
    chain.transact(f.registerModel(model_digest, "ipfs://model"), admin)
    chain.transact(f.setActiveModel(1), admin)
    chain.transact(f.grantRole(f.AGENT_ROLE().call(), agent), admin)
    chain.transact(f.grantRole(f.REFRESHER_ROLE().call(), agent), admin)
    chain.transact(f.mint(4), holder, 4 * MINT_PRICE)
    chain.transact(f.mint(2), other, 2 * MINT_PRICE)
    chain.rpc("evm_increaseTime", 4_000)  # an hour of price history: +5 % since the feed was deployed
    chain.transact(feed.functions.updateAnswer(FEED_START * 105 // 100), admin)
    return chain


@pytest.fixture(scope="module")
def module_devchain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Devchain:
    return deploy(anvil_url, tmp_path_factory.mktemp("deployments"))


@pytest.fixture
def devchain(module_devchain: Devchain) -> Iterator[Devchain]:
    """The module's chain, reverted to its deployed state after the test."""
    snapshot = module_devchain.rpc("evm_snapshot")
    try:
        yield module_devchain
    finally:
        module_devchain.rpc("evm_setAutomine", True)
        module_devchain.rpc("anvil_dropAllTransactions")
        module_devchain.rpc("evm_revert", snapshot)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory with no chrysalis.toml and no CHRYSALIS_* settings from the environment."""
    for name in list(os.environ):
        if name.startswith("CHRYSALIS_") and name != "CHRYSALIS_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def configured(workdir: Path, devchain: Devchain, monkeypatch: pytest.MonkeyPatch) -> Devchain:
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
