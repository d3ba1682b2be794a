"""Revealing and publishing a genesis: metadata files in one UnixFS directory, pinned, and the base URI set.

- :func:`commit_reveal` commits the provenance hash and a future reveal block on the collection
  (``commitReveal``, admin, once); :func:`reveal_on_chain` then has the contract record that block's hash
  (``reveal()``, anyone) and takes its ``revealOffset(N)`` as the offset. With a deployment this is the path: the
  operator chooses neither the block nor, after the commit, the provenance hash.
- :func:`reveal_genesis` fixes the offset from the reveal block's hash (:mod:`agent.genesis.provenance`) and
  records it in ``reveal.json``; a directory that was revealed refuses any other reveal block. Called alone (no
  deployment yet), the block is only announced off-chain.
- :func:`publish_genesis` writes token ``t``'s metadata (:mod:`agent.metadata`: name ``"<name> #t"``, the
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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.domain import ModelRef
from agent.errors import BackendUnavailableError, ConfigError, IntegrityError, NotFoundError, RetryableError
from agent.genesis.assign import check_item_seed, genesis_seed
from agent.genesis.ledger import Ledger
from agent.genesis.provenance import Reveal, reveal_offset, token_to_item
from agent.genesis.run import genesis_snapshot
from agent.redact import redact_text, redact_url

if TYPE_CHECKING:  # pragma: no cover
    from agent.deployment import Deployment
    from agent.domain import Confirmation
    from agent.ipfs.backends.replicated import Replicator
    from agent.ipfs.repo import IpfsRepo
    from agent.settings import SubmitSettings
    from agent.submit.rpc import BlockId
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


def parse_block_hash(value: str) -> str:
    """``--reveal-hash`` as ``0x`` + 64 lower-case hex digits, or a :class:`ConfigError` saying what it should be."""
    raw = value.removeprefix("0x")
    if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise ConfigError(
            f"--reveal-hash {value!r} is not a block hash",
            hint="pass the reveal block's hash as 0x followed by 64 hex digits (or leave it out: the node's "
            "hash is read)",
        )
    return "0x" + raw.lower()


def read_commitment(
    deployment: Deployment, rpc_url: str, settings: SubmitSettings | None = None
) -> Commitment:
    """The collection's genesis reveal commitment now (nothing committed: ``reveal_block == 0``)."""
    return _Collection(deployment, rpc_url, settings).commitment()


def reveal_genesis(
    out_dir: Path,
    *,
    block_number: int,
    block_hash: str | None = None,
    chain_id: int = 0,
    rpc_url: str | None = None,
    contract: str | None = None,
) -> Reveal:
    """Fix the offset from ``block_number``'s hash and record it in ``reveal.json``.

    With ``rpc_url`` the hash is read from that node, and ``block_hash`` (``--reveal-hash``, the hash the operator
    announced), when given, must equal it: a mismatch or an unreachable node records nothing. Without ``rpc_url``
    the given ``block_hash`` is used as is (offline use of this function; the CLI always passes the node, so it
    never records an unchecked reveal). ``block_hash`` must be ``0x`` + 64 hex digits. Revealing again with the
    same block returns the recorded reveal; with another block it is refused. ``contract``: the collection whose
    on-chain commitment fixed the block (:func:`reveal_on_chain`), recorded with the reveal.

    Raises:
        NotFoundError: the generation is not finished.
        ConfigError: neither a hash nor an RPC URL is given, ``block_hash`` is malformed, or the directory was
            revealed with another block.
        IntegrityError: ``block_hash`` is not the node's hash of that block.
        RevealNotReadyError: the block is not mined yet.
        BackendUnavailableError: the node cannot be reached (nothing is recorded).
    """
    if block_hash is not None:
        block_hash = parse_block_hash(block_hash)
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
    if rpc_url is not None:
        given = block_hash
        block_hash, chain_id = block_hash_at(rpc_url, block_number)
        if given is not None and given != block_hash.lower():
            raise IntegrityError(
                f"--reveal-hash {given} is not the hash of block {block_number}: the node at "
                f"{redact_url(rpc_url)} has {block_hash}; nothing was recorded",
                hint="check the block number and the chain (--rpc-url), or leave --reveal-hash out",
            )
    elif block_hash is None:
        raise ConfigError(
            f"the hash of reveal block {block_number} is needed",
            hint="pass --rpc-url (or set chain.rpc_url) to read it",
        )
    reveal = Reveal.of(
        block_number=block_number,
        block_hash=block_hash,
        chain_id=chain_id,
        size=int(provenance["size"]),
        provenance_sha256=str(provenance["provenance_sha256"]),
        contract=contract,
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
        IntegrityError: a file does not match the hash the ledger recorded for it, or a receipt's seed is not the
            one its item was made with (the genesis seed, or for an item the gates rerolled, the reroll the ledger
            records: :func:`agent.genesis.assign.check_item_seed`).
    """
    from agent.ipfs.directory import HAMT_SHARDING_SIZE
    from agent.metadata import build_metadata

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
        rerolls = ledger.rerolls()
    key = genesis_seed(str(params["seed"]))
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
        check_item_seed(key, item, rerolls.get(item, 0), receipt)  # a rerolled item: its reroll's seed
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


# -- on-chain: the collection's base URI and its genesis reveal commitment -------------------------------------


@dataclass(frozen=True)
class Commitment:
    """The collection's genesis reveal commitment (``revealCommitment()``), read at block ``head``.

    Attributes:
        contract: The collection. chain_id: Its chain. head: The block it was read at.
        provenance_sha256: The committed provenance hash (hex, no ``0x``; ``""`` when nothing is committed).
        reveal_block: The committed reveal block (0: nothing committed).
        reveal_hash: That block's hash as ``reveal()`` recorded it (``0x`` hex), or None before.
    """

    contract: str
    chain_id: int
    head: int
    provenance_sha256: str
    reveal_block: int
    reveal_hash: str | None

    @property
    def committed(self) -> bool:
        return self.reveal_block != 0

    @property
    def blocks_to_wait(self) -> int:
        """Blocks still to mine before ``reveal()`` can record the hash (it needs ``block.number > revealBlock``)."""
        return max(0, self.reveal_block + 1 - self.head)


class _Collection:
    """The deployment's collection on the node at ``rpc_url``: read calls and admin transactions through the
    project's sender (fees, nonces, dry run, confirmations), with the chain id checked against the deployment."""

    def __init__(self, deployment: Deployment, rpc_url: str, settings: SubmitSettings | None = None) -> None:
        from web3 import Web3

        from agent.settings import SubmitSettings
        from agent.submit.errors import ErrorDecoder
        from agent.submit.rpc import ChainRpc

        self.abi = deployment.abi()
        self.address = Web3.to_checksum_address(deployment.address())
        self.settings = settings or SubmitSettings()
        self.rpc = ChainRpc.connect(
            rpc_url,
            retries=self.settings.rpc_retries,
            backoff_s=self.settings.rpc_backoff_s,
            decoder=ErrorDecoder([self.abi]),
        )
        self.chain_id = self.rpc.chain_id()
        if self.chain_id != deployment.chain_id:
            raise ConfigError(
                f"{redact_url(rpc_url)} is chain {self.chain_id}, but the deployment is on chain "
                f"{deployment.chain_id}",
                hint="point --rpc-url at the deployment's chain, or pass its deployment record with --deployment",
            )
        self.contract = Web3().eth.contract(address=self.address, abi=self.abi)

    def require(self, *functions: str) -> None:
        names = {e.get("name") for e in self.abi if e.get("type") == "function"}
        missing = [f for f in functions if f not in names]
        if missing:
            raise ConfigError(
                f"the collection at {self.address} has no {', '.join(missing)}(): it was deployed before the "
                "on-chain genesis reveal",
                hint="deploy the current LivingCollection (`chrysalis deploy`) and pass its record with --deployment",
            )

    def call(self, fn: str, *args: Any, types: list[str], block: BlockId = "latest") -> tuple[Any, ...]:
        from eth_abi import decode as abi_decode

        raw = self.rpc.call(
            {"to": self.address, "data": self.contract.encode_abi(fn, args=list(args))}, block
        )
        return tuple(abi_decode(types, raw))

    def send(self, signer: Signer, fn: str, *args: Any, what: str) -> Confirmation:
        """Send ``fn(*args)`` from ``signer`` and wait for it; a missing admin role is a clear error (``what``:
        what the call does, for that message)."""
        from agent.submit.errors import DryRunRevertedError
        from agent.submit.sender import TxRequest, Web3TxSender

        sender = Web3TxSender(self.rpc, signer, self.settings, decoder=self.rpc.decoder)
        data = self.contract.encode_abi(fn, args=list(args))
        try:
            return sender.send_and_wait(TxRequest(to=self.address, data=bytes.fromhex(data[2:]), label=fn))
        except DryRunRevertedError as exc:
            if exc.error.name == "AccessControlUnauthorizedAccount":
                raise ConfigError(
                    f"{signer.address} may not {what} of {self.address}: {fn} needs DEFAULT_ADMIN_ROLE",
                    hint="sign with the collection admin's key (--keystore / --ape-account), or have the admin "
                    "grant the role",
                ) from None
            raise

    def commitment(self, block: BlockId = "latest") -> Commitment:
        self.require("commitReveal", "reveal", "revealCommitment", "revealOffset")
        head = self.rpc.block_number() if block == "latest" else int(block)
        provenance, reveal_block, reveal_hash = self.call(
            "revealCommitment", types=["bytes32", "uint64", "bytes32"], block=head
        )
        return Commitment(
            contract=self.address,
            chain_id=self.chain_id,
            head=head,
            provenance_sha256=bytes(provenance).hex() if int(reveal_block) else "",
            reveal_block=int(reveal_block),
            reveal_hash="0x" + bytes(reveal_hash).hex() if any(bytes(reveal_hash)) else None,
        )


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
    collection = _Collection(deployment, rpc_url, settings)
    confirmation = collection.send(signer, "setBaseURI", base_uri, what="set the base URI")
    decoded = str(collection.call("baseURI", types=["string"], block=confirmation.block_number)[0])
    if decoded != base_uri:
        raise IntegrityError(
            f"after setBaseURI the collection's baseURI() is {decoded!r}, not {base_uri!r}",
            hint="another transaction changed it in the same block; check the collection's admin activity",
        )
    return confirmation


COMMIT_MARGIN = 5
"""Blocks added to the contract's ``REVEAL_DELAY`` when committing, so the commit may wait that long to be mined."""


def commit_reveal(
    out_dir: Path,
    deployment: Deployment,
    signer: Signer,
    *,
    rpc_url: str,
    settings: SubmitSettings | None = None,
    margin: int = COMMIT_MARGIN,
) -> tuple[Commitment, Confirmation | None]:
    """Commit the finished genesis in ``out_dir`` on-chain: ``commitReveal(provenance hash, head + REVEAL_DELAY +
    margin)`` from ``signer`` (the collection admin). A collection commits once: when it already committed this
    genesis' provenance hash nothing is sent (the confirmation is None).

    Raises:
        NotFoundError: the generation is not finished.
        ConfigError: the collection committed another provenance hash; the node is another chain; the account
            lacks ``DEFAULT_ADMIN_ROLE``; the collection predates the on-chain reveal.
        RetryableError: the commit was mined too late for its reveal block (nothing was committed; run again).
    """
    from agent.submit.errors import RevertError

    ours = str(load_provenance(out_dir)["provenance_sha256"])
    collection = _Collection(deployment, rpc_url, settings)
    for _ in range(2):  # a commit that raced another one is judged by what was committed
        current = collection.commitment()
        if current.committed:
            if current.provenance_sha256 != ours:
                raise ConfigError(
                    f"{current.contract} already committed provenance {current.provenance_sha256} (reveal block "
                    f"{current.reveal_block}); it cannot commit {ours} of {out_dir}",
                    hint="a collection commits one genesis, once: publish the committed genesis (its --out "
                    "directory), or deploy a new collection for this one",
                )
            return current, None
        (delay,) = collection.call("REVEAL_DELAY", types=["uint256"])
        block = current.head + int(delay) + margin
        try:
            confirmation = collection.send(
                signer, "commitReveal", bytes.fromhex(ours), block, what="commit the genesis reveal"
            )
        except RevertError as exc:
            if exc.error.name == "LivingCollectionRevealCommitted":
                continue
            if exc.error.name == "LivingCollectionRevealTooSoon":
                raise RetryableError(
                    f"commitReveal for reveal block {block} was mined too late ({exc.error}); nothing was committed",
                    hint="run the same command again: it picks a later block",
                ) from None
            raise
        committed = collection.commitment(confirmation.block_number)
        if (committed.provenance_sha256, committed.reveal_block) != (ours, block):
            raise IntegrityError(
                f"after commitReveal the collection committed {committed.provenance_sha256} at block "
                f"{committed.reveal_block}, not {ours} at block {block}",
                hint="another admin transaction committed first; check the collection's admin activity",
            )
        return committed, confirmation
    raise IntegrityError(  # pragma: no cover  (a second race within one command)
        f"{collection.address} reported a commitment that it then did not hold",
        hint="check --rpc-url: the node may be load-balanced over nodes at different heights",
    )


def reveal_on_chain(
    out_dir: Path,
    deployment: Deployment,
    *,
    rpc_url: str,
    signer: Callable[[], Signer] | None = None,
    settings: SubmitSettings | None = None,
    block_number: int | None = None,
    block_hash: str | None = None,
    wait: bool = False,
    poll_s: float = 2.0,
    on_wait: Callable[[Commitment], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Reveal:
    """Reveal the genesis in ``out_dir`` from the collection's on-chain commitment and record it (``reveal.json``).

    The commitment must name this genesis' provenance hash. Once its block is mined, ``reveal()`` is sent (from
    ``signer()``, any funded account; only when the hash is not recorded yet) and the offset is the contract's
    ``revealOffset(N)``, checked against :func:`~agent.genesis.provenance.reveal_offset` of the recorded hash and
    against the node's hash of that block. ``block_number`` / ``block_hash`` (``--reveal-block`` /
    ``--reveal-hash``), when given, must be the committed block and the recorded hash. With ``wait`` it polls
    every ``poll_s`` seconds (``on_wait`` sees each reading) instead of failing while the block is not mined.

    Raises:
        NotFoundError: the generation is not finished.
        ConfigError: nothing is committed; another provenance hash is committed; ``block_number`` is not the
            committed block; a reveal is needed but no ``signer`` is given; ``reveal.json`` holds another block.
        IntegrityError: ``block_hash``, the node's block hash or ``revealOffset`` disagree with the recorded hash.
        RevealNotReadyError: (without ``wait``) the block is not mined yet, or it was missed and moved.
    """
    from agent.submit.errors import RevertError

    provenance = load_provenance(out_dir)
    ours, size = str(provenance["provenance_sha256"]), int(provenance["size"])
    collection = _Collection(deployment, rpc_url, settings)
    current = collection.commitment()
    if not current.committed:
        raise ConfigError(
            f"the collection {current.contract} has no reveal commitment: the reveal block must be committed "
            "on-chain before the reveal",
            hint="commit first with the admin key: `chrysalis genesis ... --commit`, then --publish once the block "
            "it names is mined",
        )
    if current.provenance_sha256 != ours:
        raise ConfigError(
            f"the collection {current.contract} committed provenance {current.provenance_sha256}, but {out_dir} "
            f"has {ours}",
            hint="publish the committed genesis (its --out directory); this one cannot be revealed on this "
            "collection",
        )
    missed: int | None = None
    while current.reveal_hash is None:
        if current.blocks_to_wait:
            if not wait:
                moved = (
                    f" (block {missed} was missed: more than 256 blocks old)" if missed is not None else ""
                )
                raise RevealNotReadyError(
                    f"the committed reveal block {current.reveal_block}{moved} is not mined yet: the chain is at "
                    f"block {current.head}, reveal() can record it from block {current.reveal_block + 1}",
                    hint=f"wait {current.blocks_to_wait} more block(s) and run the same command again, or add --wait",
                )
            if on_wait is not None:
                on_wait(current)
            sleep(poll_s)
            current = collection.commitment()
            continue
        if signer is None:
            raise ConfigError(
                f"reveal block {current.reveal_block} is mined, but its hash is not recorded on-chain yet",
                hint="pass a funded account (--keystore / --ape-account) to send reveal(); anyone may send it",
            )
        try:
            account = signer()
        except ConfigError as exc:  # e.g. no key configured: say why a key is needed here
            raise ConfigError(
                f"reveal block {current.reveal_block} is mined, but its hash is not recorded on-chain yet and "
                f"reveal() cannot be sent: {exc.message}",
                hint="pass a funded account with --keystore / --ape-account (anyone may send reveal()); "
                + (exc.hint or ""),
            ) from None
        try:
            collection.send(account, "reveal", what="reveal the genesis")
        except RevertError as exc:  # someone else revealed first: read what they recorded
            if exc.error.name != "LivingCollectionNothingToReveal":
                raise
        before, current = current.reveal_block, collection.commitment()
        if current.reveal_hash is None and current.reveal_block != before:
            missed = before
    if block_number is not None and block_number != current.reveal_block:
        raise ConfigError(
            f"--reveal-block {block_number} is not the reveal block {current.reveal_block} committed on "
            f"{current.contract}",
            hint="leave --reveal-block out: the on-chain commitment decides it",
        )
    recorded = current.reveal_hash
    if block_hash is not None and block_hash.lower().removeprefix("0x") != recorded.removeprefix("0x"):
        raise IntegrityError(
            f"--reveal-hash {block_hash} is not the hash {recorded} that {current.contract} recorded for block "
            f"{current.reveal_block}; nothing was recorded",
            hint="leave --reveal-hash out: the on-chain reveal decides it",
        )
    node_hash, _ = block_hash_at(rpc_url, current.reveal_block)
    if node_hash.lower() != recorded:
        raise IntegrityError(
            f"the collection recorded hash {recorded} for block {current.reveal_block}, but the node has "
            f"{node_hash}",
            hint="the chain reorganised after the reveal, or another chain is being read; check --rpc-url",
        )
    (offset,) = collection.call("revealOffset", size, types=["uint256"])
    expected = reveal_offset(recorded, size)
    if int(offset) != expected:
        raise IntegrityError(
            f"the collection's revealOffset({size}) is {offset}, but uint256({recorded}) mod {size} is {expected}",
            hint="the deployed contract does not follow the documented rule; do not publish with it",
        )
    existing_path = out_dir / REVEAL_NAME
    if existing_path.is_file():
        existing = Reveal.from_json(json.loads(existing_path.read_text()))
        if existing.block_number != current.reveal_block or existing.block_hash != recorded:
            raise ConfigError(
                f"{out_dir} was revealed with block {existing.block_number} (offset {existing.offset}), but the "
                f"collection {current.contract} committed and recorded block {current.reveal_block}",
                hint=f"the on-chain reveal decides the offset: move {existing_path} (and {PUBLISHED_NAME}, if "
                "any) aside and run again",
            )
    return reveal_genesis(
        out_dir,
        block_number=current.reveal_block,
        block_hash=recorded,
        chain_id=current.chain_id,
        contract=current.contract,
    )


def published_record(out_dir: Path) -> Mapping[str, Any]:
    """``published.json`` of a published genesis."""
    path = out_dir / PUBLISHED_NAME
    if not path.is_file():
        raise NotFoundError(f"{out_dir} is not published", hint="run `chrysalis genesis ... --publish` first")
    return json.loads(path.read_text())
