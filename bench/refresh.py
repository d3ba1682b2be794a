"""A full refresh of a 10,000-token collection on anvil: gas per token and wall time, phase by phase.

Run: ``.venv/bin/python -m bench.refresh [--tokens 10000] [--sample 8] [--threads 1]``. Starts its own anvil
(30M block gas limit, automine), deploys DevPriceFeed and LivingCollection from the compiled artifacts
(``make setup``), mints ``--tokens`` tokens to one holder, and runs :class:`agent.pipeline.Agent`'s worker on
refresh jobs (SQLite, the embedded IPFS repo) as ``chrysalis run`` would, between no evolutions.

Three passes over the whole collection, with a *null generator* (a fixed 1x1 PNG and a template sentence, at once)
so that the table measures the refresh itself -- reading every token at one block, the rules, receipts, metadata,
IPFS pins, the pre-send check, refreshMetadata batches and their gas -- and not inference:

1. *first render* (``refresh.first_render``): every token gets its first metadata digest (first write of the slot);
2. *repaint after a price move* (+13 %: every token's mood changes): image-to-image from each previous image, a
   parent link, and an overwrite of every digest;
3. *nothing changed*: every token is read and evaluated, none is regenerated or written.

Then a sample of ``--sample`` tokens is force-refreshed with the shipped models (the 32x32 sprite diffusion model
and the embedded SmolLM2-135M lore) to give the real per-token inference time, which is what a real full refresh
adds to pass 2 per token.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from agent.deployment import ContractRecord, Deployment, write_abi
from agent.devnet import AnvilNode, start_anvil
from agent.jobs import JobState
from agent.pipeline import Agent
from agent.settings import RefreshSettings, Settings
from bench._table import emit
from bench.latency import NullImageGenerator, NullLoreWriter

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / ".build" / "__local__.json"
PASSWORD = "bench"
PHASES = ("evaluate", "generate_chunk", "publish_chunk", "send", "confirm")


class Collection:
    """A deployed collection of ``tokens`` tokens held by one wallet, a price feed with an hour of history, the
    agent's keystore and the deployment record, under ``root``."""

    def __init__(self, node: AnvilNode, root: Path, tokens: int) -> None:
        if not MANIFEST.is_file():
            raise SystemExit(f"{MANIFEST} is missing: run `make setup` to compile the contracts")
        types = json.loads(MANIFEST.read_text())["contractTypes"]
        self.node, self.root = node, root
        self.w3 = w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 120}))
        self.admin, self.holder = w3.eth.accounts[:2]

        def deploy(name: str, *args: Any) -> tuple[Any, Any]:
            art = types[name]
            factory = w3.eth.contract(abi=art["abi"], bytecode=art["deploymentBytecode"]["bytecode"])
            receipt = self.wait(factory.constructor(*args).transact({"from": self.admin}))
            return w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"]), receipt

        self.feed, first = deploy("DevPriceFeed", 8, "ETH / USD (dev)", 3_000 * 10**8)
        self.lc, _ = deploy(
            "LivingCollection",
            "Chrysalis",
            "CHRYS",
            self.admin,
            self.admin,
            tokens,
            0,
            0,
            5 * 10**14,
            3600,
            "",
            500,
        )
        key = secrets.token_bytes(32)
        agent = Account.from_key(key).address
        w3.provider.make_request("anvil_setBalance", [agent, hex(10**24)])  # type: ignore[arg-type]
        f = self.lc.functions
        for fn in (
            f.registerModel(b"\x11" * 32, "ipfs://m"),
            f.setActiveModel(1),
            f.grantRole(f.AGENT_ROLE().call(), agent),
        ):
            self.wait(fn.transact({"from": self.admin}))
        minted = 0
        while minted < tokens:  # ~250 mints fit a 30M-gas block
            n = min(250, tokens - minted)
            self.wait(f.mint(n).transact({"from": self.holder, "gas": 25_000_000}))
            minted += n
        w3.provider.make_request("evm_increaseTime", [4000])  # type: ignore[arg-type]
        self.wait(self.feed.functions.updateAnswer(3_150 * 10**8).transact({"from": self.admin}))

        self.keystore = root / "agent.json"
        self.keystore.write_text(json.dumps(Account.encrypt(key, PASSWORD, iterations=2)))
        (root / "password").write_text(PASSWORD)
        out = root / "deployments"
        block = w3.eth.get_block(first["blockNumber"])
        self.record = Deployment(
            chain_id=w3.eth.chain_id,
            network="ethereum:local:foundry",
            contracts={
                "LivingCollection": ContractRecord(
                    address=self.lc.address, abi=write_abi("LivingCollection", self.lc.abi, out)
                ),
                "DevPriceFeed": ContractRecord(
                    address=self.feed.address, abi=write_abi("DevPriceFeed", self.feed.abi, out)
                ),
            },
            deploy_block=first["blockNumber"],
            deploy_block_hash="0x" + bytes(block["hash"]).hex(),
            deployer=self.admin,
            agent=agent,
        ).save(out / "local.json")

    def wait(self, tx: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx, timeout=300)
        assert receipt["status"] == 1
        return receipt

    def settings(self, name: str, threads: int, **refresh: Any) -> Settings:
        data = self.root / name
        return Settings(
            data_dir=data,
            chain={"rpc_url": self.node.url, "deployment": self.record, "poll_interval_s": 0.5},
            database={"url": f"sqlite:///{data / 'chrysalis.db'}"},
            signer={"keystore": self.keystore, "password_file": self.root / "password"},
            submit={"poll_interval_s": 0.01, "receipt_timeout_s": 600},
            models={"threads": threads, "device": "cpu"},
            agent={"price_window_s": 3600, "lease_s": 600},
            refresh=RefreshSettings(**{"first_render": True, "max_gas_per_day": None, **refresh}),
        )


class PhaseTimer:
    """Wall time spent in each of the runner's phases (wraps its methods)."""

    def __init__(self, runner: Any) -> None:
        self.totals = dict.fromkeys(PHASES, 0.0)
        for name in PHASES:
            setattr(runner, name, self._wrap(name, getattr(runner, name)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] += time.perf_counter() - started

        return timed

    def reset(self) -> None:
        self.totals = dict.fromkeys(PHASES, 0.0)


def run_refresh(agent: Agent, tokens: list[int] | None, *, force: bool = False) -> tuple[Any, float]:
    """Queue a manual refresh and work until it is finished; returns the job and the wall time."""
    assert agent.refresh is not None
    job, _ = agent.refresh.queue_manual(tokens, force=force)
    started = time.perf_counter()
    while True:
        worked = agent.work_once()
        job = agent.store.get(job.id)
        if job.state.terminal:
            break
        if not worked:
            time.sleep(0.01)
    elapsed = time.perf_counter() - started
    if job.state != JobState.CONFIRMED:
        raise SystemExit(f"refresh job {job.id} ended {job.state.value}: {job.reason}")
    return job, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="collection size")
    parser.add_argument(
        "--sample", type=int, default=8, help="tokens refreshed with the shipped models (0: none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the shipped models")
    parser.add_argument("--chunk", type=int, default=250, help="refresh.chunk_size")
    parser.add_argument("--send-batch", type=int, default=1000, help="refresh.send_batch")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows: list[list[Any]] = []
    phase_rows: list[list[Any]] = []
    sample_row: list[Any] | None = None
    with tempfile.TemporaryDirectory(prefix="chrysalis-bench-refresh-") as tmp, start_anvil() as node:
        setup_started = time.perf_counter()
        col = Collection(node, Path(tmp), args.tokens)
        print(f"deployed and minted {args.tokens} tokens in {time.perf_counter() - setup_started:.0f} s")
        settings = col.settings("agent", args.threads, chunk_size=args.chunk, send_batch=args.send_batch)
        with Agent.from_settings(settings, image=NullImageGenerator(), lore=NullLoreWriter()) as agent:
            timer = PhaseTimer(agent.refresh.runner)
            passes: list[tuple[str, Callable[[], None]]] = [
                ("first render (first write)", lambda: None),
                ("repaint after a +13 % price move (overwrite)",
                 lambda: col.wait(col.feed.functions.updateAnswer(3_400 * 10**8).transact({"from": col.admin}))),
                ("nothing changed", lambda: None),
            ]  # fmt: skip
            for label, before in passes:
                before()
                timer.reset()
                job, wall = run_refresh(agent, None)
                result = dict(job.result or {})
                counts = result.get("counts") or {}
                written = counts.get("confirmed", 0)
                gas = int(result.get("gas_used") or 0)
                txs = len(result.get("transactions") or [])
                rows.append([
                    label, args.tokens, written, counts.get("unchanged", 0), txs, f"{gas:,}",
                    f"{gas / written:,.0f}" if written else "-", f"{wall:.0f}", f"{args.tokens / wall:.0f}",
                ])  # fmt: skip
                t = timer.totals
                phase_rows.append([label, *(f"{t[p]:.1f}" for p in PHASES), f"{wall - sum(t.values()):.1f}"])
                print(rows[-1], phase_rows[-1], flush=True)
        if args.sample:
            sample = list(range(1, args.sample + 1))
            # the same data directory: the tokens' current metadata and images are in its IPFS repo
            real = col.settings("agent", args.threads, chunk_size=args.sample, send_batch=args.sample)
            with Agent.from_settings(real) as agent:
                timer = PhaseTimer(agent.refresh.runner)
                run_refresh(agent, sample[:1], force=True)  # loads the models (not counted)
                timer.reset()
                job, wall = run_refresh(agent, sample, force=True)
                t = timer.totals
                sample_row = [
                    len(sample), f"{1000 * t['generate_chunk'] / len(sample):.0f}",
                    f"{1000 * t['publish_chunk'] / len(sample):.0f}", f"{1000 * t['evaluate'] / len(sample):.0f}",
                    f"{wall:.1f}", f"{args.tokens * t['generate_chunk'] / len(sample) / 3600:.1f}",
                ]  # fmt: skip
    notes = (
        f"anvil automine, 30M block gas limit; refreshMetadata batches capped at half the block (15M gas, "
        f"submit.refresh_max_gas); refresh.chunk_size {args.chunk}, send_batch {args.send_batch}; one holder; "
        "SQLite, the embedded IPFS repo (replication 1). Null image generator and lore writer (a fixed PNG and a "
        "template sentence): the table is the refresh's own cost; add the shipped models' per-token time below "
        f"for a real repaint. Load average when it started: {load:.1f} (2-core machine shared with other work)."
    )
    emit(
        "refresh",
        f"A full refresh of {args.tokens:,} tokens (null generator)",
        ["pass", "tokens", "written", "unchanged", "txs", "gas", "gas / token", "wall s", "tokens / s"],
        rows,
        notes=notes,
    )
    emit(
        "refresh_phases",
        "Where a full refresh's time goes (seconds)",
        ["pass", "read + rules", "generate", "publish (IPFS)", "send", "confirm", "other"],
        phase_rows,
        notes="read + rules: every token's state, wallet and rules at the refresh block (RefreshRunner.evaluate); "
        "generate: null generator + receipts; publish: metadata block, pins, asset copies; send: pre-send check, "
        "gas estimates, signing, broadcast; confirm: receipts. other: the job store's claims and bookkeeping.",
    )
    if sample_row is not None:
        emit(
            "refresh_models",
            "Per-token cost of a real repaint (shipped models, CPU)",
            [
                "tokens",
                "generate ms / token",
                "publish ms / token",
                "read ms / token",
                "wall s",
                "est. h for all",
            ],
            [sample_row],
            notes=f"The 32x32 sprite diffusion model (50 DDIM steps, image-to-image) and SmolLM2-135M lore on "
            f"{args.threads} torch thread(s), one batch of the sample; est. h for all = generate ms x "
            f"{args.tokens:,} tokens. Model loading is not counted.",
        )


if __name__ == "__main__":
    main()
