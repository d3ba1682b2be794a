"""The submit tests' chain: the shared anvil (tests/support/fixtures.py) with LivingCollection deployed through
the product's deploy path (tests/support/devchain.py), no price feed.

One anvil per test module. The agent is a fresh random key (funded, granted ``AGENT_ROLE``; the admin holds it
too); a model is registered and active; the holder owns tokens 1..40 and opens requests with
:meth:`~tests.support.devchain.CollectionChain.request`. Every test runs between ``evm_snapshot`` and
``evm_revert``, with automine restored, the pool emptied and the next base fee put back afterwards.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from eth_account import Account

from agent.settings import SubmitSettings
from agent.submit import ChainRpc, ErrorDecoder, KeystoreSigner, Web3TxSender
from tests.support.devchain import TEST_DEPLOY, CollectionChain, deploy_collection

TOKENS = 40


def digest(i: int) -> bytes:
    """A recognisable non-zero 32-byte digest."""
    return (0xD1 << 248 | i).to_bytes(32, "big")


class SubmitChain(CollectionChain):
    """The collection, and what the submit tests do besides the agent's sender."""

    @property
    def key(self) -> bytes:
        """The agent's private key."""
        assert self.agent_key is not None
        return self.agent_key

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
        self.rpc("evm_increaseTime", TEST_DEPLOY.request_timeout + 1)
        self.mine()
        self.transact(self.collection.functions.cancelEvolution(request_id), self.holder)

    def external_tx(self, nonce: int, *, max_fee: int = 50 * 10**9, tip: int = 2 * 10**9) -> str:
        """A plain transfer signed with the agent's key outside the agent (another process, a person)."""
        signed = Account.from_key(self.key).sign_transaction(
            {
                "type": 2,
                "chainId": self.chain_id,
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
        signer = KeystoreSigner.from_private_key(self.key, source="test")
        return Web3TxSender(rpc, signer, SubmitSettings(**defaults), decoder=decoder)


@pytest.fixture(scope="module")
def module_chain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> SubmitChain:
    chain = deploy_collection(
        anvil_url,
        tmp_path_factory.mktemp("deployments"),
        TEST_DEPLOY.model_copy(update={"price_feed": False}),
        agent_key=secrets.token_bytes(32),
        mints={1: TOKENS},
        price_history=False,
        chain_type=SubmitChain,
    )
    f = chain.collection.functions
    chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin))
    return chain
