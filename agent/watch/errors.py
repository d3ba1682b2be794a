"""Errors of the chain watcher and its RPC client. Leaves carry structured fields and say how to fix things."""

from __future__ import annotations

from collections.abc import Sequence

from agent.errors import PermanentError, RateLimitedError, RetryableError
from agent.redact import redact_text, redact_url
from agent.watch.events import BlockRef


class RpcError(RetryableError):
    """The endpoint answered a JSON-RPC error (the message shows the endpoint as scheme and host only).

    Attributes:
        url: The endpoint (as configured).
        method: The JSON-RPC method.
        code: The JSON-RPC error code (or the HTTP status for HTTP-level refusals).
        rpc_message: The provider's message.
    """

    def __init__(
        self, url: str, method: str, code: int | None, rpc_message: str, *, hint: str | None = None
    ) -> None:
        self.url = url
        self.method = method
        self.code = code
        self.rpc_message = rpc_message
        super().__init__(
            f"RPC {redact_url(url)}: {method} returned error {code}: {redact_text(rpc_message, url)}",
            hint=redact_text(hint, url) if hint else None,
        )


class RpcRateLimitedError(RpcError, RateLimitedError):
    """The provider rate-limited us (HTTP 429 or a rate-limit error) and retries ran out: a JSON-RPC error reply
    (:class:`RpcError`) that is also the rate limit any service may answer
    (:class:`~agent.errors.RateLimitedError`).

    Attributes:
        retry_after: Seconds the provider asked us to wait, if it said.
    """

    def __init__(
        self, url: str, method: str, code: int | None, rpc_message: str, retry_after: float | None
    ) -> None:
        super().__init__(
            url,
            method,
            code,
            rpc_message,
            hint="lower chain.rpc_max_rps, or use a provider plan with more capacity",
        )
        self.retry_after = retry_after


class RangeTooLargeError(RpcError):
    """The provider refused an ``eth_getLogs`` range (too many results, range too wide, HTTP 413): split it."""


class UnsplittableRangeError(PermanentError):
    """The provider refuses ``eth_getLogs`` even for a single block.

    Attributes:
        block_number: The block.
        url: The endpoint.
    """

    def __init__(self, url: str, block_number: int, cause: str) -> None:
        self.url = url
        self.block_number = block_number
        super().__init__(
            f"RPC {redact_url(url)} refuses eth_getLogs for the single block {block_number}: "
            f"{redact_text(cause, url)}",
            hint="use a provider (or node) without a result-count limit for this chain",
        )


class LogDecodeError(PermanentError, ValueError):
    """A log matched an event's topic but its data does not decode with the ABI.

    Attributes:
        key: The log (``agent.domain.LogKey`` as text).
        event: The event name the topic matched.
    """

    def __init__(self, key: str, event: str, cause: str) -> None:
        self.key = key
        self.event = event
        super().__init__(
            f"log {key} does not decode as {event}: {cause}",
            hint="the ABI does not match the deployed contract: reload the deployment record's ABI",
        )


class ChainResetError(PermanentError):
    """The chain under the watcher is not the one its cursor followed: the genesis block changed, or the watched
    contract has no code (a local dev chain restarted, or ``chain.rpc_url`` now points at another network).

    Attributes:
        stream: The watcher stream.
        url: The endpoint.
        reason: What was found.
    """

    def __init__(self, *, stream: str, url: str, reason: str) -> None:
        self.stream = stream
        self.url = url
        self.reason = reason
        super().__init__(
            f"the chain at {redact_url(url)} is not the one stream {stream} was following: "
            f"{redact_text(reason, url)}",
            hint="if you restarted a local dev chain, redeploy and start with a fresh data directory (or reset the "
            "cursor with SqlCursorStore.reset and the old chain's jobs); otherwise point chain.rpc_url back at "
            "the right network",
        )


class DeepReorgError(PermanentError):
    """The chain reorganised below the finality depth: blocks the watcher reported as final were replaced.

    This must not happen on a correctly configured chain; the watcher stops rather than guess.

    Attributes:
        depth: Reported blocks that are no longer canonical (a lower bound of the reorg's depth).
        finality_depth: The configured finality depth.
        finalized: The last block reported final, if any.
        orphaned: The reported blocks that were replaced, oldest first.
        stream: The watcher stream.
    """

    def __init__(
        self,
        *,
        stream: str,
        depth: int,
        finality_depth: int,
        finalized: BlockRef | None,
        orphaned: Sequence[BlockRef],
    ) -> None:
        self.stream = stream
        self.depth = depth
        self.finality_depth = finality_depth
        self.finalized = finalized
        self.orphaned = tuple(orphaned)
        span = f"#{self.orphaned[0].number}..#{self.orphaned[-1].number}" if self.orphaned else "none"
        final = f"; block {finalized} had been reported final" if finalized else ""
        super().__init__(
            f"reorg deeper than the finality depth of {finality_depth} blocks on stream {stream}: at least {depth} "
            f"reported blocks ({span}: {', '.join(b.hash[:10] for b in self.orphaned)}) are no longer "
            f"canonical{final}",
            hint="stop and investigate the chain. If you restarted a local dev chain, reset the cursor "
            "(SqlCursorStore.reset) and the jobs of the old chain; on a real chain raise chain.finality_depth",
        )
