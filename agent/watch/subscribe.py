"""An optional WebSocket subscription that only wakes the poller early.

It subscribes to ``newHeads`` (and, given a filter, ``logs``) with ``eth_subscribe`` and calls ``wake()`` on
every notification. It delivers no data: range polling stays the source of truth, so a dropped or lagging
socket loses nothing, it only adds latency until the next timed poll. It reconnects on its own, with back-off.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from agent.metrics import WS_CONNECTS, WS_NOTIFICATIONS
from agent.redact import redact_text, redact_url

log = logging.getLogger("chrysalis.watch.subscribe")


class WakeUpSubscription:
    """A daemon thread keeping ``eth_subscribe`` subscriptions open on ``ws_url`` and calling ``wake`` on each
    notification.

    Args:
        ws_url: ``ws://`` or ``wss://`` endpoint (anvil serves WebSocket on its HTTP port).
        wake: Called from the subscription thread on every notification.
        logs_filter: Also subscribe to ``logs`` with this filter (``address``/``topics``).
        reconnect_s / max_reconnect_s: Back-off between reconnection attempts (doubling up to the max).
    """

    def __init__(
        self,
        ws_url: str,
        wake: Callable[[], None],
        *,
        logs_filter: Mapping[str, Any] | None = None,
        reconnect_s: float = 0.25,
        max_reconnect_s: float = 10.0,
    ) -> None:
        self.ws_url = ws_url
        self._wake = wake
        self._subscriptions: list[list[Any]] = [["newHeads"]]
        if logs_filter is not None:
            self._subscriptions.append(["logs", dict(logs_filter)])
        self._reconnect_s = reconnect_s
        self._max_reconnect_s = max_reconnect_s
        self._stop = threading.Event()
        self._ws: Connection | None = None
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the subscriptions are open."""
        self.connects = 0
        """How many times the subscriptions were established."""

    def start(self) -> WakeUpSubscription:
        self._thread = threading.Thread(target=self._run, name="chrysalis-ws-wakeup", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = self._reconnect_s
        while not self._stop.is_set():
            try:
                with connect(self.ws_url, open_timeout=5, close_timeout=1, max_size=2**22) as ws:
                    self._ws = ws
                    self._subscribe(ws)
                    self.connects += 1
                    WS_CONNECTS.inc()
                    self.connected.set()
                    delay = self._reconnect_s
                    log.info("WebSocket subscription open on %s", redact_url(self.ws_url))
                    self._wake()  # we may have missed heads while disconnected
                    self._listen(ws)
            except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
                if not self._stop.is_set():
                    log.warning("WebSocket %s dropped (%s); polling continues, reconnecting in %.2f s",
                                redact_url(self.ws_url), redact_text(str(exc), self.ws_url), delay)  # fmt: skip
            finally:
                self._ws = None
                self.connected.clear()
            if self._stop.wait(delay):
                return
            delay = min(self._max_reconnect_s, delay * 2)

    def _subscribe(self, ws: Connection) -> None:
        for request_id, params in enumerate(self._subscriptions, start=1):
            ws.send(
                json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "eth_subscribe", "params": params})
            )
        pending = set(range(1, len(self._subscriptions) + 1))
        while pending:
            reply = json.loads(ws.recv(timeout=5))
            if reply.get("id") in pending:
                if "error" in reply:
                    raise ValueError(f"eth_subscribe refused: {reply['error']}")
                pending.discard(reply["id"])

    def _listen(self, ws: Connection) -> None:
        while not self._stop.is_set():
            try:
                message = ws.recv(timeout=1.0)
            except TimeoutError:
                continue
            if '"eth_subscription"' in (message if isinstance(message, str) else message.decode()):
                WS_NOTIFICATIONS.inc()
                self._wake()
