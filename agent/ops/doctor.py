"""``chrysalis doctor``: probe the configured JSON-RPC endpoint(s) for what makes an agent lose requests.

Every check is a function that returns a :class:`Check` (``OK``, ``WARN``, ``FAIL`` or ``SKIP``, a one-line
finding, a fix hint when it is not OK, and the measured value); :func:`run_doctor` runs them in order and returns
a :class:`DoctorReport`. Nothing here sends a transaction or writes anything but the metrics.

* ``primary`` / ``secondary``: the endpoint answers (``eth_chainId``, ``eth_blockNumber``; the client's
  ``web3_clientVersion`` when it tells). The secondary is ``chain.rpc_url_secondary``, optional.
* ``chain_id``: the primary serves the deployment record's chain, and both endpoints serve the same chain (the
  same id *and* the same genesis block).
* ``head_moving``: ``eth_blockNumber`` sampled over ``interval_s`` (polled, so it returns as soon as a block
  arrives). A head that does not move is a WARN, not a FAIL: a dev chain with no traffic (anvil, hardhat) mines
  only when it receives a transaction.
* ``head_lag``: how many blocks the primary is behind the secondary (or the reverse). The heads are read
  primary, secondary, primary, and only a difference that the reading order cannot explain counts.
* ``log_range``: the largest ``eth_getLogs`` span the primary accepts over the collection's address, found with
  the watcher's own :func:`agent.watch.logs.fetch_logs` / :class:`~agent.watch.logs.AdaptiveRange` (halving
  from ``probe_range`` on any error, as the watcher does), then bisected between the last refused and the first
  accepted span. On a chain shorter than the probe it is a lower bound (the whole chain). The probe's
  halvings count in ``chrysalis_watch_range_halvings`` like the watcher's.
* ``pending``: whether the ``"pending"`` block tag is really evaluated. See :func:`check_pending` for the probe
  and its limits.

:func:`publish` puts a report into :data:`agent.metrics.REGISTRY` (``chrysalis_rpc_doctor_ok{check}``,
``chrysalis_rpc_head_lag_blocks``, ``chrysalis_rpc_max_log_range_blocks``, ``chrysalis_rpc_pending_supported``,
...); :func:`start_background` runs the doctor once on a daemon thread when the agent starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from web3 import Web3
from web3.exceptions import BlockNotFound

from agent import metrics
from agent.errors import ChrysalisError
from agent.jsonrpc import RpcUnavailableError
from agent.redact import redact_text, redact_url
from agent.watch.errors import RpcError, RpcRateLimitedError, UnsplittableRangeError
from agent.watch.logs import AdaptiveRange, fetch_logs
from agent.watch.rpc import RpcClient, hex0x

log = logging.getLogger("chrysalis.doctor")

CHECKS = ("primary", "secondary", "chain_id", "head_moving", "head_lag", "log_range", "pending")
"""Every check, in the order it runs (the ``check`` label of the doctor's gauges)."""

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_PRIMARY_KEY = "chain.rpc_url (CHRYSALIS_CHAIN__RPC_URL)"
_SECONDARY_KEY = "chain.rpc_url_secondary (CHRYSALIS_CHAIN__RPC_URL_SECONDARY)"
_MAX_BISECT_STEPS = 24


class Level(StrEnum):
    """A check's verdict. ``SKIP``: not applicable (nothing to compare with, or an earlier check failed)."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


_RANK = {Level.SKIP: 0, Level.OK: 0, Level.WARN: 1, Level.FAIL: 2}


@dataclass(frozen=True)
class Check:
    """One check's result.

    Attributes:
        name: One of :data:`CHECKS`.
        level: The verdict.
        summary: What was found, in one line.
        hint: How to fix it (set when the level is WARN or FAIL).
        value: The measured number, if the check measures one (blocks per second, lag in blocks, the largest
            accepted span, 1/0/-1 for pending support, the chain id).
        data: Everything else measured, JSON-ready.
    """

    name: str
    level: Level
    summary: str
    hint: str | None = None
    value: int | float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level.value,
            "summary": self.summary,
            "hint": self.hint,
            "value": self.value,
            **dict(self.data),
        }


@dataclass(frozen=True)
class DoctorOptions:
    """What the checks compare against and how long they may take.

    Attributes:
        interval_s: How long ``head_moving`` waits for the head to move (set it above the chain's block time).
        poll_s: How often the head is read meanwhile.
        probe_range: The span ``log_range`` starts halving from.
        configured_range: ``chain.max_block_range``: a provider cap below it is a WARN.
        max_lag: A head lag of more blocks than this is a WARN.
        fail_lag: A primary further behind than this (``chain.finality_depth``) is a FAIL.
        address: The address ``eth_getLogs`` is probed over (the collection; default the zero address).
        expected_chain_id: The deployment record's chain id, if there is a record.
        pending_address: An account whose pooled transactions make the ``pending`` probe conclusive (default:
            the deployment's agent account).
        timeout_s, retries, max_rps: The doctor's JSON-RPC client (few retries: an answer that needs many is a
            finding, not something to hide).
    """

    interval_s: float = 15.0
    poll_s: float = 0.5
    probe_range: int = 100_000
    configured_range: int = 2000
    max_lag: int = 3
    fail_lag: int = 64
    address: str | None = None
    expected_chain_id: int | None = None
    pending_address: str | None = None
    timeout_s: float = 10.0
    retries: int = 1
    max_rps: float | None = None


class CheckResults:
    """What a report of checks answers: its worst verdict, and a check by name (``checks`` is the subclass's)."""

    checks: tuple[Check, ...]

    @property
    def level(self) -> Level:
        """The worst verdict (``OK`` when every check is OK or skipped)."""
        worst = max((c.level for c in self.checks), key=lambda lv: _RANK[lv], default=Level.OK)
        return Level.OK if worst is Level.SKIP else worst

    @property
    def failed(self) -> bool:
        return self.level is Level.FAIL

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class DoctorReport(CheckResults):
    """Every check's result, in :data:`CHECKS` order; URLs with any credentials in them hidden."""

    primary: str
    secondary: str | None
    checks: tuple[Check, ...]
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "secondary": self.secondary,
            "verdict": self.level.value,
            "elapsed_s": round(self.elapsed_s, 3),
            "checks": {c.name: c.to_json() for c in self.checks},
        }


# -- URLs -------------------------------------------------------------------------------------------------------


def _message(exc: BaseException, *urls: str) -> str:
    text = exc.message if isinstance(exc, ChrysalisError) else f"{type(exc).__name__}: {exc}"
    return redact_text(text, *urls)


def connect(url: str, options: DoctorOptions) -> RpcClient:
    """The doctor's JSON-RPC client for ``url`` (``client="doctor"`` in the RPC metrics)."""
    return RpcClient(
        url,
        timeout_s=options.timeout_s,
        retries=options.retries,
        backoff_s=0.1,
        max_backoff_s=1.0,
        max_rps=options.max_rps,
        client="doctor",
    )


# -- the checks -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """What :func:`check_endpoint` learnt: ``chain_id`` and ``head`` are None when it could not be reached."""

    check: Check
    chain_id: int | None = None
    head: int | None = None


def check_endpoint(rpc: RpcClient, name: str = "primary") -> Endpoint:
    """Does the endpoint answer? Its chain id, head and (if it tells) client version."""
    key = _PRIMARY_KEY if name == "primary" else _SECONDARY_KEY
    try:
        chain_id = rpc.chain_id()
        head = rpc.block_number()
    except Exception as exc:  # noqa: BLE001 - an unreachable or broken endpoint is this check's finding
        return Endpoint(
            Check(
                name,
                Level.FAIL,
                f"{redact_url(rpc.url)} does not answer: {_message(exc, rpc.url)}",
                hint=f"is the node up and reachable, and is the URL (and its API key) right? check {key}",
            )
        )
    try:
        version: str | None = str(rpc.call("web3_clientVersion", lambda: rpc.w3.client_version))
    except Exception:  # noqa: BLE001 - optional: many providers do not say
        version = None
    summary = f"{redact_url(rpc.url)}: chain {chain_id}, head {head}" + (f", {version}" if version else "")
    data = {"url": redact_url(rpc.url), "chain_id": chain_id, "head": head, "client": version}
    return Endpoint(Check(name, Level.OK, summary, value=chain_id, data=data), chain_id, head)


def check_chain_id(
    primary: RpcClient,
    primary_id: int,
    secondary: RpcClient | None = None,
    secondary_id: int | None = None,
    expected: int | None = None,
) -> Check:
    """The primary serves the deployment's chain, and both endpoints serve one chain (id and genesis block)."""
    data: dict[str, Any] = {"primary": primary_id, "secondary": secondary_id, "deployment": expected}
    if expected is not None and primary_id != expected:
        return Check(
            "chain_id",
            Level.FAIL,
            f"the primary serves chain {primary_id}, the deployment record is for chain {expected}",
            hint=f"point {_PRIMARY_KEY} at a chain-{expected} node, or chain.deployment at the record for chain "
            f"{primary_id}",
            value=primary_id,
            data=data,
        )
    if secondary is None or secondary_id is None:
        if expected is None:
            return Check(
                "chain_id",
                Level.SKIP,
                f"chain {primary_id} (no second RPC and no deployment record to compare)",
                value=primary_id,
                data=data,
            )
        why = "no second RPC configured" if secondary is None else "the secondary did not answer"
        return Check(
            "chain_id",
            Level.OK,
            f"chain {primary_id}, as the deployment record ({why})",
            value=primary_id,
            data=data,
        )
    if primary_id != secondary_id:
        return Check(
            "chain_id",
            Level.FAIL,
            f"the primary serves chain {primary_id}, the secondary chain {secondary_id}",
            hint=f"both URLs must serve the same network: fix {_SECONDARY_KEY} (or chain.rpc_url)",
            value=primary_id,
            data=data,
        )
    genesis = [_genesis(rpc) for rpc in (primary, secondary)]
    data["genesis"] = genesis
    if None not in genesis and genesis[0] != genesis[1]:
        return Check(
            "chain_id",
            Level.FAIL,
            f"both say chain {primary_id}, but their genesis blocks differ ({_short(genesis[0])} vs "
            f"{_short(genesis[1])}): they serve two different chains",
            hint="a restarted dev chain, or another network reusing the id: point both URLs at the same chain",
            value=primary_id,
            data=data,
        )
    what = "same genesis block" if None not in genesis else "genesis block not compared"
    return Check(
        "chain_id",
        Level.OK,
        f"chain {primary_id} on both RPCs ({what})"
        + (", as the deployment record" if expected is not None else ""),
        value=primary_id,
        data=data,
    )


def _genesis(rpc: RpcClient) -> str | None:
    """The hash of block 0, else of the ``"earliest"`` block (a chain started above 0 from a genesis file)."""

    def earliest() -> Any:
        try:
            return rpc.w3.eth.get_block("earliest")
        except BlockNotFound:
            return None

    try:
        block = rpc.get_block(0)
        if block is not None:
            return block.hash
        found = rpc.call("eth_getBlockByNumber", earliest)
    except ChrysalisError:
        return None
    return hex0x(found["hash"]) if found is not None and found.get("hash") is not None else None


def _short(value: str | None) -> str:
    return "?" if value is None else value[:10] + "…"


def check_head(
    rpc: RpcClient,
    interval_s: float,
    *,
    poll_s: float = 0.5,
    wait: Callable[[float], object] | None = None,
) -> Check:
    """Is the head moving? ``eth_blockNumber`` read every ``poll_s`` for up to ``interval_s``.

    ``wait(seconds)`` waits between reads (default: sleeps); when it returns something truthy (a stop event
    set) the check ends as SKIP.
    """
    wait = wait or _sleep
    first = last = rpc.block_number()
    started = time.monotonic()
    while True:
        remaining = interval_s - (time.monotonic() - started)
        if remaining <= 0:
            break
        if wait(max(0.0, min(poll_s, remaining))):
            return Check("head_moving", Level.SKIP, "stopped before the head was sampled again")
        last = rpc.block_number()
        if last != first:
            break
    elapsed = max(time.monotonic() - started, 1e-3)
    data = {"first": first, "last": last, "seconds": round(elapsed, 3)}
    if last > first:
        rate = (last - first) / elapsed
        return Check(
            "head_moving",
            Level.OK,
            f"head moved {first} -> {last} in {elapsed:.1f} s",
            value=round(rate, 3),
            data=data,
        )
    if last < first:
        return Check(
            "head_moving",
            Level.WARN,
            f"head went back from {first} to {last}: successive requests reached nodes at different heights",
            hint="a load balancer spreads requests over nodes that are not in step; the watcher waits for a lagging "
            "node (it never takes one for a reorg), but a provider with sticky sessions, or your own node, avoids "
            "the stalls",
            value=0.0,
            data=data,
        )
    return Check(
        "head_moving",
        Level.WARN,
        f"head stayed at {first} for {elapsed:.1f} s",
        hint="expected on a dev chain with no traffic: anvil and hardhat mine only when they receive a transaction "
        "(unless started with --block-time). On a live network the node has stopped following the chain, or the "
        "provider answers from a stuck backend: check the node or the provider's status, and run `chrysalis doctor "
        "--interval N` with N above the chain's block time",
        value=0.0,
        data=data,
    )


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def check_lag(primary: RpcClient, secondary: RpcClient, *, max_lag: int = 3, fail_lag: int = 64) -> Check:
    """How far the primary's head is behind the secondary's (negative: the secondary is behind).

    Read primary, secondary, primary: the primary is behind only if the secondary's head is above the primary's
    *second* reading (taken after it), the secondary only if below the *first*; anything else the reading order
    explains, and counts as 0.
    """
    p1 = primary.block_number()
    s = secondary.block_number()
    p2 = primary.block_number()
    lag = s - p2 if s > p2 else -(p1 - s) if s < p1 else 0
    data = {"primary_head": p2, "secondary_head": s}
    if abs(lag) <= max_lag:
        return Check(
            "head_lag",
            Level.OK,
            f"heads agree within {max_lag} block(s): primary {p2}, secondary {s}",
            value=lag,
            data=data,
        )
    if lag > 0:
        level = Level.FAIL if lag > fail_lag else Level.WARN
        hint = (
            f"the primary answers from a node {lag} blocks behind: the agent sees requests that much later (it "
            "waits for a lagging node and never takes it for a reorg); if it persists, change provider or swap "
            "chain.rpc_url and chain.rpc_url_secondary"
        )
        if level is Level.FAIL:
            hint = (
                f"the primary is {lag} blocks behind, more than chain.finality_depth ({fail_lag}): that node is "
                f"syncing or stuck. Point {_PRIMARY_KEY} at a node that follows the chain"
            )
        return Check(
            "head_lag",
            level,
            f"the primary is {lag} block(s) behind the secondary ({p2} vs {s})",
            hint=hint,
            value=lag,
            data=data,
        )
    return Check(
        "head_lag",
        Level.WARN,
        f"the secondary is {-lag} block(s) behind the primary ({s} vs {p2})",
        hint="the agent uses only the primary, so it is not slowed; but a lagging secondary makes a poor "
        f"cross-check: point {_SECONDARY_KEY} at a node that keeps up",
        value=lag,
        data=data,
    )


def check_log_range(
    rpc: RpcClient,
    head: int,
    *,
    address: str | None = None,
    probe_range: int = 100_000,
    configured_range: int = 2000,
) -> Check:
    """The largest ``eth_getLogs`` span (ending at ``head``) the endpoint accepts over ``address``.

    Halving from ``probe_range`` is :func:`agent.watch.logs.fetch_logs`' (any error on a span of more than one
    block halves it, whatever its wording); a timeout halves too, if the node still answers ``eth_blockNumber``
    right after it (a node that stopped answering fails the probe instead of faking a cap). Then the span is
    bisected between the largest accepted and the smallest refused, each step one request with a fixed
    :class:`AdaptiveRange`.
    """
    address = address or ZERO_ADDRESS
    size = max(1, min(probe_range, head + 1))
    tried = size
    refused: int | None = None
    steps = 0
    while True:
        start = head - size + 1
        try:
            to, _ = fetch_logs(rpc, address, None, start, head, AdaptiveRange(max_size=size))
        except RpcRateLimitedError as exc:
            return _range_unknown(exc, rpc)
        except RpcUnavailableError as exc:  # a span so wide that the provider times out: a refusal too...
            rpc.block_number()  # ...unless the node is down: then this raises, and the probe fails
            if size == 1:
                return _range_refused(exc, rpc)
            refused, size = size, size // 2
            continue
        except (RpcError, UnsplittableRangeError) as exc:
            return _range_refused(exc, rpc)
        accepted = to - start + 1
        if accepted < size:  # fetch_logs halved: the last span it was refused is the one before `accepted`
            refused = size
            while refused // 2 > accepted:
                refused //= 2
        break
    limited = False
    while refused is not None and refused - accepted > 1 and steps < _MAX_BISECT_STEPS:
        steps += 1
        mid = (accepted + refused) // 2
        try:
            fetch_logs(rpc, address, None, head - mid + 1, head, AdaptiveRange(max_size=mid, min_size=mid))
        except RpcRateLimitedError:
            limited = True
            break
        except (RpcError, UnsplittableRangeError):
            refused = mid
        except RpcUnavailableError:
            rpc.block_number()  # the node is down (this raises: the probe fails), or the span timed out
            refused = mid
        else:
            accepted = mid
    data: dict[str, Any] = {
        "accepted": accepted,
        "refused": refused,
        "probed_from": tried,
        "address": address,
        "configured": configured_range,
        "lower_bound": refused is None or limited,
    }
    if refused is None:
        what = (
            f"the whole chain ({accepted} block(s); it is shorter than the probe, so this is a lower bound)"
            if tried == head + 1 and tried < probe_range
            else f"{accepted} blocks, the largest probed"
        )
        return Check("log_range", Level.OK, f"eth_getLogs accepted {what}", value=accepted, data=data)
    summary = f"eth_getLogs accepts at most {accepted:,} blocks ({refused:,} refused)"
    if limited:
        summary = f"eth_getLogs accepts at least {accepted:,} blocks ({refused:,} refused; rate-limited before exact)"
    if accepted >= configured_range:
        return Check(
            "log_range",
            Level.OK,
            summary + f"; chain.max_block_range = {configured_range:,} fits",
            value=accepted,
            data=data,
        )
    return Check(
        "log_range",
        Level.WARN,
        summary + f", below chain.max_block_range = {configured_range:,}",
        hint=f"set chain.max_block_range = {accepted} (CHRYSALIS_CHAIN__MAX_BLOCK_RANGE={accepted}): the watcher "
        "halves a refused range, but grows it back towards max_block_range and is refused again, every few polls",
        value=accepted,
        data=data,
    )


def _range_refused(exc: BaseException, rpc: RpcClient) -> Check:
    return Check(
        "log_range",
        Level.FAIL,
        f"eth_getLogs refused even a single block: {_message(exc, rpc.url)}",
        hint="the watcher reads the collection's events with eth_getLogs: use a provider (or plan) that serves it",
        value=0,
        data={"accepted": 0},
    )


def _range_unknown(exc: BaseException, rpc: RpcClient) -> Check:
    return Check(
        "log_range",
        Level.WARN,
        f"rate-limited before the range could be probed: {_message(exc, rpc.url)}",
        hint="run `chrysalis doctor` again later, or raise the provider plan's rate limit (chain.rpc_max_rps "
        "paces the agent)",
        data={"accepted": None},
    )


def check_pending(rpc: RpcClient, *, address: str | None = None) -> Check:
    """Does the endpoint really evaluate the ``"pending"`` block tag, or answer ``"latest"`` instead?

    Two probes:

    * **the pending block**: ``eth_getBlockByNumber("pending")``, then ``eth_blockNumber``. A node
      that builds a pending block answers one *above* the head (geth, anvil, even with an empty pool; geth with
      a null hash); an endpoint answering ``"latest"`` returns the head block itself, hash and all. That is what
      ``FaultProxy(pending_as_latest=True)`` does, and what many hosted providers do.
    * **the pending nonce** of ``address`` (default the agent's account): ``eth_getTransactionCount`` with
      ``"pending"`` above ``"latest"`` proves the pool is counted. Conclusive only while that account really has
      a transaction in the pool; equal counts prove nothing.

    Limits: the block probe shows that the endpoint evaluates the tag for blocks, not that the nonce method does
    (providers may route methods differently); behind a load balancer, a pooled transaction is known to the node
    it was sent to, not necessarily to the one that answers the next request; and a node that does not build
    pending blocks (some reth / erigon setups) is reported as answering "latest", which is what it does.
    """
    data: dict[str, Any] = {"address": address}
    checksum = Web3.to_checksum_address(address) if address is not None else None

    def pending_block() -> Any:
        try:
            return rpc.w3.eth.get_block("pending")
        except BlockNotFound:
            return None

    try:
        pending = rpc.call("eth_getBlockByNumber", pending_block)
        after = rpc.block_number()
    except RpcError as exc:
        return _pending_verdict(0, f'the endpoint refuses the "pending" tag: {_message(exc, rpc.url)}', data)
    nonce_pending = nonce_latest = None
    if checksum is not None:
        try:
            nonce_pending = rpc.call(
                "eth_getTransactionCount", lambda: rpc.w3.eth.get_transaction_count(checksum, "pending")
            )
            nonce_latest = rpc.call(
                "eth_getTransactionCount", lambda: rpc.w3.eth.get_transaction_count(checksum, "latest")
            )
        except RpcError:
            pass
    data.update({"nonce_pending": nonce_pending, "nonce_latest": nonce_latest})
    pooled = nonce_pending - nonce_latest if nonce_pending is not None and nonce_latest is not None else None
    nonce_note = ""
    if pooled is not None and pooled > 0:
        nonce_note = f"; the pending nonce of {address} counts {pooled} pooled transaction(s)"
    elif pooled == 0:
        nonce_note = f"; no transaction from {address} in the pool, so the nonce probe proves nothing"
    if pending is None:
        if pooled is not None and pooled > 0:
            return _pending_verdict(1, 'no "pending" block (null)' + nonce_note, data)
        return _pending_verdict(
            0, 'the endpoint has no "pending" block (it answered null)' + nonce_note, data
        )
    number = int(pending["number"]) if pending.get("number") is not None else None
    block_hash = hex0x(pending["hash"]) if pending.get("hash") is not None else None
    data.update({"pending_number": number, "pending_hash": block_hash, "head": after})
    if number is None or number > after:
        shown = "?" if number is None else str(number)
        return _pending_verdict(1, f'"pending" is block {shown}, above the head {after}' + nonce_note, data)
    same = rpc.get_block(number)
    if same is not None and block_hash is not None and same.hash == block_hash:
        if pooled is not None and pooled > 0:
            return _pending_verdict(
                1,
                f'the "pending" block is the head {number} (as "latest")' + nonce_note,
                data,
            )
        return _pending_verdict(
            0, f'"pending" answered block {number}, the head itself: evaluated as "latest"' + nonce_note, data
        )
    return _pending_verdict(
        -1,
        f'"pending" answered block {number} at or below the head {after}, with '
        "another hash: inconclusive (a reorg while probing?)" + nonce_note,
        data,
    )


_PENDING_HINT = (
    'the agent reads its next nonce with eth_getTransactionCount(account, "pending"); answered as "latest", it '
    "misses the agent's transactions still in the pool. The agent keeps its own in-flight nonces, so one agent per "
    "key still works, but a second sender on the same key (another agent, a wallet) collides (nonce too low, "
    'replacements). Prefer an endpoint that evaluates "pending" (your own node, or the provider\'s option), and '
    "keep one sender per key"
)


def _pending_verdict(supported: int, summary: str, data: dict[str, Any]) -> Check:
    data["supported"] = supported
    if supported == 1:
        return Check("pending", Level.OK, summary, value=1, data=data)
    return Check(
        "pending",
        Level.WARN,
        summary,
        hint=_PENDING_HINT if supported == 0 else "run `chrysalis doctor` again",
        value=supported,
        data=data,
    )


# -- all of it --------------------------------------------------------------------------------------------------


def _guarded(name: str, fn: Callable[[], Check], *urls: str) -> Check:
    """Run one check; an error in the middle of it (the node went away) is its FAIL, never a traceback."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported as the check's finding
        return Check(
            name,
            Level.FAIL,
            f"the probe failed: {_message(exc, *urls)}",
            hint="is the endpoint still reachable? run `chrysalis doctor` again",
        )


def run_doctor(
    primary_url: str,
    secondary_url: str | None = None,
    options: DoctorOptions | None = None,
    *,
    wait: Callable[[float], object] | None = None,
) -> DoctorReport:
    """Run every check against ``primary_url`` (and ``secondary_url`` when given); never raises for what it
    finds. ``wait`` paces ``head_moving`` (see :func:`check_head`)."""
    options = options or DoctorOptions()
    started = time.monotonic()
    urls = (primary_url, secondary_url or "")
    primary = connect(primary_url, options)
    first = check_endpoint(primary, "primary")
    checks: list[Check] = [first.check]
    secondary: RpcClient | None = None
    second = Endpoint(Check("secondary", Level.SKIP, "no second RPC configured (chain.rpc_url_secondary)"))
    if secondary_url:
        secondary = connect(secondary_url, options)
        second = check_endpoint(secondary, "secondary")
    checks.append(second.check)

    def done() -> DoctorReport:
        return DoctorReport(
            redact_url(primary_url),
            redact_url(secondary_url) if secondary_url else None,
            tuple(checks),
            time.monotonic() - started,
        )

    if first.chain_id is None or first.head is None:
        checks.extend(Check(n, Level.SKIP, "the primary did not answer") for n in CHECKS[2:])
        return done()
    primary_id, head = first.chain_id, first.head
    chain = _guarded(
        "chain_id",
        lambda: check_chain_id(
            primary,
            primary_id,
            secondary if second.chain_id is not None else None,
            second.chain_id,
            options.expected_chain_id,
        ),
        *urls,
    )
    checks.append(chain)
    checks.append(
        _guarded(
            "head_moving",
            lambda: check_head(primary, options.interval_s, poll_s=options.poll_s, wait=wait),
            *urls,
        )
    )
    if secondary is None or second.chain_id is None:
        why = "no second RPC configured" if secondary is None else "the secondary did not answer"
        checks.append(Check("head_lag", Level.SKIP, why))
    elif second.chain_id != primary_id or (chain.level is Level.FAIL and "genesis" in chain.summary):
        checks.append(Check("head_lag", Level.SKIP, "the two RPCs serve different chains"))
    else:
        sec = secondary
        checks.append(
            _guarded(
                "head_lag",
                lambda: check_lag(primary, sec, max_lag=options.max_lag, fail_lag=options.fail_lag),
                *urls,
            )
        )
    checks.append(
        _guarded(
            "log_range",
            lambda: check_log_range(
                primary,
                head,
                address=options.address,
                probe_range=options.probe_range,
                configured_range=options.configured_range,
            ),
            *urls,
        )
    )
    checks.append(_guarded("pending", lambda: check_pending(primary, address=options.pending_address), *urls))
    return done()


def options_from_settings(settings: Any, **overrides: Any) -> DoctorOptions:
    """Options from :class:`agent.settings.Settings`: the deployment record (when there is one) gives the
    address, chain id and agent account; ``chain.*`` the limits and the client's timeout."""
    chain = settings.chain
    found: dict[str, Any] = {}
    try:
        from agent.deployment import Deployment

        deployment = Deployment.load(chain.deployment)
        found = {
            "address": deployment.address(),
            "expected_chain_id": deployment.chain_id,
            "pending_address": deployment.agent,
        }
    except Exception:  # noqa: BLE001 - no (readable) record: probe over the zero address, compare nothing
        pass
    base = DoctorOptions(
        configured_range=chain.max_block_range,
        fail_lag=max(chain.finality_depth, 1),
        timeout_s=chain.rpc_timeout_s,
        retries=min(chain.rpc_retries, 1),
        max_rps=chain.rpc_max_rps,
        **found,
    )
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def doctor_from_settings(
    settings: Any,
    *,
    rpc_url: str | None = None,
    secondary_url: str | None = None,
    wait: Callable[[float], object] | None = None,
    **overrides: Any,
) -> DoctorReport:
    """:func:`run_doctor` on ``chain.rpc_url`` and ``chain.rpc_url_secondary`` (or the URLs given)."""
    options = options_from_settings(settings, **overrides)
    secondary = secondary_url if secondary_url is not None else settings.chain.rpc_url_secondary
    return run_doctor(rpc_url or settings.chain.rpc_url, secondary or None, options, wait=wait)


# -- metrics, the agent, the printer ----------------------------------------------------------------------------


def publish(report: DoctorReport) -> None:
    """Set the doctor's gauges in :data:`agent.metrics.REGISTRY` from ``report``."""
    levels = {Level.OK: 0, Level.WARN: 1, Level.FAIL: 2}
    for c in report.checks:
        if c.level is Level.SKIP:
            for gauge in (metrics.RPC_DOCTOR_OK, metrics.RPC_DOCTOR_LEVEL):
                try:
                    gauge.remove(c.name)
                except KeyError:
                    pass
            continue
        metrics.RPC_DOCTOR_OK.labels(check=c.name).set(1 if c.level is Level.OK else 0)
        metrics.RPC_DOCTOR_LEVEL.labels(check=c.name).set(levels[c.level])
    by_name = {c.name: c for c in report.checks}
    lag = by_name.get("head_lag")
    if lag is not None and lag.value is not None:
        metrics.RPC_HEAD_LAG.set(lag.value)
    logs = by_name.get("log_range")
    if logs is not None and logs.value is not None:
        metrics.RPC_MAX_LOG_RANGE.set(logs.value)
    pending = by_name.get("pending")
    if pending is not None and pending.level is not Level.SKIP:
        metrics.RPC_PENDING_SUPPORTED.set(pending.value if pending.value is not None else -1)
    metrics.RPC_DOCTOR_TIMESTAMP.set(time.time())


def start_background(
    settings: Any, stop: threading.Event, *, interval_s: float | None = None
) -> threading.Thread:
    """Run the doctor once on a daemon thread (the agent's start): publish its gauges, log what is not OK.

    It reads the head for ``interval_s`` (default 15 s) and ends early when ``stop`` is set; an error of its
    own is logged, never raised: the doctor must not take the agent down.
    """

    def work() -> None:
        try:
            report = doctor_from_settings(settings, wait=stop.wait, interval_s=interval_s)
            if stop.is_set():
                return
            publish(report)
            log_report(report)
        except Exception as exc:  # noqa: BLE001 - a background diagnostic never stops the agent
            log.warning("rpc doctor could not finish: %s", _message(exc, settings.chain.rpc_url))

    thread = threading.Thread(target=work, name="chrysalis-rpc-doctor", daemon=True)
    thread.start()
    return thread


def log_report(report: DoctorReport) -> None:
    """One summary line (INFO), then a line per FAIL (WARNING) and per WARN (INFO), with its fix."""
    counts = {lv: sum(c.level is lv for c in report.checks) for lv in Level}
    log.info(
        "rpc doctor: %s (%d OK, %d WARN, %d FAIL, %d skipped); `chrysalis doctor` shows it all",
        report.level.value,
        counts[Level.OK],
        counts[Level.WARN],
        counts[Level.FAIL],
        counts[Level.SKIP],
        extra={"doctor": report.to_json()},
    )
    for c in report.checks:
        if c.level in (Level.WARN, Level.FAIL):
            level = logging.WARNING if c.level is Level.FAIL else logging.INFO
            log.log(level, "rpc doctor %s %s: %s; fix: %s", c.level.value, c.name, c.summary, c.hint)
