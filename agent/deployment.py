"""Deploying the collection, and the record that says where it lives.

:class:`Deployment` is the JSON record ``ape run deploy`` writes to ``deployments/<network>.json`` (chain id,
addresses, the block to start indexing from, ABI file paths). Everything that talks to the chain loads it with
:meth:`Deployment.load`; it needs neither Ape nor a node.

:class:`DeployParams` and :func:`deploy_collection` hold the deployment logic shared by
``scripts/deploy.py`` and ``scripts/demo.py``. They use Ape, imported only when called.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from agent.errors import ConfigError, NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from ape.api import AccountAPI

DEPLOYMENTS_DIR = Path("deployments")
ABI_DIR_NAME = "abi"

#: Contracts the collection's deployment consists of, in deployment order.
COLLECTION = "LivingCollection"
PRICE_FEED = "DevPriceFeed"

_DEPLOY_HINT = (
    "run `ape run deploy --network ethereum:local:foundry` (or your network) to deploy and write it"
)


def network_slug(ecosystem: str, network: str) -> str:
    """File stem of a network's deployment record.

    ``local`` for every local network (whatever the provider), else ``<ecosystem>-<network>``.

    >>> network_slug("ethereum", "local"), network_slug("ethereum", "sepolia")
    ('local', 'ethereum-sepolia')
    """
    if network == "local":
        return "local"
    return f"{ecosystem}-{network}".replace(":", "-").replace("/", "-")


class ContractRecord(BaseModel):
    """One deployed contract: its address and where its ABI is (relative to the record's directory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    abi: str = Field(description="ABI JSON path, relative to the directory of the deployment record.")


class Deployment(BaseModel):
    """Where the collection lives on one chain.

    Written by ``ape run deploy``; read by the agent and the indexer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: int = Field(gt=0)
    network: str = Field(description="Ape network choice it was deployed with, e.g. ethereum:local:foundry.")
    contracts: dict[str, ContractRecord]
    deploy_block: int = Field(ge=0, description="First block holding any of the contracts: index from here.")
    deploy_block_hash: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    deployer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    agent: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="Address granted AGENT_ROLE.")

    _source_dir: Path | None = PrivateAttr(default=None)

    @field_validator("contracts")
    @classmethod
    def _has_collection(cls, value: dict[str, ContractRecord]) -> dict[str, ContractRecord]:
        if COLLECTION not in value:
            raise ValueError(f"must include {COLLECTION}")
        return value

    # -- files --------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Deployment:
        """Read a record.

        Raises :class:`NotFoundError` when it is missing and :class:`ConfigError` when it is malformed.
        """
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"no deployment record at {path}", hint=_DEPLOY_HINT)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"deployment record {path} is not valid JSON ({exc})", hint=_DEPLOY_HINT
            ) from None
        try:
            deployment = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(
                f"deployment record {path} is malformed: {problems}", hint=_DEPLOY_HINT
            ) from None
        deployment._source_dir = path.parent
        return deployment

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record atomically (a reader never sees half a file). Returns the path."""
        path = Path(path)
        _atomic_write(path, self.model_dump_json(indent=2) + "\n")
        self._source_dir = path.parent
        return path

    # -- lookups ------------------------------------------------------------------------------------------

    def contract(self, name: str = COLLECTION) -> ContractRecord:
        """The record of contract ``name``; :class:`NotFoundError` when this deployment has none."""
        try:
            return self.contracts[name]
        except KeyError:
            raise NotFoundError(
                f"deployment on {self.network} (chain {self.chain_id}) has no {name}",
                hint=f"it has {', '.join(sorted(self.contracts))}; redeploy if {name} is expected",
            ) from None

    def address(self, name: str = COLLECTION) -> str:
        """Checksum address of contract ``name``."""
        return self.contract(name).address

    def abi(
        self, name: str = COLLECTION, *, base_dir: str | os.PathLike[str] | None = None
    ) -> list[dict[str, Any]]:
        """The ABI of contract ``name``.

        Its path is relative to ``base_dir``: by default the directory the record was loaded from or saved to,
        else ``deployments/``.
        """
        root = Path(base_dir) if base_dir is not None else (self._source_dir or DEPLOYMENTS_DIR)
        path = root / self.contract(name).abi
        if not path.is_file():
            raise NotFoundError(f"ABI file {path} for {name} is missing", hint=_DEPLOY_HINT)
        try:
            abi = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"ABI file {path} is not valid JSON ({exc})", hint=_DEPLOY_HINT) from None
        if not isinstance(abi, list):
            raise ConfigError(f"ABI file {path} does not hold a JSON list", hint=_DEPLOY_HINT)
        return abi


def write_abi(
    name: str, abi: Sequence[dict[str, Any]], base_dir: str | os.PathLike[str] = DEPLOYMENTS_DIR
) -> str:
    """Write ``<base_dir>/abi/<name>.json`` and return its path relative to ``base_dir``."""
    relative = f"{ABI_DIR_NAME}/{name}.json"
    _atomic_write(Path(base_dir) / relative, json.dumps(list(abi), indent=2) + "\n")
    return relative


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------
# Deploying (Ape)
# ----------------------------------------------------------------------------------------------------------


class DeployParams(BaseModel):
    """Constructor arguments and setup of a deployment. Defaults suit a local chain."""

    model_config = ConfigDict(extra="forbid")

    name: str = "Chrysalis"
    symbol: str = "CHRYS"
    max_supply: int = Field(default=1_000, gt=0)
    mint_price: int = Field(default=10**15, ge=0, lt=2**96, description="wei per token (0.001 ETH)")
    max_per_wallet: int = Field(default=10, ge=0, description="0 = no per-wallet cap")
    evolution_fee: int = Field(default=5 * 10**14, ge=0, lt=2**96, description="wei per request (0.0005 ETH)")
    request_timeout: int = Field(default=3_600, ge=0, le=30 * 24 * 3600, description="seconds before cancel")
    base_uri: str = Field(
        default="", description="tokenURI prefix before a token's first digest (genesis art)"
    )
    royalty_bps: int = Field(default=500, ge=0, le=10_000)
    treasury: str | None = Field(default=None, description="fee recipient; default: the deployer")
    agent: str | None = Field(default=None, description="address granted AGENT_ROLE; default: the deployer")
    model_digest: str | None = Field(default=None, description="sha256 of the initial model's weights (hex)")
    model_manifest: str = Field(default="", description="URI of the initial model's manifest")
    price_feed: bool | None = Field(
        default=None, description="deploy DevPriceFeed; default: on local networks"
    )
    feed_decimals: int = 8
    feed_description: str = "ETH / USD (dev)"
    feed_answer: int = 3_000 * 10**8

    @field_validator("model_digest")
    @classmethod
    def _digest_hex(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        raw = value.removeprefix("0x")
        if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise ValueError("must be 32 bytes of hex (sha256 of the weights)")
        return "0x" + raw.lower()


def deploy_collection(
    params: DeployParams,
    deployer: AccountAPI,
    *,
    out_dir: str | os.PathLike[str] | None = DEPLOYMENTS_DIR,
) -> Deployment:
    """Deploy DevPriceFeed (local networks, unless told otherwise) and LivingCollection, then set them up.

    Registers and activates the initial model when ``params.model_digest`` is set, grants ``AGENT_ROLE`` to
    ``params.agent`` (default: the deployer), and, unless ``out_dir`` is None, writes the ABIs and the record
    ``<out_dir>/<network-slug>.json``. Must run inside an Ape network context.
    """
    from ape import chain, networks, project

    provider = networks.provider
    network = provider.network
    is_local = network.name == "local"
    agent = params.agent or deployer.address
    treasury = params.treasury or deployer.address
    deployed: dict[str, Any] = {}
    receipts = []

    if params.price_feed if params.price_feed is not None else is_local:
        feed = deployer.deploy(
            project.DevPriceFeed, params.feed_decimals, params.feed_description, params.feed_answer
        )
        deployed[PRICE_FEED] = feed
        receipts.append(_receipt(feed))

    collection = deployer.deploy(
        project.LivingCollection,
        params.name,
        params.symbol,
        deployer.address,
        treasury,
        params.max_supply,
        params.mint_price,
        params.max_per_wallet,
        params.evolution_fee,
        params.request_timeout,
        params.base_uri,
        params.royalty_bps,
    )
    deployed[COLLECTION] = collection
    receipts.append(_receipt(collection))

    if params.model_digest:
        collection.registerModel(params.model_digest, params.model_manifest, sender=deployer)
        collection.setActiveModel(collection.modelCount(), sender=deployer)
    collection.grantRole(collection.AGENT_ROLE(), agent, sender=deployer)

    first = min(receipts, key=lambda r: r.block_number)
    block = chain.provider.get_block(first.block_number)
    contracts = {}
    for name, instance in deployed.items():
        abi_path = f"{ABI_DIR_NAME}/{name}.json"
        if out_dir is not None:
            abi = [item.model_dump(mode="json", by_alias=True) for item in instance.contract_type.abi]
            abi_path = write_abi(name, abi, out_dir)
        contracts[name] = ContractRecord(address=str(instance.address), abi=abi_path)

    deployment = Deployment(
        chain_id=provider.chain_id,
        network=f"{network.ecosystem.name}:{network.name}:{provider.name}",
        contracts=contracts,
        deploy_block=first.block_number,
        deploy_block_hash=_hex(block.hash),
        deployer=str(deployer.address),
        agent=str(agent),
    )
    if out_dir is not None:
        deployment.save(Path(out_dir) / f"{network_slug(network.ecosystem.name, network.name)}.json")
    return deployment


def _receipt(instance: Any) -> Any:
    """The deployment receipt of a contract Ape just deployed."""
    from ape import chain

    return chain.provider.get_receipt(instance.txn_hash)


def _hex(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value if value.startswith("0x") else "0x" + value
