"""A small living collection for the studio's tests, made with the real parts.

anvil (agent.devnet) with LivingCollection and DevPriceFeed deployed from the compiled artifacts, the shipped
sprite model registered in the collection's model registry, a deployment record written with agent.deployment,
an encrypted agent keystore, and tokens evolved by the real agent (agent.pipeline.Agent): shipped sprite images,
lore from a tiny random-weight causal LM, metadata in the embedded IPFS repo, fulfilments on-chain.

:class:`ReviewedPublisher` is the pipeline's side of review as :mod:`agent.studio.review` documents it (submit
after ``generated``, publish only an :class:`~agent.studio.review.Approved` candidate, with ``approved_by`` in
the metadata), driven through the real agent, whose pipeline calls the gate when ``studio.review`` is on.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agent.deployment import ContractRecord, Deployment, write_abi
from agent.devnet import start_anvil
from agent.jobs import JobState, Stage
from agent.settings import Settings
from agent.studio.review import Approved, ReviewGate

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / ".build" / "__local__.json"
SPRITES = ROOT / "agent" / "generate" / "shipped" / "sprites32" / "manifest.json"
FEE = 5 * 10**14
PASSWORD = "studio-admin-password"
CURATOR = "admin"
API_TOKEN = "studio-api-token-for-tests"


@dataclass
class World:
    """The chain, the settings that point the agent and the studio at it, and the moves the tests make."""

    url: str
    w3: Web3
    collection: Contract
    feed: Contract
    admin: str
    holders: list[str]
    agent_key: bytes
    root: Path
    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def agent_address(self) -> str:
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
        receipt = self.transact(
            self.collection.functions.requestEvolution(token_id), self.holders[holder], FEE
        )
        (log,) = self.collection.events.EvolutionRequested().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"])

    def fuse(self, keep: int, burn: int, holder: int = 0) -> int:
        receipt = self.transact(self.collection.functions.fuse(keep, burn), self.holders[holder], FEE)
        (log,) = self.collection.events.Fused().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"])

    def evolved(self, request_id: int | None = None) -> list[Any]:
        logs = self.collection.events.Evolved().get_logs(from_block=0)
        return [e for e in logs if request_id is None or int(e["args"]["requestId"]) == request_id]

    def stage(self, token_id: int) -> int:
        return int(self.collection.functions.stageOf(token_id).call())

    def agent(self, **changes: Any) -> Any:
        """The real agent on this world (close it, or use it as a context manager)."""
        from agent.pipeline import Agent

        settings = self.settings.model_copy(update=changes) if changes else self.settings
        return Agent.from_settings(settings, worker_id="studio-tests")

    def evolve(self, *requests: tuple[int, int]) -> None:
        """Open requests (token, holder) and let the real agent fulfil them."""
        with self.lock:
            for token_id, holder in requests:
                self.request(token_id, holder)
            with self.agent(studio=self.settings.studio.model_copy(update={"review": False})) as agent:
                agent.run_until_idle(timeout_s=120)


def _artifacts() -> dict[str, Any]:
    if not MANIFEST.is_file():
        raise RuntimeError(f"{MANIFEST} is missing: run `make setup` to compile the contracts")
    return json.loads(MANIFEST.read_text())["contractTypes"]


@contextmanager
def make_world(root: Path, lm_dir: Path) -> Iterator[World]:
    """anvil + deployment + settings + a few evolved tokens; everything under ``root``."""
    with start_anvil("--accounts", "4") as node:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 30}))
        types = _artifacts()
        admin, *holders = (Web3.to_checksum_address(a) for a in w3.eth.accounts[:3])

        def deploy(name: str, *args: Any) -> tuple[Contract, Any]:
            art = types[name]
            factory = w3.eth.contract(abi=art["abi"], bytecode=art["deploymentBytecode"]["bytecode"])
            receipt = w3.eth.wait_for_transaction_receipt(
                factory.constructor(*args).transact({"from": admin})
            )
            return w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"]), receipt

        feed, feed_receipt = deploy("DevPriceFeed", 8, "ETH / USD (dev)", 3_000 * 10**8)
        collection, _ = deploy(
            "LivingCollection", "Chrysalis", "CHRYS", admin, admin, 1_000, 10**15, 0, FEE, 3_600, "", 500
        )
        key = secrets.token_bytes(32)
        data = root / "data"
        data.mkdir(parents=True)
        world = World(node.url, w3, collection, feed, admin, holders, key, root, Settings())
        world.rpc("anvil_setBalance", world.agent_address, hex(10**21))
        f = collection.functions
        sprites = json.loads(SPRITES.read_text())
        world.transact(
            f.registerModel(bytes.fromhex(sprites["weights_sha256"]), "chrysalis/sprites-32@1"), admin
        )
        world.transact(f.setActiveModel(1), admin)
        world.transact(f.grantRole(f.AGENT_ROLE().call(), world.agent_address), admin)
        world.transact(f.grantRole(f.REFRESHER_ROLE().call(), world.agent_address), admin)
        for holder in holders:
            world.transact(f.mint(5), holder, 5 * 10**15)
        world.rpc("evm_increaseTime", 4_000)
        world.transact(feed.functions.updateAnswer(3_150 * 10**8), admin)

        deployments = root / "deployments"
        block = w3.eth.get_block(feed_receipt["blockNumber"])
        Deployment(
            chain_id=w3.eth.chain_id,
            network="ethereum:local:foundry",
            contracts={
                "LivingCollection": ContractRecord(
                    address=collection.address, abi=write_abi("LivingCollection", collection.abi, deployments)
                ),
                "DevPriceFeed": ContractRecord(
                    address=feed.address, abi=write_abi("DevPriceFeed", feed.abi, deployments)
                ),
            },
            deploy_block=feed_receipt["blockNumber"],
            deploy_block_hash="0x" + bytes(block["hash"]).hex(),
            deployer=admin,
            agent=world.agent_address,
        ).save(deployments / "local.json")

        secrets_dir = root / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "agent.json").write_text(json.dumps(Account.encrypt(key, "agent-pw", iterations=2)))
        (secrets_dir / "agent.pw").write_text("agent-pw")
        (secrets_dir / "studio.pw").write_text(PASSWORD)
        (secrets_dir / "studio.token").write_text(API_TOKEN)
        (secrets_dir / "studio.secret").write_text("a-fixed-session-key-for-tests")
        world.settings = Settings(
            data_dir=data,
            chain={"rpc_url": node.url, "deployment": deployments / "local.json", "poll_interval_s": 0.1},
            database={"url": f"sqlite:///{data / 'chrysalis.db'}"},
            models={
                "lore_backend": "transformers",
                "lore_model": str(lm_dir),
                "lore_max_new_tokens": 12,
                "device": "cpu",
                "cache_dir": data / "models",
            },
            signer={"keystore": secrets_dir / "agent.json", "password_file": secrets_dir / "agent.pw"},
            submit={
                "poll_interval_s": 0.02,
                "receipt_timeout_s": 60,
                "rpc_retries": 1,
                "stuck_after_blocks": None,
            },
            agent={"lease_s": 5.0, "retry_base_s": 0.2, "retry_cap_s": 1.0, "price_window_s": 3_600},
            studio={
                "review": True,
                "password_env": "CHRYSALIS_STUDIO_TEST_UNSET_PASSWORD",
                "password_file": secrets_dir / "studio.pw",
                "token_env": "CHRYSALIS_STUDIO_TEST_UNSET_TOKEN",
                "token_file": secrets_dir / "studio.token",
                "session_secret_env": "CHRYSALIS_STUDIO_TEST_UNSET_SECRET",
                "session_secret_file": secrets_dir / "studio.secret",
                "poll_interval_s": 0.2,
            },
        )
        # token 1 evolves twice, token 2 once, token 6 (holder 1) fuses token 7 into itself
        world.evolve((1, 0), (2, 0))
        world.evolve((1, 0))
        with world.lock:
            world.fuse(6, 7, holder=1)
            with world.agent(studio=world.settings.studio.model_copy(update={"review": False})) as agent:
                agent.run_until_idle(timeout_s=120)
        yield world


class ReviewedPublisher:
    """Drives the real agent (review mode on) the way ``chrysalis run`` would, one step at a time.

    ``step()`` polls the chain and advances the jobs: a generated result goes to the studio's review gate and
    waits there (nothing pinned remotely, nothing sent); once a curator approves it, the same step publishes it
    with ``approved_by`` and fulfils the request. ``published`` maps job ids to their metadata CIDs.
    """

    def __init__(self, world: World, agent: Any) -> None:
        self.world = world
        self.agent = agent
        self.gate = ReviewGate.for_store(agent.store)
        self.published: dict[int, str] = {}

    def step(self, timeout_s: float = 30.0) -> None:
        agent = self.agent
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            agent.poll_once()
            advanced = agent.work_once()
            if not advanced and not self._approved_in_flight():
                break
            if not advanced:
                time.sleep(0.2)  # an approved job waits out the gate's re-check delay
        for job in agent.store.list_jobs(limit=1000):
            published = job.output(Stage.PUBLISHED)
            if published:
                self.published[job.id] = published["metadata_cid"]

    def _approved_in_flight(self) -> bool:
        for state in (JobState.QUEUED, JobState.RUNNING):
            for job in self.agent.store.list_jobs(state=state, limit=1000):
                if isinstance(self.gate.decision(job.id), Approved):
                    return True
        return False
