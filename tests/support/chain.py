"""Chain helpers every test package's chain fixture shares."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from web3.contract import Contract


def canonical_seed(collection: Contract, request_id: int) -> bytes:
    """The seed of ``request_id`` on the canonical chain (its latest ``EvolutionRequested`` log): what a
    fulfilment of it must name."""
    logs = collection.events.EvolutionRequested().get_logs(
        from_block=0, argument_filters={"requestId": request_id}
    )
    assert logs, f"no EvolutionRequested log for request {request_id}"
    return bytes(logs[-1]["args"]["seed"])


@contextmanager
def mining(mine: Callable[[], object], interval_s: float) -> Iterator[None]:
    """Call ``mine()`` every ``interval_s`` seconds on a background thread while the block runs (a chain that
    moves on its own, as a real one does, for code that waits for blocks)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            mine()

    miner = threading.Thread(target=loop, daemon=True)
    miner.start()
    try:
        yield
    finally:
        stop.set()
        miner.join(5)
