"""Three ``chrysalis run`` processes, each with its own key, on one PostgreSQL database and one collection: exactly
one watches the chain (the ``watch`` role), all of them work jobs; SIGKILL the watching agent while jobs are in
flight and its jobs are taken over once their leases lapse, its role moves to a survivor, every request is fulfilled
exactly once, and ``chrysalis status`` lists every agent with its key, heartbeat, jobs and roles.

Each agent has its own embedded IPFS repo, so the requests are first evolutions (no agent needs another's
previous metadata); sharing assets between agents is the replication backends' job.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from agent.devnet import free_port
from agent.ops.accounts import dev_address, dev_key
from agent.ops.config_template import toml_value
from agent.store import Database, open_job_store
from agent.store.roles import WATCH, list_agents
from tests.ops.conftest import ADMIN, HOLDER, OTHER
from tests.ops.test_run import AgentProcess, _until
from tests.support.databases import postgres_schema_url
from tests.support.devchain import FEE, CollectionChain

# three agents loading their models on 2 busy cores, then a lease to lapse: ~2 minutes
pytestmark = [pytest.mark.slow, pytest.mark.anvil, pytest.mark.timeout(900)]

KEYS = (9, 7, 8)  # dev 9 is the deployment's agent; 7 and 8 are granted AGENT_ROLE here
PASSWORD = "failover-test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


def _config(workdir: Path, chain: CollectionChain, lm: Path, db_url: str, key: int) -> Path:
    home = workdir / f"agent-{key}"
    home.mkdir()
    keystore = home / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(key), PASSWORD, iterations=2)))
    (home / "key.password").write_text(PASSWORD)
    data = home / "data"
    tables = {
        "chain": {"rpc_url": chain.url, "deployment": str(chain.record), "poll_interval_s": 0.2},
        "database": {"url": db_url},
        "models": {"lore_backend": "transformers", "lore_model": str(lm), "lore_max_new_tokens": 12,
                   "device": "cpu", "threads": 1, "image_steps": 10, "cache_dir": str(workdir / "models")},
        "signer": {"keystore": str(keystore), "password_file": str(home / "key.password")},
        "submit": {"poll_interval_s": 0.05, "receipt_timeout_s": 120},
        "agent": {"lease_s": 3.0, "role_lease_s": 3.0, "retry_base_s": 0.2, "retry_cap_s": 1.0,
                  "price_window_s": 3_600, "batch_wait_s": 0.5},
        "metrics": {"port": free_port()},
        "log": {"format": "json"},
        # about failover, not art: a seed whose 10-step image misses the palette must not fail a job here
        "gates": {"enabled": False},
    }  # fmt: skip
    lines = [f"data_dir = {toml_value(str(data))}"]
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
    path = home / "chrysalis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_three_agents_share_one_database_and_survive_losing_the_watcher(
    configured: CollectionChain, workdir: Path, tiny_lm: Path, pg_url: str, chrysalis
) -> None:
    chain = configured
    f = chain.collection.functions
    role = f.AGENT_ROLE().call()
    for key in KEYS[1:]:
        chain.transact(f.grantRole(role, dev_address(key)), dev_address(ADMIN))
        chain.rpc("anvil_setBalance", dev_address(key), hex(10**21))
    scope = f"{chain.w3.eth.chain_id}:{chain.collection.address.lower()}:"
    db = Database.open(pg_url)
    agents: dict[int, AgentProcess] = {}
    try:
        for key in KEYS:
            config = _config(workdir, chain, tiny_lm, pg_url, key)
            agents[key] = AgentProcess(config, config.parent / "agent.log")
        for agent in agents.values():
            agent.wait_for_log("running", timeout=300)

        def watcher() -> str | None:
            held = [a for a in list_agents(db, scope=scope) if WATCH in a.roles and a.stopped_at is None]
            assert len(held) <= 1, held  # never two watchers
            return held[0].worker_id if held else None

        first_watcher = _until(watcher, 60, "an agent to take the watch role")
        by_pid = {a.proc.pid: k for k, a in agents.items()}
        killed = by_pid[int(first_watcher.rsplit(":", 1)[1])]

        requests = [chain.transact(f.requestEvolution(t), dev_address(HOLDER), FEE) for t in (1, 2, 3, 4)]
        requests += [chain.transact(f.requestEvolution(t), dev_address(OTHER), FEE) for t in (5, 6)]
        ids = [
            int(chain.collection.events.EvolutionRequested().process_receipt(r)[0]["args"]["requestId"])
            for r in requests
        ]

        def in_flight() -> bool:
            with open_job_store(pg_url) as store:
                return any(j.state.value == "running" for j in store.list_jobs(limit=100))

        _until(in_flight, 120, "jobs in flight")
        agents[killed].proc.send_signal(signal.SIGKILL)
        agents[killed].proc.wait(10)

        # a request after the kill: only a watcher can see it, so the role must have moved
        chain.mint(dev_address(HOLDER), 1)
        late = chain.transact(f.requestEvolution(f.totalMinted().call()), dev_address(HOLDER), FEE)
        ids.append(
            int(chain.collection.events.EvolutionRequested().process_receipt(late)[0]["args"]["requestId"])
        )

        def all_fulfilled() -> bool:
            with open_job_store(pg_url) as store:  # a job that failed for good never will be: say why at once
                failed = [
                    (j.key, j.last_error) for j in store.list_jobs(limit=100) if j.state.value == "failed"
                ]
            assert not failed, failed
            return not any(f.isPending(i).call() for i in ids)

        _until(all_fulfilled, 300, "every request to be fulfilled")
        evolved = [int(e["args"]["requestId"]) for e in chain.evolved()]
        assert sorted(evolved) == sorted(ids) and len(evolved) == len(set(evolved))  # once each, none twice
        survivor = _until(watcher, 60, "a survivor to hold the watch role")
        assert survivor != first_watcher
        with open_job_store(pg_url) as store:
            _until(
                lambda: all(j.state.value == "confirmed" for j in store.list_jobs(limit=100)),
                120,
                "every job confirmed",
            )

        # chrysalis status lists every agent: its key, heartbeat, the jobs it holds and its roles
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CHRYSALIS_DATABASE__URL", pg_url)
            result = chrysalis("status", "--json")
        assert result.code == 0, result.err
        report = json.loads(result.out)
        listed = {a["signer"].lower(): a for a in report["agents"]}
        assert set(listed) == {dev_address(k).lower() for k in KEYS}
        assert WATCH in listed[dev_address(by_pid[int(survivor.rsplit(":", 1)[1])]).lower()]["roles"]
        assert (
            listed[dev_address(killed).lower()]["roles"] == []
        )  # its lease lapsed; it never stopped cleanly

        for key, agent in agents.items():
            if key != killed:
                assert agent.stop(signal.SIGTERM) == 0
    finally:
        for agent in agents.values():
            agent.kill()
        db.close()
