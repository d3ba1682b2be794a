"""Errors the pipeline raises. Each names the job's problem and what fixes it."""

from __future__ import annotations

from agent.errors import ChrysalisError, IntegrityError, NotFoundError, RetryableError


class SourceOrphanedError(RetryableError):
    """The block holding a job's request is no longer canonical (a reorg is under way).

    Retryable: the watcher's reorg notice cancels the job, or the request is re-mined and the job revived.

    Attributes:
        block_number, block_hash: The request's block as the job recorded it.
        canonical_hash: The hash now at that height (None if the node has no block there).
    """

    def __init__(self, block_number: int, block_hash: str, canonical_hash: str | None) -> None:
        self.block_number = block_number
        self.block_hash = block_hash
        self.canonical_hash = canonical_hash
        super().__init__(
            f"the request's block #{block_number} ({block_hash}) is no longer canonical "
            f"(now {canonical_hash or 'no block'})",
            hint="transient: the watcher cancels the job once it sees the reorg, or the request is re-mined",
        )


class PreviousMetadataMissingError(NotFoundError):
    """The token's current metadata (the parent of this evolution) is not in the embedded IPFS repo.

    Attributes:
        token_id: The token. cid: Its current metadata's CID (rebuilt from the on-chain digest).
    """

    def __init__(
        self, token_id: int, cid: str, repo: str, remote: str | None = None, why: str | None = None
    ) -> None:
        self.token_id = token_id
        self.cid = cid
        where = f" nor in the replication backends ({remote}: {why})" if remote else ""
        super().__init__(
            f"token {token_id}'s current metadata {cid} (its on-chain digest) is not in the IPFS repo {repo}{where}",
            hint="point ipfs.kubo_api (or ipfs.fetch_gateways) at a node that holds what the other agents "
            "published, or import it into the repo (`chrysalis ipfs import` a CAR holding it), then retry the job "
            "with `chrysalis retry JOB`; the agent needs it for the image-to-image evolution and lineage",
        )


class AssetIntegrityError(IntegrityError):
    """A stored asset a job recorded no longer matches its hash.

    Attributes:
        what: Which asset. expected / actual: The hashes.
    """

    def __init__(self, what: str, expected: str, actual: str) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{what} hashes to {actual}, but the job recorded {expected}",
            hint="the IPFS repo was modified or corrupted; restore it, or re-run the token's request",
        )


class AgentTimeoutError(ChrysalisError, TimeoutError):
    """:meth:`Agent.run_until_idle` ran out of time with jobs still pending.

    Attributes:
        pending: Jobs not finished (``key: state, stage, last error``).
    """

    def __init__(self, timeout_s: float, pending: list[str]) -> None:
        self.pending = pending
        listed = "\n  ".join(pending[:20]) or "(none listed)"
        super().__init__(
            f"jobs still pending after {timeout_s:g} s:\n  {listed}",
            hint="look at each job's last error (`chrysalis jobs`); a job backing off after a retryable error "
            "waits up to agent.retry_cap_s",
        )
