"""The ``/metrics`` endpoint of ``chrysalis run``.

Chrysalis metrics live in two registries: :data:`agent.metrics.REGISTRY` (stages, jobs, gas, transactions) and
prometheus_client's default one, where the watcher's RPC client and the process collectors register. The
endpoint serves both as one exposition. Families with the same name in both (``chrysalis_rpc_errors`` is
counted by the submit stage in one and by the watcher in the other) are merged into one family, with counter
and histogram samples of identical labels added, because Prometheus rejects a scrape that names a family twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from agent import metrics
from agent.errors import BackendUnavailableError

log = logging.getLogger("chrysalis.ops.metrics")

_ADDITIVE = {"counter", "histogram", "summary", "gaugehistogram"}


class MergedCollector:
    """Collects several registries as one, merging same-named families (see the module docstring)."""

    def __init__(self, *sources: Collector) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for source in self.sources:
            for family in source.collect():
                have = merged.get(family.name)
                if have is None:
                    copy = Metric(family.name, family.documentation, family.type, family.unit)
                    copy.samples = list(family.samples)
                    merged[family.name] = copy
                elif have.type != family.type:
                    log.warning(
                        "metric %s is a %s in one registry and a %s in another; serving the first",
                        family.name, have.type, family.type,
                    )  # fmt: skip
                else:
                    have.samples = _merge_samples(
                        have.samples, family.samples, additive=have.type in _ADDITIVE
                    )
        return list(merged.values())


def _merge_samples(first: list[Sample], second: list[Sample], *, additive: bool) -> list[Sample]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
    for sample in [*first, *second]:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        seen = out.get(key)
        if seen is None:
            out[key] = sample
        elif sample.name.endswith("_created"):
            out[key] = seen._replace(value=min(seen.value, sample.value))
        elif additive:
            out[key] = seen._replace(value=seen.value + sample.value)
    return list(out.values())


def exposition_registry() -> CollectorRegistry:
    """A registry holding every Chrysalis metric and the process collectors, merged as one."""
    registry = CollectorRegistry(support_collectors_without_names=True)
    registry.register(MergedCollector(metrics.REGISTRY, prometheus_client.REGISTRY))
    return registry


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
        server, thread = start_http_server(port, addr=host, registry=exposition_registry())
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
