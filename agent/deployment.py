"""Deploying the collection, and the record that says where it lives.

:class:`Deployment` is the JSON record ``chrysalis deploy`` (or ``ape run deploy``) writes to
``deployments/<network>.json`` (chain id, addresses, the block to start indexing from, ABI file paths).
Everything that talks to the chain loads it with :meth:`Deployment.load`; it needs neither Ape nor a node.

:class:`DeployParams` and :func:`deploy_with` hold the deployment logic shared by ``chrysalis deploy``
(:mod:`agent.ops.deploy`, plain web3), ``scripts/deploy.py`` and the demo (:func:`deploy_collection`, Ape,
imported only when called).

Contract-level metadata (ERC-7572): :func:`collection_metadata` is the collection's JSON (``name``,
``description``, ``image``, ``external_link``, as OpenSea reads it); given a ``pin`` function (``chrysalis deploy``
pins into the embedded IPFS repo), :func:`deploy_with` pins it and sets ``contractURI`` to ``ipfs://<cid>``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from agent.domain import canonical_json
from agent.errors import ConfigError, NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from ape.api import AccountAPI

DEPLOYMENTS_DIR = Path("deployments")
ABI_DIR_NAME = "abi"

#: Contracts the collection's deployment consists of, in deployment order.
COLLECTION = "LivingCollection"
PRICE_FEED = "DevPriceFeed"

_DEPLOY_HINT = (
    "deploy with `chrysalis deploy --rpc-url URL --from ACCOUNT` (it writes the record), or point "
    "chain.deployment (CHRYSALIS_CHAIN__DEPLOYMENT) at an existing record"
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
    contract_uri: str | None = Field(
        default=None, description="contractURI set at deployment (ERC-7572): the collection's metadata JSON."
    )

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
    request_timeout: int = Field(
        default=3_600,
        ge=3_600,
        le=30 * 24 * 3600,
        description="seconds before cancel (the contract's MIN_REQUEST_TIMEOUT is one hour, its maximum 30 days)",
    )
    base_uri: str = Field(
        default="", description="tokenURI prefix before a token's first digest (genesis art)"
    )
    royalty_bps: int = Field(default=500, ge=0, le=1_000, description="at most 10 % (MAX_ROYALTY_BPS)")
    treasury: str | None = Field(default=None, description="fee recipient; default: the deployer")
    agent: str | None = Field(
        default=None, description="address granted AGENT_ROLE and REFRESHER_ROLE; default: the deployer"
    )
    model_digest: str | None = Field(default=None, description="sha256 of the initial model's weights (hex)")
    model_manifest: str = Field(default="", description="URI of the initial model's manifest")
    price_feed: bool | None = Field(
        default=None, description="deploy DevPriceFeed; default: on local networks"
    )
    feed_decimals: int = 8
    feed_description: str = "ETH / USD (dev)"
    feed_answer: int = 3_000 * 10**8
    description: str = Field(default="", description="the collection's description (contract-level metadata)")
    image: str = Field(
        default="", description="URI of the collection's image, e.g. ipfs://<cid> (contract-level metadata)"
    )
    external_link: str = Field(default="", description="the collection's website (contract-level metadata)")
    contract_uri: str | None = Field(
        default=None,
        description="contractURI to set (ERC-7572); default: ipfs://<cid> of the collection metadata when the "
        "deploy pins it (chrysalis deploy does), else none",
    )

    @field_validator("model_digest")
    @classmethod
    def _digest_hex(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        raw = value.removeprefix("0x")
        if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise ValueError("must be 32 bytes of hex (sha256 of the weights)")
        return "0x" + raw.lower()

    @field_validator("image", "external_link", "contract_uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value and not _URI.match(value):
            raise ValueError(f"{value!r} is not a URI (ipfs://..., https://..., data:...)")
        return value


_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")


def collection_metadata(params: DeployParams) -> bytes:
    """The collection's contract-level metadata JSON (ERC-7572, OpenSea's ``contractURI`` format), canonical bytes:
    ``name`` always, ``description``, ``image`` and ``external_link`` when set."""
    document = {"name": params.name}
    for key in ("description", "image", "external_link"):
        value = getattr(params, key)
        if value:
            document[key] = value
    return canonical_json(document)


class DeployBackend(Protocol):
    """What :func:`deploy_with` needs from a chain client: Ape inside ``ape run`` (:func:`deploy_collection`),
    or plain web3 with a local signer (``chrysalis deploy``, :mod:`agent.ops.deploy`)."""

    chain_id: int
    network: str
    is_local: bool
    deployer: str

    def deploy(self, name: str, *args: Any) -> tuple[str, list[dict[str, Any]], int]:
        """Deploy contract ``name``; return its address, ABI and the block it was mined in."""

    def transact(self, name: str, method: str, *args: Any) -> None:
        """Call ``method`` of the deployed ``name`` from the deployer and wait for it to succeed."""

    def call(self, name: str, method: str, *args: Any) -> Any:
        """Read view ``method`` of the deployed ``name``."""

    def block_hash(self, number: int) -> str:
        """The hash (0x hex) of block ``number``."""


def deploy_with(
    backend: DeployBackend,
    params: DeployParams,
    *,
    out_dir: str | os.PathLike[str] | None = DEPLOYMENTS_DIR,
    record_name: str = "local",
    pin: Callable[[bytes], str] | None = None,
) -> Deployment:
    """Deploy DevPriceFeed (local networks, unless told otherwise) and LivingCollection, then set them up.

    Registers and activates the initial model when ``params.model_digest`` is set, grants ``AGENT_ROLE`` and
    ``REFRESHER_ROLE`` to ``params.agent`` (default: the deployer), sets ``contractURI`` (``params.contract_uri``,
    else ``ipfs://`` + what ``pin`` returns for :func:`collection_metadata`: the CID of the bytes it stored), and,
    unless ``out_dir`` is None, writes the ABIs and the record ``<out_dir>/<record_name>.json``.
    """
    agent = params.agent or backend.deployer
    treasury = params.treasury or backend.deployer
    contract_uri = params.contract_uri
    if (
        contract_uri is None and pin is not None
    ):  # pinned first: a repo that fails leaves nothing half-deployed
        contract_uri = "ipfs://" + pin(collection_metadata(params))
    deployed: dict[str, tuple[str, list[dict[str, Any]], int]] = {}
    if params.price_feed if params.price_feed is not None else backend.is_local:
        deployed[PRICE_FEED] = backend.deploy(
            PRICE_FEED, params.feed_decimals, params.feed_description, params.feed_answer
        )
    deployed[COLLECTION] = backend.deploy(
        COLLECTION,
        params.name,
        params.symbol,
        backend.deployer,
        treasury,
        params.max_supply,
        params.mint_price,
        params.max_per_wallet,
        params.evolution_fee,
        params.request_timeout,
        params.base_uri,
        params.royalty_bps,
    )
    if params.model_digest:
        backend.transact(COLLECTION, "registerModel", params.model_digest, params.model_manifest)
        backend.transact(COLLECTION, "setActiveModel", backend.call(COLLECTION, "modelCount"))
    backend.transact(COLLECTION, "grantRole", backend.call(COLLECTION, "AGENT_ROLE"), agent)
    backend.transact(COLLECTION, "grantRole", backend.call(COLLECTION, "REFRESHER_ROLE"), agent)
    if contract_uri:
        backend.transact(COLLECTION, "setContractURI", contract_uri)

    first = min(block for _address, _abi, block in deployed.values())
    contracts = {}
    for name, (address, abi, _block) in deployed.items():
        abi_path = f"{ABI_DIR_NAME}/{name}.json"
        if out_dir is not None:
            abi_path = write_abi(name, abi, out_dir)
        contracts[name] = ContractRecord(address=address, abi=abi_path)
    deployment = Deployment(
        chain_id=backend.chain_id,
        network=backend.network,
        contracts=contracts,
        deploy_block=first,
        deploy_block_hash=_hex(backend.block_hash(first)),
        deployer=backend.deployer,
        agent=str(agent),
        contract_uri=contract_uri or None,
    )
    if out_dir is not None:
        deployment.save(Path(out_dir) / f"{record_name}.json")
    return deployment


class _ApeBackend:
    """:class:`DeployBackend` inside an Ape network context (``ape run deploy``, the demo)."""

    def __init__(self, deployer: AccountAPI) -> None:
        from ape import networks

        provider = networks.provider
        network = provider.network
        self._account = deployer
        self._instances: dict[str, Any] = {}
        self.chain_id = int(provider.chain_id)
        self.network = f"{network.ecosystem.name}:{network.name}:{provider.name}"
        self.is_local = network.name == "local"
        self.deployer = str(deployer.address)
        self.slug = network_slug(network.ecosystem.name, network.name)

    def deploy(self, name: str, *args: Any) -> tuple[str, list[dict[str, Any]], int]:
        from ape import project

        instance = self._account.deploy(getattr(project, name), *args)
        self._instances[name] = instance
        abi = [item.model_dump(mode="json", by_alias=True) for item in instance.contract_type.abi]
        return str(instance.address), abi, int(_receipt(instance).block_number)

    def transact(self, name: str, method: str, *args: Any) -> None:
        getattr(self._instances[name], method)(*args, sender=self._account)

    def call(self, name: str, method: str, *args: Any) -> Any:
        return getattr(self._instances[name], method)(*args)

    def block_hash(self, number: int) -> str:
        from ape import chain

        return _hex(chain.provider.get_block(number).hash)


def deploy_collection(
    params: DeployParams,
    deployer: AccountAPI,
    *,
    out_dir: str | os.PathLike[str] | None = DEPLOYMENTS_DIR,
    pin: Callable[[bytes], str] | None = None,
) -> Deployment:
    """:func:`deploy_with` through Ape (``ape run deploy``, the demo); the record is
    ``<out_dir>/<network-slug>.json``. Must run inside an Ape network context."""
    backend = _ApeBackend(deployer)
    return deploy_with(backend, params, out_dir=out_dir, record_name=backend.slug, pin=pin)


def _receipt(instance: Any) -> Any:
    """The deployment receipt of a contract Ape just deployed."""
    from ape import chain

    return chain.provider.get_receipt(instance.txn_hash)


def _hex(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value if value.startswith("0x") else "0x" + value
