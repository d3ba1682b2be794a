"""The /metrics endpoint, scraped over HTTP: both registries in one exposition that Prometheus' parser accepts,
same-named families merged, and a busy port a clear error."""

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


def test_both_registries_are_served_and_same_named_families_merge(endpoint) -> None:
    # The watcher's RPC client counts its errors in prometheus_client's default registry under the same family
    # name as the submit stage's counter in agent.metrics.REGISTRY.
    from agent.watch.rpc import RPC_ERRORS as other

    assert prometheus_client.REGISTRY._names_to_collectors.get("chrysalis_rpc_errors_total") is other
    key = (("kind", "transport"), ("method", "eth_test_merge"))
    before = (
        _scrape(endpoint.url).get("chrysalis_rpc_errors", {}).get(("chrysalis_rpc_errors_total", key), 0.0)
    )
    metrics.RPC_ERRORS.labels(method="eth_test_merge", kind="transport").inc(2)
    other.labels(method="eth_test_merge", kind="transport").inc(3)
    metrics.GAS_SPENT.labels(label="fulfillEvolutions").inc(21_000)
    publish_job_counts({"queued": 2, "running": 1, "confirmed": 7, "failed": 0, "cancelled": 0})

    scraped = _scrape(endpoint.url)
    assert scraped["chrysalis_rpc_errors"][("chrysalis_rpc_errors_total", key)] == before + 5
    assert (
        scraped["chrysalis_gas_spent"][("chrysalis_gas_spent_total", (("label", "fulfillEvolutions"),))]
        >= 21_000
    )
    jobs = scraped["chrysalis_jobs"]
    assert jobs[("chrysalis_jobs", (("state", "confirmed"),))] == 7
    assert jobs[("chrysalis_jobs", (("state", "running"),))] == 1
    assert "process_cpu_seconds" in scraped or "python_info" in scraped  # the default collectors came along


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
