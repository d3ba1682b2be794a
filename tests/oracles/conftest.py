"""A real anvil chain with the real DevPriceFeed and LivingCollection, deployed from the compiled artifacts.

One anvil per module; every test runs between ``evm_snapshot`` and ``evm_revert`` so tests stay independent.
Block times are set explicitly (``evm_setNextBlockTimestamp``) so ages and windows are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agent.devnet import start_anvil

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / ".build" / "__local__.json"
T0 = 1_900_000_000
"""A fixed start time, well after anvil's genesis, so every test knows its block timestamps."""


def _artifacts() -> dict[str, Any]:
    if not MANIFEST.is_file():
        pytest.skip(f"{MANIFEST} is missing: run `make setup` to compile the contracts")
    types = json.loads(MANIFEST.read_text())["contractTypes"]
    for name in ("DevPriceFeed", "LivingCollection"):
        if name not in types:
            pytest.skip(f"{name} is not in {MANIFEST}: run `make setup` to compile the contracts")
    return types


class Chain:
    """Thin helpers over a web3 connection to anvil (its unlocked dev accounts sign)."""

    def __init__(self, w3: Web3, artifacts: dict[str, Any]) -> None:
        self.w3 = w3
        self.artifacts = artifacts
        self.accounts = [Web3.to_checksum_address(a) for a in w3.eth.accounts]
        self.admin = self.accounts[0]

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def at_time(self, timestamp: int) -> Chain:
        """The next block is mined at ``timestamp``."""
        self.rpc("evm_setNextBlockTimestamp", timestamp)
        return self

    def mine(self, timestamp: int | None = None) -> int:
        """Mine one empty block (at ``timestamp`` if given); return its number."""
        if timestamp is not None:
            self.at_time(timestamp)
        self.rpc("evm_mine")
        return self.w3.eth.block_number

    def deploy(self, name: str, *args: Any) -> Contract:
        art = self.artifacts[name]
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["deploymentBytecode"]["bytecode"])
        receipt = self.send(factory.constructor(*args))
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])

    def send(self, fn: Any, *, sender: str | None = None, value: int = 0) -> Any:
        tx_hash = fn.transact({"from": sender or self.admin, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, f"transaction reverted: {receipt}"
        return receipt

    def pay(self, sender: str, to: str, wei: int) -> Any:
        tx_hash = self.w3.eth.send_transaction({"from": sender, "to": to, "value": wei})
        return self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def deploy_feed(self, answer: int, *, decimals: int = 8, at: int | None = None) -> Contract:
        if at is not None:
            self.at_time(at)
        return self.deploy("DevPriceFeed", decimals, "ETH / USD (dev)", answer)

    def deploy_collection(self) -> Contract:
        return self.deploy(
            "LivingCollection",
            "Chrysalis",
            "CHRYS",
            self.admin,
            self.admin,
            1_000,  # max supply
            10**15,  # mint price
            0,  # no per-wallet cap
            5 * 10**14,  # evolution fee
            3_600,  # request timeout
            "",
            500,
        )


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """A fresh anvil on a free 127.0.0.1 port with a throwaway HOME (no leftovers under ~/.foundry)."""
    with start_anvil("--timestamp", str(T0 - 10_000)) as node:
        yield node.url


@pytest.fixture(scope="module")
def module_chain(anvil_url: str) -> Chain:
    return Chain(Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30})), _artifacts())


@pytest.fixture
def chain(module_chain: Chain) -> Iterator[Chain]:
    """The module's chain, reverted after the test. Each test starts at a block at time >= T0."""
    snapshot = module_chain.rpc("evm_snapshot")
    latest = module_chain.w3.eth.get_block("latest")["timestamp"]
    module_chain.mine(max(T0, latest + 1))
    try:
        yield module_chain
    finally:
        module_chain.rpc("evm_revert", snapshot)
