"""A real anvil with the real LivingCollection, deployed from the compiled artifact with web3.py.

One anvil per test module. The agent is a fresh random key (funded, granted ``AGENT_ROLE``); a model is
registered and active; ``holder`` owns tokens 1..40 and opens requests with :meth:`Chain.request`. Every test
runs between ``evm_snapshot`` and ``evm_revert``, with automine restored and the pool emptied afterwards.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agent.devnet import start_anvil
from agent.settings import SubmitSettings
from agent.submit import ChainRpc, ErrorDecoder, KeystoreSigner, Web3TxSender
from tests.support.chain import canonical_seed

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / ".build" / "__local__.json"
FEE = 5 * 10**14
TIMEOUT = 3_600
TOKENS = 40


def artifact() -> dict[str, Any]:
    if not MANIFEST.is_file():
        pytest.skip(f"{MANIFEST} is missing: run `make setup` to compile the contracts")
    types = json.loads(MANIFEST.read_text())["contractTypes"]
    if "LivingCollection" not in types:
        pytest.skip(f"LivingCollection is not in {MANIFEST}: run `make setup`")
    return types["LivingCollection"]


def digest(i: int) -> bytes:
    """A recognisable non-zero 32-byte digest."""
    return (0xD1 << 248 | i).to_bytes(32, "big")


@dataclass
class Chain:
    """web3 helpers over anvil; the admin and holder are anvil's unlocked dev accounts."""

    w3: Web3
    url: str
    collection: Contract
    admin: str
    holder: str
    agent_key: bytes

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    @property
    def agent(self) -> str:
        return Account.from_key(self.agent_key).address

    def mine(self, n: int = 1) -> int:
        for _ in range(n):
            self.rpc("evm_mine")
        return self.w3.eth.block_number

    def automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", on)

    def transact(self, fn: Any, sender: str, value: int = 0) -> Any:
        tx_hash = fn.transact({"from": sender, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        assert receipt["status"] == 1, receipt
        return receipt

    def request(self, token_id: int) -> int:
        """Open an evolution request for ``token_id`` (held by ``holder``); return its id."""
        receipt = self.transact(self.collection.functions.requestEvolution(token_id), self.holder, FEE)
        (log,) = self.collection.events.EvolutionRequested().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"])

    def seed(self, request_id: int) -> bytes:
        """The seed a fulfilment of ``request_id`` must name (its latest ``EvolutionRequested`` log)."""
        return canonical_seed(self.collection, request_id)

    def fulfil_directly(self, request_id: int) -> None:
        """Fulfil a request outside the agent's sender (the admin also holds AGENT_ROLE)."""
        self.transact(
            self.collection.functions.fulfillEvolution(
                request_id, self.seed(request_id), digest(999), bytes(32)
            ),
            self.admin,
        )

    def cancel(self, request_id: int) -> None:
        """Cancel a pending request after its timeout (moves time forward)."""
        self.rpc("evm_increaseTime", TIMEOUT + 1)
        self.mine()
        self.transact(self.collection.functions.cancelEvolution(request_id), self.holder)

    def external_tx(self, nonce: int, *, max_fee: int = 50 * 10**9, tip: int = 2 * 10**9) -> str:
        """A plain transfer signed with the agent's key outside the agent (another process, a person)."""
        signed = Account.from_key(self.agent_key).sign_transaction(
            {
                "type": 2,
                "chainId": self.w3.eth.chain_id,
                "nonce": nonce,
                "to": self.admin,
                "value": 1,
                "gas": 21_000,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
            }
        )
        return "0x" + self.w3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x")

    def pool_hashes(self) -> list[str]:
        content = self.rpc("txpool_content")
        out = []
        for section in ("pending", "queued"):
            for txs in content.get(section, {}).values():
                out.extend(tx["hash"] for tx in txs.values())
        return out

    def sender(self, **settings: Any) -> Web3TxSender:
        """A fresh agent sender (fresh nonce manager and tracker) with quick test timings."""
        defaults: dict[str, Any] = {
            "poll_interval_s": 0.02,
            "receipt_timeout_s": 20,
            "rpc_retries": 0,
            "stuck_after_blocks": None,
        }
        defaults.update(settings)
        decoder = ErrorDecoder([self.collection.abi])
        rpc = ChainRpc(self.w3, retries=defaults["rpc_retries"], decoder=decoder)
        signer = KeystoreSigner.from_private_key(self.agent_key, source="test")
        return Web3TxSender(rpc, signer, SubmitSettings(**defaults), decoder=decoder)

    def miner(self, every_s: float = 0.05) -> Callable[[], None]:
        """Mine a block every ``every_s`` in a background thread until the returned function is called."""
        stop = threading.Event()

        def run() -> None:
            w3 = Web3(Web3.HTTPProvider(self.url))
            while not stop.wait(every_s):
                w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(5)

        return halt


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """A fresh anvil on a free 127.0.0.1 port with a throwaway HOME."""
    with start_anvil() as node:
        yield node.url


@pytest.fixture(scope="module")
def module_chain(anvil_url: str) -> Chain:
    art = artifact()
    w3 = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30}))
    admin, holder = (Web3.to_checksum_address(a) for a in w3.eth.accounts[:2])
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["deploymentBytecode"]["bytecode"])
    tx = factory.constructor("Chrysalis", "CHRYS", admin, admin, 1_000, 10**15, 0, FEE, TIMEOUT, "", 500)
    receipt = w3.eth.wait_for_transaction_receipt(tx.transact({"from": admin}))
    collection = w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])
    key = secrets.token_bytes(32)
    chain = Chain(w3, anvil_url, collection, admin, holder, key)
    chain.rpc("anvil_setBalance", chain.agent, hex(10**21))
    f = collection.functions
    chain.transact(f.registerModel(b"\x11" * 32, "ipfs://model"), admin)
    chain.transact(f.setActiveModel(1), admin)
    role = f.AGENT_ROLE().call()
    chain.transact(f.grantRole(role, chain.agent), admin)
    chain.transact(f.grantRole(role, admin), admin)
    chain.transact(f.grantRole(f.REFRESHER_ROLE().call(), chain.agent), admin)
    chain.transact(f.mint(TOKENS), holder, TOKENS * 10**15)
    return chain


@pytest.fixture
def chain(module_chain: Chain) -> Iterator[Chain]:
    """The module's chain, reverted after the test (automine back on, pool emptied)."""
    snapshot = module_chain.rpc("evm_snapshot")
    base_fee = module_chain.w3.eth.get_block("pending")["baseFeePerGas"]
    try:
        yield module_chain
    finally:
        module_chain.automine(True)
        module_chain.rpc("anvil_dropAllTransactions")
        module_chain.rpc("evm_revert", snapshot)
        # Not part of a snapshot: a test that raised the next base fee without mining leaves it set.
        module_chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(base_fee))
