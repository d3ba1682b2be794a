"""The submit and confirm stages: batched ``fulfillEvolutions``, waited for in chunks, settled by chain truth.

Submitting: :class:`~agent.submit.batcher.FulfilmentBatcher` drops every request that is no longer pending
with the job's seed (the pre-send ``isPendingWith`` check: a request cancelled on-chain or orphaned by a reorg is
never paid for, and neither is one that a reorg re-mined in another block with a new seed, whose job's metadata
was made from the orphaned log; the contract rejects such a fulfilment too) and groups the rest under the count
and gas caps; each batch is broadcast and its
:class:`~agent.domain.Submission` recorded as every member job's ``submitted`` record before any waiting.

Confirming: the recorded submissions are waited for (fee-bumped when stuck) in chunks of
``agent.wait_chunk_s``, so a stop request is honoured between chunks. Whatever cannot be confirmed from the
receipt -- a revert, a nonce taken by another transaction, a request dropped before sending, a request the mined
batch skipped (``FulfilmentSkipped``: cancelled or re-opened just before the batch landed) -- is settled by
:meth:`Settler.settle`, which asks the chain (``isPending``, then the ``Evolved`` / ``EvolutionCancelled``
logs). The contract fulfils a request at most once; the agent keeps trying until the chain says it is
fulfilled; together: exactly once. Every broadcast is recorded (the sender's journal, with the request ids as
keys) before it is sent: a crash between broadcast and the ``submitted`` record is settled from that record
(the worker waits for the recorded transaction), never from the node's ``pending`` state. A transaction not
mined by ``receipt_timeout_s`` is waited for again, never counted as a failed attempt.

A request pending with another seed than the job's (:class:`RequestReminedError`) is not settled: the job's
source log was orphaned by a reorg that re-mined the request in another block. Its attempt ends with that
retryable error; the watcher's reorg notice cancels the job and the re-mined log (another block hash) revives it
with the new block and seed, from the inputs stage (:meth:`~agent.jobs.JobStore.enqueue`). Should the chain flip
back to the job's block instead, the next attempt finds the request pending with the job's seed and sends it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.domain import Confirmation, Submission
from agent.errors import ChrysalisError, RetryableError
from agent.pipeline.collection import CollectionReader, RequestOutcome
from agent.pipeline.request import EvolutionRequest
from agent.submit import FulfilmentBatcher, StuckTransactionError, TxSender
from agent.submit.batcher import Batch, Fulfilment, is_pending_with_call

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    """A job whose metadata is published: what its fulfilment writes, bound to the seed of the request log the
    job was made from."""

    job_id: int
    request: EvolutionRequest
    digest: bytes
    provenance: bytes

    @property
    def fulfilment(self) -> Fulfilment:
        return Fulfilment(self.request.request_id, self.request.seed_bytes, self.digest, self.provenance)


class RequestReminedError(RetryableError):
    """The job's request is pending on the canonical chain, but with another seed: a reorg orphaned the log the
    job was made from and re-mined the request (same id) in another block. Nothing is sent (the contract would
    reject the fulfilment); the job is re-run from the canonical log once the watcher delivers it."""

    def __init__(self, request: EvolutionRequest) -> None:
        self.request = request
        super().__init__(
            f"request {request.request_id:#x} is pending with another seed than {request.seed} (block "
            f"#{request.block_number} {request.block_hash}): it was re-mined after a reorg, and this job's "
            "outputs were made from the orphaned log; nothing was sent",
            hint="nothing to do: the watcher's reorg notice cancels this job and the re-mined log revives it with "
            "the new block and seed",
        )


@dataclass(frozen=True)
class Planned:
    """Batches to send (each with its jobs) and jobs dropped before sending, with the reason."""

    batches: tuple[tuple[Batch[Fulfilment], tuple[Ready, ...]], ...]
    dropped: tuple[tuple[Ready, str], ...]


class Submitter:
    """Plans, sends and waits for fulfilments.

    Args:
        batcher: Pre-checks and groups fulfilments.
        sender: Sends and waits (fee bumps, confirmations).
        wait_chunk_s: Longest single wait before the stop flag is checked again.
        receipt_timeout_s: Give up waiting for one transaction after this long (retryable).
    """

    def __init__(
        self,
        batcher: FulfilmentBatcher,
        sender: TxSender,
        *,
        wait_chunk_s: float = 2.0,
        receipt_timeout_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batcher = batcher
        self.sender = sender
        self.wait_chunk_s = wait_chunk_s
        self.receipt_timeout_s = receipt_timeout_s
        self._clock = clock

    def plan(self, ready: Sequence[Ready]) -> Planned:
        """Drop what is not pending (or would revert) and group the rest (no gas is spent)."""
        by_request = {r.request.request_id: r for r in ready}
        plan = self.batcher.plan([r.fulfilment for r in ready])
        batches = tuple(
            (batch, tuple(by_request[f.request_id] for f in batch.items)) for batch in plan.batches
        )
        dropped = tuple((by_request[d.key], d.reason) for d in plan.dropped if d.key in by_request)
        return Planned(batches, dropped)

    def skipped(self, confirmation: Confirmation) -> frozenset[int]:
        """Request ids that the mined, successful batch ``confirmation`` skipped on-chain (``FulfilmentSkipped``:
        no longer pending with the job's seed when it ran, e.g. cancelled just before it). Their jobs are not
        fulfilled: they are settled by chain truth like a request dropped before sending."""
        return self.batcher.skipped(confirmation.tx_hash)

    def send(self, batch: Batch[Fulfilment]) -> Submission:
        """Broadcast one batch (its gas estimate was the dry run).

        When the node's answer is lost, the submission is returned anyway: it may have been received, and
        waiting for it rebroadcasts it if not.
        """
        keys = [str(item.request_id) for item in batch.items]
        try:
            return self.sender.send(batch.request(), dry_run=False, keys=keys)
        except ChrysalisError as exc:
            submission = getattr(exc, "submission", None)
            if isinstance(submission, Submission):
                log.warning("broadcast of %s may have failed (%s); waiting for it", submission.tx_hash, exc)
                return submission
            raise

    def wait(
        self, submissions: Sequence[Submission], stop: threading.Event | None = None
    ) -> list[Confirmation | ChrysalisError | None]:
        """Wait for every submission; each item is its Confirmation, the error that ended it, or None when
        ``stop`` was set first (the caller releases those jobs; a restart resumes the wait)."""
        current = {i: s for i, s in enumerate(submissions)}
        results: dict[int, Confirmation | ChrysalisError | None] = {}
        deadline = self._clock() + self.receipt_timeout_s

        def replaced(new: Submission) -> None:
            for i, sub in current.items():
                if sub.nonce == new.nonce and sub.sender == new.sender:
                    current[i] = new

        while len(results) < len(current):
            open_ = [i for i in current if i not in results]
            if stop is not None and stop.is_set():
                results.update(dict.fromkeys(open_))
                break
            remaining = deadline - self._clock()
            chunk = max(0.01, min(self.wait_chunk_s, remaining))
            outcomes = self.sender.wait_all([current[i] for i in open_], timeout_s=chunk, on_replace=replaced)
            for i, outcome in zip(open_, outcomes, strict=True):
                if isinstance(outcome, StuckTransactionError) and self._clock() < deadline:
                    continue  # this chunk ended; wait on (replacement state lives in the submission)
                results[i] = outcome
        return [results[i] for i in range(len(submissions))]


@dataclass(frozen=True)
class Settlement:
    """What the chain says should become of a job: ``confirm`` (with a result), ``cancel`` (with a reason)
    or ``pending`` (the request is still open: send again)."""

    action: str
    result: dict[str, Any] | None = None
    reason: str | None = None


class Settler:
    """Settles a job by chain truth when its receipt cannot (see the module docstring)."""

    def __init__(self, reader: CollectionReader, agent_address: str) -> None:
        self.reader = reader
        self.agent_address = agent_address.lower()

    def settle(self, ready: Ready) -> Settlement:
        """What should become of ``ready``'s job, by what the chain says now.

        Raises:
            RequestReminedError: the request is pending with another seed than the job's (re-mined after a
                reorg): neither send nor settle; the job is re-run from the canonical log.
        """
        request = ready.request
        outcome: RequestOutcome = self.reader.outcome(request.request_id, request.block_number)
        if outcome.state == "pending":
            if not self.pending_with_seed(request):
                raise RequestReminedError(request)
            return Settlement("pending")
        if outcome.state == "fulfilled":
            assert outcome.sender is not None
            if outcome.sender.lower() == self.agent_address:
                ours = "0x" + ready.digest.hex()
                if ready.digest != bytes(32) and outcome.digest != ours:
                    log.warning(
                        "request %s was fulfilled by this agent's key with digest %s, not this attempt's %s "
                        "(written by an earlier attempt, or another agent run with the same key)",
                        request.request_id, outcome.digest, ours,
                    )  # fmt: skip
                return Settlement(
                    "confirm",
                    result={
                        "how": "found on-chain",
                        "tx_hash": outcome.tx_hash,
                        "block_number": outcome.block_number,
                        "block_hash": outcome.block_hash,
                        "digest": outcome.digest,
                    },
                )
            return Settlement(
                "cancel",
                reason=f"request {request.request_id:#x} was fulfilled by {outcome.sender} in {outcome.tx_hash}, "
                "not by this agent",
            )
        if outcome.state == "cancelled":
            return Settlement(
                "cancel",
                reason=f"request {request.request_id:#x} was cancelled on-chain (fee refunded) in {outcome.tx_hash}",
            )
        return Settlement(
            "cancel",
            reason=f"request {request.request_id:#x} is not on the canonical chain (orphaned by a reorg); "
            "nothing was paid for it",
        )

    def pending_with_seed(self, request: EvolutionRequest) -> bool:
        """``isPendingWith(requestId, seed)`` at the latest block: pending, and with this log's seed."""
        rpc = self.reader.rpc
        call = {
            "to": self.reader.address,
            "data": is_pending_with_call(request.request_id, request.seed_bytes),
        }
        raw = rpc.call("eth_call", lambda: rpc.w3.eth.call(call, "latest"))  # type: ignore[arg-type]
        return bytes(raw)[-1:] == b"\x01"


def confirmation_result(conf: Confirmation, batch_size: int) -> dict[str, Any]:
    """The job result recorded for a fulfilment confirmed from its receipt."""
    return {
        "how": "sent",
        "tx_hash": conf.tx_hash,
        "block_number": conf.block_number,
        "block_hash": conf.block_hash,
        "gas_used": conf.gas_used,
        "effective_gas_price": str(conf.effective_gas_price),
        "fee_wei": str(conf.fee_wei),
        "replaced": list(conf.replaced),
        "confirmations": conf.confirmations,
        "batch_size": batch_size,
    }
