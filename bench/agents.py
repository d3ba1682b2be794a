"""Fulfilments per second with 1, 2 and 3 agents on one PostgreSQL database, and the time to recover from a killed
agent.

Run: ``.venv/bin/python -m bench.agents [--requests 60] [--agents 1,2,3] [--postgres URL]``. Each configuration gets
its own anvil (automine), collection (deployed as ``chrysalis deploy --from 0`` does) and PostgreSQL schema (dropped
afterwards). Agent 1 holds the deployment's agent key; every other key is made and granted with
:func:`agent.ops.agent_keys.add_agent_key` (what ``chrysalis agent add-key --fund`` does). Every agent is its own
process running :func:`agent.ops.runner.run_agent` (what ``chrysalis run`` runs) with a *null* image generator and
lore writer (fixed bytes at once, :mod:`bench.latency`), so what is measured is the agents' pipeline and their
sharing of one job table: watching, oracles, rules, IPFS pins, signing, sending and receipts.

*Throughput*: once every agent is up and one holds the ``watch`` role, a holder opens ``--requests`` evolution
requests that are mined in one go (automine paused while they are sent); the time runs from that block until the
chain has an ``Evolved`` log for every one of them.

*Recovery*: three agents, the same burst; once the first request is fulfilled the agent holding the ``watch`` role
is SIGKILLed (while it holds a job), and one more request is opened at once (only a new watcher can see it).
Measured from the kill: until another agent holds the ``watch`` role (the killed agent's last renewal plus
``agent.role_lease_s``, so at most that and a survivor's next try), and until every request is fulfilled (the killed
agent's jobs come back when their ``agent.lease_s`` lapses). Each request must be fulfilled exactly once.

The machine's cores are shared by anvil, PostgreSQL and every agent: on a small machine more agents mostly share the
same CPUs, so the ratio says how well they share the work, not how a fleet of machines would scale.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

POSTGRES_URL = os.environ.get(
    "CHRYSALIS_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
PASSWORD = "bench"
ROLE_LEASE_S = 5.0
LEASE_S = 10.0
BATCH_SIZE = 8
READY_TIMEOUT_S = 300.0
FULFIL_TIMEOUT_S = 600.0


# -- one agent process --------------------------------------------------------------------------------------------


def worker(config: Path) -> int:
    """``chrysalis run`` with null models: the agent process of this bench (``--worker CONFIG``)."""
    from agent.app import build_agent
    from agent.ops.runner import run_agent
    from agent.settings import load_settings
    from bench.latency import NullImageGenerator, NullLoreWriter

    def factory(settings: Any, *, worker_id: str | None = None) -> Any:
        return build_agent(settings, worker_id=worker_id, image=NullImageGenerator(), lore=NullLoreWriter())

    return run_agent(load_settings(config), live=False, agent_factory=factory)


@dataclass
class AgentProc:
    worker_id: str
    proc: subprocess.Popen[bytes]
    log: Path

    def running(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"agent {self.worker_id} exited ({self.proc.returncode}):\n{self.tail()}")
        return " running: chain head" in self.log.read_text(errors="replace")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _toml(tables: dict[str, Any]) -> str:
    from agent.ops.config_template import toml_value

    lines = [f"{k} = {toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for name, values in tables.items():
        if isinstance(values, dict):
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


# -- the chain and the database -------------------------------------------------------------------------------------


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema on ``url``'s server, dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    admin = sa.create_engine(url, pool_pre_ping=True)
    schema = f"chrysalis_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise SystemExit(f"PostgreSQL is not reachable at {url} ({exc.orig}); pass --postgres URL") from None
    try:
        yield (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Fleet:
    """A collection on a fresh anvil, ``n`` agent keys granted, a holder with ``tokens`` tokens, ``n`` agent
    processes on one PostgreSQL schema."""

    def __init__(self, stack: ExitStack, root: Path, n: int, tokens: int, postgres: str) -> None:
        from eth_account import Account
        from web3 import Web3

        from agent.deployment import PRICE_FEED, DeployParams
        from agent.devnet import start_anvil
        from agent.ops.accounts import dev_key
        from agent.ops.agent_keys import add_agent_key
        from agent.ops.deploy import deploy
        from agent.settings import Settings

        self.root = root
        self._checked = 0.0
        self._evolved: list[int] = []
        self._next_block = 0
        node = stack.enter_context(start_anvil("--gas-limit", "1000000000"))
        self.url = node.url
        self.w3 = w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        self.holder = w3.eth.accounts[1]
        params = DeployParams(
            max_supply=tokens + 1, max_per_wallet=0, model_digest="0x" + "11" * 32, model_manifest="ipfs://m"
        )
        deployed = deploy(node.url, "dev:0", params, out=root / "deployments" / "local.json")
        self.record, deployment = deployed.record, deployed.deployment
        self.lc = w3.eth.contract(address=deployment.address(), abi=deployment.abi())
        self.scope = f"{deployment.chain_id}:{deployment.address().lower()}:"
        feed = w3.eth.contract(address=deployment.address(PRICE_FEED), abi=deployment.abi(PRICE_FEED))
        for start in range(0, tokens + 1, 100):
            count = min(100, tokens + 1 - start)
            self._wait(
                self.lc.functions.mint(count).transact(
                    {"from": self.holder, "value": count * params.mint_price}
                )
            )
        w3.provider.make_request("evm_increaseTime", [4000])  # type: ignore[arg-type]
        self._wait(feed.functions.updateAnswer(3_150 * 10**8).transact({"from": w3.eth.accounts[0]}))
        self.next_token = 1

        self.db_url = stack.enter_context(postgres_schema(postgres))
        keys = root / "keys"
        keys.mkdir()
        (keys / "password").write_text(PASSWORD)
        first = keys / "agent-1.json"  # the deployment's agent (dev 0, the deployer)
        first.write_text(json.dumps(Account.encrypt(dev_key(0), PASSWORD, iterations=2)))
        keystores = [first]
        settings = Settings(chain={"rpc_url": node.url, "deployment": self.record})
        for i in range(2, n + 1):
            added = add_agent_key(
                settings, out=keys / f"agent-{i}.json", password_file=keys / "password", admin="dev:0",
                fund_wei=10**20,
            )  # fmt: skip
            keystores.append(Path(str(added.keystore)))
        self.agents: list[AgentProc] = []
        for i, keystore in enumerate(keystores, 1):
            home = root / f"agent-{i}"
            home.mkdir()
            config = home / "chrysalis.toml"
            config.write_text(
                _toml(
                    {
                        "data_dir": str(home / "data"),
                        "chain": {"rpc_url": node.url, "deployment": str(self.record), "poll_interval_s": 0.2},
                        "database": {"url": self.db_url},
                        "signer": {"keystore": str(keystore), "password_file": str(keys / "password")},
                        "submit": {"poll_interval_s": 0.05, "receipt_timeout_s": 120},
                        "agent": {
                            "worker_id": f"agent-{i}", "lease_s": LEASE_S, "role_lease_s": ROLE_LEASE_S,
                            "retry_base_s": 0.2, "retry_cap_s": 1.0, "price_window_s": 3_600,
                            "batch_size": BATCH_SIZE,
                        },
                        "gates": {"enabled": False},  # a 1x1 image and one short sentence: not what is measured
                        "metrics": {"enabled": False},
                        "log": {"format": "json"},
                    }
                )
            )  # fmt: skip
            log = home / "agent.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHRYSALIS_")}
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.agents", "--worker", str(config)],
                    cwd=Path(__file__).resolve().parents[1],
                    env={**env, "HF_HUB_OFFLINE": "1"},
                    stdout=sink,
                    stderr=sink,
                )
            agent = AgentProc(f"agent-{i}", proc, log)
            self.agents.append(agent)
            stack.callback(agent.stop)

    def _wait(self, tx: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx, timeout=60)
        if receipt["status"] != 1:
            raise SystemExit(f"transaction {tx.hex()} reverted")
        return receipt

    def ready(self) -> str:
        """Wait until every agent runs and one holds the watch role; return that agent's worker id."""
        _until(lambda: all(a.running() for a in self.agents), READY_TIMEOUT_S, "every agent to start")
        return str(_until(self.watcher, READY_TIMEOUT_S, "an agent to take the watch role"))

    def watcher(self) -> str | None:
        """The live agent holding the watch role (None: none)."""
        from agent.store.roles import WATCH

        held = [a for a in self._agents() if WATCH in a.roles and a.stopped_at is None]
        return held[0].worker_id if held else None

    def jobs_held(self, worker_id: str) -> int:
        """How many running jobs ``worker_id`` holds."""
        return sum(a.jobs_held for a in self._agents() if a.worker_id == worker_id)

    def _agents(self) -> list[Any]:
        from agent.store import Database
        from agent.store.roles import list_agents

        db = Database.open(self.db_url)
        try:
            return list_agents(db, scope=self.scope)
        finally:
            db.close()

    def burst(self, n: int) -> tuple[list[int], float]:
        """Open ``n`` requests mined together; their ids and when that block was mined (``perf_counter``)."""
        from web3.logs import DISCARD

        fee = int(self.lc.functions.evolutionFee().call())
        first = self.next_token
        gas = 2 * self.lc.functions.requestEvolution(first).estimate_gas({"from": self.holder, "value": fee})
        make = self.w3.provider.make_request
        make("evm_setAutomine", [False])  # type: ignore[arg-type]
        try:
            hashes = [
                self.lc.functions.requestEvolution(t).transact(
                    {"from": self.holder, "value": fee, "gas": gas}
                )
                for t in range(first, first + n)
            ]
            make("evm_mine", [])  # type: ignore[arg-type]
            mined = time.perf_counter()
        finally:
            make("evm_setAutomine", [True])  # type: ignore[arg-type]
        self.next_token += n
        ids = []
        for tx in hashes:
            (log,) = self.lc.events.EvolutionRequested().process_receipt(self._wait(tx), errors=DISCARD)
            ids.append(int(log["args"]["requestId"]))
        return ids, mined

    def request(self) -> int:
        """Open one request (automine) and return its id."""
        from web3.logs import DISCARD

        fee = int(self.lc.functions.evolutionFee().call())
        tx = self.lc.functions.requestEvolution(self.next_token).transact({"from": self.holder, "value": fee})
        self.next_token += 1
        (log,) = self.lc.events.EvolutionRequested().process_receipt(self._wait(tx), errors=DISCARD)
        return int(log["args"]["requestId"])

    def evolved(self) -> list[int]:
        """The request id of every ``Evolved`` log so far (a request fulfilled twice is there twice); read from
        where the last call stopped, so polling costs the bench little CPU (the agents share it)."""
        head = int(self.w3.eth.block_number)
        if head >= self._next_block:
            logs = self.lc.events.Evolved().get_logs(from_block=self._next_block, to_block=head)
            self._evolved.extend(int(e["args"]["requestId"]) for e in logs)
            self._next_block = head + 1
        return list(self._evolved)

    def check(self) -> None:
        """Stop the bench when an agent died on its own or a job failed (instead of waiting for the timeout)."""
        for agent in self.agents:
            if agent.proc.returncode is None and agent.proc.poll() is not None:
                raise SystemExit(f"agent {agent.worker_id} exited ({agent.proc.returncode}):\n{agent.tail()}")
        if time.monotonic() < self._checked + 2.0:
            return
        self._checked = time.monotonic()
        from agent.store import open_job_store

        with open_job_store(self.db_url) as store:
            failed = [j for j in store.list_jobs(limit=1000) if j.state.value == "failed"]
        if failed:
            raise SystemExit(f"{len(failed)} job(s) failed, e.g. {failed[0].last_error}")


def _say(text: str) -> None:
    print(f"[bench.agents] {text}", file=sys.stderr, flush=True)


def _until(fn: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll_s)


def _all_fulfilled(fleet: Fleet, ids: Sequence[int]) -> Callable[[], bool]:
    wanted = set(ids)

    def done() -> bool:
        fleet.check()
        return wanted <= set(fleet.evolved())

    return done


def _once_each(fleet: Fleet, ids: Sequence[int]) -> None:
    evolved = fleet.evolved()
    twice = sorted({i for i in evolved if evolved.count(i) > 1})
    if twice or set(evolved) != set(ids):
        raise SystemExit(
            f"not fulfilled exactly once: twice {twice}, missing {sorted(set(ids) - set(evolved))}"
        )


# -- the measurements -----------------------------------------------------------------------------------------------


def throughput(n_agents: int, requests: int, postgres: str) -> tuple[float, float]:
    """Seconds from the block holding ``requests`` requests until every one is fulfilled, with ``n_agents``, and
    the machine's highest 1-minute load average seen then (other work on a shared machine shows up there)."""
    with TemporaryDirectory(prefix="chrysalis-bench-agents-") as tmp, ExitStack() as stack:
        fleet = Fleet(stack, Path(tmp), n_agents, requests + 1, postgres)
        fleet.ready()
        _say(f"{n_agents} agent(s) up; warming up")
        warm = fleet.request()  # the first fulfilment warms every code path up (not counted)
        _until(_all_fulfilled(fleet, [warm]), FULFIL_TIMEOUT_S, "the warm-up request", poll_s=0.1)
        ids, mined = fleet.burst(requests)
        load = os.getloadavg()[0]
        _until(
            _all_fulfilled(fleet, ids), FULFIL_TIMEOUT_S, f"{requests} requests to be fulfilled", poll_s=0.1
        )
        seconds = time.perf_counter() - mined
        _once_each(fleet, [warm, *ids])
        return seconds, max(load, os.getloadavg()[0])


@dataclass(frozen=True)
class Recovery:
    requests: int
    killed: str
    new_watcher: str
    role_moved_s: float
    all_fulfilled_s: float
    total_s: float
    load: float


def recovery(requests: int, postgres: str, n_agents: int = 3) -> Recovery:
    """SIGKILL the watching agent once the first of ``requests`` is fulfilled and it holds a job; see the module
    docstring."""
    with TemporaryDirectory(prefix="chrysalis-bench-agents-") as tmp, ExitStack() as stack:
        fleet = Fleet(stack, Path(tmp), n_agents, requests + 2, postgres)
        watcher = fleet.ready()
        _say(f"{n_agents} agent(s) up, {watcher} watches; warming up")
        warm = fleet.request()
        _until(_all_fulfilled(fleet, [warm]), FULFIL_TIMEOUT_S, "the warm-up request", poll_s=0.1)
        before = set(fleet.evolved())
        ids, mined = fleet.burst(requests)
        load = os.getloadavg()[0]
        _until(lambda: set(fleet.evolved()) - before, FULFIL_TIMEOUT_S, "a first fulfilment", poll_s=0.02)
        _until(lambda: fleet.jobs_held(watcher), FULFIL_TIMEOUT_S, "the watcher to hold a job", poll_s=0.02)
        victim = next(a for a in fleet.agents if a.worker_id == watcher)
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        victim.proc.wait(10)
        _say(f"killed {watcher} (SIGKILL)")
        late = fleet.request()  # only a new watcher sees it
        moved = _until(
            lambda: (w := fleet.watcher()) not in (None, watcher) and w, 120, "the watch role to move"
        )
        role_moved = time.perf_counter() - killed
        everything = [warm, *ids, late]
        _until(
            _all_fulfilled(fleet, everything), FULFIL_TIMEOUT_S, "every request to be fulfilled", poll_s=0.1
        )
        done = time.perf_counter()
        _once_each(fleet, everything)
        load = max(load, os.getloadavg()[0])
        return Recovery(requests + 1, watcher, str(moved), role_moved, done - killed, done - mined, load)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=60, help="requests per configuration (default 60)")
    p.add_argument(
        "--agents",
        default="1,2,3",
        help='agent counts to measure (default 1,2,3; "": the recovery run alone)',
    )
    p.add_argument("--no-recovery", action="store_true", help="skip the killed-agent run")
    p.add_argument(
        "--postgres", default=POSTGRES_URL, help="PostgreSQL server URL (a scratch schema is made)"
    )
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is not None:
        return worker(a.worker)

    from bench._table import emit

    # a SIGTERM (timeout, Ctrl-C's cousin) unwinds like an error: agents stopped, anvil ended, schema dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(n) for n in a.agents.split(",") if n.strip()]
    seconds: dict[int, float] = {}
    loads: dict[int, float] = {}
    for n in counts:
        seconds[n], loads[n] = throughput(n, a.requests, a.postgres)
        print(f"{n} agent(s): {a.requests} requests in {seconds[n]:.2f} s", file=sys.stderr, flush=True)
    settings = (
        f"null generator, anvil automine, one PostgreSQL database; agent.batch_size {BATCH_SIZE}, "
        f"chain.poll_interval_s 0.2, every agent a process on the same {os.cpu_count()} CPU threads; load avg: "
        "the highest 1-minute load average seen during the run (above the CPU count, other work shared the machine)"
    )
    if counts:  # --agents "": the recovery run alone
        base = a.requests / seconds[counts[0]]
        rows = []
        for n in counts:
            rate = a.requests / seconds[n]
            rows.append(
                [n, a.requests, f"{seconds[n]:.2f}", f"{rate:.2f}", f"{rate / base:.2f}x", f"{loads[n]:.1f}"]
            )
        emit(
            "agents",
            "Fulfilments per second by number of agents (one database)",
            ["agents", "requests", "seconds", "fulfilments/s", f"vs {counts[0]} agent", "load avg"],
            rows,
            notes=f"{settings}. `python -m bench.agents --requests {a.requests}`.",
        )
    if a.no_recovery:
        return 0
    r = recovery(a.requests, a.postgres)
    emit(
        "agents_recovery",
        "Recovery from a SIGKILLed watching agent (3 agents)",
        [
            "requests",
            "watch role moved (s)",
            "all fulfilled after the kill (s)",
            "burst to last fulfilment (s)",
            "load avg",
        ],
        [
            [
                r.requests,
                f"{r.role_moved_s:.2f}",
                f"{r.all_fulfilled_s:.2f}",
                f"{r.total_s:.2f}",
                f"{r.load:.1f}",
            ]
        ],
        notes=f"the watcher was killed after the burst's first fulfilment, while it held a job; one request opened "
        "right after; "
        f"agent.role_lease_s {ROLE_LEASE_S:g}, agent.lease_s {LEASE_S:g}; every request fulfilled exactly once. "
        f"{settings}.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
