"""One development chain for every test package: anvil through web3, and the collection deployed on it.

:class:`DevChain` is the node: raw JSON-RPC (:meth:`~DevChain.rpc`), transactions from anvil's unlocked
development accounts that must succeed (:meth:`~DevChain.transact`), blocks (:meth:`~DevChain.mine`,
:meth:`~DevChain.at_time`, a background miner), and snapshots (:meth:`~DevChain.reverting`). It deploys through
:func:`agent.deployment.deploy_with` over :class:`agent.ops.deploy.Web3Backend`, the path ``chrysalis deploy``
takes, from development account 0: LivingCollection's constructor arguments are written once, in
:class:`agent.deployment.DeployParams`.

:class:`CollectionChain` is a chain with the collection deployed and its record on disk, holders with tokens and
an agent account, and the moves the tests make as holders (requests, fusions) and observers (logs, pending
requests). :func:`deploy_collection` builds one.

Guarantees:

* :meth:`DevChain.transact` returns only once the transaction is mined, and fails the test when it reverted.
* :meth:`DevChain.reverting` leaves the chain as it found it: automine on, the pool empty, the state and the next
  base fee back (a base fee is not part of an anvil snapshot).
* Nothing here starts anvil: the plugin's ``anvil`` fixture does (tests/support/fixtures.py), through
  :func:`agent.devnet.start_anvil`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from agent.deployment import COLLECTION, PRICE_FEED, Deployment, DeployParams, deploy_with
from agent.errors import ConfigError, NotFoundError
from agent.ops.accounts import dev_key
from agent.ops.deploy import Web3Backend, load_artifacts
from agent.pipeline.request import EvolutionRequest
from agent.submit.signer import KeystoreSigner

#: The deployment most tests want: the product's defaults, no per-wallet cap, and a model registered and active.
TEST_DEPLOY = DeployParams(max_per_wallet=0, model_digest="0x" + "11" * 32, model_manifest="ipfs://model")
#: :data:`TEST_DEPLOY` without a model or a price feed.
BARE_DEPLOY = TEST_DEPLOY.model_copy(update={"model_digest": None, "price_feed": False})
FEE = TEST_DEPLOY.evolution_fee
MINT_PRICE = TEST_DEPLOY.mint_price
REQUEST_TIMEOUT = TEST_DEPLOY.request_timeout
FEED_START = TEST_DEPLOY.feed_answer
FEED_NOW = FEED_START * 105 // 100
"""The feed's answer after :meth:`CollectionChain.age_feed`: +5 % over the hour (mood "radiant")."""


@functools.cache
def artifacts() -> dict[str, dict[str, Any]]:
    """The compiled contracts (``make setup`` writes them); the test fails when they are missing."""
    try:
        return load_artifacts()
    except (NotFoundError, ConfigError) as exc:
        pytest.fail(f"{exc} ({exc.hint})", pytrace=False)


class DevChain:
    """anvil through web3; anvil's unlocked development accounts sign (``accounts[0]`` is the admin)."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        """Connect to the node at ``url``.

        Args:
            url: Its JSON-RPC HTTP URL.
            timeout_s: The HTTP timeout of each call.
        """
        self.url = url
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
        self.accounts = [Web3.to_checksum_address(a) for a in self.w3.eth.accounts]
        self.admin = self.accounts[0]
        self.chain_id = int(self.w3.eth.chain_id)

    @property
    def ws_url(self) -> str:
        """The node's WebSocket URL (anvil serves it on the HTTP port)."""
        return "ws" + self.url.removeprefix("http")

    @property
    def head(self) -> int:
        """The latest block's number."""
        return int(self.w3.eth.block_number)

    def rpc(self, method: str, *params: Any) -> Any:
        """Call JSON-RPC ``method`` (``evm_mine``, ``anvil_reorg``, ...); raise on an error reply."""
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def transact(
        self, fn: ContractFunction, sender: str | None = None, value: int = 0, *, timeout_s: float = 20.0
    ) -> TxReceipt:
        """Send ``fn`` from ``sender`` (default: the admin) paying ``value`` wei; the mined receipt.

        Args:
            fn: The bound contract call.
            sender: One of :attr:`accounts`.
            value: Wei sent along.
            timeout_s: How long to wait for the receipt.
        """
        tx_hash = fn.transact({"from": sender or self.admin, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
        assert receipt["status"] == 1, f"transaction reverted: {receipt}"
        return receipt

    def pay(self, sender: str, to: str, wei: int) -> TxReceipt:
        """A plain transfer of ``wei`` from ``sender`` to ``to``; the receipt."""
        tx_hash = self.w3.eth.send_transaction({"from": sender, "to": to, "value": wei})
        return self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def at_time(self, timestamp: int) -> Self:
        """Mine the next block at ``timestamp``."""
        self.rpc("evm_setNextBlockTimestamp", timestamp)
        return self

    def mine(self, n: int = 1, *, at: int | None = None) -> int:
        """Mine ``n`` empty blocks, the first at ``at`` if given; the new head."""
        if at is not None:
            self.at_time(at)
        for _ in range(n):
            self.rpc("evm_mine")
        return self.head

    def automine(self, on: bool) -> None:
        """Mine each transaction as it arrives (``True``, anvil's default), or only on :meth:`mine`."""
        self.rpc("evm_setAutomine", on)

    def block_hash(self, number: int) -> str:
        """The hash (``0x`` hex) of block ``number``."""
        return "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()

    @contextmanager
    def reverting(self) -> Iterator[Self]:
        """This chain for the block's duration, then back to where it was (see the module's guarantees)."""
        snapshot = self.rpc("evm_snapshot")
        base_fee = self.w3.eth.get_block("pending")["baseFeePerGas"]
        try:
            yield self
        finally:
            self.automine(True)
            self.rpc("anvil_dropAllTransactions")
            self.rpc("evm_revert", snapshot)
            self.rpc("anvil_setNextBlockBaseFeePerGas", hex(base_fee))

    @contextmanager
    def mining(self, every_s: float) -> Iterator[None]:
        """Mine a block every ``every_s`` seconds on a background thread while the block runs: a chain that moves
        on its own, as a real one does, for code that waits for blocks. The thread has its own connection."""
        w3 = Web3(Web3.HTTPProvider(self.url))
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

        miner = threading.Thread(target=loop, daemon=True)
        miner.start()
        try:
            yield
        finally:
            stop.set()
            miner.join(5)

    # -- deploying ------------------------------------------------------------------------------------------

    @functools.cached_property
    def _backend(self) -> Web3Backend:
        signer = KeystoreSigner.from_private_key(dev_key(0), source="development account 0")
        assert signer.address == self.admin, "anvil runs another mnemonic than the development accounts'"
        return Web3Backend(self.w3, signer, artifacts(), url=self.url, chain_id=self.chain_id)

    def deploy(self, params: DeployParams, out_dir: Path | None = None) -> Deployment:
        """Deploy as ``chrysalis deploy`` does (:func:`agent.deployment.deploy_with`), from the admin.

        Args:
            params: The deployment (DevPriceFeed too unless ``params.price_feed`` is False).
            out_dir: Where the ABIs and the record ``local.json`` go; None writes nothing.
        """
        return deploy_with(self._backend, params, out_dir=out_dir)

    def contract(self, deployment: Deployment, name: str = COLLECTION) -> Contract:
        """Contract ``name`` of ``deployment``."""
        address = Web3.to_checksum_address(deployment.address(name))
        return self.w3.eth.contract(address=address, abi=artifacts()[name]["abi"])

    def deploy_collection(self) -> Contract:
        """A LivingCollection alone: :data:`TEST_DEPLOY` without a model or a feed, the admin holding every role,
        no record written."""
        return self.contract(self.deploy(BARE_DEPLOY))

    def deploy_feed(self, answer: int, *, decimals: int = 8, at: int | None = None) -> Contract:
        """A DevPriceFeed answering ``answer`` from its deployment (mined at ``at``, if given)."""
        if at is not None:
            self.at_time(at)
        address, abi, _block = self._backend.deploy(
            PRICE_FEED, decimals, TEST_DEPLOY.feed_description, answer
        )
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)


class CollectionChain(DevChain):
    """A chain with the collection deployed: its record, holders and agent, and the moves tests make."""

    def __init__(
        self,
        url: str,
        deployment: Deployment,
        record: Path,
        *,
        holders: list[str],
        agent_key: bytes | None = None,
    ) -> None:
        """Wrap a deployment :func:`deploy_collection` made.

        Args:
            url: The node's JSON-RPC HTTP URL.
            deployment: The collection's record.
            record: Where the record is on disk.
            holders: The accounts that hold tokens, in the order the tests number them.
            agent_key: The agent's own key, when it has one (else the agent is a development account).
        """
        super().__init__(url)
        self.deployment = deployment
        self.record = record
        self.collection = self.contract(deployment)
        self._feed = self.contract(deployment, PRICE_FEED) if PRICE_FEED in deployment.contracts else None
        self.holders = holders
        self.agent = deployment.agent
        self.agent_key = agent_key

    @property
    def feed(self) -> Contract:
        """The deployment's DevPriceFeed."""
        assert self._feed is not None, "this deployment has no DevPriceFeed"
        return self._feed

    @property
    def holder(self) -> str:
        """The first holder."""
        return self.holders[0]

    def mint(self, holder: str, n: int) -> TxReceipt:
        """``holder`` mints ``n`` tokens, paying the price."""
        price = int(self.collection.functions.mintPrice().call())
        return self.transact(self.collection.functions.mint(n), holder, n * price)

    def age_feed(self, answer: int = FEED_NOW, seconds: int = 4_000) -> None:
        """Give the feed price history: move time on by ``seconds``, then post ``answer``."""
        self.rpc("evm_increaseTime", seconds)
        self.transact(self.feed.functions.updateAnswer(answer))

    def _opened(self, token_id: int, holder: int) -> tuple[TxReceipt, EventData]:
        fee = int(self.collection.functions.evolutionFee().call())
        receipt = self.transact(
            self.collection.functions.requestEvolution(token_id), self.holders[holder], fee
        )
        (log,) = self.collection.events.EvolutionRequested().process_receipt(receipt, errors=DISCARD)
        return receipt, log

    def request(self, token_id: int, holder: int = 0) -> int:
        """``holders[holder]`` opens an evolution request for ``token_id``; its id."""
        return int(self._opened(token_id, holder)[1]["args"]["requestId"])

    def open_request(self, token_id: int, holder: int = 0) -> EvolutionRequest:
        """``holders[holder]`` opens a request for ``token_id``; it as a job carries it."""
        receipt, log = self._opened(token_id, holder)
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

    def fuse(self, keep: int, burn: int, holder: int = 0) -> int:
        """``holders[holder]`` fuses ``burn`` into ``keep``; the request's id."""
        fee = int(self.collection.functions.evolutionFee().call())
        receipt = self.transact(self.collection.functions.fuse(keep, burn), self.holders[holder], fee)
        (log,) = self.collection.events.Fused().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"])

    def seed(self, request_id: int) -> bytes:
        """The seed a fulfilment of ``request_id`` must name: its latest ``EvolutionRequested`` log's on the
        canonical chain."""
        logs = self.collection.events.EvolutionRequested().get_logs(
            from_block=0, argument_filters={"requestId": request_id}
        )
        assert logs, f"no EvolutionRequested log for request {request_id}"
        return bytes(logs[-1]["args"]["seed"])

    def evolved(self, request_id: int | None = None) -> list[EventData]:
        """Every ``Evolved`` log (of one request, if given) on the canonical chain."""
        logs = self.collection.events.Evolved().get_logs(from_block=0)
        return [log for log in logs if request_id is None or int(log["args"]["requestId"]) == request_id]

    def is_pending(self, request_id: int) -> bool:
        return bool(self.collection.functions.isPending(request_id).call())

    def stage(self, token_id: int) -> int:
        return int(self.collection.functions.stageOf(token_id).call())

    def agent_nonce(self) -> int:
        """The agent account's transaction count."""
        return int(self.w3.eth.get_transaction_count(Web3.to_checksum_address(self.agent)))


C = TypeVar("C", bound=CollectionChain)


def deploy_collection(
    url: str,
    out_dir: Path,
    params: DeployParams = TEST_DEPLOY,
    *,
    agent_key: bytes | None = None,
    mints: Mapping[int, int] | None = None,
    price_history: bool = True,
    chain_type: type[C] = CollectionChain,  # type: ignore[assignment]
) -> C:
    """Deploy the collection on the node at ``url`` and set it up the way the agent's tests want it.

    Args:
        url: The node's JSON-RPC HTTP URL.
        out_dir: Where the ABIs and the record ``local.json`` go.
        params: The deployment; ``agent_key`` overrides its ``agent``.
        agent_key: A key of the agent's own, funded with 1,000 ETH; None: ``params.agent`` (default: the admin).
        mints: Development account index -> tokens it mints; these accounts are the holders, in this order
            (default: accounts 1 and 2, 8 tokens each).
        price_history: Move time on and post :data:`FEED_NOW` (an hour of price history, +5 %).
        chain_type: The :class:`CollectionChain` subclass to return (a package's own moves).
    """
    mints = {1: 8, 2: 8} if mints is None else mints
    node = DevChain(url)
    if agent_key is not None:
        params = params.model_copy(update={"agent": Account.from_key(agent_key).address})
        node.rpc("anvil_setBalance", params.agent, hex(10**21))
    deployment = node.deploy(params, out_dir)
    holders = [node.accounts[index] for index in mints]
    chain = chain_type(url, deployment, out_dir / "local.json", holders=holders, agent_key=agent_key)
    for holder, n in zip(holders, mints.values(), strict=True):
        chain.mint(holder, n)
    if price_history:
        chain.age_feed()
    return chain
