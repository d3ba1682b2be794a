"""A-M7 / row 30: a running agent whose node was replaced by a fresh chain (anvil restarted) stops loudly, even
when the new chain has grown past the cursor (it looked like a reorg); an RPC outage's error leaves the status
line once the node answers again; a node behind the cursor is never a negative lag."""

from __future__ import annotations

import threading

import pytest
from web3 import Web3

from agent.app import build_agent
from agent.devnet import start_anvil
from agent.pipeline import Agent, AgentStatus
from agent.settings import Settings
from agent.watch import ChainResetError
from tests.support.devchain import CollectionChain
from tests.support.rpc_proxy import FaultProxy, Faults
from tests.support.waiting import eventually

pytestmark = pytest.mark.anvil


def test_a_chain_reset_under_a_running_agent_stops_it_and_outages_do_not_linger(
    chain: CollectionChain, settings: Settings
) -> None:
    proxy = FaultProxy(chain.url)
    settings.chain = settings.chain.model_copy(update={"rpc_url": proxy.url, "rpc_retries": 0})
    statuses: list[AgentStatus] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def run(agent: Agent) -> None:
        try:
            agent.run(stop, on_status=statuses.append)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            failure.append(exc)

    try:
        with build_agent(settings) as agent:
            runner = threading.Thread(target=run, args=(agent,), daemon=True)
            runner.start()
            eventually(lambda: agent.watcher.state is not None, 30, "the watcher to pass the deploy block")

            # a node behind the cursor (a lagging backend): lag 0, never negative
            proxy.lag = 5
            eventually(lambda: bool(statuses) and statuses[-1].chain_head is not None
                       and statuses[-1].cursor_block is not None
                       and statuses[-1].chain_head < statuses[-1].cursor_block,
                       30, "a status from the lagging node")  # fmt: skip
            assert statuses[-1].lag == 0
            proxy.lag = 0

            # an outage: reported while it lasts, gone from the status once the node answers again
            proxy.faults = Faults(http_5xx=1.0)
            eventually(lambda: bool(statuses and statuses[-1].last_error), 30, "the outage to show")
            proxy.faults = Faults()
            eventually(lambda: statuses[-1].last_error is None, 30, "the outage to clear")

            # anvil restarted and already past the cursor: not a reorg, a reset
            with start_anvil() as fresh:
                Web3(Web3.HTTPProvider(fresh.url)).provider.make_request(
                    "anvil_mine", [hex(chain.w3.eth.block_number + 20)]
                )  # type: ignore[arg-type]
                proxy.upstream = fresh.url
                runner.join(60)
                assert not runner.is_alive(), "the agent kept running on a replaced chain"
    finally:
        stop.set()
        proxy.close()
    (error,) = failure
    assert isinstance(error, ChainResetError)
    assert "(the deploy block)" in error.message and "the deployment record says" in error.message
    assert "redeploy" in (error.hint or "")
    assert all(s.lag is None or s.lag >= 0 for s in statuses)
