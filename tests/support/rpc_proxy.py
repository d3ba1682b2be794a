"""A fault-injecting JSON-RPC proxy: a local HTTP server between the agent and anvil that misbehaves the way
hosted and load-balanced providers do.

Every fault is either scripted (``fail_next``, ``lag``, ``max_span``, ``empty_logs_next``) or random from a
seeded :class:`Faults` (so a run is reproducible from its seed):

* transport: dropped connections (the socket closes without an answer), HTTP 5xx, HTTP 429 with
  ``Retry-After``, latency;
* lying answers: a stale head (``eth_blockNumber`` some blocks behind, and no block above it, as a lagging
  backend behind a load balancer answers), ``eth_getLogs`` answering ``[]``;
* range caps: ``eth_getLogs`` over more than ``max_span`` blocks refused, in one of several providers' wordings
  (``style``);
* ``pending_as_latest``: the block tag ``"pending"`` evaluated as ``"latest"``, as many hosted providers do.

Counters (:attr:`FaultProxy.injected`) say what was injected, so a test can check that its faults really fired.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

RANGE_WORDINGS = {
    "-32005": (-32005, "query returned more than 10000 results"),
    "range": (-32602, "block range too large: max {max_span}"),
    "alchemy": (
        -32602,
        "Log response size exceeded. You can make eth_getLogs requests with up to a {max_span} block range",
    ),  # fmt: skip
    # a wording no pattern of ours knows (issue 11's anomaly 8): any error on a wide range halves it
    "unknown": (-32000, "eth_getLogs is limited to a {max_span:,} blocks span"),
}
"""``style`` -> (JSON-RPC code, message) of a range refusal; ``style="413"`` answers HTTP 413 instead."""


@dataclass
class Faults:
    """Random faults, each with its probability per request, drawn from ``random.Random(seed)``.

    Attributes:
        drop: Close the connection without answering.
        http_5xx: Answer HTTP 502/503/504 with an HTML page.
        rate_limit: Answer HTTP 429 with ``Retry-After: retry_after``.
        latency_s: Extra delay of every request, drawn uniformly from ``(low, high)`` seconds.
        stale_head: Answer ``eth_blockNumber`` (and hide blocks) as a node ``1..max_stale`` blocks behind.
        empty_logs: Answer ``eth_getLogs`` with ``[]``.
        only: Methods the transport faults (drop, 5xx, 429) hit (``None``: every method).
    """

    seed: int = 0
    drop: float = 0.0
    http_5xx: float = 0.0
    rate_limit: float = 0.0
    retry_after: str = "0"
    latency_s: tuple[float, float] = (0.0, 0.0)
    stale_head: float = 0.0
    max_stale: int = 3
    empty_logs: float = 0.0
    only: frozenset[str] | None = None


class FaultProxy:
    """A JSON-RPC HTTP proxy in front of ``upstream`` (mutable: point it at another node to simulate a node
    restarted behind the same URL).

    Args:
        upstream: The node's HTTP URL.
        max_span: Refuse ``eth_getLogs`` over more blocks than this (``None``: no cap).
        style: How a refusal is worded (a key of :data:`RANGE_WORDINGS`, or ``"413"``).
        faults: Random faults (default: none).
        pending_as_latest: Evaluate the ``"pending"`` tag as ``"latest"``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        max_span: int | None = None,
        style: str = "-32005",
        faults: Faults | None = None,
        pending_as_latest: bool = False,
    ) -> None:
        self.upstream = upstream
        self.max_span = max_span
        self.style = style
        self.faults = faults or Faults()
        self.pending_as_latest = pending_as_latest
        self.lag = 0
        self.fail_next: list[tuple[int, dict[str, str]]] = []
        self.empty_logs_next = 0
        self.refused: list[tuple[int, int]] = []
        self.served: list[tuple[int, int]] = []
        self.methods: list[str] = []
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = proxy.handle(json.loads(body), body)
                if answer is None:  # drop: close without a word
                    self.close_connection = True
                    return
                status, payload, headers = answer
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- one request -------------------------------------------------------------------------------------------

    def handle(self, request: Any, body: bytes) -> tuple[int, Any, dict[str, str]] | None:
        if isinstance(request, list):  # a batch: forwarded whole, only transport faults apply
            method = "batch"
        else:
            method = str(request.get("method", "?"))
        f = self.faults
        with self._lock:
            self.methods.append(method)
            if self.fail_next:
                status, headers = self.fail_next.pop(0)
                self.injected[f"http_{status}"] += 1
                return status, b"<html>upstream trouble</html>", headers
            draw = self._rng.random()
            latency = self._rng.uniform(*f.latency_s) if f.latency_s[1] > 0 else 0.0
            stale = self._rng.randint(1, max(1, f.max_stale)) if self._rng.random() < f.stale_head else 0
            empty = self._rng.random() < f.empty_logs
        if latency:
            time.sleep(latency)
        if f.only is None or method in f.only:
            edge = f.drop
            if draw < edge:
                self.injected["drop"] += 1
                return None
            if draw < (edge := edge + f.http_5xx):
                self.injected["http_5xx"] += 1
                return 502 + int(draw * 1000) % 3, b"<html>502 Bad Gateway</html>", {}
            if draw < edge + f.rate_limit:
                self.injected["rate_limit"] += 1
                return 429, b"Too Many Requests", {"Retry-After": f.retry_after}
        if isinstance(request, list):
            return self._forward(body)
        if method == "eth_getLogs":
            refused = self._refuse_range(request)
            if refused is not None:
                return refused
            with self._lock:
                if self.empty_logs_next > 0:
                    self.empty_logs_next -= 1
                    empty = True
            if empty:
                self.injected["empty_logs"] += 1
                return 200, {"jsonrpc": "2.0", "id": request.get("id"), "result": []}, {}
        if self.pending_as_latest and "pending" in json.dumps(request.get("params", [])):
            request = dict(
                request, params=json.loads(json.dumps(request["params"]).replace('"pending"', '"latest"'))
            )
            body = json.dumps(request).encode()
            self.injected["pending_as_latest"] += 1
        status, content = self._forward(body)[:2]
        lag = max(self.lag, stale)
        if lag and status == 200:
            if stale > self.lag:
                self.injected["stale_head"] += 1
            return 200, self._lagged(request, json.loads(content), lag), {}
        return status, content, {}

    def _forward(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        reply = self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        return reply.status_code, reply.content, {}

    def _refuse_range(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]] | None:
        if self.max_span is None:
            return None
        flt = request["params"][0]
        lo, hi = _block(flt.get("fromBlock")), _block(flt.get("toBlock"))
        if lo is None or hi is None:
            return None
        if hi - lo + 1 <= self.max_span:
            with self._lock:
                self.served.append((lo, hi))
            return None
        with self._lock:
            self.refused.append((lo, hi))
        self.injected["range_refused"] += 1
        if self.style == "413":
            return 413, b"Request Entity Too Large", {}
        code, message = RANGE_WORDINGS[self.style]
        error = {"code": code, "message": message.format(max_span=self.max_span)}
        return 200, {"jsonrpc": "2.0", "id": request["id"], "error": error}, {}

    def _head(self) -> int:
        reply = self._session.post(
            self.upstream,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            timeout=60,
        )
        return int(reply.json()["result"], 16)

    def _lagged(self, request: dict[str, Any], reply: dict[str, Any], lag: int) -> dict[str, Any]:
        method = request.get("method")
        if method == "eth_blockNumber" and "result" in reply:
            reply["result"] = hex(max(0, int(reply["result"], 16) - lag))
        elif method == "eth_getBlockByNumber" and reply.get("result"):
            if int(reply["result"]["number"], 16) > self._head() - lag:
                reply["result"] = None
        return reply

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._session.close()


def _block(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    if isinstance(value, int):
        return value
    return None
