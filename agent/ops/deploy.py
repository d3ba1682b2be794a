"""``chrysalis deploy`` and ``chrysalis mint``: a collection on any JSON-RPC node, without Ape or the checkout's
scripts.

``deploy`` sends the compiled contracts (``.build/__local__.json``, what ``make setup`` / ``ape compile`` write;
``--artifacts`` for another) from a local signer (a development account on a local chain, a V3 keystore, an Ape
alias) through plain web3, with :func:`agent.deployment.deploy_with`, the logic ``ape run deploy`` and the demo
share, and writes the deployment record the agent reads. ``mint`` mints from the recorded collection: a public
mint paying the mint price, or an airdrop (``--to``, needs ``MINTER_ROLE``).

Contract-level metadata (ERC-7572): ``deploy`` pins the collection's metadata JSON (name, description, image,
external link) into the embedded IPFS repo as one raw block and sets ``contractURI`` to ``ipfs://<cid>``; a local
image file given as the collection's image is pinned there too.

Chain ids: plain ``anvil`` serves chain 31337; Ape's local networks (and ``anvil --chain-id 1337``) 1337. The
record holds the chain id it was deployed on, and the agent refuses a node serving another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3

from agent.deployment import DEPLOYMENTS_DIR, Deployment, DeployParams, deploy_with
from agent.errors import ConfigError, NotFoundError, PermanentError
from agent.ipfs.repo import IpfsRepo
from agent.ops.accounts import DEV_CHAIN_IDS
from agent.redact import redact_url
from agent.submit.signer import Signer

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".build" / "__local__.json"
"""The compiled contracts of this checkout (``make setup`` compiles them)."""


def load_artifacts(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Contract name -> ``{"abi": [...], "bytecode": "0x..."}`` from an Ape/ethpm manifest.

    Raises:
        NotFoundError: the file is missing. ConfigError: it holds no deployable LivingCollection.
    """
    path = Path(path) if path is not None else ARTIFACTS
    if not path.is_file():
        raise NotFoundError(
            f"no compiled contracts at {path}",
            hint="compile them with `make setup` (or `ape compile`) in the Chrysalis checkout, or pass "
            "--artifacts PATH to a manifest (.build/__local__.json)",
        )
    try:
        types = json.loads(path.read_text())["contractTypes"]
        found = {
            name: {"abi": t["abi"], "bytecode": t["deploymentBytecode"]["bytecode"]}
            for name, t in types.items()
            if (t.get("deploymentBytecode") or {}).get("bytecode")
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a compiled-contracts manifest ({exc})", hint="pass .build/__local__.json"
        ) from None
    if "LivingCollection" not in found:
        raise ConfigError(f"{path} has no deployable LivingCollection", hint="recompile with `ape compile`")
    return found


class Web3Backend:
    """:class:`agent.deployment.DeployBackend` over plain web3: transactions signed by ``signer`` locally."""

    def __init__(
        self, w3: Web3, signer: Signer, artifacts: dict[str, dict[str, Any]], *, url: str, chain_id: int
    ) -> None:
        self.w3 = w3
        self.signer = signer
        self.artifacts = artifacts
        self.chain_id = chain_id
        self.network = (
            f"ethereum:{'local' if chain_id in DEV_CHAIN_IDS else f'chain-{chain_id}'}:{redact_url(url)}"
        )
        self.is_local = chain_id in DEV_CHAIN_IDS
        self.deployer = signer.address
        self._contracts: dict[str, Any] = {}

    def _send(self, tx: dict[str, Any], what: str) -> Any:
        tx = {**tx, "from": self.signer.address, "chainId": self.chain_id}
        tx["nonce"] = self.w3.eth.get_transaction_count(
            Web3.to_checksum_address(self.signer.address), "pending"
        )
        try:
            tx.setdefault("gas", self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a revert or an empty account: said plainly
            raise PermanentError(
                f"{what} would fail: {exc}",
                hint=f"does {self.signer.address} hold ETH on chain {self.chain_id}, and may it do this?",
            ) from None
        base = self.w3.eth.get_block("latest").get("baseFeePerGas") or 0
        tip = self.w3.to_wei(1, "gwei")
        tx.setdefault("maxPriorityFeePerGas", tip)
        tx.setdefault("maxFeePerGas", 2 * int(base) + tip)
        signed = self.signer.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw), 120)
        if receipt["status"] != 1:
            raise PermanentError(
                f"{what} reverted (tx {signed.hash})", hint="check its arguments and the account"
            )
        return receipt

    def deploy(self, name: str, *args: Any) -> tuple[str, list[dict[str, Any]], int]:
        art = self.artifacts[name]
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor(*args).build_transaction({"from": self.signer.address, "gas": 0})
        tx.pop("gas", None)
        receipt = self._send({"data": tx["data"], "value": 0}, f"deploying {name}")
        address = str(receipt["contractAddress"])
        self._contracts[name] = self.w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=art["abi"]
        )
        return address, list(art["abi"]), int(receipt["blockNumber"])

    def transact(self, name: str, method: str, *args: Any) -> None:
        contract = self._contracts[name]
        data = contract.encode_abi(method, args=list(args))
        self._send({"to": contract.address, "data": data, "value": 0}, f"{name}.{method}")

    def call(self, name: str, method: str, *args: Any) -> Any:
        return self._contracts[name].get_function_by_name(method)(*args).call()

    def block_hash(self, number: int) -> str:
        return "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()


def connect(url: str, timeout_s: float = 30.0) -> tuple[Web3, int]:
    """A web3 client for ``url`` and its chain id; a clear error when nothing answers there."""
    if not url.lower().startswith(("http://", "https://")):
        raise ConfigError(
            f"--rpc-url {url!r} is not an http:// or https:// URL", hint="give a JSON-RPC HTTP URL"
        )
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # noqa: BLE001 - unreachable, or not JSON-RPC
        raise ConfigError(
            f"cannot reach a JSON-RPC node at {redact_url(url)}: {type(exc).__name__}",
            hint="start one (a local chain: `anvil`, chain id 31337) or pass --rpc-url / set chain.rpc_url",
        ) from None
    return w3, chain_id


@dataclass(frozen=True)
class Deployed:
    deployment: Deployment
    record: Path


def deploy(
    url: str,
    signer_spec: str,
    params: DeployParams,
    *,
    out: Path | None = None,
    artifacts: Path | None = None,
    password_file: Path | None = None,
    password_env: str = "CHRYSALIS_KEYSTORE_PASSWORD",
    ipfs_repo: Path | None = None,
    image_file: Path | None = None,
) -> Deployed:
    """Deploy through ``url`` from the account ``signer_spec`` names; write the record to ``out`` (default
    ``deployments/local.json`` on a local chain, ``deployments/chain-<id>.json`` elsewhere) and its ABIs
    beside it. An existing record is never overwritten (move it away first).

    With ``ipfs_repo`` (the embedded node's repo: ``chrysalis deploy`` passes ``Settings.ipfs_repo``), the
    collection metadata JSON (:func:`agent.deployment.collection_metadata`) is pinned there and ``contractURI``
    set to ``ipfs://<cid>``, unless ``params.contract_uri`` names one; ``image_file`` is pinned there as the
    collection's image."""
    from agent.ops.accounts import load_account

    found = load_artifacts(artifacts)
    w3, chain_id = connect(url)
    record = out or DEPLOYMENTS_DIR / (
        "local.json" if chain_id in DEV_CHAIN_IDS else f"chain-{chain_id}.json"
    )
    if record.exists():
        raise ConfigError(
            f"deployment record {record} exists already (chain {_record_chain(record)})",
            hint="the agent may be using it: move it away first, or write elsewhere with --out",
        )
    signer = load_account(
        signer_spec, chain_id=chain_id, password_file=password_file, password_env=password_env
    )
    params, pin = _contract_metadata(params, ipfs_repo, image_file)
    backend = Web3Backend(w3, signer, found, url=url, chain_id=chain_id)
    deployment = deploy_with(backend, params, out_dir=record.parent, record_name=record.stem, pin=pin)
    return Deployed(deployment, record)


def _contract_metadata(
    params: DeployParams, ipfs_repo: Path | None, image_file: Path | None
) -> tuple[DeployParams, Callable[[bytes], str] | None]:
    """``params`` with the pinned image's ``ipfs://`` URI, and the function that pins the collection metadata into
    the repo at ``ipfs_repo`` (None without a repo)."""
    if image_file is None and (ipfs_repo is None or params.contract_uri is not None):
        return params, None  # nothing to pin
    if ipfs_repo is None:
        raise ConfigError(
            f"cannot pin the image {image_file}: no IPFS repo", hint="set ipfs.repo, or pass --image URI"
        )
    repo = IpfsRepo(ipfs_repo)
    if image_file is not None:
        try:
            with image_file.open("rb") as fh:
                image = repo.add(fh).cid
        except OSError as exc:
            raise ConfigError(
                f"cannot read the collection image {image_file}: {exc.strerror or exc}",
                hint="pass an image file that exists, or --image URI",
            ) from None
        params = params.model_copy(update={"image": f"ipfs://{image}"})
    return params, lambda data: str(repo.add_raw_block(data))


def _record_chain(path: Path) -> str:
    try:
        return str(json.loads(path.read_text()).get("chain_id", "?"))
    except (OSError, ValueError, AttributeError):
        return "?"


def mint(
    settings: Any, signer_spec: str, quantity: int, *, to: str | None, password_file: Path | None
) -> dict[str, Any]:
    """Mint ``quantity`` tokens of the recorded collection: a public mint paying the price, or (``to``) an
    airdrop by a ``MINTER_ROLE`` holder. Returns the minted ids and the transaction."""
    from agent.ops.accounts import load_account
    from agent.pipeline.holder import Collection, HolderActionRevertedError
    from agent.submit.errors import RevertError, TransactionRevertedError
    from agent.submit.sender import TxRequest, Web3TxSender

    if quantity < 1:
        raise ConfigError(f"quantity {quantity} is not a positive number", hint="mint at least 1 token")
    collection = Collection.connect(settings)
    signer = load_account(
        signer_spec,
        chain_id=collection.chain_id,
        password_file=password_file or settings.signer.password_file,
        password_env=settings.signer.password_env,
    )
    before = int(collection.view("totalMinted"))
    if to is not None:
        if not Web3.is_address(to):
            raise ConfigError(f"--to {to!r} is not an address", hint="give 0x and 40 hex digits")
        action, args, value = "airdrop", [Web3.to_checksum_address(to), quantity], 0
        receiver: str = Web3.to_checksum_address(to)
    else:
        action, args, value = "mint", [quantity], int(collection.view("mintPrice")) * quantity
        receiver = signer.address
    sender = Web3TxSender(collection.rpc, signer, collection.submit, decoder=collection.rpc.decoder)
    data = bytes.fromhex(collection.contract.encode_abi(action, args=args)[2:])
    try:
        confirmation = sender.wait(
            sender.send(TxRequest(to=collection.address, data=data, value=value, label=action))
        )
    except (TransactionRevertedError, RevertError) as exc:
        raise HolderActionRevertedError(
            action, exc.error, tx_hash=getattr(exc, "tx_hash", None), detail=exc.hint or ""
        ) from None
    ids = list(range(before + 1, before + quantity + 1))
    return {
        "tokens": ids,
        "to": receiver,
        "from": signer.address,
        "paid_wei": value,
        "tx_hash": confirmation.tx_hash,
        "block_number": confirmation.block_number,
    }
