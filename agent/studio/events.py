"""Live updates: server-sent events when a token evolves or the review queue changes.

The studio finds out by itself, so the pipeline calls nothing for it: a poller thread syncs the chain index
every ``studio.poll_interval_s`` (new ``Evolved`` / ``Transfer`` / ``MetadataUpdate`` ... logs become events) and
compares the review store's version (any decision or submission changes it). :class:`EventHub` fans each event
out to every connected browser (``GET /events``, ``text/event-stream``). Review events (the queue's counts) go
only to streams whose visitor is a curator at the time of the event (:data:`PRIVATE`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.errors import ChrysalisError

log = logging.getLogger("chrysalis.studio")

KEEPALIVE_S = 10.0

#: Events only curators' streams receive (the review queue is not public).
PRIVATE = frozenset({"review"})

#: Chain events forwarded to browsers, and the SSE event name each becomes.
FORWARDED = {
    "Evolved": "evolved",
    "EvolutionRequested": "requested",
    "MetadataRefreshed": "refreshed",
    "Transfer": "transfer",
    "EvolutionCancelled": "cancelled",
}


class EventHub:
    """Fans events out to subscribers, each an asyncio queue on the server's event loop (thread-safe)."""

    def __init__(self, *, max_queue: int = 256) -> None:
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[str, str]]]] = set()
        self._lock = threading.Lock()
        self.max_queue = max_queue
        self.published = 0

    def close(self) -> None:
        """End every open stream (before the server stops, so that it need not wait for them)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, _CLOSE)
            except RuntimeError:
                pass

    def publish(self, name: str, data: Any) -> None:
        """Send ``data`` (JSON) as event ``name`` to every subscriber; a subscriber that lags drops events."""
        message = (name, json.dumps(data, default=str))
        self.published += 1
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, message)
            except RuntimeError:  # its loop has closed
                with self._lock:
                    self._subscribers.discard((loop, queue))

    async def stream(
        self, is_disconnected: Callable[[], Any], *, private: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[str]:
        """The ``text/event-stream`` body for one client, until it disconnects; ``private()`` says whether it may
        receive :data:`PRIVATE` events now (asked per event, so a logout stops them at once)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(self.max_queue)
        entry = (loop, queue)
        with self._lock:
            self._subscribers.add(entry)
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    name, data = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    if await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if (name, data) == _CLOSE:
                    return
                if name in PRIVATE and not private():
                    continue
                yield f"event: {name}\ndata: {data}\n\n"
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)


_CLOSE = ("", "")


def _offer(queue: asyncio.Queue[tuple[str, str]], message: tuple[str, str]) -> None:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        pass


class Poller:
    """Keeps the chain index synced and turns what changed into events, every ``interval_s`` seconds.

    Args:
        tick: One round; returns ``(event name, data)`` pairs to publish.
        hub: Where they go.
    """

    def __init__(
        self, tick: Callable[[], list[tuple[str, Any]]], hub: EventHub, *, interval_s: float
    ) -> None:
        self.tick = tick
        self.hub = hub
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        try:
            events = self.tick()
            self.last_error = None
        except ChrysalisError as exc:  # the node or the database blinked: say so, keep polling
            if self.last_error != exc.message:
                log.warning("studio poll failed: %s", exc.message)
            self.last_error = exc.message
            return 0
        for name, data in events:
            self.hub.publish(name, data)
        return len(events)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="chrysalis-studio-poll", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
