"""A full refresh of a 10,000-token collection on anvil: gas per token and wall time, phase by phase.

Run: ``.venv/bin/python -m bench.refresh [--tokens 10000] [--sample 8] [--threads 1]``. Starts its own anvil
(30M block gas limit, automine), deploys DevPriceFeed and LivingCollection from the compiled artifacts
(``make setup``) as ``chrysalis deploy`` does, mints ``--tokens`` tokens to one holder, and runs
:class:`agent.pipeline.Agent`'s worker on refresh jobs (SQLite, the embedded IPFS repo) as ``chrysalis run`` would,
between no evolutions.

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

from agent.app import build_agent
from agent.deployment import PRICE_FEED, DeployParams
from agent.devnet import AnvilNode, start_anvil
from agent.jobs import JobState
from agent.ops.deploy import deploy
from agent.pipeline import Agent
from agent.settings import RefreshSettings, Settings
from bench._table import emit
from bench.latency import NullImageGenerator, NullLoreWriter

PASSWORD = "bench"
PHASES = ("evaluate", "generate_chunk", "publish_chunk", "send", "confirm")


class Collection:
    """A deployed collection of ``tokens`` tokens held by one wallet, a price feed with an hour of history, the
    agent's keystore and the deployment record, under ``root``."""

    def __init__(self, node: AnvilNode, root: Path, tokens: int) -> None:
        self.node, self.root = node, root
        root.mkdir(parents=True, exist_ok=True)
        self.w3 = w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 120}))
        self.admin, self.holder = w3.eth.accounts[:2]
        key = secrets.token_bytes(32)
        agent = Account.from_key(key).address
        w3.provider.make_request("anvil_setBalance", [agent, hex(10**24)])  # type: ignore[arg-type]
        params = DeployParams(
            max_supply=tokens,
            mint_price=0,
            max_per_wallet=0,
            model_digest="0x" + "11" * 32,
            model_manifest="ipfs://m",
            agent=agent,
        )
        # as `chrysalis deploy --from 0` does: the feed, the collection, the model, the agent's roles, the record
        deployed = deploy(node.url, "dev:0", params, out=root / "deployments" / "local.json")
        self.record = deployed.record
        deployment = deployed.deployment
        self.lc = w3.eth.contract(address=deployment.address(), abi=deployment.abi())
        self.feed = w3.eth.contract(address=deployment.address(PRICE_FEED), abi=deployment.abi(PRICE_FEED))
        minted = 0
        while minted < tokens:  # ~250 mints fit a 30M-gas block
            n = min(250, tokens - minted)
            self.wait(self.lc.functions.mint(n).transact({"from": self.holder, "gas": 25_000_000}))
            minted += n
        w3.provider.make_request("evm_increaseTime", [4000])  # type: ignore[arg-type]
        self.wait(self.feed.functions.updateAnswer(3_150 * 10**8).transact({"from": self.admin}))

        self.keystore = root / "agent.json"
        self.keystore.write_text(json.dumps(Account.encrypt(key, PASSWORD, iterations=2)))
        (root / "password").write_text(PASSWORD)

    def wait(self, tx: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx, timeout=300)
        assert receipt["status"] == 1
        return receipt

    def settings(self, name: str, threads: int, **refresh: Any) -> Settings:
        """Agent settings on this collection; ``refresh`` sets the [refresh] section (first render on)."""
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


def full_passes(
    node: AnvilNode, root: Path, args: argparse.Namespace
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The three null-generator passes over a collection of ``args.tokens``: result rows and phase rows."""
    rows: list[list[Any]] = []
    phase_rows: list[list[Any]] = []
    started = time.perf_counter()
    col = Collection(node, root, args.tokens)
    print(f"deployed and minted {args.tokens} tokens in {time.perf_counter() - started:.0f} s", flush=True)
    settings = col.settings("agent", args.threads, chunk_size=args.chunk, send_batch=args.send_batch)
    price_move = col.feed.functions.updateAnswer(3_400 * 10**8)
    passes: list[tuple[str, Callable[[], Any]]] = [
        ("first render (first write)", lambda: None),
        (
            "repaint after a +13 % price move (overwrite)",
            lambda: col.wait(price_move.transact({"from": col.admin})),
        ),
        ("nothing changed", lambda: None),
    ]
    with build_agent(settings, image=NullImageGenerator(), lore=NullLoreWriter()) as agent:
        timer = PhaseTimer(agent.refresh.runner)
        for label, before in passes:
            before()
            timer.reset()
            job, wall = run_refresh(agent, None)
            result = dict(job.result or {})
            counts = result.get("counts") or {}
            written = counts.get("confirmed", 0)
            gas = int(result.get("gas_used") or 0)
            rows.append([
                label, args.tokens, written, counts.get("unchanged", 0), len(result.get("transactions") or []),
                f"{gas:,}", f"{gas / written:,.0f}" if written else "-", f"{wall:.0f}", f"{args.tokens / wall:.0f}",
            ])  # fmt: skip
            t = timer.totals
            phase_rows.append([label, *(f"{t[p]:.1f}" for p in PHASES), f"{wall - sum(t.values()):.1f}"])
            print(rows[-1], phase_rows[-1], flush=True)
    return rows, phase_rows


def sample_passes(node: AnvilNode, root: Path, args: argparse.Namespace) -> list[list[Any]]:
    """A small collection of ``args.sample`` tokens with the shipped models: a first image, then a repaint.

    Its own collection: a real repaint starts from a real image (the sprite model refuses the null generator's
    1x1 PNG as an init image)."""
    small = Collection(node, root, args.sample)
    settings = small.settings("models", args.threads, chunk_size=args.sample, send_batch=args.sample)
    price_move = small.feed.functions.updateAnswer(3_400 * 10**8)
    passes: list[tuple[str, Callable[[], Any]]] = [
        ("first image (no init image)", lambda: None),
        (
            "repaint after a price move (image-to-image)",
            lambda: small.wait(price_move.transact({"from": small.admin})),
        ),
    ]
    rows: list[list[Any]] = []
    with build_agent(settings) as agent:
        timer = PhaseTimer(agent.refresh.runner)
        for label, before in passes:
            before()
            timer.reset()
            job, wall = run_refresh(agent, None)
            n = int(((job.result or {}).get("counts") or {}).get("confirmed", 0))
            if n != args.sample:
                raise SystemExit(f"the sample refresh wrote {n} of {args.sample} tokens: {job.result}")
            t = timer.totals
            rows.append([
                label, n, f"{1000 * t['generate_chunk'] / n:,.0f}", f"{1000 * t['publish_chunk'] / n:.0f}",
                f"{1000 * t['evaluate'] / n:.0f}", f"{wall:.1f}", f"{args.tokens * t['generate_chunk'] / n / 3600:.1f}",
            ])  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="collection size")
    parser.add_argument(
        "--sample", type=int, default=8, help="tokens refreshed with the shipped models (0: none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the shipped models")
    parser.add_argument("--chunk", type=int, default=250, help="refresh.chunk_size")
    parser.add_argument("--send-batch", type=int, default=1000, help="refresh.send_batch")
    parser.add_argument("--sample-only", action="store_true", help="only the shipped-models sample")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chrysalis-bench-refresh-") as tmp, start_anvil() as node:
        if not args.sample_only:
            rows, phase_rows = full_passes(node, Path(tmp) / "full", args)
            emit(
                "refresh",
                f"A full refresh of {args.tokens:,} tokens (null generator)",
                [
                    "pass",
                    "tokens",
                    "written",
                    "unchanged",
                    "txs",
                    "gas",
                    "gas / token",
                    "wall s",
                    "tokens / s",
                ],
                rows,
                notes="anvil automine, 30M block gas limit; refreshMetadata batches capped at half a block (15M gas, "
                f"submit.refresh_max_gas); refresh.chunk_size {args.chunk}, send_batch {args.send_batch}; one holder; "
                "SQLite, the embedded IPFS repo (replication 1). Null image generator and lore writer (a fixed PNG "
                "and a template sentence): the refresh's own cost; the shipped models' per-token time is in the "
                f"next table. Load average when it started: {load:.1f} (2-core machine shared with other work).",
            )
            emit(
                "refresh_phases",
                "Where a full refresh's time goes (seconds)",
                ["pass", "read + rules", "generate", "publish (IPFS)", "send", "confirm", "other"],
                phase_rows,
                notes="read + rules: every token's state, wallet and rules at the refresh block (RefreshRunner."
                "evaluate); generate: null generator, receipts, PNG into the repo; publish: metadata block, pins, "
                "asset copies; send: pre-send check, gas estimates, signing, broadcast; confirm: receipts; other: "
                "the job store's claims and bookkeeping between steps.",
            )
        if args.sample:
            sample_rows = sample_passes(node, Path(tmp) / "sample", args)
            emit(
                "refresh_models",
                "Per-token cost with the shipped models (CPU)",
                ["pass", "tokens", "generate ms / token", "publish ms / token", "read ms / token", "wall s",
                 f"est. h for {args.tokens:,}"],
                sample_rows,
                notes=f"A collection of {args.sample} tokens refreshed in one batch with the 32x32 sprite diffusion "
                f"model (50 DDIM steps) and SmolLM2-135M lore (embedded GGUF, greedy) on {args.threads} torch "
                f"thread(s); models loaded before the first pass (not counted). The estimate multiplies generate ms by "
                f"{args.tokens:,}: inference dominates a real full refresh. Load average when it started: {load:.1f}.",
            )  # fmt: skip


if __name__ == "__main__":
    main()
