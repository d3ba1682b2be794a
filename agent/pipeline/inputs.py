"""The inputs stage: everything an evolution depends on, read at the request's block, then the rules.

``RenderTask -> Inputs`` (:mod:`agent.domain`; stored as the job's ``inputs`` record): the snapshot (wallet,
price feed, ``[oracles]``, context, ``guard.skipped``), the token's facts and the rules' outcome.

``previous`` (:func:`read_previous`) comes from the token's on-chain metadata digest at the task's block: its CID
is the parent of the new metadata (the hash-linked history), and its image is the init image of the
image-to-image evolution.

The oracles (:func:`build_oracles`): the holder's wallet, the price feed (``agent.price_*``), and the extra ones
the ``[oracles]`` settings declare (HTTP JSON sources, ``eth_call`` view functions), whose readings become rule
features by name (``<name>.<field>``). Every reading passes the :class:`~oracles.guard.OracleGuard`
(``oracles.guard`` limits): stale, missing or absurd data is left out of the snapshot, logged and counted, the
snapshot records what was skipped (``guard.skipped``), and the rules fall back to their defaults; a reading marked
``required`` makes the evolution wait instead (retryable).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.domain import Inputs, PreviousVersion, RenderTask, TokenFacts
from agent.errors import ChrysalisError, ConfigError
from agent.ipfs.errors import BlockNotFoundError
from agent.ipfs.fetch import RemoteBlocks
from agent.ipfs.repo import IpfsRepo
from agent.metadata import cid_from_digest, parse_metadata
from agent.pipeline.collection import CollectionReader
from agent.pipeline.errors import PreviousMetadataMissingError
from agent.pipeline.traits import evaluate_traits
from agent.rules import RuleEngine
from oracles.base import Oracle, ReadContext
from oracles.guard import OracleGuard

log = logging.getLogger("chrysalis.pipeline")

if TYPE_CHECKING:  # pragma: no cover
    from agent.deployment import Deployment
    from agent.settings import Settings

ZERO32 = bytes(32)
RESERVED_NAMES = ("wallet", "price", "context", "guard")
"""Reading prefixes the built-in oracles and the snapshot itself use; extra oracles must be named otherwise."""


def build_oracles(settings: Settings, deployment: Deployment) -> tuple[list[Oracle], OracleGuard]:
    """The oracles an evolution reads, and the guard that screens them, from ``settings``.

    The wallet (from the deploy block), the price feed (``agent.price_feed``, else the deployment's
    DevPriceFeed; ``agent.price_window_s`` / ``price_max_age_s``), then ``[[oracles.http]]`` and
    ``[[oracles.eth_call]]`` in the order given; the guard from ``[oracles.guard]``.

    Raises:
        ConfigError: an extra oracle is misconfigured (bad URL, JSONPath, signature, address, arguments), two
            oracles share a name, a header's env var is not set, or a guard limit is invalid.
    """
    from agent.deployment import PRICE_FEED
    from oracles.chainlink import ChainlinkOracle
    from oracles.eth_call import EthCallOracle
    from oracles.http_json import HttpJsonOracle
    from oracles.wallet import WalletOracle

    cfg = settings.agent
    oracles: list[Oracle] = [WalletOracle(from_block=deployment.deploy_block)]
    feed = cfg.price_feed or (deployment.address(PRICE_FEED) if PRICE_FEED in deployment.contracts else None)
    if feed:
        oracles.append(ChainlinkOracle(feed, max_age_s=cfg.price_max_age_s, window_s=cfg.price_window_s))
    extra = settings.oracles
    names = [o.name for o in extra.http] + [o.name for o in extra.eth_call]
    clashes = sorted({n for n in names if names.count(n) > 1 or n in RESERVED_NAMES})
    if clashes:
        raise ConfigError(
            f"oracle name(s) {', '.join(clashes)} are taken (twice in [oracles], or reserved: "
            f"{', '.join(RESERVED_NAMES)})",
            hint="give every [[oracles.http]] / [[oracles.eth_call]] its own name; it prefixes its readings",
        )
    for http in extra.http:
        headers = {}
        for header, var in (http.headers_env or {}).items():
            value = os.environ.get(var)
            if not value:
                raise ConfigError(
                    f"oracle {http.name!r}: header {header} comes from the env var {var}, which is not set",
                    hint=f"export {var}=... before starting the agent (secrets never go in the TOML file)",
                )
            headers[header] = value
        oracles.append(
            HttpJsonOracle(
                http.url, http.fields, name=http.name, timestamp_path=http.timestamp_path, timeout_s=http.timeout_s,
                retries=http.retries, cache_ttl_s=http.cache_ttl_s, headers=headers,
            )
        )  # fmt: skip
    for call in extra.eth_call:
        oracles.append(
            EthCallOracle(
                call.address, call.signature, call.args, name=call.name, outputs=call.outputs,
                decimals=call.decimals,
            )
        )  # fmt: skip
    return oracles, OracleGuard.from_mapping(extra.guard or {})


class InputsStage:
    """Reads a request's inputs at its block and applies the rules.

    Args:
        reader: The collection (token digests, canonical checks).
        oracles: Oracles read into the snapshot (wallet, price feed, extra ones: :func:`build_oracles`).
        rules: The validated evolution rules.
        repo: The IPFS repo holding the tokens' current metadata and images.
        token_name: Template with ``{collection}`` and ``{token_id}``.
        collection_name: The contract's ``name()``.
        guard: Screens every reading (default: the universal checks only: no value, NaN, an oracle that
            refuses its own data).
        remote: Where a token's previous version the repo lacks is fetched from (the replication backends:
            several agents with repos of their own); None: the repo only.
    """

    def __init__(
        self,
        reader: CollectionReader,
        oracles: Sequence[Oracle],
        rules: RuleEngine,
        repo: IpfsRepo,
        *,
        token_name: str = "{collection} #{token_id}",
        collection_name: str = "Chrysalis",
        guard: OracleGuard | None = None,
        remote: RemoteBlocks | None = None,
    ) -> None:
        self.reader = reader
        self.remote = remote
        self.oracles = list(oracles)
        self.guard = guard if guard is not None else OracleGuard()
        self.rules = rules
        self.repo = repo
        self.token_name = token_name
        self.collection_name = collection_name

    def run(self, task: RenderTask) -> Inputs:
        """The inputs of ``task``, read at its block.

        Raises:
            SourceOrphanedError: the task's block is no longer canonical (retryable).
            PreviousMetadataMissingError: the token's current metadata is not in the repo (permanent).
            GuardRejectedError: a reading the guard marks required was skipped (retryable).
            OracleUnavailableError / SnapshotReorgError: a source or the node could not be read (retryable;
                names the oracle and the cause). The oracles read through ``reader.rpc.w3``, whose provider
                retries every request (:class:`agent.watch.rpc.RetryingHTTPProvider`): only what outlasts the
                retries gets here, and never as a missing reading (a rule's MissingFeatureError).
            RpcUnavailableError / RpcRateLimitedError: the node could not be reached for the block checks (retryable).
            SnapshotConfigError: the oracles conflict or misbehave.
            MissingFeatureError / FeatureValueError: the inputs do not fit the rules.
        """
        self.reader.check_canonical(task.block_number, task.block_hash)
        ctx = ReadContext.at(
            self.reader.rpc.w3, task.block_hash, token_id=task.token_id, collection=self.reader.address
        )
        snapshot = self.guard.snapshot(self.oracles, ctx).snapshot
        previous = self.previous(task)
        rules = evaluate_traits(
            self.rules,
            snapshot,
            stage=task.stage,
            token_id=task.token_id,
            previous=previous.traits if previous else None,
            fused=task.fused_burn_id is not None,
        )
        token = TokenFacts(
            name=self.name_of(task.token_id),
            stage=task.stage,
            fused_burn_id=task.fused_burn_id,
            previous=previous,
        )
        return Inputs(snapshot=snapshot, token=token, rules=rules)

    def name_of(self, token_id: int) -> str:
        """The token's display name (``token_name`` filled in)."""
        return self.token_name.format(collection=self.collection_name, token_id=token_id)

    def previous(self, task: RenderTask) -> PreviousVersion | None:
        """The token's metadata at the task's block, or None before its first evolution."""
        digest = self.reader.metadata_digest_at(task.token_id, task.block_hash)
        return read_previous(self.repo, task.token_id, digest, self.remote)

    def close(self) -> None:
        """Release the oracles' connections (HTTP clients)."""
        for oracle in self.oracles:
            close = getattr(oracle, "close", None)
            if callable(close):
                close()


def read_previous(
    repo: IpfsRepo, token_id: int, digest: bytes, remote: RemoteBlocks | None = None
) -> PreviousVersion | None:
    """The metadata an on-chain ``digest`` names, from the embedded repo (None for the zero digest: no metadata
    yet). Evolutions and refreshes both read a token's previous version through this.

    When the repo lacks that metadata or its image (another agent, with a repo of its own, published it) and
    ``remote`` is given, both are fetched from the replication backends into the repo, each block checked against
    its CID.

    Raises:
        PreviousMetadataMissingError: neither the repo nor ``remote`` has that metadata (permanent).
    """
    if digest == ZERO32:
        return None
    cid = cid_from_digest(digest)
    try:
        data = repo.block_get(cid)
    except BlockNotFoundError:
        data = _fetch_previous(repo, token_id, cid, remote)
    metadata = parse_metadata(data, cid=cid)
    if remote is not None and metadata.image_cid:
        try:
            came = remote.fill(metadata.image_cid)  # the image the next version starts from
        except ChrysalisError as exc:
            log.warning("token %d's previous image %s is not in any backend: %s", token_id,
                        metadata.image_cid, exc)  # fmt: skip
        else:
            if came:
                log.info("token %d's previous image %s fetched (%s)", token_id, metadata.image_cid, came)
    return PreviousVersion(
        metadata_cid=cid, image_cid=metadata.image_cid, traits=dict(metadata.traits), stage=metadata.stage
    )


def _fetch_previous(repo: IpfsRepo, token_id: int, cid: str, remote: RemoteBlocks | None) -> bytes:
    if remote is None:
        raise PreviousMetadataMissingError(token_id, cid, str(repo.path))
    try:
        came = remote.fill(cid)
    except ChrysalisError as exc:
        raise PreviousMetadataMissingError(token_id, cid, str(repo.path), remote.where, str(exc)) from None
    log.info("token %d's previous metadata %s fetched (%s)", token_id, cid, came)
    return repo.block_get(cid)
