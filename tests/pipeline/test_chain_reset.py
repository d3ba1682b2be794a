"""A-M7 / row 30: a running agent whose node was replaced by a fresh chain (anvil restarted) stops loudly, even
when the new chain has grown past the cursor (it looked like a reorg); an RPC outage's error leaves the status
line once the node answers again; a node behind the cursor is never a negative lag."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from web3 import Web3

from agent.devnet import start_anvil
from agent.pipeline import Agent, AgentStatus
from agent.settings import Settings
from agent.watch import ChainResetError
from tests.pipeline.conftest import Chain
from tests.support.rpc_proxy import FaultProxy, Faults

pytestmark = pytest.mark.anvil


def _until(what: str, ok: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_chain_reset_under_a_running_agent_stops_it_and_outages_do_not_linger(
    chain: Chain, settings: Settings
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
        with Agent.from_settings(settings) as agent:
            runner = threading.Thread(target=run, args=(agent,), daemon=True)
            runner.start()
            _until("the watcher to pass the deploy block", lambda: agent.watcher.state is not None)

            # a node behind the cursor (a lagging backend): lag 0, never negative
            proxy.lag = 5
            _until("a status from the lagging node", lambda: bool(statuses) and statuses[-1].chain_head is not None
                   and statuses[-1].cursor_block is not None
                   and statuses[-1].chain_head < statuses[-1].cursor_block)  # fmt: skip
            assert statuses[-1].lag == 0
            proxy.lag = 0

            # an outage: reported while it lasts, gone from the status once the node answers again
            proxy.faults = Faults(http_5xx=1.0)
            _until("the outage to show", lambda: bool(statuses and statuses[-1].last_error))
            proxy.faults = Faults()
            _until("the outage to clear", lambda: statuses[-1].last_error is None)

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
