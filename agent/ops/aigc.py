"""``chrysalis aigc record``: record each token's current version on-chain for ERC-7007 (``addAigcData``).

The collection's ERC-7007 ``verify(prompt, aigcData, proof)`` is true only for a version the agent recorded
(``contracts/LivingCollection.sol``, "ERC-7007"). For each token this reads its metadata digest on-chain, loads that
metadata from the operator's embedded IPFS repo (``ipfs.repo``), builds the version's triple
(:func:`agent.erc7007.aigc_triple_for_metadata`) and, unless ``verify`` already says true (idempotent: a second run
sends nothing), sends ``addAigcData`` from the agent key through the project's sender (EIP-1559 fees, the broadcast
journal in the agent's database, nonces read from the chain's pending nonce: safe beside a running agent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.deployment import Deployment
from agent.erc7007 import ERC7007_INTERFACE_ID, aigc_triple_for_metadata, erc7007_verify
from agent.errors import ConfigError, NotFoundError
from agent.ipfs.errors import BlockNotFoundError
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo
from agent.metadata import cid_from_digest
from agent.pipeline.collection import AGENT_ROLE
from agent.pipeline.holder import Collection
from agent.settings import Settings
from agent.store import Database
from agent.submit import KeystoreSigner, Web3TxSender
from agent.submit.journal_sql import SqlBroadcastJournal
from agent.submit.sender import TxRequest
from agent.tokens import parse_tokens, require_existing

Status = Literal["recorded", "already recorded", "no metadata yet"]

_ZERO = bytes(32)


@dataclass(frozen=True)
class AigcOutcome:
    """What :func:`record_aigc` did for one token.

    Attributes:
        token_id: The token. status: ``recorded`` (sent now), ``already recorded`` (``verify`` was true) or
            ``no metadata yet`` (never evolved nor rendered). cid, stage: its current version (None without
            metadata). tx_hash, gas_used: the ``addAigcData`` transaction (recorded only).
    """

    token_id: int
    status: Status
    cid: str | None = None
    stage: int | None = None
    tx_hash: str | None = None
    gas_used: int | None = None

    def line(self) -> str:
        """``token 3 stage 1 (bafkrei...): recorded in tx 0x... (gas 52,000)``."""
        if self.status == "no metadata yet":
            return f"token {self.token_id}: no metadata yet (it has not evolved)"
        head = f"token {self.token_id} stage {self.stage} ({self.cid})"
        if self.status == "recorded":
            return f"{head}: recorded in tx {self.tx_hash} (gas {self.gas_used:,})"
        return f"{head}: already recorded"

    def to_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "status": self.status,
            "cid": self.cid,
            "stage": self.stage,
            "tx_hash": self.tx_hash,
            "gas_used": self.gas_used,
        }


@dataclass
class AigcReport:
    """Every token :func:`record_aigc` looked at, on ``collection`` (chain ``chain_id``), from key ``agent``."""

    collection: str
    chain_id: int
    agent: str
    tokens: list[AigcOutcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for t in self.tokens if t.status == status)

    @property
    def gas_used(self) -> int:
        return sum(t.gas_used or 0 for t in self.tokens)

    def summary(self) -> str:
        recorded = self.count("recorded")
        return (
            f"ERC-7007 on {self.collection} (chain {self.chain_id}): {recorded} version"
            f"{'' if recorded == 1 else 's'} recorded (gas {self.gas_used:,}), "
            f"{self.count('already recorded')} already recorded, {self.count('no metadata yet')} without "
            "metadata yet"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "chain_id": self.chain_id,
            "agent": self.agent,
            "recorded": self.count("recorded"),
            "already_recorded": self.count("already recorded"),
            "no_metadata": self.count("no metadata yet"),
            "gas_used": self.gas_used,
            "tokens": [t.to_json() for t in self.tokens],
        }


def record_aigc(
    settings: Settings,
    tokens: str | Sequence[int] | None = None,
    *,
    on_token: Callable[[AigcOutcome], None] | None = None,
) -> AigcReport:
    """Record the current version of each token (default: every minted, unburnt token) with ``addAigcData``,
    skipping tokens without metadata and versions already recorded.

    Args:
        settings: The operator's settings (chain, deployment, signer, database, IPFS repo, submit).
        tokens: ``"1-5,8"``, a list of ids, or None / ``"all"``.
        on_token: Called with each token's outcome as it is known (a command prints it then).

    Raises:
        TokenSelectionError / UnknownTokensError: a bad ``tokens`` selection.
        ConfigError: the collection has no ERC-7007 (deployed before it), the key lacks AGENT_ROLE, a version's
            metadata is not Chrysalis metadata.
        NotFoundError: no deployment record, or a version's metadata block is not in the repo.
        BackendUnavailableError: the node cannot be reached.
    """
    ids = parse_tokens(tokens)
    collection = Collection.connect(settings)
    address = collection.address
    if not collection.view("supportsInterface", ERC7007_INTERFACE_ID):
        raise ConfigError(
            f"the collection {address} has no ERC-7007 (addAigcData / verify): it was deployed before ERC-7007",
            hint="redeploy the collection with this Chrysalis (`chrysalis deploy`) to record versions for ERC-7007",
        )
    signer = KeystoreSigner.from_settings(settings.signer)
    if not collection.view("hasRole", AGENT_ROLE, signer.address):
        raise ConfigError(
            f"the key {signer.address} does not hold AGENT_ROLE on the collection {address}: only the agent may "
            "record versions",
            hint="point signer.keystore at the agent's key (the one the deployment named as agent), or have the "
            "admin call grantRole(AGENT_ROLE, address)",
        )
    total = int(collection.view("totalMinted"))
    if ids is None:
        ids = [i for i in range(1, total + 1) if collection.view("exists", i)]
    else:
        require_existing(ids, total, lambda i: bool(collection.view("exists", i)))
    report = AigcReport(address, collection.chain_id, signer.address)
    with contextlib.ExitStack() as stack:
        repo: IpfsRepo | None = None
        sender: Web3TxSender | None = None
        for token_id in ids:
            digest = bytes(collection.view("metadataDigestOf", token_id))
            if digest == _ZERO:
                outcome = AigcOutcome(token_id, "no metadata yet")
            else:
                if repo is None:
                    repo = _open_repo(settings)
                cid = cid_from_digest(digest)
                triple = aigc_triple_for_metadata(_metadata(repo, settings, token_id, cid))
                if erc7007_verify(collection.rpc.w3, address, triple):
                    outcome = AigcOutcome(token_id, "already recorded", cid, triple.stage)
                else:
                    if sender is None:
                        db = Database.open(
                            settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms
                        )
                        stack.callback(db.close)
                        sender = Web3TxSender.connect(
                            settings.chain.rpc_url,
                            signer,
                            settings.submit,
                            abis=[Deployment.load(settings.chain.deployment).abi()],
                            journal=SqlBroadcastJournal(db),
                        )
                    done = sender.send_and_wait(
                        TxRequest(to=address, data=triple.add_calldata(), label="addAigcData")
                    )
                    outcome = AigcOutcome(
                        token_id, "recorded", cid, triple.stage, done.tx_hash, done.gas_used
                    )
            report.tokens.append(outcome)
            if on_token is not None:
                on_token(outcome)
    return report


def _open_repo(settings: Settings) -> IpfsRepo:
    path = settings.ipfs_repo
    if not path.is_dir():
        raise NotFoundError(
            f"no IPFS repo at {path}: the tokens' metadata is read from the agent's repo",
            hint="run this where the agent runs, with its settings (ipfs.repo, or data_dir)",
        )
    return IpfsRepo(path, limits=DagLimits.from_settings(settings.ipfs))


def _metadata(repo: IpfsRepo, settings: Settings, token_id: int, cid: str) -> bytes:
    try:
        return repo.block_get(cid)
    except BlockNotFoundError:
        raise NotFoundError(
            f"token {token_id}'s metadata {cid} is not in the IPFS repo {settings.ipfs_repo}",
            hint="run this with the agent's settings (its ipfs.repo holds every version it published), or import "
            "the block first (`chrysalis ipfs import` a CAR exported from a node that has it)",
        ) from None


__all__ = ["AigcOutcome", "AigcReport", "record_aigc"]
