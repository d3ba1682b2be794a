"""Nonces reconciled with the chain, never counted blindly.

Every allocation reads the node's pending nonce (``eth_getTransactionCount(addr, "pending")``: mined plus
pooled transactions) and hands out the first nonce at or above it that is not already ours in flight. So an
external transaction from the same key moves the agent along, a nonce handed out but never broadcast is
reused, and a restart picks up where the chain is. The persisted submissions the caller passes in
(:meth:`NonceManager.track`) cover transactions the node has forgotten (dropped from its pool, or a restarted
node): their nonces are not handed out again, so their waiters can rebroadcast them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from agent.domain import Submission
from agent.metrics import NONCE_RESYNCS
from agent.submit.rpc import ChainRpc

log = logging.getLogger(__name__)


class NonceManager:
    """Hands out nonces for one account; thread-safe.

    Args:
        rpc: The node.
        address: The account.
        in_flight: Persisted submissions not yet known to be mined (after a restart).
    """

    def __init__(self, rpc: ChainRpc, address: str, *, in_flight: Iterable[Submission] = ()) -> None:
        self.rpc = rpc
        self.address = address
        self._lock = threading.Lock()
        self._reserved: set[int] = set()
        self._in_flight: set[int] = set()
        self._last_chain: int | None = None
        self._high = 0  # one above the highest nonce handed out or tracked
        self.track(in_flight)

    # -- allocation ---------------------------------------------------------------------------------------

    def next(self) -> int:
        """Reserve the next nonce: the chain's pending nonce, skipping ours in flight or reserved."""
        return self.reserve(1)[0]

    def reserve(self, count: int) -> list[int]:
        """Reserve ``count`` nonces with one chain read (for presigning a burst of transactions)."""
        chain = self.rpc.nonce(self.address, "pending")
        with self._lock:
            if self._last_chain is not None and self._expected_floor() < chain:
                NONCE_RESYNCS.labels(reason="external").inc()
                log.info(
                    "chain's pending nonce for %s is %d, above what this agent has sent: an external "
                    "transaction from the same key; continuing from the chain",
                    self.address,
                    chain,
                )
            self._last_chain = chain
            out: list[int] = []
            candidate = chain
            while len(out) < count:
                if candidate not in self._reserved and candidate not in self._in_flight:
                    out.append(candidate)
                candidate += 1
            self._reserved.update(out)
            self._high = max(self._high, out[-1] + 1) if out else self._high
            return out

    def _expected_floor(self) -> int:
        """What the chain's pending nonce can be without anyone else sending: one above our highest nonce."""
        return max(self._high, self._last_chain or 0)

    # -- lifecycle of a nonce -----------------------------------------------------------------------------

    def sent(self, nonce: int) -> None:
        """``nonce`` was broadcast: it stays taken until :meth:`settled`."""
        with self._lock:
            self._reserved.discard(nonce)
            self._in_flight.add(nonce)

    def release(self, nonce: int) -> None:
        """``nonce`` was reserved but never broadcast (dry run reverted, fee cap, signing failed): free it."""
        with self._lock:
            self._reserved.discard(nonce)

    def settled(self, nonce: int) -> None:
        """A transaction with ``nonce`` was mined (ours, or the chain says someone else's)."""
        with self._lock:
            self._in_flight.discard(nonce)
            self._reserved.discard(nonce)

    def resync(self, nonce: int, reason: str) -> None:
        """The node refused ``nonce`` (``nonce_too_low``, ``underpriced`` for a fresh send, ...).

        Drops the reservation; the next allocation re-reads the chain and continues above it.
        """
        NONCE_RESYNCS.labels(reason=reason).inc()
        log.info("nonce %d for %s refused (%s); re-syncing with the chain", nonce, self.address, reason)
        with self._lock:
            self._reserved.discard(nonce)
            self._in_flight.discard(nonce)

    def track(self, submissions: Iterable[Submission]) -> None:
        """Mark persisted, possibly unmined submissions of this account as in flight (after a restart).

        Those the chain has already mined past (nonce below the latest count) are ignored.
        """
        mine = [s for s in submissions if s.sender.lower() == self.address.lower()]
        if not mine:
            return
        latest = self.rpc.nonce(self.address, "latest")
        with self._lock:
            for sub in mine:
                if sub.nonce >= latest:
                    self._in_flight.add(sub.nonce)
                self._high = max(self._high, sub.nonce + 1)

    @property
    def in_flight(self) -> frozenset[int]:
        """Nonces broadcast and not yet settled."""
        with self._lock:
            return frozenset(self._in_flight)
