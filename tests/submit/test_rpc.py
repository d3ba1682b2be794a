"""The RPC wrapper retries transport failures, counts them, and gives up with a retryable error."""

from __future__ import annotations

import socket

import pytest

from agent.errors import BackendUnavailableError
from agent.jsonrpc import RpcUnavailableError
from agent.metrics import REGISTRY, render
from agent.submit import ChainRpc


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_transport_failures_are_retried_then_raised_as_retryable() -> None:
    sleeps: list[float] = []
    rpc = ChainRpc.connect(f"http://127.0.0.1:{_closed_port()}", timeout_s=2)
    rpc.retries, rpc.backoff_s, rpc._sleep = 2, 0.1, sleeps.append
    before = REGISTRY.get_sample_value(
        "chrysalis_rpc_errors_total", {"client": "submit", "method": "eth_blockNumber", "kind": "connection"}
    )

    with pytest.raises(RpcUnavailableError) as info:
        rpc.block_number()

    assert isinstance(info.value, BackendUnavailableError) and info.value.retryable
    assert info.value.attempts == 3 and info.value.method == "eth_blockNumber"
    assert sleeps == [0.1, 0.2]  # exponential backoff
    after = REGISTRY.get_sample_value(
        "chrysalis_rpc_errors_total", {"client": "submit", "method": "eth_blockNumber", "kind": "connection"}
    )
    assert after == (before or 0) + 3
    assert "chain.rpc_url" in str(info.value)


def test_metrics_render_the_shared_names() -> None:
    text = render().decode()
    for name in (
        "chrysalis_events_seen",
        "chrysalis_jobs",
        "chrysalis_stage_latency_seconds",
        "chrysalis_gas_spent",
        "chrysalis_rpc_errors",
        "chrysalis_tx_sent",
        "chrysalis_tx_replaced",
    ):
        assert f"# HELP {name}" in text
