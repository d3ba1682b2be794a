"""A real anvil with the real LivingCollection and DevPriceFeed, a deployment record written with
agent.deployment, an encrypted agent keystore, and Settings that point the agent at all of it.

One anvil per module; every test runs between ``evm_snapshot`` and ``evm_revert`` with its own data
directory and database (SQLite by default; ``backend`` parametrises PostgreSQL too). Images come from the
shipped sprite model; lore from a tiny random-weight causal LM (tests/generate/conftest.py builds it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agent.deployment import ContractRecord, Deployment, write_abi
from agent.devnet import start_anvil
from agent.pipeline.request import EvolutionRequest
from agent.settings import Settings
from tests.generate.conftest import build_tiny_lm
from tests.jobs.dbs import database_url
from tests.support.chain import canonical_seed

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / ".build" / "__local__.json"
FEE = 5 * 10**14
TIMEOUT = 3_600
PASSWORD = "chrysalis-test-password"
FEED_START = 3_000 * 10**8
FEED_NOW = 3_150 * 10**8  # +5 % over the hour: mood "radiant"


def artifacts() -> dict[str, Any]:
    if not MANIFEST.is_file():
        pytest.fail(f"{MANIFEST} is missing: run `make setup` to compile the contracts", pytrace=False)
    return json.loads(MANIFEST.read_text())["contractTypes"]


@dataclass
class Chain:
    """anvil, the deployed contracts, and the moves the tests make as holders and admin."""

    url: str
    w3: Web3
    collection: Contract
    feed: Contract
    admin: str
    holders: list[str]
    agent_key: bytes
    deployment_path: Path

    @property
    def agent(self) -> str:
        return Account.from_key(self.agent_key).address

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def transact(self, fn: Any, sender: str, value: int = 0) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(
            fn.transact({"from": sender, "value": value}), timeout=20
        )
        assert receipt["status"] == 1, receipt
        return receipt

    def request(self, token_id: int, holder: int = 0) -> int:
        """``holders[holder]`` opens an evolution request for ``token_id``; returns its id."""
        receipt = self.transact(
            self.collection.functions.requestEvolution(token_id), self.holders[holder], FEE
        )
        (log,) = self.collection.events.EvolutionRequested().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"])

    def seed(self, request_id: int) -> bytes:
        """The seed a fulfilment of ``request_id`` must name (its latest ``EvolutionRequested`` log)."""
        return canonical_seed(self.collection, request_id)

    def fuse(self, keep: int, burn: int, holder: int = 0) -> int:
        receipt = self.transact(self.collection.functions.fuse(keep, burn), self.holders[holder], FEE)
        (log,) = self.collection.events.Fused().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"])

    def mine(self, n: int = 1) -> int:
        for _ in range(n):
            self.rpc("evm_mine")
        return self.w3.eth.block_number

    def automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", on)

    def evolved(self, request_id: int | None = None) -> list[Any]:
        """Every Evolved log (optionally for one request) on the canonical chain."""
        logs = self.collection.events.Evolved().get_logs(from_block=0)
        return [log for log in logs if request_id is None or int(log["args"]["requestId"]) == request_id]

    def agent_nonce(self) -> int:
        return self.w3.eth.get_transaction_count(self.agent)

    def is_pending(self, request_id: int) -> bool:
        return bool(self.collection.functions.isPending(request_id).call())


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """A fresh anvil on a free port with a throwaway HOME (anvil never writes under ~/.foundry)."""
    with start_anvil("--accounts", "5") as node:
        yield node.url


@pytest.fixture(scope="module")
def module_chain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Deploy DevPriceFeed and LivingCollection, activate a model, grant the agent, mint 8 tokens to each of
    two holders, give the feed an hour of history, and write the deployment record."""
    types = artifacts()
    w3 = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30}))
    admin, *holders = (Web3.to_checksum_address(a) for a in w3.eth.accounts[:3])

    def deploy(name: str, *args: Any) -> tuple[Contract, Any]:
        art = types[name]
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["deploymentBytecode"]["bytecode"])
        receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact({"from": admin}))
        return w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"]), receipt

    feed, feed_receipt = deploy("DevPriceFeed", 8, "ETH / USD (dev)", FEED_START)
    collection, _ = deploy(
        "LivingCollection", "Chrysalis", "CHRYS", admin, admin, 1_000, 10**15, 0, FEE, TIMEOUT, "", 500
    )
    key = secrets.token_bytes(32)
    out = tmp_path_factory.mktemp("deployments")
    chain = Chain(anvil_url, w3, collection, feed, admin, holders, key, out / "local.json")
    chain.rpc("anvil_setBalance", chain.agent, hex(10**21))
    f = collection.functions
    chain.transact(f.registerModel(b"\x11" * 32, "ipfs://model"), admin)
    chain.transact(f.setActiveModel(1), admin)
    chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.agent), admin)
    chain.transact(f.grantRole(f.REFRESHER_ROLE().call(), chain.agent), admin)
    for holder in holders:
        chain.transact(f.mint(8), holder, 8 * 10**15)
    chain.rpc("evm_increaseTime", 4_000)
    chain.transact(feed.functions.updateAnswer(FEED_NOW), admin)

    block = w3.eth.get_block(feed_receipt["blockNumber"])
    Deployment(
        chain_id=w3.eth.chain_id,
        network="ethereum:local:foundry",
        contracts={
            "LivingCollection": ContractRecord(
                address=collection.address, abi=write_abi("LivingCollection", collection.abi, out)
            ),
            "DevPriceFeed": ContractRecord(
                address=feed.address, abi=write_abi("DevPriceFeed", feed.abi, out)
            ),
        },
        deploy_block=feed_receipt["blockNumber"],
        deploy_block_hash="0x" + bytes(block["hash"]).hex(),
        deployer=admin,
        agent=chain.agent,
    ).save(chain.deployment_path)
    return chain


@pytest.fixture
def chain(module_chain: Chain) -> Iterator[Chain]:
    """The module's chain, reverted after the test (automine back on, pool emptied)."""
    snapshot = module_chain.rpc("evm_snapshot")
    try:
        yield module_chain
    finally:
        module_chain.automine(True)
        module_chain.rpc("anvil_dropAllTransactions")
        module_chain.rpc("evm_revert", snapshot)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("pipeline-lm") / "model")


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory, module_chain: Chain) -> tuple[Path, Path]:
    """The agent key as an encrypted V3 keystore, and the file holding its password."""
    root = tmp_path_factory.mktemp("keys")
    path = root / "agent.json"
    path.write_text(json.dumps(Account.encrypt(module_chain.agent_key, PASSWORD, iterations=2)))
    secret = root / "password"
    secret.write_text(PASSWORD)
    return path, secret


def make_settings(
    chain: Chain, keystore: tuple[Path, Path], data_dir: Path, db_url: str, lm: Path, **agent: Any
) -> Settings:
    """Settings for an agent on ``chain`` with quick test timings; ``agent`` overrides the [agent] section."""
    return Settings(
        data_dir=data_dir,
        chain={"rpc_url": chain.url, "deployment": chain.deployment_path, "poll_interval_s": 0.1},
        database={"url": db_url},
        models={
            "lore_backend": "transformers",
            "lore_model": str(lm),
            "lore_max_new_tokens": 12,
            "device": "cpu",
            "threads": 1,  # canonical receipts; and 2 torch threads on a busy 2-core machine are 10x slower
            "cache_dir": data_dir / "models",
        },
        signer={"keystore": keystore[0], "password_file": keystore[1]},
        submit={
            "poll_interval_s": 0.02,
            "receipt_timeout_s": 60,
            "rpc_retries": 1,
            "stuck_after_blocks": None,
        },
        agent={"lease_s": 5.0, "retry_base_s": 0.2, "retry_cap_s": 1.0, "price_window_s": 3_600, **agent},
    )


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(
    chain: Chain, keystore: tuple[Path, Path], tmp_path: Path, tiny_lm: Path, backend: str
) -> Iterator[Settings]:
    with database_url(backend, tmp_path) as url:
        yield make_settings(chain, keystore, tmp_path / "data", url, tiny_lm)


def open_request(chain: Chain, token_id: int, holder: int = 0) -> EvolutionRequest:
    """``holders[holder]`` opens a request for ``token_id``; returns it as a job carries it."""
    receipt = chain.transact(
        chain.collection.functions.requestEvolution(token_id), chain.holders[holder], FEE
    )
    (log,) = chain.collection.events.EvolutionRequested().process_receipt(receipt, errors=DISCARD)
    args = log["args"]
    return EvolutionRequest(
        request_id=args["requestId"],
        token_id=args["tokenId"],
        requester=args["requester"],
        stage_before=args["stage"],
        seed="0x" + bytes(args["seed"]).hex(),
        block_number=receipt["blockNumber"],
        block_hash="0x" + bytes(receipt["blockHash"]).hex(),
        tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        log_index=log["logIndex"],
    )
