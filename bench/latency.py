"""Event-to-fulfilment latency of the agent on anvil (automine), p50 and p95.

Run: ``.venv/bin/python -m bench.latency [--n 30] [--n-models 5]``. Starts its own anvil, deploys DevPriceFeed and
LivingCollection from the compiled artifacts (``make setup``) as ``chrysalis deploy`` does (it writes the
deployment record), writes an encrypted agent keystore, and runs :class:`agent.pipeline.Agent` (``Agent.run`` on a
thread, SQLite, the embedded IPFS repo, WebSocket wake-ups) against it. A holder opens one request at a time;
the latency of a request is from its ``requestEvolution`` receipt to the moment the chain reports it no longer
pending (the fulfilment is mined), measured from outside the agent. Each configuration's first request warms up
(lazy imports, first model call) and is not counted.

Two configurations, in one run:

- *null generator*: an image generator and a lore writer that return fixed bytes at once. What remains is the
  pipeline's own overhead: watching, oracles at the event's block, rules, receipt, metadata, IPFS pins, the
  pre-send check, gas estimate, signing, sending, receipt polling and the job store's writes. Target p95 <= 300 ms.
- *embedded models*: the shipped 32x32 sprite diffusion model (50 DDIM steps) and SmolLM2-135M lore, as
  ``chrysalis run`` uses them by default.

A second table splits the time by stage (``chrysalis_stage_latency_seconds``: mean per call).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account import Account
from PIL import Image
from web3 import Web3
from web3.logs import DISCARD

from agent.app import build_agent
from agent.deployment import PRICE_FEED, DeployParams
from agent.devnet import AnvilNode, start_anvil
from agent.domain import ModelRef
from agent.generate.base import (
    GeneratedImage,
    GeneratedLore,
    ImageGenerator,
    ImageRequest,
    LoreRequest,
    LoreWriter,
)
from agent.metrics import REGISTRY
from agent.ops.deploy import deploy
from agent.settings import Settings
from bench._table import emit

FEE = DeployParams().evolution_fee
PASSWORD = "bench"
STAGES = ("inputs", "generate", "publish", "submit", "confirm")


class NullImageGenerator(ImageGenerator):
    """A fixed 1x1 PNG, at once: the pipeline's overhead without inference."""

    def __init__(self) -> None:
        buf = io.BytesIO()
        Image.new("RGB", (1, 1), (120, 200, 80)).save(buf, format="PNG")
        self._png = buf.getvalue()

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(
            "bench/null-image", hashlib.sha256(b"null-image").hexdigest(), kind="image", backend="null"
        )

    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        config = {"device": "cpu", "dtype": "float32", "torch_threads": 1, "batch_size": len(requests)}
        pixels = hashlib.sha256(bytes((120, 200, 80))).hexdigest()
        return [GeneratedImage(self._png, pixels, 1, 1, config) for _ in requests]


class NullLoreWriter(LoreWriter):
    """A template sentence, at once."""

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(
            "bench/null-lore", hashlib.sha256(b"null-lore").hexdigest(), kind="lore", backend="null"
        )

    def write(self, requests: Sequence[LoreRequest]) -> list[GeneratedLore]:
        return [
            GeneratedLore(f"{r.name} rests.", hashlib.sha256(b"").hexdigest(), "", {"max_new_tokens": 0})
            for r in requests
        ]


class Devnet:
    """The contracts, a holder with tokens, the agent's keystore and a deployment record in ``root``."""

    def __init__(self, node: AnvilNode, root: Path, tokens: int, threads: int | None = None) -> None:
        self.node, self.root, self.threads = node, root, threads
        self.w3 = w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        self.admin, self.holder = w3.eth.accounts[:2]
        key = secrets.token_bytes(32)
        agent = Account.from_key(key).address
        w3.provider.make_request("anvil_setBalance", [agent, hex(10**22)])  # type: ignore[arg-type]
        params = DeployParams(
            max_supply=tokens,
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
        feed = w3.eth.contract(address=deployment.address(PRICE_FEED), abi=deployment.abi(PRICE_FEED))
        self._wait(
            self.lc.functions.mint(tokens).transact(
                {"from": self.holder, "value": tokens * params.mint_price}
            )
        )
        w3.provider.make_request("evm_increaseTime", [4000])  # type: ignore[arg-type]
        self._wait(feed.functions.updateAnswer(3_150 * 10**8).transact({"from": self.admin}))

        self.keystore = root / "agent.json"
        self.keystore.write_text(json.dumps(Account.encrypt(key, PASSWORD, iterations=2)))
        (root / "password").write_text(PASSWORD)

    def _wait(self, tx: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx, timeout=60)
        assert receipt["status"] == 1
        return receipt

    def settings(self, name: str) -> Settings:
        data = self.root / name
        return Settings(
            data_dir=data,
            chain={
                "rpc_url": self.node.url, "ws_url": self.node.ws_url, "deployment": self.record, "poll_interval_s": 0.5
            },
            database={"url": f"sqlite:///{data / 'chrysalis.db'}"},
            signer={"keystore": self.keystore, "password_file": self.root / "password"},
            submit={"poll_interval_s": 0.01},
            models={"threads": self.threads},
            agent={"price_window_s": 3600, "batch_size": 1},
        )  # fmt: skip

    def request(self, token_id: int) -> tuple[int, float]:
        receipt = self._wait(
            self.lc.functions.requestEvolution(token_id).transact({"from": self.holder, "value": FEE})
        )
        mined = time.perf_counter()
        (log,) = self.lc.events.EvolutionRequested().process_receipt(receipt, errors=DISCARD)
        return int(log["args"]["requestId"]), mined


def _stage_means() -> dict[str, float]:
    out = {}
    for stage in STAGES:
        total = REGISTRY.get_sample_value("chrysalis_stage_latency_seconds_sum", {"stage": stage}) or 0.0
        count = REGISTRY.get_sample_value("chrysalis_stage_latency_seconds_count", {"stage": stage}) or 0.0
        out[stage] = (total, count)
    return out


def measure(devnet: Devnet, n: int, **models: Any) -> tuple[list[float], dict[str, float]]:
    """Latencies (s) of ``n`` requests, one at a time, and the mean per stage call (ms)."""
    settings = devnet.settings("agent")
    first_token = 1
    before = _stage_means()
    with build_agent(settings, **models) as agent:
        stop = threading.Event()
        runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        runner.start()
        time.sleep(1.0)  # let the watcher catch up and subscribe
        is_pending = devnet.lc.functions.isPending
        latencies = []
        for token in range(first_token, first_token + n + 1):  # the first request warms up (not counted)
            rid, mined = devnet.request(token)
            deadline = time.monotonic() + 300
            while is_pending(rid).call():
                if time.monotonic() > deadline:
                    raise SystemExit(f"request {rid} not fulfilled within 300 s: {agent.status()}")
                time.sleep(0.002)
            if token == first_token:
                before = _stage_means()
            else:
                latencies.append(time.perf_counter() - mined)
        stop.set()
        runner.join(30)
    after = _stage_means()
    means = {}
    for stage in STAGES:
        total = after[stage][0] - before[stage][0]
        count = after[stage][1] - before[stage][1]
        means[stage] = 1000 * total / count if count else float("nan")
    return latencies, means


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="requests with the null generator")
    parser.add_argument("--n-models", type=int, default=5, help="requests with the embedded models")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    rows, stage_rows = [], []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chrysalis-bench-latency-") as tmp, start_anvil() as node:
        runs = [("null generator", args.n, {"image": NullImageGenerator(), "lore": NullLoreWriter()})]
        if args.n_models:
            runs.append(("embedded models", args.n_models, {}))
        for label, n, models in runs:
            root = Path(tmp) / label.replace(" ", "-")
            root.mkdir()
            devnet = Devnet(node, root, n + 1, args.threads)  # its own collection: sees only its own requests
            latencies, means = measure(devnet, n, **models)
            ms = [1000 * x for x in latencies]
            rows.append([label, n, f"{_pct(ms, 0.5):.0f}", f"{_pct(ms, 0.95):.0f}", f"{max(ms):.0f}",
                         f"{statistics.mean(ms):.0f}"])  # fmt: skip
            stage_rows.append([label, *(f"{means[s]:.1f}" for s in STAGES)])
    emit(
        "latency",
        "Event-to-fulfilment latency (anvil automine, one request at a time)",
        ["configuration", "requests", "p50 ms", "p95 ms", "max ms", "mean ms"],
        rows,
        notes="From the requestEvolution receipt to the request no longer pending, observed from outside the agent. "
        "Target for the null generator (the pipeline's own overhead): p95 <= 300 ms. One agent, batch size 1, "
        f"WebSocket wake-ups, SQLite; torch threads: {args.threads or 'default'}; "
        f"load average when it started: {load:.1f} (shared machine).",
    )
    emit(
        "latency_stages",
        "Where the time goes: mean ms per stage call",
        ["configuration", *STAGES],
        stage_rows,
        notes="chrysalis_stage_latency_seconds; confirm = broadcast to receipt. Watching and the job store's writes "
        "are the rest of the end-to-end time.",
    )


if __name__ == "__main__":
    main()
