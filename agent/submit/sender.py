"""Sending transactions and seeing them confirmed: the ``TxSender`` boundary and its web3 implementation.

:class:`Web3TxSender` prices a transaction (:class:`FeeOracle`), takes a nonce reconciled with the chain
(:class:`NonceManager`), dry-runs it, signs it (:class:`Signer`) and broadcasts it. :meth:`~TxSender.wait`
then polls (:class:`ReceiptTracker`) until it is mined in a canonical block under the configured
confirmations. On the way it

- rebroadcasts a transaction the node forgot (dropped from the pool, or orphaned by a reorg);
- replaces a stuck one (not mined after ``stuck_after_s`` seconds or ``stuck_after_blocks`` blocks) with the
  same nonce and both fee fields bumped by at least 12.5%, up to ``max_replacements`` times and never above
  the fee cap; the :class:`~agent.domain.Confirmation` lists the hashes it replaced;
- turns a reverted receipt into :class:`TransactionRevertedError` carrying the decoded custom error (replayed
  with ``eth_call`` at the receipt's block).

Metrics (``TX_SENT``, ``TX_REPLACED``, ``TX_REVERTED``, ``TX_CONFIRMED``, ``GAS_SPENT``, ``FEES_PAID``) are
counted here; RPC retries and ``RPC_ERRORS`` live in :class:`ChainRpc`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.domain import Confirmation, Submission
from agent.errors import ChrysalisError
from agent.jsonrpc import RpcUnavailableError
from agent.metrics import FEES_PAID, GAS_SPENT, STAGE_LATENCY, TX_CONFIRMED, TX_REPLACED, TX_REVERTED, TX_SENT
from agent.settings import SubmitSettings
from agent.submit.errors import (
    CallRevertedError,
    DecodedError,
    DryRunRevertedError,
    ErrorDecoder,
    FeeCapExceededError,
    InsufficientFundsError,
    NonceConsumedError,
    NonceError,
    SendRejectedError,
    StuckTransactionError,
    TransactionRevertedError,
)
from agent.submit.fees import FeeOracle, FeeQuote
from agent.submit.journal import BroadcastJournal
from agent.submit.nonce import NonceManager
from agent.submit.receipts import ReceiptTracker, TxStatus
from agent.submit.rpc import ChainRpc, TxPoolRejection
from agent.submit.signer import Signer

log = logging.getLogger(__name__)

OnReplace = Callable[[Submission], None]


@dataclass(frozen=True)
class TxRequest:
    """A transaction to send: a contract call from the agent account.

    Attributes:
        to: The contract. data: Calldata. value: Wei to send.
        gas: A fixed gas limit (None: estimate it, which also dry-runs it).
        label: What it does (a contract method name), for logs and metrics.
    """

    to: str
    data: bytes = b""
    value: int = 0
    gas: int | None = None
    label: str = ""

    def call_params(self, sender: str) -> dict[str, Any]:
        """The ``eth_call`` / ``eth_estimateGas`` object for this request."""
        params: dict[str, Any] = {"from": sender, "to": self.to, "data": self.data}
        if self.value:
            params["value"] = self.value
        if self.gas is not None:
            params["gas"] = self.gas
        return params


class TxSender(ABC):
    """Sends the agent's transactions and reports them confirmed (or why not)."""

    @property
    @abstractmethod
    def address(self) -> str:
        """The account transactions are sent from."""

    @abstractmethod
    def dry_run(self, tx: TxRequest) -> bytes:
        """Execute ``tx`` with ``eth_call`` (no gas spent) and return its output.

        Raises:
            DryRunRevertedError: it would revert; the decoded custom error is attached.
        """

    @abstractmethod
    def estimate_gas(self, tx: TxRequest) -> int:
        """The gas limit to send ``tx`` with (an estimate with headroom). Estimating is a dry run too.

        Raises:
            DryRunRevertedError: it would revert.
        """

    @abstractmethod
    def send(self, tx: TxRequest, *, dry_run: bool | None = None, keys: Sequence[str] = ()) -> Submission:
        """Price, sign and broadcast ``tx``. Persist the returned :class:`Submission` before waiting.

        ``keys`` name what the transaction does (e.g. request ids), recorded with it in the broadcast journal.

        Raises:
            DryRunRevertedError: the dry run (or gas estimate) reverted; nothing was sent.
            FeeCapExceededError: the network needs more than the fee cap; nothing was sent (retryable).
        """

    @abstractmethod
    def wait(
        self, submission: Submission, *, timeout_s: float | None = None, on_replace: OnReplace | None = None
    ) -> Confirmation:
        """Block until ``submission`` is confirmed, replacing it if stuck (``on_replace`` gets each
        replacement).

        Raises:
            TransactionRevertedError: it was mined and reverted.
            StuckTransactionError: not mined in time (retryable; wait again with the same submission).
            NonceConsumedError: another transaction from the same key took its nonce.
        """

    def send_and_wait(self, tx: TxRequest, *, dry_run: bool | None = None, **kwargs: Any) -> Confirmation:
        """:meth:`send` then :meth:`wait`."""
        return self.wait(self.send(tx, dry_run=dry_run), **kwargs)

    def wait_all(
        self,
        submissions: Sequence[Submission],
        *,
        timeout_s: float | None = None,
        on_replace: OnReplace | None = None,
    ) -> list[Confirmation | ChrysalisError]:
        """Wait for several submissions: each item is its Confirmation or the error ``wait`` raised."""
        out: list[Confirmation | ChrysalisError] = []
        for sub in submissions:
            try:
                out.append(self.wait(sub, timeout_s=timeout_s, on_replace=on_replace))
            except ChrysalisError as exc:
                out.append(exc)
        return out


@dataclass
class _Watch:
    """The waiting state of one submission."""

    sub: Submission
    started: float
    deadline: float
    last_change: float
    on_replace: OnReplace | None = None
    start_head: int | None = None
    replacements: int = 0
    cap_logged: bool = False
    consumed_at: float | None = None
    result: Confirmation | None = None
    error: ChrysalisError | None = None


class Web3TxSender(TxSender):
    """:class:`TxSender` over JSON-RPC with a local :class:`Signer`.

    A submission whose nonce the chain has passed without a receipt for any of its hashes is reported as
    :class:`NonceConsumedError` only after ``consumed_grace_s`` seconds (receipts can lag the nonce).

    Args:
        rpc: The node.
        signer: The agent's key.
        settings: Fees, confirmations, stuck-transaction policy.
        decoder: Decodes custom errors (build it from the contracts' ABIs).
        fees, nonces, tracker: Collaborators (built from ``settings`` when omitted).
        clock, sleep: Time sources (tests replace them).
        journal: Where every signed transaction is recorded BEFORE it is sent (first sends, replacements,
            re-sends): replacements are counted from it across restarts, and :meth:`settle_recorded` settles
            a restarted agent's nonces from it. ``None``: nothing is recorded (replacements counted per
            submission).
    """

    consumed_grace_s: float = 2.0

    def __init__(
        self,
        rpc: ChainRpc,
        signer: Signer,
        settings: SubmitSettings,
        *,
        decoder: ErrorDecoder | None = None,
        fees: FeeOracle | None = None,
        nonces: NonceManager | None = None,
        tracker: ReceiptTracker | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        journal: BroadcastJournal | None = None,
    ) -> None:
        self.journal = journal
        self.rpc = rpc
        self.signer = signer
        self.settings = settings
        self.decoder = decoder or rpc.decoder
        self.fees = fees or FeeOracle.from_settings(rpc, self.settings)
        self.nonces = nonces or NonceManager(rpc, signer.address)
        self.tracker = tracker or ReceiptTracker(rpc, self.settings.confirmations)
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def connect(
        cls,
        url: str,
        signer: Signer,
        settings: SubmitSettings,
        *,
        abis: Iterable[Sequence[dict[str, Any]]] = (),
        in_flight: Iterable[Submission] = (),
        journal: BroadcastJournal | None = None,
    ) -> Web3TxSender:
        """A sender for the node at ``url`` decoding the errors of ``abis``, resuming ``in_flight`` nonces
        (and every unsettled nonce ``journal`` recorded)."""
        decoder = ErrorDecoder(abis)
        rpc = ChainRpc.connect(
            url, retries=settings.rpc_retries, backoff_s=settings.rpc_backoff_s, decoder=decoder
        )
        recorded = [r.submission for r in journal.open(signer.address)] if journal is not None else []
        nonces = NonceManager(rpc, signer.address, in_flight=[*in_flight, *recorded])
        return cls(rpc, signer, settings, decoder=decoder, nonces=nonces, journal=journal)

    @property
    def address(self) -> str:
        return self.signer.address

    # -- before sending -----------------------------------------------------------------------------------

    def dry_run(self, tx: TxRequest) -> bytes:
        try:
            return self.rpc.call(tx.call_params(self.address), "latest")
        except CallRevertedError as exc:
            raise DryRunRevertedError(self.decoder.decode(exc.error.data), label=tx.label, to=tx.to) from None

    def estimate_gas(self, tx: TxRequest) -> int:
        """Gas estimate of ``tx`` (a dry run too), times ``gas_multiplier``, rounded up."""
        try:
            estimate = self.rpc.estimate_gas(dataclasses.replace(tx, gas=None).call_params(self.address))
        except CallRevertedError as exc:
            raise DryRunRevertedError(self.decoder.decode(exc.error.data), label=tx.label, to=tx.to) from None
        return math.ceil(estimate * self.settings.gas_multiplier)

    # -- signing and broadcasting -------------------------------------------------------------------------

    def sign(self, tx: TxRequest, *, nonce: int, fees: FeeQuote, gas: int | None = None) -> Submission:
        """Sign ``tx`` with the given nonce and fees (not broadcast; ``sent_at`` is 0)."""
        gas = gas if gas is not None else tx.gas
        if gas is None:
            raise ValueError("sign() needs a gas limit: set TxRequest.gas or pass gas=")
        chain_id = self.rpc.chain_id()
        signed = self.signer.sign_transaction(
            {
                "type": 2,
                "chainId": chain_id,
                "nonce": nonce,
                "to": tx.to,
                "data": tx.data,
                "value": tx.value,
                "gas": gas,
                "maxFeePerGas": fees.max_fee_per_gas,
                "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
            }
        )
        return Submission(
            tx_hash=signed.hash,
            raw_tx="0x" + signed.raw.hex(),
            sender=self.address,
            nonce=nonce,
            to=tx.to,
            data="0x" + bytes(tx.data).hex(),
            value=tx.value,
            gas=gas,
            max_fee_per_gas=fees.max_fee_per_gas,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
            chain_id=chain_id,
            label=tx.label,
        )

    def send(self, tx: TxRequest, *, dry_run: bool | None = None, keys: Sequence[str] = ()) -> Submission:
        dry = self.settings.dry_run if dry_run is None else dry_run
        gas = tx.gas
        if gas is None:
            gas = self.estimate_gas(tx)
        elif dry:
            self.dry_run(tx)
        last_reason = ""
        nonce = -1
        for _attempt in range(4):
            fees = self.fees.quote()
            nonce = self.nonces.next()
            try:
                submission = self.sign(tx, nonce=nonce, fees=fees, gas=gas)
                self._record(submission, "send", keys)  # before it leaves: a crash after this is settled
            except BaseException:
                self.nonces.release(nonce)
                raise
            try:
                return self._broadcast(submission)
            except TxPoolRejection as exc:
                self._discard(submission)
                last_reason = exc.reason
                if exc.kind in ("nonce_too_low", "nonce_too_high", "underpriced"):
                    # A pooled transaction with this nonce (an external send, or a base fee that moved):
                    # re-read the chain's nonce and today's fees, then try again.
                    self.nonces.resync(nonce, exc.kind)
                    continue
                self.nonces.release(nonce)
                if exc.kind == "insufficient_funds":
                    raise InsufficientFundsError(self.address, exc.reason) from None
                raise SendRejectedError(exc.reason, label=tx.label) from None
            except RpcUnavailableError as exc:
                # We cannot tell whether the node got it: keep the nonce taken and hand the submission over,
                # so the caller can persist it and wait (waiting rebroadcasts it if the node never saw it).
                self.nonces.sent(nonce)
                exc.submission = submission  # type: ignore[attr-defined]
                raise
            except BaseException:
                self.nonces.release(nonce)
                raise
        raise NonceError(nonce, last_reason)

    def send_presigned(self, txs: Sequence[TxRequest]) -> list[Submission]:
        """Sign a burst with one fee quote and one nonce reservation, then broadcast each (throughput).

        Every request needs a gas limit; there is no dry run.
        """
        if not txs:
            return []
        fees = self.fees.quote()
        nonces = self.nonces.reserve(len(txs))
        subs = []
        try:
            for tx, nonce in zip(txs, nonces, strict=True):
                subs.append(self.sign(tx, nonce=nonce, fees=fees))
            for sub in subs:
                self._record(sub, "send")
        except BaseException:
            for nonce in nonces:
                self.nonces.release(nonce)
            raise
        out = []
        for i, sub in enumerate(subs):
            try:
                out.append(self._broadcast(sub))
            except BaseException:
                for later in subs[i:]:
                    self.nonces.release(later.nonce)
                raise
        return out

    def _record(self, submission: Submission, kind: str, keys: Sequence[str] = ()) -> None:
        """Record ``submission`` in the journal before it is sent (a failure here sends nothing)."""
        if self.journal is not None:
            self.journal.record(submission, kind, keys)

    def _discard(self, submission: Submission) -> None:
        """The node refused ``submission`` outright: it is in no pool, so its record goes."""
        if self.journal is not None:
            try:
                self.journal.discard(submission.tx_hash)
            except Exception as exc:  # noqa: BLE001 - a stale record costs a receipt lookup, nothing more
                log.warning("could not forget refused %s: %s", submission.tx_hash, exc)

    def _broadcast(self, submission: Submission) -> Submission:
        raw = bytes.fromhex(submission.raw_tx[2:])
        try:
            self.rpc.send_raw(raw)
        except TxPoolRejection as exc:
            if exc.kind != "already_known":
                raise
        self.nonces.sent(submission.nonce)
        TX_SENT.labels(label=submission.label or "tx").inc()
        return dataclasses.replace(submission, sent_at=self._clock())

    def replace(self, submission: Submission) -> Submission:
        """Re-sign ``submission`` with the same nonce and fees bumped by at least ``fee_bump_percent`` on both
        fields, and broadcast it. Returns the replacement (``replaced`` lists the earlier hashes).

        If the node says the nonce is already used (the original was just mined), ``submission`` is returned
        as it is: its receipt will show up.

        Raises:
            FeeCapExceededError: the bump would pass the fee cap; nothing was sent.
        """
        previous = FeeQuote(submission.max_fee_per_gas, submission.max_priority_fee_per_gas, 0)
        for _attempt in range(3):
            fees = self.fees.bump(previous, self.settings.fee_bump_percent)
            tx = TxRequest(
                to=submission.to,
                data=bytes.fromhex(submission.data[2:]),
                value=submission.value,
                gas=submission.gas,
                label=submission.label,
            )
            new = self.sign(tx, nonce=submission.nonce, fees=fees)
            new = dataclasses.replace(new, replaced=(*submission.replaced, submission.tx_hash))
            try:
                self._record(new, "replace")
            except Exception as exc:  # noqa: BLE001 - unrecorded, it is not sent; the next poll tries again
                log.warning(
                    "could not record a replacement of nonce %d; not replacing now: %s", submission.nonce, exc
                )
                return submission
            try:
                self.rpc.send_raw(bytes.fromhex(new.raw_tx[2:]))
            except TxPoolRejection as exc:
                if exc.kind != "already_known":
                    self._discard(new)
                if exc.kind == "nonce_too_low":
                    return submission
                if exc.kind == "underpriced":
                    previous = fees
                    continue
                if exc.kind != "already_known":
                    raise SendRejectedError(exc.reason, label=submission.label) from None
            label = submission.label or "tx"
            TX_SENT.labels(label=label).inc()
            TX_REPLACED.labels(label=label).inc()
            log.warning(
                "%s nonce %d stuck as %s; replaced by %s (%s)",
                label,
                submission.nonce,
                submission.tx_hash,
                new.tx_hash,
                fees,
            )
            return dataclasses.replace(new, sent_at=self._clock())
        raise NonceError(submission.nonce, "replacement refused as underpriced three times")

    def rebroadcast(self, submission: Submission) -> Submission:
        """Send ``submission``'s signed transaction again (the node forgot it).

        If the pool refuses it as underpriced (the base fee rose past it), replace it with bumped fees.
        """
        try:
            self._record(submission, "rebroadcast")  # already recorded (same hash): a no-op
        except Exception as exc:  # noqa: BLE001 - the same signed transaction, its nonce already recorded
            log.warning("could not record the re-broadcast of %s: %s", submission.tx_hash, exc)
        try:
            self.rpc.send_raw(bytes.fromhex(submission.raw_tx[2:]))
            log.info("rebroadcast %s (nonce %d)", submission.tx_hash, submission.nonce)
        except TxPoolRejection as exc:
            if exc.kind == "underpriced":
                return self.replace(submission)
            if exc.kind not in ("already_known", "nonce_too_low"):
                raise SendRejectedError(exc.reason, label=submission.label) from None
        return submission

    # -- waiting ------------------------------------------------------------------------------------------

    def wait(
        self, submission: Submission, *, timeout_s: float | None = None, on_replace: OnReplace | None = None
    ) -> Confirmation:
        watch = self._watch(submission, timeout_s, on_replace)
        while not self._step(watch):
            self._sleep(self.settings.poll_interval_s)
        if watch.error is not None:
            raise watch.error
        assert watch.result is not None
        return watch.result

    def wait_all(
        self,
        submissions: Sequence[Submission],
        *,
        timeout_s: float | None = None,
        on_replace: OnReplace | None = None,
    ) -> list[Confirmation | ChrysalisError]:
        """Wait for several submissions at once, polling them in JSON-RPC batches.

        Each item is its :class:`Confirmation` or the error :meth:`wait` would have raised for it.
        """
        watches = [self._watch(s, timeout_s, on_replace) for s in submissions]
        open_ = list(watches)
        while open_:
            statuses = self.tracker.poll_many([w.sub for w in open_])
            open_ = [w for w, status in zip(open_, statuses, strict=True) if not self._advance(w, status)]
            if open_:
                self._sleep(self.settings.poll_interval_s)
        return [w.error if w.error is not None else w.result for w in watches]  # type: ignore[misc]

    def poll(self, submission: Submission) -> TxStatus:
        """One non-blocking look at ``submission`` (no replacement, no rebroadcast)."""
        return self.tracker.poll(submission)

    def _watch(self, submission: Submission, timeout_s: float | None, on_replace: OnReplace | None) -> _Watch:
        now = self._clock()
        timeout = self.settings.receipt_timeout_s if timeout_s is None else timeout_s
        replacements = len(submission.replaced)
        if self.journal is not None:
            # What was recorded for this nonce (before a restart, too): every hash sent for it, and the
            # replacements already spent: the cap holds across waits and restarts.
            try:
                recorded = self.journal.latest(submission.sender, submission.nonce)
            except Exception as exc:  # noqa: BLE001 - wait on what the caller has; the next wait reads again
                log.warning("could not read the records of nonce %d: %s", submission.nonce, exc)
                recorded = None
            if recorded is not None:
                known = {h.lower() for h in submission.hashes}
                if {h.lower() for h in recorded.submission.hashes} - known:
                    latest = recorded.submission.tx_hash.lower()
                    submission = dataclasses.replace(
                        recorded.submission,
                        replaced=tuple(
                            dict.fromkeys(
                                h.lower()
                                for h in (*submission.hashes, *recorded.submission.hashes)
                                if h.lower() != latest
                            )
                        ),
                        sent_at=max(recorded.submission.sent_at, submission.sent_at),
                    )
                replacements = max(replacements, recorded.replacements)
        return _Watch(
            sub=submission,
            started=now,
            deadline=now + timeout,
            last_change=submission.sent_at or now,
            on_replace=on_replace,
            replacements=replacements,
        )

    def _step(self, w: _Watch) -> bool:
        """Poll and advance one watch; True when it is finished (``result`` or ``error`` set)."""
        return self._advance(w, self.tracker.poll(w.sub))

    def _advance(self, w: _Watch, status: TxStatus) -> bool:
        """Act on one poll of a watch: finish it, or rebroadcast / replace / keep waiting."""
        now = self._clock()
        if status.state == "confirmed":
            self._finish(w, status)
            return True
        if status.state in ("mined", "orphaned"):
            w.last_change = now
            w.start_head = None
            if now >= w.deadline:
                w.error = StuckTransactionError(
                    w.sub.nonce,
                    w.sub.hashes,
                    now - w.started,
                    f"{status.state}, {status.depth} of {self.settings.confirmations} confirmations",
                )
                return True
            return False
        # pending
        if now >= w.deadline:
            self.tracker.forget(w.sub)
            w.error = StuckTransactionError(w.sub.nonce, w.sub.hashes, now - w.started, "timed out waiting")
            return True
        if self.rpc.nonce(w.sub.sender, "latest") > w.sub.nonce:
            # Something with our nonce was mined: ours, if its receipt shows up (nodes, and the backends
            # Something with our nonce was mined: ours, if its receipt shows up (nodes, and the backends
            # behind
            # one RPC URL, index receipts a moment after the state moves); else someone else's.
            if w.consumed_at is None:
                w.consumed_at = now
            if now - w.consumed_at < self.consumed_grace_s:
                return False
            self.nonces.settled(w.sub.nonce)
            self.tracker.forget(w.sub)
            self._settle_journal(w.sub, "consumed")
            w.error = NonceConsumedError(w.sub.nonce, w.sub.hashes)
            return True
        w.consumed_at = None
        if self.rpc.transaction(w.sub.tx_hash) is None:
            # The node forgot it (evicted from its pool, or dropped by a reorg): send it again.
            try:
                new = self.rebroadcast(w.sub)
            except FeeCapExceededError as exc:
                self._cap_blocked(w, exc)
            else:
                if new is not w.sub:
                    self._replaced(w, new, now)
                    return False
        head = self.rpc.block_number()
        if w.start_head is None:
            w.start_head = head
        blocks = self.settings.stuck_after_blocks
        stuck = now - w.last_change >= self.settings.stuck_after_s or (
            blocks is not None and head - w.start_head >= blocks
        )
        if stuck and w.replacements >= self.settings.max_replacements and not w.cap_logged:
            log.warning(
                "%s nonce %d (%s) is still pending after %d replacement(s), the most allowed "
                "(submit.max_replacements); waiting for it",
                w.sub.label or "tx", w.sub.nonce, w.sub.tx_hash, w.replacements,
            )  # fmt: skip
            w.cap_logged = True
        if stuck and w.replacements < self.settings.max_replacements:
            try:
                new = self.replace(w.sub)
            except FeeCapExceededError as exc:
                self._cap_blocked(w, exc)
                w.last_change, w.start_head = now, head
            else:
                if new is not w.sub:
                    self._replaced(w, new, now)
                    w.start_head = head
        return False

    def _replaced(self, w: _Watch, new: Submission, now: float) -> None:
        w.sub = new
        w.replacements += 1
        w.last_change = now
        if w.on_replace is not None:
            w.on_replace(new)

    def _cap_blocked(self, w: _Watch, exc: FeeCapExceededError) -> None:
        if not w.cap_logged:
            log.warning(
                "%s nonce %d is stuck and cannot be replaced: %s", w.sub.label, w.sub.nonce, exc.message
            )
            w.cap_logged = True

    def _finish(self, w: _Watch, status: TxStatus) -> None:
        conf = ReceiptTracker.confirmation(w.sub, status)
        label = w.sub.label or "tx"
        self.nonces.settled(w.sub.nonce)
        self._settle_journal(w.sub, "mined", conf.tx_hash)
        GAS_SPENT.labels(label=label).inc(conf.gas_used)
        FEES_PAID.labels(label=label).inc(conf.fee_wei)
        if w.sub.sent_at:
            STAGE_LATENCY.labels(stage="confirm").observe(max(0.0, self._clock() - w.sub.sent_at))
        if conf.status == 1:
            TX_CONFIRMED.labels(label=label).inc()
            w.result = conf
            return
        TX_REVERTED.labels(label=label).inc()
        w.error = TransactionRevertedError(
            self._revert_reason(w.sub, conf.block_number),
            label=w.sub.label,
            tx_hash=conf.tx_hash,
            block_number=conf.block_number,
            gas_used=conf.gas_used,
            gas_limit=w.sub.gas,
            confirmation=conf,
        )

    def _revert_reason(self, sub: Submission, block_number: int) -> DecodedError:
        """Replay a reverted transaction with ``eth_call`` at its block (then its parent): its revert data."""
        params: dict[str, Any] = {"from": sub.sender, "to": sub.to, "data": sub.data, "gas": sub.gas}
        if sub.value:
            params["value"] = sub.value
        for block in (block_number, block_number - 1):
            if block < 0:
                continue
            try:
                self.rpc.call(params, block)
            except CallRevertedError as exc:
                return self.decoder.decode(exc.error.data)
            except ChrysalisError:
                break
        return DecodedError(name="")

    # -- the journal ----------------------------------------------------------------------------------------

    def _settle_journal(self, sub: Submission, outcome: str, mined_hash: str | None = None) -> None:
        if self.journal is None:
            return
        try:
            self.journal.settle(sub.sender, sub.nonce, outcome, mined_hash)
        except Exception as exc:  # noqa: BLE001 - settled again from the chain at the next start
            log.warning("could not record nonce %d as %s: %s", sub.nonce, outcome, exc)

    def settle_recorded(self) -> list[Submission]:
        """Settle every nonce the journal holds unsettled, from the chain's latest state (never ``pending``).

        Run it when the agent starts, before anything new is signed: a nonce the chain has passed is settled
        as ``mined`` by the recorded hash that has a receipt, or ``consumed`` (another transaction took it); a
        nonce still open stays taken (the nonce manager skips it) and, when the node has forgotten its
        transaction, the recorded signed transaction is broadcast again. Returns the submissions still open.
        """
        if self.journal is None:
            return []
        recorded = self.journal.open(self.address)
        if not recorded:
            return []
        latest = self.rpc.nonce(self.address, "latest")
        highest = self.journal.highest_mined(self.address)
        if highest is not None and latest <= highest:
            # The chain has not even reached a nonce recorded as mined: it is not the chain these records were
            # written on (a dev chain restarted under the same database), or it reorganised deeper than the
            # records. Re-broadcasting old transactions there would be wrong: they are left as they are.
            log.error(
                "the chain's nonce for %s is %d, yet nonce %d is recorded as mined: the broadcast records do not "
                "match this chain; %d unsettled record(s) are neither re-broadcast nor kept in flight",
                self.address, latest, highest, len(recorded),
            )  # fmt: skip
            for rec in recorded:
                self.nonces.settled(rec.submission.nonce)
                self.journal.settle(rec.submission.sender, rec.submission.nonce, "abandoned")
            return []
        still_open: list[Submission] = []
        for rec in recorded:
            sub = rec.submission
            if sub.nonce < latest:
                receipts = self.rpc.receipts(list(sub.hashes))
                mined = next((r for r in receipts if r is not None), None)
                outcome = "mined" if mined is not None else "consumed"
                self.journal.settle(sub.sender, sub.nonce, outcome, mined.tx_hash if mined else None)
                self.nonces.settled(sub.nonce)
                log.info(
                    "recorded %s nonce %d settled from the chain: %s%s", sub.label or "tx", sub.nonce, outcome,
                    f" by {mined.tx_hash}" if mined is not None else " by a transaction not recorded here",
                )  # fmt: skip
                continue
            self.nonces.track([sub])
            still_open.append(sub)
            if self.rpc.transaction(sub.tx_hash) is None:
                try:
                    self.rebroadcast(sub)
                except ChrysalisError as exc:
                    log.warning(
                        "could not re-broadcast recorded %s (nonce %d): %s", sub.tx_hash, sub.nonce, exc
                    )
            log.info(
                "recorded %s nonce %d (%s) is not mined yet; it stays taken until it settles",
                sub.label or "tx", sub.nonce, sub.tx_hash,
            )  # fmt: skip
        return still_open
