"""The /metrics endpoint, scraped over HTTP: every Chrysalis metric from agent.metrics.REGISTRY, each family once,
in an exposition that Prometheus' parser accepts; and a busy port a clear error."""

from __future__ import annotations

import socket

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import metrics
from agent.errors import BackendUnavailableError
from agent.ops.metrics import publish_job_counts, serve_metrics


def _scrape(url: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    text = httpx.get(url, timeout=5).text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names)), "a family is declared twice: Prometheus would reject the scrape"
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def endpoint():
    ep = serve_metrics("127.0.0.1", 0)
    try:
        yield ep
    finally:
        ep.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_chrysalis_metric_is_served_once_from_one_registry(endpoint) -> None:
    # Import every module that uses metrics: none may register in prometheus_client's default registry.
    import agent.pipeline.agent  # noqa: F401
    import oracles.guard  # noqa: F401
    from agent.jsonrpc import RpcUnavailableError
    from agent.submit.rpc import ChainRpc
    from agent.watch.rpc import RpcClient

    strays = sorted(n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith("chrysalis"))
    assert strays == [], "Chrysalis metrics registered outside agent.metrics.REGISTRY"

    # Both RPC clients fail against a closed port and count into the one counter, told apart by `client`.
    url = f"http://127.0.0.1:{_closed_port()}"
    key = {"watch": (("client", "watch"), ("kind", "connection"), ("method", "eth_blockNumber")),
           "submit": (("client", "submit"), ("kind", "connection"), ("method", "eth_blockNumber"))}  # fmt: skip
    errors = _scrape(endpoint.url).get("chrysalis_rpc_errors", {})
    before = {c: errors.get(("chrysalis_rpc_errors_total", k), 0.0) for c, k in key.items()}
    with pytest.raises(RpcUnavailableError):
        RpcClient(url, retries=0, timeout_s=2).block_number()
    with pytest.raises(RpcUnavailableError):
        ChainRpc.connect(url, timeout_s=2, retries=0).block_number()
    metrics.EVENTS_SEEN.labels(event="EvolutionRequested").inc()
    metrics.STAGE_LATENCY.labels(stage="inputs").observe(0.02)
    metrics.GAS_SPENT.labels(label="fulfillEvolutions").inc(21_000)
    publish_job_counts({"queued": 2, "running": 1, "confirmed": 7, "failed": 0, "cancelled": 0})

    scraped = _scrape(endpoint.url)
    for client, k in key.items():
        assert scraped["chrysalis_rpc_errors"][("chrysalis_rpc_errors_total", k)] == before[client] + 1
    assert (
        scraped["chrysalis_rpc_requests"][
            ("chrysalis_rpc_requests_total", (("client", "submit"), ("method", "eth_blockNumber")))
        ]
        >= 1
    )
    assert (
        scraped["chrysalis_events_seen"][("chrysalis_events_seen_total", (("event", "EvolutionRequested"),))]
        >= 1
    )
    assert (
        scraped["chrysalis_stage_latency_seconds"][
            ("chrysalis_stage_latency_seconds_count", (("stage", "inputs"),))
        ]
        >= 1
    )
    assert (
        scraped["chrysalis_gas_spent"][("chrysalis_gas_spent_total", (("label", "fulfillEvolutions"),))]
        >= 21_000
    )
    jobs = scraped["chrysalis_jobs"]
    assert jobs[("chrysalis_jobs", (("state", "confirmed"),))] == 7
    assert jobs[("chrysalis_jobs", (("state", "running"),))] == 1
    for family in (
        "chrysalis_watch_range_halvings",
        "chrysalis_watch_ws_connects",
        "chrysalis_oracle_skipped",
    ):
        assert family in scraped  # the watcher's and the guard's metrics are there too
    assert "process_cpu_seconds" in scraped or "python_info" in scraped  # the process collectors came along


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(
            BackendUnavailableError, match=f"cannot serve /metrics on 127.0.0.1:{port}"
        ) as info:
            serve_metrics("127.0.0.1", port)
    assert "metrics.port" in (info.value.hint or "")


def test_close_frees_the_port() -> None:
    ep = serve_metrics("127.0.0.1", 0)
    assert httpx.get(ep.url, timeout=5).status_code == 200
    ep.close()
    again = serve_metrics("127.0.0.1", ep.port)
    again.close()
