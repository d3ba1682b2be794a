"""Revealing and publishing a genesis: metadata files in one UnixFS directory, pinned, and the base URI set.

- :func:`reveal_genesis` fixes the offset from the reveal block's hash (:mod:`agent.genesis.provenance`) and
  records it in ``reveal.json``; a directory that was revealed refuses any other reveal block.
- :func:`publish_genesis` writes token ``t``'s metadata (:mod:`agent.publish.metadata`: name ``"<name> #t"``, the
  item's lore, image, traits, stage 0, its inference receipt) as one raw block, and builds the directory::

      <dirCID>/1 ... <dirCID>/N        token metadata (tokenURI = baseURI || tokenId, so no extension)
      <dirCID>/images/<t>.png          the images (so one recursive pin keeps the whole collection)
      <dirCID>/provenance.json         records, provenance hash, reveal block and offset

  The directories are HAMT-sharded exactly when Kubo would shard them (256 KiB of links: about 5,800 entries),
  so a 10,000-token genesis gets a sharded root with the same CID Kubo would give. The root is pinned in the
  embedded repo and, through a :class:`~agent.ipfs.backends.replicated.Replicator`, on every configured backend.
- :func:`set_base_uri` calls the collection's ``setBaseURI(string)`` (``DEFAULT_ADMIN_ROLE``) with a given
  account, so tokens without an evolution yet resolve to ``ipfs://<dirCID>/<id>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import BackendUnavailableError, ConfigError, IntegrityError, NotFoundError, RetryableError
from agent.genesis.generate import genesis_snapshot
from agent.genesis.ledger import Ledger
from agent.genesis.provenance import Reveal, token_to_item
from agent.redact import redact_text, redact_url

if TYPE_CHECKING:  # pragma: no cover
    from agent.deployment import Deployment
    from agent.domain import Confirmation
    from agent.ipfs.backends.replicated import Replicator
    from agent.ipfs.repo import IpfsRepo
    from agent.settings import SubmitSettings
    from agent.submit.signer import Signer

REVEAL_NAME = "reveal.json"
PUBLISHED_NAME = "published.json"


class RevealNotReadyError(RetryableError):
    """The reveal block is not mined yet: wait for it."""


@dataclass(frozen=True)
class Published:
    """A published genesis.

    Attributes:
        dir_cid: The directory's CID. base_uri: ``ipfs://<dir_cid>/``. sharded: Whether the root is a HAMT.
        size: Tokens. reveal: The reveal it was published with.
    """

    dir_cid: str
    base_uri: str
    sharded: bool
    size: int
    reveal: Reveal

    def to_json(self) -> dict[str, Any]:
        return {
            "dir_cid": self.dir_cid,
            "base_uri": self.base_uri,
            "sharded": self.sharded,
            "size": self.size,
            "reveal": self.reveal.to_json(),
        }


def load_provenance(out_dir: Path) -> dict[str, Any]:
    """``provenance.json`` of a finished genesis."""
    path = out_dir / "provenance.json"
    if not path.is_file():
        raise NotFoundError(
            f"{out_dir} has no provenance.json: its generation is not finished",
            hint="run (or rerun) `chrysalis genesis` with the same options until it completes",
        )
    return json.loads(path.read_text())


def block_hash_at(rpc_url: str, block_number: int) -> tuple[str, int]:
    """The hash of block ``block_number`` and the chain id, from the node at ``rpc_url``.

    Raises:
        RevealNotReadyError: the block is not mined yet.
        BackendUnavailableError: the node cannot be reached.
    """
    from web3 import Web3
    from web3.exceptions import BlockNotFound

    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    try:
        head = w3.eth.block_number
        if block_number > head:
            raise RevealNotReadyError(
                f"reveal block {block_number} is not mined yet (the chain is at block {head})",
                hint=f"wait {block_number - head} more blocks, then run the same command again",
            )
        block = w3.eth.get_block(block_number)
        chain_id = int(w3.eth.chain_id)
    except BlockNotFound:
        raise RevealNotReadyError(
            f"reveal block {block_number} is not known to {redact_url(rpc_url)}",
            hint="wait for it, then run again",
        ) from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise BackendUnavailableError(
            f"cannot read block {block_number} from {redact_url(rpc_url)}: {redact_text(str(exc), rpc_url)}",
            hint="check --rpc-url (or chain.rpc_url) and that the node is up",
        ) from exc
    return "0x" + bytes(block["hash"]).hex(), chain_id


def reveal_genesis(
    out_dir: Path,
    *,
    block_number: int,
    block_hash: str | None = None,
    chain_id: int = 0,
    rpc_url: str | None = None,
) -> Reveal:
    """Fix the offset from ``block_number``'s hash and record it in ``reveal.json``.

    The hash is read from ``rpc_url`` unless given. Revealing again with the same block returns the recorded
    reveal; with another block it is refused.

    Raises:
        NotFoundError: the generation is not finished.
        ConfigError: neither a hash nor an RPC URL is given, or the directory was revealed with another block.
        RevealNotReadyError: the block is not mined yet.
    """
    provenance = load_provenance(out_dir)
    path = out_dir / REVEAL_NAME
    existing = Reveal.from_json(json.loads(path.read_text())) if path.is_file() else None
    if existing is not None and existing.block_number != block_number:
        raise ConfigError(
            f"{out_dir} was already revealed with block {existing.block_number} (offset {existing.offset}); "
            f"it cannot be revealed again with block {block_number}",
            hint="the offset is fixed once; publish with --reveal-block "
            f"{existing.block_number}, or start a new genesis",
        )
    if block_hash is None:
        if rpc_url is None:
            raise ConfigError(
                f"the hash of reveal block {block_number} is needed",
                hint="pass --rpc-url (or set chain.rpc_url) to read it, or --reveal-hash 0x...",
            )
        block_hash, chain_id = block_hash_at(rpc_url, block_number)
    reveal = Reveal.of(
        block_number=block_number,
        block_hash=block_hash,
        chain_id=chain_id,
        size=int(provenance["size"]),
        provenance_sha256=str(provenance["provenance_sha256"]),
    )
    if existing is not None:
        if existing.block_hash != reveal.block_hash:
            raise IntegrityError(
                f"block {block_number} now has hash {reveal.block_hash}, but the genesis was revealed with "
                f"{existing.block_hash}",
                hint="the chain reorganised after the reveal, or another chain is being read; check --rpc-url",
            )
        return existing
    path.write_text(json.dumps(reveal.to_json(), indent=1, sort_keys=True) + "\n")
    return reveal


def publish_genesis(
    out_dir: Path,
    repo: IpfsRepo,
    *,
    reveal: Reveal,
    replicator: Replicator | None = None,
    shard_threshold: int | None = None,
) -> Published:
    """Build, pin and (optionally) replicate the revealed collection's directory; see the module docstring.

    Args:
        out_dir: A finished, revealed genesis.
        repo: Where the blocks go (the embedded node's repo); the root is pinned there recursively.
        reveal: From :func:`reveal_genesis`.
        replicator: Also pin the root on these backends (pinning services, Kubo); None: the repo only.
        shard_threshold: Kubo's HAMT threshold in bytes (default 256 KiB; 1 always shards, None never).

    Raises:
        IntegrityError: a file does not match the hash the ledger recorded for it.
    """
    from agent.ipfs.directory import HAMT_SHARDING_SIZE
    from agent.publish.metadata import ModelRef, build_metadata

    threshold = HAMT_SHARDING_SIZE if shard_threshold is None else shard_threshold
    provenance = load_provenance(out_dir)
    if provenance["provenance_sha256"] != reveal.provenance_sha256:
        raise IntegrityError(
            f"the reveal is for provenance {reveal.provenance_sha256}, but {out_dir} has "
            f"{provenance['provenance_sha256']}",
            hint="reveal this directory again (reveal_genesis), never reuse another genesis' reveal",
        )
    with Ledger.read(out_dir) as ledger:
        params = ledger.params()
        outputs = {o.item: o for o in ledger.outputs()}
        traits = ledger.item_traits()
    size = int(params["size"])
    if len(outputs) != size:
        raise NotFoundError(
            f"{size - len(outputs)} of {size} items in {out_dir} are not generated",
            hint="rerun `chrysalis genesis` with the same options to finish it",
        )
    tokens: dict[str, Any] = {}
    images: dict[str, Any] = {}
    for token in range(1, size + 1):
        item = token_to_item(token, reveal.offset, size)
        out = outputs[item]
        png = _checked(out_dir / "images" / f"{item}.png", out.png_sha256)
        receipt_bytes = _checked(out_dir / "receipts" / f"{item}.json", out.receipt_sha256)
        image = repo.add(png, pin=False)
        if str(image.cid) != out.image_cid:
            raise IntegrityError(
                f"image of item {item} has CID {image.cid}, but the ledger recorded {out.image_cid}",
                hint="the importer's settings changed; publish with the Chrysalis version that generated it",
            )
        receipt = json.loads(receipt_bytes)
        metadata = build_metadata(
            name=f"{params['name']} #{token}",
            lore=receipt["lore"]["output"]["text"],
            image_cid=out.image_cid,
            traits=traits[item],
            stage=0,
            parent=None,
            receipt=receipt,
            models={
                role: ModelRef(receipt[role]["model"]["model_id"], receipt[role]["model"]["weights_sha256"])
                for role in ("image", "lore")
            },
            snapshot=genesis_snapshot(str(params["table_sha256"]), size, item),
        )
        tokens[str(token)] = repo.add_raw_block(metadata.encode(), pin=False)
        images[f"{token}.png"] = image
    images_dir = repo.add_directory(images, pin=False, shard_threshold=threshold)
    published_provenance = {**provenance, "reveal": reveal.to_json()}
    prov_file = repo.add(
        json.dumps(published_provenance, indent=1, sort_keys=True).encode() + b"\n", pin=False
    )
    root = repo.add_directory(
        {**tokens, "images": images_dir, "provenance.json": prov_file}, pin=True, shard_threshold=threshold
    )
    if replicator is not None:
        replicator.publish(root, name=f"{params['name']} genesis")
    published = Published(
        dir_cid=str(root),
        base_uri=f"ipfs://{root}/",
        sharded=repo.stat(root).sharded,
        size=size,
        reveal=reveal,
    )
    (out_dir / PUBLISHED_NAME).write_text(json.dumps(published.to_json(), indent=1, sort_keys=True) + "\n")
    return published


def _checked(path: Path, sha256: str) -> bytes:
    if not path.is_file():
        raise NotFoundError(
            f"{path} is missing", hint="rerun `chrysalis genesis` with the same options to redo it"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(
            f"{path} does not match the sha256 the ledger recorded ({sha256})",
            hint="the file was changed after generation; rerun `chrysalis genesis` with the same options to redo it",
        )
    return data


def set_base_uri(
    deployment: Deployment,
    base_uri: str,
    signer: Signer,
    *,
    rpc_url: str,
    settings: SubmitSettings | None = None,
) -> Confirmation:
    """Call ``setBaseURI(base_uri)`` on the deployment's collection from ``signer``'s account and wait for it.

    Raises:
        ConfigError: the node is another chain than the deployment's, or the account lacks ``DEFAULT_ADMIN_ROLE``.
        IntegrityError: after the transaction, ``baseURI()`` does not return ``base_uri``.
    """
    from eth_abi import decode as abi_decode
    from web3 import Web3

    from agent.submit.errors import DryRunRevertedError
    from agent.submit.sender import TxRequest, Web3TxSender

    abi = deployment.abi()
    address = deployment.address()
    sender = Web3TxSender.connect(rpc_url, signer, settings, abis=[abi])
    chain_id = sender.rpc.chain_id()
    if chain_id != deployment.chain_id:
        raise ConfigError(
            f"{redact_url(rpc_url)} is chain {chain_id}, but the deployment is on chain {deployment.chain_id}",
            hint="point --rpc-url at the deployment's chain, or pass its deployment record with --deployment",
        )
    collection = Web3().eth.contract(address=Web3.to_checksum_address(address), abi=abi)
    data = collection.encode_abi("setBaseURI", args=[base_uri])
    try:
        confirmation = sender.send_and_wait(
            TxRequest(to=address, data=bytes.fromhex(data[2:]), label="setBaseURI")
        )
    except DryRunRevertedError as exc:
        if exc.error.name == "AccessControlUnauthorizedAccount":
            raise ConfigError(
                f"{signer.address} may not set the base URI of {address}: setBaseURI needs DEFAULT_ADMIN_ROLE",
                hint="sign with the collection admin's key (--keystore / --ape-account), or have the admin grant "
                "the role",
            ) from None
        raise
    raw = sender.rpc.call(
        {"to": address, "data": collection.encode_abi("baseURI")}, confirmation.block_number
    )
    decoded = str(abi_decode(["string"], raw)[0])
    if decoded != base_uri:
        raise IntegrityError(
            f"after setBaseURI the collection's baseURI() is {decoded!r}, not {base_uri!r}",
            hint="another transaction changed it in the same block; check the collection's admin activity",
        )
    return confirmation


def published_record(out_dir: Path) -> Mapping[str, Any]:
    """``published.json`` of a published genesis."""
    path = out_dir / PUBLISHED_NAME
    if not path.is_file():
        raise NotFoundError(f"{out_dir} is not published", hint="run `chrysalis genesis ... --publish` first")
    return json.loads(path.read_text())
