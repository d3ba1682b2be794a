"""The ``/metrics`` endpoint of ``chrysalis run``: :data:`agent.metrics.REGISTRY`, served over HTTP.

Every Chrysalis metric (stages, jobs, gas, transactions, the watcher, both JSON-RPC clients, the oracle guard)
and the process collectors live in that one registry, each family once, so the endpoint serves it as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from agent import metrics
from agent.errors import BackendUnavailableError


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` server; :meth:`close` stops it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(host: str = "127.0.0.1", port: int = 9464) -> MetricsEndpoint:
    """Serve every Chrysalis metric on ``http://host:port/metrics`` from a daemon thread (``port=0``: any)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.REGISTRY)
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}",
            hint="set metrics.port to a free port (0 picks one), or metrics.enabled = false",
        ) from None
    return MetricsEndpoint(host, int(server.server_port), server, thread)


def publish_job_counts(counts: Mapping[str, int]) -> None:
    """Set the jobs-by-state gauge from a ``JobStore.counts()``-like mapping (every state, zeros included)."""
    for state, n in counts.items():
        metrics.JOBS_BY_STATE.labels(state=str(state)).set(n)
