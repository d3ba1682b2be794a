"""Throughput of fulfilments on anvil (automine): one ``fulfillEvolution`` per request vs batched
``fulfillEvolutions``, through the agent's own submit stage, in one run.

Run: ``.venv/bin/python -m bench.submit [--n 500]``. Starts its own anvil (cancun, pruned history, temporary
HOME), deploys LivingCollection from the compiled artifact (``make setup``) as ``chrysalis deploy`` does, mints
``n`` fresh tokens per mode and opens one evolution request per token (presigned ``requestEvolution`` bursts from
the holder), so every mode writes first digests (the same storage costs). Only the agent's work is timed:

- *sequential*: ``Web3TxSender.send_and_wait`` per request (gas estimate as dry run, fee quote,
  chain-reconciled nonce, sign, send, receipt);
- *presigned*: one fee quote and one nonce reservation, ``n`` signed ``fulfillEvolution`` broadcast back to
  back, then ``wait_all``;
- *batched*: ``FulfilmentBatcher.submit`` (``isPendingWith`` pre-check, grouping, gas estimate per batch, send,
  ``wait_all``) with a count cap of 100, and with a cap of ``n`` where the 10M gas cap does the splitting.

A second table times the pre-send ``isPendingWith(requestId, seed)`` check of ``n`` ids: one JSON-RPC batch
request per 200 ids vs one HTTP request per id.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eth_account import Account
from web3 import Web3

from agent.deployment import DeployParams, deploy_with
from agent.devnet import start_anvil
from agent.ops.accounts import load_account
from agent.ops.deploy import Web3Backend, load_artifacts
from agent.settings import SubmitSettings
from agent.submit import (
    ChainRpc,
    ErrorDecoder,
    Fulfilment,
    FulfilmentBatcher,
    KeystoreSigner,
    TxRequest,
    Web3TxSender,
)
from bench._table import emit

FEE = 5 * 10**14
PRICE = 10**15


@contextmanager
def anvil() -> Iterator[str]:
    """A throwaway anvil (cancun, 60M gas blocks)."""
    with start_anvil("--gas-limit", "60000000", "--hardfork", "cancun") as node:
        yield node.url


MODES = 5  # four timed modes and the pre-check


class Setup:
    """The collection, a holder with ``n`` tokens per mode, and the agent (random keys, funded by anvil)."""

    def __init__(self, url: str, n: int) -> None:
        artifacts = load_artifacts()
        self.w3 = w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
        self.url, self.n = url, n
        supply = n * MODES
        self.holder = Account.create()
        self.agent_key = secrets.token_bytes(32)
        agent = Account.from_key(self.agent_key).address
        for who in (self.holder.address, agent):
            w3.provider.make_request("anvil_setBalance", [who, hex(10**24)])  # type: ignore[arg-type]
        # as `chrysalis deploy --from 0` does (the model active, the agent's roles), without a feed or a record
        params = DeployParams(
            name="Bench",
            symbol="BNCH",
            max_supply=supply,
            mint_price=PRICE,
            max_per_wallet=0,
            evolution_fee=FEE,
            model_digest="0x" + "11" * 32,
            model_manifest="ipfs://manifest",
            agent=agent,
            price_feed=False,
        )
        chain_id = int(w3.eth.chain_id)
        signer = load_account("dev:0", chain_id=chain_id)
        deployment = deploy_with(
            Web3Backend(w3, signer, artifacts, url=url, chain_id=chain_id), params, out_dir=None
        )
        self.abi = artifacts["LivingCollection"]["abi"]
        self.lc = lc = w3.eth.contract(address=Web3.to_checksum_address(deployment.address()), abi=self.abi)
        self.holder_nonce = 0
        for start in range(0, supply, 200):
            q = min(200, supply - start)
            self._holder_burst([(lc.functions.mint(q), q * PRICE, 8_000_000)])
        self.used = 0

    def _holder_burst(self, calls: list[tuple[Any, int, int]]) -> None:
        """Presigned transactions from the holder, broadcast back to back; waits for the last."""
        chain_id = self.w3.eth.chain_id
        base = self.w3.eth.get_block("pending")["baseFeePerGas"]
        last = None
        for fn, value, gas in calls:
            tx = fn.build_transaction(
                {
                    "from": self.holder.address,
                    "value": value,
                    "gas": gas,
                    "nonce": self.holder_nonce,
                    "chainId": chain_id,
                    "maxFeePerGas": 4 * base + 10**9,
                    "maxPriorityFeePerGas": 10**9,
                }
            )
            last = self.w3.eth.send_raw_transaction(self.holder.sign_transaction(tx).raw_transaction)
            self.holder_nonce += 1
        if last is not None:
            assert self.w3.eth.wait_for_transaction_receipt(last)["status"] == 1

    def open_requests(self) -> list[int]:
        """One request for each of the next ``n`` untouched tokens; returns ids ``tokenId << 32 | 1``."""
        tokens = range(self.used + 1, self.used + self.n + 1)
        self.used += self.n
        self._holder_burst([(self.lc.functions.requestEvolution(t), FEE, 150_000) for t in tokens])
        ids = [(t << 32) | 1 for t in tokens]
        assert self.lc.functions.isPending(ids[-1]).call()
        return ids

    def sender(self, **settings: Any) -> Web3TxSender:
        decoder = ErrorDecoder([self.abi])
        rpc = ChainRpc(Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 60})), decoder=decoder)
        cfg = SubmitSettings(poll_interval_s=0.01, **settings)
        return Web3TxSender(
            rpc, KeystoreSigner.from_private_key(self.agent_key, source="bench"), cfg, decoder=decoder
        )

    def fulfilments(self, ids: list[int]) -> list[Fulfilment]:
        """Fulfilments of ``ids``, each bound to its request's seed (from the EvolutionRequested logs)."""
        seeds = {
            int(log["args"]["requestId"]): bytes(log["args"]["seed"])
            for log in self.lc.events.EvolutionRequested().get_logs(from_block=0)
        }
        return [Fulfilment(r, seeds[r], (r % 2**255 + 1).to_bytes(32, "big"), b"\x01" * 32) for r in ids]

    def calldata(self, f: Fulfilment) -> bytes:
        data = self.lc.encode_abi("fulfillEvolution", [f.request_id, f.seed, f.metadata_digest, f.provenance])
        return bytes.fromhex(data[2:])


def _row(mode: str, n: int, txs: int, wall: float, gas: int) -> tuple[object, ...]:
    return (mode, n, txs, f"{wall:.2f}", f"{n / wall:.0f}", f"{gas // n:,}", f"{gas:,}")


def measure(n: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    rows: list[tuple[object, ...]] = []
    checks: list[tuple[object, ...]] = []
    with anvil() as url:
        s = Setup(url, n)

        # one tx per request, sequential send_and_wait
        items = s.fulfilments(s.open_requests())
        sender = s.sender()
        t0 = time.perf_counter()
        confs = [
            sender.send_and_wait(TxRequest(s.lc.address, s.calldata(f), label="fulfillEvolution"))
            for f in items
        ]
        rows.append(
            _row(
                "one tx per request, send_and_wait",
                n,
                len(confs),
                time.perf_counter() - t0,
                sum(c.gas_used for c in confs),
            )
        )

        # one tx per request, presigned burst
        items = s.fulfilments(s.open_requests())
        sender = s.sender()
        gas = sender.estimate_gas(TxRequest(s.lc.address, s.calldata(items[0])))
        t0 = time.perf_counter()
        subs = sender.send_presigned(
            [TxRequest(s.lc.address, s.calldata(f), gas=gas, label="fulfillEvolution") for f in items]
        )
        outcomes = sender.wait_all(subs)
        wall = time.perf_counter() - t0
        assert all(getattr(o, "status", 0) == 1 for o in outcomes), outcomes[:3]
        rows.append(
            _row("one tx per request, presigned burst", n, len(subs), wall, sum(o.gas_used for o in outcomes))
        )  # type: ignore[union-attr]

        # batched
        for cap in (100, n):
            ids = s.open_requests()
            items = s.fulfilments(ids)
            sender = s.sender(batch_max_count=cap)
            batcher = FulfilmentBatcher(sender, sender.rpc, s.lc.address, sender.settings)
            t0 = time.perf_counter()
            report = batcher.submit(items)
            wall = time.perf_counter() - t0
            assert len(report.confirmed) == n and not report.failed, report.failed[:1]
            rows.append(
                _row(
                    f"fulfillEvolutions, count cap {cap}, gas cap 10M",
                    n,
                    report.tx_count,
                    wall,
                    report.gas_used,
                )
            )

        # the pre-check alone, on pending ids
        items = s.fulfilments(s.open_requests())
        sender = s.sender()
        for mode in ("batch", "sequential"):
            b = FulfilmentBatcher(sender, sender.rpc, s.lc.address, sender.settings, precheck=mode)
            t0 = time.perf_counter()
            pending = b.check_pending_with(items)
            wall = time.perf_counter() - t0
            assert all(pending.values())
            http = -(-n // sender.settings.precheck_batch_size) if mode == "batch" else n
            label = "JSON-RPC batches of 200 eth_call" if mode == "batch" else "one eth_call per request"
            checks.append((label, n, http, f"{wall * 1000:.0f}", f"{wall * 1e6 / n:.0f}"))
    return rows, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="fulfilments per mode (default 500)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows, checks = measure(args.n)
    emit(
        "submit",
        f"Fulfilling {args.n} evolution requests on anvil (automine, cancun)",
        ["mode", "fulfilments", "txs", "wall s", "fulfilments/s", "gas per fulfilment", "gas total"],
        rows,
        "Agent side only (requests opened beforehand). Gas is receipts' gasUsed, 21,000 base and calldata "
        "included. Batched rows include the isPendingWith pre-check and one gas estimate per batch. anvil mines "
        f"one block per transaction, bounding the per-request rows (load average {load:.1f} at the start).",
    )
    emit(
        "submit_precheck",
        f"isPendingWith pre-check of {args.n} request ids",
        ["method", "ids", "HTTP requests", "wall ms", "us per id"],
        checks,
        "Same node, same ids, all pending.",
    )


if __name__ == "__main__":
    main()
