"""Receipts, confirmations and reorgs, one non-blocking poll at a time.

:meth:`ReceiptTracker.poll` looks up the receipt of any hash a submission was broadcast under, checks that the
receipt's block is still the canonical block at that height (a load-balanced or lagging node can serve a
receipt from an orphaned block), and reports how deep it is buried. It remembers the block each submission was
last seen in, so a later poll notices when a reorg orphaned it: the caller then waits again (and rebroadcasts
if the node forgot the transaction). The sender's ``wait`` loops over ``poll``; a job worker may poll many
submissions itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from agent.domain import Confirmation, Submission
from agent.metrics import TX_REORGED
from agent.submit.rpc import ChainRpc, Receipt

log = logging.getLogger(__name__)

State = Literal["pending", "mined", "confirmed", "orphaned"]


@dataclass(frozen=True)
class TxStatus:
    """Where a submission stands.

    Attributes:
        state: ``pending`` (no receipt), ``mined`` (receipt in a canonical block, fewer confirmations than
            required), ``confirmed`` (enough), ``orphaned`` (the block it was seen in, or the block of the
            receipt
            the node returned, is no longer canonical: wait again).
        receipt: The receipt, when there is one.
        depth: Blocks on top of the receipt's block.
        detail: Why, in words (for ``orphaned``).
    """

    state: State
    receipt: Receipt | None = None
    depth: int = 0
    detail: str = ""


class ReceiptTracker:
    """Polls receipts and counts confirmations for submissions.

    Args:
        rpc: The node.
        confirmations: Blocks that must be built on top of a transaction's block before it is confirmed (0:
            confirmed as soon as it is mined in a canonical block).
    """

    def __init__(self, rpc: ChainRpc, confirmations: int = 0) -> None:
        self.rpc = rpc
        self.confirmations = confirmations
        self._seen: dict[tuple[str, int], tuple[int, str]] = {}
        self._lock = threading.Lock()

    def poll(self, submission: Submission) -> TxStatus:
        """Check ``submission`` once. Never blocks beyond a few RPCs."""
        return self.poll_many([submission])[0]

    def poll_many(self, submissions: Sequence[Submission]) -> list[TxStatus]:
        """Check several submissions at once: receipts and block headers are read in JSON-RPC batches."""
        out: list[TxStatus | None] = [None] * len(submissions)
        keys = [(s.sender.lower(), s.nonce) for s in submissions]
        with self._lock:
            seen = [self._seen.get(k) for k in keys]

        # 1. Was the block a submission was last seen in orphaned since?
        seen_numbers = [s[0] for s in seen if s is not None]
        canonical = self.rpc.blocks(seen_numbers) if seen_numbers else {}
        for i, (sub, where) in enumerate(zip(submissions, seen, strict=True)):
            if where is None:
                continue
            block = canonical.get(where[0])
            if block is None or block.hash != where[1]:
                self._forget_key(keys[i])
                seen[i] = None
                out[i] = self._orphaned(
                    sub,
                    f"block {where[0]} ({where[1]}) holding {sub.label or 'tx'} nonce {sub.nonce} was "
                    "orphaned by a reorg",
                )

        # 2. Receipts of every hash of the rest (latest hash first).
        asked = [(i, h) for i, sub in enumerate(submissions) if out[i] is None for h in reversed(sub.hashes)]
        receipts: dict[int, Receipt] = {}
        for (i, _), receipt in zip(
            asked, self.rpc.receipts([h for _, h in asked]) if asked else [], strict=True
        ):
            if receipt is not None and i not in receipts:
                receipts[i] = receipt

        # 3. Is each new receipt's block canonical?
        fresh = [i for i, r in receipts.items() if seen[i] != (r.block_number, r.block_hash)]
        canonical = self.rpc.blocks([receipts[i].block_number for i in fresh]) if fresh else {}
        for i in fresh:
            r = receipts[i]
            block = canonical.get(r.block_number)
            if block is None or block.hash != r.block_hash:
                out[i] = self._orphaned(
                    submissions[i],
                    f"receipt of {r.tx_hash} names block {r.block_number} ({r.block_hash}), "
                    f"which is not canonical ({block.hash if block else 'no such block'})",
                    receipt=r,
                )
                del receipts[i]
            else:
                with self._lock:
                    self._seen[keys[i]] = (r.block_number, r.block_hash)

        # 4. Depth.
        head = self.rpc.block_number() if receipts and self.confirmations > 0 else 0
        for i, r in receipts.items():
            depth = max(0, head - r.block_number) if self.confirmations > 0 else 0
            if depth >= self.confirmations:
                self._forget_key(keys[i])
                out[i] = TxStatus("confirmed", receipt=r, depth=depth)
            else:
                out[i] = TxStatus("mined", receipt=r, depth=depth)
        return [status if status is not None else TxStatus("pending") for status in out]

    def _orphaned(self, submission: Submission, detail: str, receipt: Receipt | None = None) -> TxStatus:
        TX_REORGED.labels(label=submission.label or "tx").inc()
        log.warning("%s; waiting for it again", detail)
        return TxStatus("orphaned", receipt=receipt, detail=detail)

    def _forget_key(self, key: tuple[str, int]) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def forget(self, submission: Submission) -> None:
        """Stop remembering where ``submission`` was seen (it is confirmed, or abandoned)."""
        with self._lock:
            self._seen.pop((submission.sender.lower(), submission.nonce), None)

    @staticmethod
    def confirmation(submission: Submission, status: TxStatus) -> Confirmation:
        """The :class:`Confirmation` of a ``confirmed`` (or ``mined``) status."""
        receipt = status.receipt
        if receipt is None:
            raise ValueError(f"{status.state} status has no receipt")
        mined = receipt.tx_hash.lower()
        return Confirmation(
            block_number=receipt.block_number,
            block_hash=receipt.block_hash,
            gas_used=receipt.gas_used,
            effective_gas_price=receipt.effective_gas_price,
            status=receipt.status,
            tx_hash=receipt.tx_hash,
            replaced=tuple(h for h in submission.hashes if h.lower() != mined),
            confirmations=status.depth,
        )
