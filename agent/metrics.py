"""Chrysalis' Prometheus metrics: one registry, a few generic named metrics every stage reuses.

Every Chrysalis metric is defined here, once, in :data:`REGISTRY` (never prometheus_client's default registry):
stages, the watcher, both JSON-RPC clients and the oracles import the metric they need and add a label value;
none defines its own. Labels stay low-cardinality (an event name, a job state, a stage name, a contract method, an
RPC client), never a token id or a hash. The process collectors (CPU, memory, GC) are registered here too, so
one registry is the whole ``/metrics`` exposition.

Serve them with :func:`serve` (a background HTTP endpoint) or render the text format with :func:`render`, e.g.
from a web route. Read one value in tests with ``REGISTRY.get_sample_value(...)``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

#: The registry every Chrysalis metric lives in (kept apart from the client's global default registry, so that
#: importing this module twice or alongside other libraries never collides).
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

EVENTS_SEEN = Counter(
    "chrysalis_events_seen", "Contract events decoded by the watcher.", ["event"], registry=REGISTRY
)
JOBS_BY_STATE = Gauge("chrysalis_jobs", "Jobs currently in each state.", ["state"], registry=REGISTRY)
JOBS_WAITING = Gauge(
    "chrysalis_jobs_waiting",
    "Jobs waiting rather than failing: 'unsettled' (confirmed, the watcher has not passed the fulfilment's "
    "block yet) and 'stalled' (the fulfilment is not mined yet).",
    ["why"],
    registry=REGISTRY,
)
STAGE_LATENCY = Histogram(
    "chrysalis_stage_latency_seconds",
    "Wall time of one pipeline stage (inputs, generate, publish, submit, confirm, ...).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GAS_SPENT = Counter(
    "chrysalis_gas_spent",
    "Gas used by the agent's mined transactions (reverted ones included).",
    ["label"],
    registry=REGISTRY,
)
FEES_PAID = Counter(
    "chrysalis_fees_paid_wei",
    "Wei paid for gas (gasUsed x effectiveGasPrice) by mined transactions.",
    ["label"],
    registry=REGISTRY,
)

# -- JSON-RPC (agent.jsonrpc: both clients, told apart by the ``client`` label: ``watch`` or ``submit``) --------
RPC_REQUESTS = Counter(
    "chrysalis_rpc_requests",
    "JSON-RPC requests sent (retries included), by client and method.",
    ["client", "method"],
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "chrysalis_rpc_errors",
    "Failed JSON-RPC requests, by client, method and kind: timeout, connection, http_5xx, http_4xx, "
    "rate_limited, limit_exceeded, range_refused, revert, rpc_error, bad_response.",
    ["client", "method", "kind"],
    registry=REGISTRY,
)
RPC_RETRIES = Counter(
    "chrysalis_rpc_retries",
    "JSON-RPC requests retried after a transient failure, by client and method.",
    ["client", "method"],
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "chrysalis_rpc_request_seconds",
    "JSON-RPC request latency, by client and method.",
    ["client", "method"],
    registry=REGISTRY,
)
TX_SENT = Counter(
    "chrysalis_tx_sent", "Transactions broadcast (replacements included).", ["label"], registry=REGISTRY
)
TX_REPLACED = Counter(
    "chrysalis_tx_replaced", "Stuck transactions replaced with a fee bump.", ["label"], registry=REGISTRY
)
TX_REVERTED = Counter(
    "chrysalis_tx_reverted", "Mined transactions that reverted.", ["label"], registry=REGISTRY
)
TX_CONFIRMED = Counter(
    "chrysalis_tx_confirmed",
    "Transactions mined and buried under the configured confirmations.",
    ["label"],
    registry=REGISTRY,
)
TX_REORGED = Counter(
    "chrysalis_tx_reorged",
    "Receipts seen in a block that a reorg later orphaned.",
    ["label"],
    registry=REGISTRY,
)
NONCE_RESYNCS = Counter(
    "chrysalis_nonce_resyncs",
    "Times the nonce manager re-read the chain after a nonce error or an external transaction.",
    ["reason"],
    registry=REGISTRY,
)

JOB_OUTCOMES = Counter(
    "chrysalis_job_outcomes",
    "Jobs that reached a terminal outcome in this process (confirmed, failed, cancelled).",
    ["outcome"],
    registry=REGISTRY,
)
EVENT_TO_FULFILMENT = Histogram(
    "chrysalis_event_to_fulfilment_seconds",
    "From a request's job being enqueued (the watcher saw its log) to the job being confirmed.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CHAIN_HEAD = Gauge("chrysalis_chain_head", "Latest block number the node reported.", registry=REGISTRY)
CURSOR_BLOCK = Gauge("chrysalis_cursor_block", "Last block the agent's watcher handled.", registry=REGISTRY)
WATCH_LAG = Gauge("chrysalis_watch_lag_blocks", "Chain head minus the cursor block.", registry=REGISTRY)

# -- the chain watcher (agent.watch), per stream (``<chain id>:<address>``) -----------------------------------
WATCH_BLOCK = Gauge(
    "chrysalis_watch_block", "Last block handled by the watcher.", ["stream"], registry=REGISTRY
)
WATCH_FINALIZED = Gauge(
    "chrysalis_watch_finalized_block", "Last block the watcher reported final.", ["stream"], registry=REGISTRY
)
WATCH_LOGS = Counter("chrysalis_watch_logs", "Logs delivered by the watcher.", ["stream"], registry=REGISTRY)
WATCH_LOGS_RECOVERED = Counter(
    "chrysalis_watch_logs_recovered",
    "Logs an eth_getLogs answer left out and the watcher found again: how=bloom (a header's logsBloom said the "
    "block may hold one, and asking again found it), rescan (found when the block was finalized), reconcile "
    "(a pending request found on-chain with no job).",
    ["stream", "how"],
    registry=REGISTRY,
)
WATCH_REORGS = Counter(
    "chrysalis_watch_reorgs", "Reorgs detected by the watcher.", ["stream"], registry=REGISTRY
)
WATCH_POLL_ERRORS = Counter(
    "chrysalis_watch_poll_errors",
    "Watcher polls that failed with a retryable error.",
    ["stream"],
    registry=REGISTRY,
)
RANGE_HALVINGS = Counter(
    "chrysalis_watch_range_halvings", "eth_getLogs ranges halved after a refusal.", registry=REGISTRY
)
WS_CONNECTS = Counter(
    "chrysalis_watch_ws_connects", "WebSocket subscriptions (re)established.", registry=REGISTRY
)
WS_NOTIFICATIONS = Counter(
    "chrysalis_watch_ws_notifications", "eth_subscription notifications received.", registry=REGISTRY
)

# -- the RPC doctor (agent.ops.doctor: `chrysalis doctor`, and once when `chrysalis run` starts) ---------------
RPC_DOCTOR_OK = Gauge(
    "chrysalis_rpc_doctor_ok",
    "1 if the RPC doctor's last run found this check OK, 0 if WARN or FAIL (absent: skipped). Checks: primary, "
    "secondary, chain_id, head_moving, head_lag, log_range, pending.",
    ["check"],
    registry=REGISTRY,
)
RPC_DOCTOR_LEVEL = Gauge(
    "chrysalis_rpc_doctor_level",
    "The RPC doctor's last verdict per check: 0 OK, 1 WARN, 2 FAIL (absent: skipped).",
    ["check"],
    registry=REGISTRY,
)
RPC_DOCTOR_TIMESTAMP = Gauge(
    "chrysalis_rpc_doctor_timestamp_seconds",
    "Unix time at which the RPC doctor last finished.",
    registry=REGISTRY,
)
RPC_HEAD_LAG = Gauge(
    "chrysalis_rpc_head_lag_blocks",
    "Blocks chain.rpc_url is behind chain.rpc_url_secondary (negative: the secondary is behind), as the RPC "
    "doctor last measured.",
    registry=REGISTRY,
)
RPC_MAX_LOG_RANGE = Gauge(
    "chrysalis_rpc_max_log_range_blocks",
    "Largest eth_getLogs block span the primary RPC accepted when the RPC doctor probed it (a lower bound when "
    "the chain is shorter than the probe).",
    registry=REGISTRY,
)
RPC_PENDING_SUPPORTED = Gauge(
    "chrysalis_rpc_pending_supported",
    'Whether the primary RPC really evaluates the "pending" block tag: 1 yes, 0 it answers "latest" instead, '
    "-1 unknown (the probe failed).",
    registry=REGISTRY,
)

# -- oracles (oracles.guard, oracles.chainlink) ----------------------------------------------------------------
ORACLE_SKIPPED = Counter(
    "chrysalis_oracle_skipped",
    "Oracle reads left out of a snapshot because their data was stale, missing or absurd.",
    ["oracle", "reason"],
    registry=REGISTRY,
)

# -- refreshes (agent.refresh) -----------------------------------------------------------------------------------
REFRESHES_QUEUED = Counter(
    "chrysalis_refreshes_queued",
    "Refresh jobs queued, by trigger (cron, price, manual).",
    ["trigger"],
    registry=REGISTRY,
)
REFRESH_RUNS = Counter(
    "chrysalis_refresh_runs",
    "Refreshes that took their snapshot block, by trigger.",
    ["trigger"],
    registry=REGISTRY,
)
REFRESH_TOKENS = Counter(
    "chrysalis_refresh_tokens",
    "Tokens a refresh settled, by outcome (unchanged, deferred, oracle_skipped, skipped, failed, superseded, "
    "confirmed).",
    ["outcome"],
    registry=REGISTRY,
)
REFRESH_GAS = Counter("chrysalis_refresh_gas", "Gas used by refreshMetadata transactions.", registry=REGISTRY)
REFRESH_PAUSED = Counter(
    "chrysalis_refresh_paused",
    "Times a budget paused a refresh (max_tokens, gas_per_day, fee).",
    ["budget"],
    registry=REGISTRY,
)

# -- the process itself (what prometheus_client's default registry would show; served from ours) ---------------
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def render() -> bytes:
    """The Prometheus text exposition of every Chrysalis metric."""
    return generate_latest(REGISTRY)


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread."""
    start_http_server(port, addr=addr, registry=REGISTRY)
