"""``chrysalis run`` as a real process on anvil: it fulfils requests, serves /metrics (scraped over HTTP: events
seen, jobs by state, stage latencies, gas spent, RPC errors), and on SIGTERM mid-job finishes its step, gives
the job back and exits 0; a restarted agent settles that job exactly once.

Images come from the shipped sprite model, lore from a tiny random-weight causal LM (fast on CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families

from agent.devnet import AnvilNode, free_port
from agent.jobs import JobState, Stage
from agent.ops.accounts import dev_address, dev_key
from agent.ops.config_template import toml_value
from agent.store import open_job_store
from tests.ops.conftest import HOLDER
from tests.support.devchain import FEE, CollectionChain

# ~35 s on 2 busy cores, but its own waits (180 s for the agent to start, 120 s per fulfilment) add up past 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.anvil, pytest.mark.timeout(600)]

PASSWORD = "ops-run-test"
AGENT = 9


def _write_config(workdir: Path, chain: CollectionChain, lm: Path, metrics_port: int) -> Path:
    keystore = workdir / "agent-key.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(AGENT), PASSWORD, iterations=2)))
    (workdir / "agent-key.password").write_text(PASSWORD)
    data = workdir / "data"
    tables: dict[str, dict[str, Any]] = {
        "chain": {"rpc_url": chain.url, "deployment": str(chain.record), "poll_interval_s": 0.1,
                  "rpc_timeout_s": 0.5, "rpc_retries": 0},
        "database": {"url": f"sqlite:///{data / 'agent.db'}"},
        "models": {"lore_backend": "transformers", "lore_model": str(lm), "lore_max_new_tokens": 12,
                   "device": "cpu", "threads": 1, "cache_dir": str(data / "models")},
        "signer": {"keystore": str(keystore), "password_file": str(workdir / "agent-key.password")},
        "submit": {"poll_interval_s": 0.05, "receipt_timeout_s": 120, "rpc_retries": 0},
        "agent": {"lease_s": 5.0, "retry_base_s": 0.2, "retry_cap_s": 1.0, "price_window_s": 3_600},
        "metrics": {"port": metrics_port},
        "log": {"format": "json"},
    }  # fmt: skip
    lines = [f"data_dir = {toml_value(str(data))}"]
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
    path = workdir / "chrysalis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class AgentProcess:
    """``chrysalis run`` in a subprocess, its JSON-lines log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "CHRYSALIS_CONFIG": str(config)}
        env = {k: v for k, v in env.items() if not k.startswith("CHRYSALIS_") or k in ("CHRYSALIS_CONFIG",)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from agent.cli import main; main()", "run"],
            cwd=config.parent,
            env=env,
            stdout=self._log,
            stderr=self._log,
        )

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"message": line})
        return out

    def wait_for_log(self, needle: str, timeout: float = 180) -> dict[str, Any]:
        return _until(
            lambda: next((r for r in self.records() if needle in r.get("message", "")), None),
            timeout,
            f"log line {needle!r}",
            self,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def _until(fn: Callable[[], Any], timeout: float, what: str, agent: AgentProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if agent is not None and agent.proc.poll() is not None:
            raise AssertionError(f"the agent exited ({agent.proc.returncode}) before {what}:\n"
                                 + agent.log_path.read_text()[-4000:])  # fmt: skip
        if time.monotonic() > deadline:
            tail = agent.log_path.read_text()[-4000:] if agent is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def _job(url: str, request_id: int) -> Any:
    with open_job_store(url) as store:
        return next(
            (j for j in store.list_jobs(limit=100) if j.payload.get("request_id") == request_id), None
        )


@pytest.fixture
def agent_run(
    configured: CollectionChain, workdir: Path, tiny_lm: Path
) -> Iterator[Callable[[], AgentProcess]]:
    port = free_port()
    config = _write_config(workdir, configured, tiny_lm, port)
    started: list[AgentProcess] = []

    def start() -> AgentProcess:
        agent = AgentProcess(config, workdir / "agent.log")
        agent.metrics_port = port  # type: ignore[attr-defined]
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.kill()


def test_run_fulfils_serves_metrics_and_stops_gracefully_mid_job(
    configured: CollectionChain,
    anvil: AnvilNode,
    workdir: Path,
    agent_run: Callable[[], AgentProcess],
    chrysalis,
    monkeypatch,
) -> None:
    chain = configured
    db = f"sqlite:///{workdir / 'data' / 'agent.db'}"
    holder = dev_address(HOLDER)
    f = chain.collection.functions

    agent = agent_run()
    agent.wait_for_log("running")
    port = agent.metrics_port  # type: ignore[attr-defined]

    # The node stalls for a moment: the agent counts RPC errors and carries on.
    assert anvil.url == chain.url
    anvil.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.0)
    finally:
        anvil.process.send_signal(signal.SIGCONT)
    _until(lambda: _sum(_scrape(port), "chrysalis_rpc_errors_total") > 0, 30, "RPC errors on /metrics", agent)

    # 1. A request is fulfilled end to end.
    first = chain.transact(f.requestEvolution(1), holder, FEE)
    first_id = int(
        chain.collection.events.EvolutionRequested().process_receipt(first)[0]["args"]["requestId"]
    )
    _until(lambda: not f.isPending(first_id).call(), 120, "the first request to be fulfilled", agent)
    assert f.stageOf(1).call() == 1
    assert f.tokenURI(1).call().startswith("ipfs://bafkrei")

    def confirmed_on_metrics() -> Any:
        samples = _scrape(port)
        return samples if _sum(samples, "chrysalis_jobs", state="confirmed") == 1 else None

    samples = _until(confirmed_on_metrics, 30, "the confirmed job on /metrics", agent)
    assert _sum(samples, "chrysalis_events_seen_total", event="EvolutionRequested") >= 1
    assert _sum(samples, "chrysalis_stage_latency_seconds_count", stage="generate") >= 1
    assert _sum(samples, "chrysalis_stage_latency_seconds_count", stage="submit") >= 1
    assert _sum(samples, "chrysalis_gas_spent_total") > 21_000
    assert _sum(samples, "chrysalis_rpc_errors_total") > 0

    # 2. A second request whose fulfilment cannot be mined (mining paused): SIGTERM while the agent waits on it.
    chain.rpc("evm_setAutomine", False)
    tx = f.requestEvolution(2).transact({"from": holder, "value": FEE})
    chain.rpc("evm_mine")
    second = chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    second_id = int(
        chain.collection.events.EvolutionRequested().process_receipt(second)[0]["args"]["requestId"]
    )

    def submitted_job() -> Any:
        job = _job(db, second_id)
        return job if job is not None and job.stage is Stage.SUBMITTED else None

    submitted = _until(submitted_job, 120, "the second job to be submitted", agent)
    assert submitted.state is JobState.RUNNING
    code = agent.stop(signal.SIGTERM)
    assert code == 0, agent.log_path.read_text()[-3000:]
    messages = [r.get("message", "") for r in agent.records()]
    assert any("SIGTERM received: finishing the current step" in m for m in messages)
    assert any(m.startswith("agent stopped after") for m in messages)
    released = _job(db, second_id)
    assert released.state is JobState.QUEUED and released.worker_id is None  # the lease was given back
    assert released.stage is Stage.SUBMITTED  # and what it did is kept: a restart resumes the wait
    assert f.isPending(second_id).call()

    # 3. Mining resumes; a restarted agent settles the job from the chain, fulfilled exactly once.
    chain.rpc("evm_setAutomine", True)
    chain.rpc("evm_mine")
    again = agent_run()

    def confirmed_job() -> Any:
        job = _job(db, second_id)
        return job if job is not None and job.state is JobState.CONFIRMED else None

    _until(confirmed_job, 120, "the second job to be confirmed after the restart", again)
    assert again.stop(signal.SIGTERM) == 0
    evolved = chain.collection.events.Evolved().get_logs(from_block=0)
    assert sorted(int(e["args"]["requestId"]) for e in evolved) == [first_id, second_id]

    # 4. `chrysalis status` reads what the agent recorded: its cursor, its jobs, the gas of its two transactions.
    monkeypatch.setenv("CHRYSALIS_DATABASE__URL", db)
    report = json.loads(chrysalis("--config", str(workdir / "chrysalis.toml"), "status", "--json").out)
    gas = sum(chain.w3.eth.get_transaction_receipt(e["transactionHash"])["gasUsed"] for e in evolved)
    assert report["jobs"]["confirmed"] == 2 and report["jobs"]["running"] == 0
    assert report["gas_spent"] == gas and report["fulfilment_txs"] == 2
    assert report["cursor_block"] == chain.w3.eth.block_number and report["lag"] == 0
