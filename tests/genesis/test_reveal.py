"""Reveal and publish a small genesis: tokens resolve through the embedded gateway, and the base URI is set on anvil."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from web3 import Web3
from web3.contract import Contract

from agent.deployment import Deployment
from agent.errors import ConfigError, IntegrityError, NotFoundError
from agent.genesis.provenance import Reveal, item_to_token, reveal_offset, token_to_item
from agent.genesis.reveal import (
    COMMIT_MARGIN,
    RevealNotReadyError,
    commit_reveal,
    publish_genesis,
    reveal_genesis,
    reveal_on_chain,
    set_base_uri,
)
from agent.genesis.run import run_genesis
from agent.ipfs.backends.embedded import EmbeddedBackend
from agent.ipfs.backends.replicated import Replicator
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.metadata import metadata_cid, parse_metadata
from agent.ops.accounts import dev_key
from agent.submit.signer import KeystoreSigner
from tests.support.devchain import BARE_DEPLOY, DevChain

SIZE = 12
HASH = "0x" + "ab" * 32


@pytest.fixture(scope="module")
def genesis_dir(tmp_path_factory, models) -> Path:
    from tests.genesis.conftest import small_table

    out = tmp_path_factory.mktemp("publish") / "g"
    run_genesis(
        small_table(), SIZE, "publish-me", out, models=models, batch_size=6, sheet_size=0, progress=False
    )
    return out


@pytest.fixture
def revealed(genesis_dir: Path, tmp_path: Path) -> Path:
    """A copy of the generated genesis, revealed with :data:`HASH` at block 100."""
    import shutil

    out = tmp_path / "g"
    shutil.copytree(genesis_dir, out)
    reveal_genesis(out, block_number=100, block_hash=HASH)
    return out


def test_offset_and_mapping_follow_the_documented_rule() -> None:
    assert reveal_offset(HASH, SIZE) == int(HASH, 16) % SIZE
    offset = reveal_offset(HASH, SIZE)
    items = [token_to_item(t, offset, SIZE) for t in range(1, SIZE + 1)]
    assert sorted(items) == list(range(SIZE)) and items[0] == offset
    assert all(item_to_token(token_to_item(t, offset, SIZE), offset, SIZE) == t for t in range(1, SIZE + 1))
    with pytest.raises(ConfigError, match="token id 13 is outside 1..12"):
        token_to_item(13, offset, SIZE)


def test_published_tokens_resolve_through_the_gateway(revealed: Path, tmp_path: Path) -> None:
    repo = IpfsRepo(tmp_path / "repo", sync=False)
    reveal = Reveal.from_json(json.loads((revealed / "reveal.json").read_text()))
    published = publish_genesis(revealed, repo, reveal=reveal)
    assert published.base_uri == f"ipfs://{published.dir_cid}/" and not published.sharded
    assert repo.is_pinned(published.dir_cid)
    assignment = json.loads((revealed / "assignment.json").read_text())["items"]
    with NodeServer(repo) as node, httpx.Client(base_url=node.url, timeout=30) as http:
        for token in range(1, SIZE + 1):
            reply = http.get(f"/ipfs/{published.dir_cid}/{token}")
            assert reply.status_code == 200, reply.text
            metadata = parse_metadata(reply.content, cid=str(repo.resolve(f"{published.dir_cid}/{token}")))
            item = token_to_item(token, reveal.offset, SIZE)
            assert metadata.name == f"Testling #{token}" and metadata.stage == 0 and metadata.parent is None
            assert dict(metadata.traits) == assignment[item]["traits"]
            assert metadata.receipt["seed"]["token_id"] == item
            assert {r["name"]: r["value"] for r in metadata.inputs["readings"]}["genesis.item"] == item
            assert metadata.description == metadata.receipt["lore"]["output"]["text"]
            assert str(repo.resolve(f"{published.dir_cid}/{token}")) == metadata_cid(reply.content)
            image = http.get(f"/ipfs/{metadata.image_cid}")
            assert (
                image.status_code == 200
                and image.content == (revealed / "images" / f"{item}.png").read_bytes()
            )
            assert http.get(f"/ipfs/{published.dir_cid}/images/{token}.png").content == image.content
        provenance = http.get(f"/ipfs/{published.dir_cid}/provenance.json").json()
    assert provenance["reveal"]["offset"] == reveal.offset and provenance["reveal"]["block_hash"] == HASH
    assert (
        provenance["provenance_sha256"]
        == json.loads((revealed / "provenance.json").read_text())["provenance_sha256"]
    )
    assert json.loads((revealed / "published.json").read_text())["dir_cid"] == published.dir_cid


def test_a_sharded_directory_resolves_too_and_cids_are_deterministic(revealed: Path, tmp_path: Path) -> None:
    reveal = Reveal.from_json(json.loads((revealed / "reveal.json").read_text()))
    plain = publish_genesis(revealed, IpfsRepo(None), reveal=reveal)
    again = publish_genesis(revealed, IpfsRepo(None), reveal=reveal)
    assert again.dir_cid == plain.dir_cid
    repo = IpfsRepo(tmp_path / "hamt", sync=False)
    hamt = publish_genesis(revealed, repo, reveal=reveal, shard_threshold=1)  # Kubo's "always shard"
    assert hamt.sharded and hamt.dir_cid != plain.dir_cid
    with NodeServer(repo) as node:
        reply = httpx.get(f"{node.url}/ipfs/{hamt.dir_cid}/{SIZE}", timeout=30)
    assert reply.status_code == 200 and parse_metadata(reply.content).name == f"Testling #{SIZE}"


def test_publishing_replicates_to_every_backend(revealed: Path, tmp_path: Path) -> None:
    source, mirror = IpfsRepo(tmp_path / "a", sync=False), IpfsRepo(tmp_path / "b", sync=False)
    reveal = Reveal.from_json(json.loads((revealed / "reveal.json").read_text()))
    replicator = Replicator(
        [EmbeddedBackend(source), EmbeddedBackend(mirror, name="mirror")], required=2, source=source
    )
    published = publish_genesis(revealed, source, reveal=reveal, replicator=replicator)
    assert mirror.is_pinned(published.dir_cid)
    assert b"".join(mirror.cat(mirror.resolve(f"{published.dir_cid}/1"))).startswith(b"{")


def test_a_changed_file_is_never_published(revealed: Path) -> None:
    reveal = Reveal.from_json(json.loads((revealed / "reveal.json").read_text()))
    item = token_to_item(3, reveal.offset, SIZE)
    (revealed / "receipts" / f"{item}.json").write_text("{}")
    with pytest.raises(
        IntegrityError, match=f"receipts/{item}.json does not match the sha256 the ledger recorded"
    ):
        publish_genesis(revealed, IpfsRepo(None), reveal=reveal)


def test_the_offset_cannot_be_rerolled(revealed: Path) -> None:
    assert reveal_genesis(revealed, block_number=100, block_hash=HASH).offset == reveal_offset(HASH, SIZE)
    with pytest.raises(
        ConfigError, match="already revealed with block 100 .* cannot be revealed again with block 101"
    ):
        reveal_genesis(revealed, block_number=101, block_hash="0x" + "cd" * 32)
    with pytest.raises(IntegrityError, match="now has hash"):
        reveal_genesis(revealed, block_number=100, block_hash="0x" + "cd" * 32)
    record = json.loads((revealed / "reveal.json").read_text())
    record["offset"] = (record["offset"] + 1) % SIZE
    with pytest.raises(ConfigError, match="was edited"):
        Reveal.from_json(record)


def test_reveal_needs_a_finished_genesis_and_a_hash(tmp_path: Path, genesis_dir: Path) -> None:
    with pytest.raises(NotFoundError, match="generation is not finished"):
        reveal_genesis(tmp_path, block_number=1, block_hash=HASH)
    import shutil

    shutil.copytree(genesis_dir, tmp_path / "g")
    with pytest.raises(ConfigError, match="the hash of reveal block 5 is needed") as e:
        reveal_genesis(tmp_path / "g", block_number=5)
    assert "--rpc-url" in (e.value.hint or "")


# -- on anvil ------------------------------------------------------------------------------------------------


def _deployment(chain: DevChain, out_dir: Path) -> tuple[Deployment, Contract]:
    """A LivingCollection (the admin holding every role) and its record under ``out_dir``."""
    deployment = chain.deploy(BARE_DEPLOY, out_dir)
    return deployment, chain.contract(deployment)


@pytest.mark.anvil
def test_reveal_from_the_chain_then_set_the_base_uri(
    chain: DevChain, genesis_dir: Path, tmp_path: Path
) -> None:
    import shutil

    assert Account.from_key(dev_key(0)).address == chain.admin
    out = tmp_path / "g"
    shutil.copytree(genesis_dir, out)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    head = chain.w3.eth.block_number
    with pytest.raises(RevealNotReadyError, match=f"reveal block {head + 3} is not mined yet") as e:
        reveal_genesis(out, block_number=head + 3, rpc_url=url)
    assert e.value.retryable and "wait 3 more blocks" in (e.value.hint or "")
    for _ in range(3):
        chain.mine()
    reveal = reveal_genesis(out, block_number=head + 3, rpc_url=url)
    expected = "0x" + bytes(chain.w3.eth.get_block(head + 3)["hash"]).hex()
    assert reveal.block_hash == expected and reveal.chain_id == chain.w3.eth.chain_id
    assert reveal.offset == int(expected, 16) % SIZE

    published = publish_genesis(out, IpfsRepo(None), reveal=reveal)
    deployment, collection = _deployment(chain, tmp_path)
    chain.transact(collection.functions.airdrop(chain.admin, 2))
    assert collection.functions.tokenURI(1).call() == ""

    admin = KeystoreSigner.from_private_key(dev_key(0))
    confirmation = set_base_uri(deployment, published.base_uri, admin, rpc_url=url)
    assert confirmation.status == 1
    assert collection.functions.baseURI().call() == published.base_uri
    assert collection.functions.tokenURI(2).call() == f"ipfs://{published.dir_cid}/2"
    logs = collection.events.BaseURIChanged().get_logs(from_block=confirmation.block_number)
    assert [log["args"]["baseURI"] for log in logs] == [published.base_uri]

    stranger = KeystoreSigner.from_private_key(dev_key(1))
    with pytest.raises(ConfigError, match="may not set the base URI .* needs DEFAULT_ADMIN_ROLE") as e:
        set_base_uri(deployment, "ipfs://evil/", stranger, rpc_url=url)
    assert "admin" in (e.value.hint or "")
    assert collection.functions.baseURI().call() == published.base_uri

    wrong_chain = deployment.model_copy(update={"chain_id": 999})
    wrong_chain._source_dir = deployment._source_dir
    with pytest.raises(ConfigError, match="but the deployment is on chain 999"):
        set_base_uri(wrong_chain, published.base_uri, admin, rpc_url=url)
    assert Web3.is_address(deployment.address())


@pytest.mark.slow
def test_a_1000_token_genesis_end_to_end(tmp_path: Path, models) -> None:
    """The shipped example table (unique over six traits), 1,000 tokens made by two worker processes: generate,
    reveal, publish, resolve every token and its image through the gateway.

    The shipped sprite model at one DDIM step and the tiny random Llama keep it to ~10 CPU-seconds of models."""
    from agent.genesis.traits import load_table

    size, batch = 1000, 100
    table = load_table()
    fast = models.model_copy(update={"image_steps": 1})
    result = run_genesis(
        table,
        size,
        "one-thousand",
        tmp_path / "g",
        models=fast,
        batch_size=batch,
        workers=2,
        sheet_size=16,
        progress=False,
    )
    assert result.assignment is not None and result.generated == size
    assert result.assignment.value_counts() == table.counts(size)
    assert result.timings.workers == 2 and result.timings.threads == 1
    provenance = json.loads((tmp_path / "g" / "provenance.json").read_text())
    assert (
        provenance["provenance_sha256"] == result.provenance_sha256
        and len(provenance["record_sha256"]) == size
    )
    reveal = reveal_genesis(tmp_path / "g", block_number=7, block_hash="0x" + "5e" * 32)
    repo = IpfsRepo(tmp_path / "repo", sync=False)
    published = publish_genesis(tmp_path / "g", repo, reveal=reveal)
    assert published.size == size
    seen_items, combos, pngs = set(), set(), set()
    with NodeServer(repo) as node, httpx.Client(base_url=node.url, timeout=30) as http:
        for token in range(1, size + 1):
            metadata = parse_metadata(http.get(f"/ipfs/{published.dir_cid}/{token}").content)
            item = metadata.receipt["seed"]["token_id"]
            assert (
                item == token_to_item(token, reveal.offset, size) and metadata.name == f"Chrysalis #{token}"
            )
            # the receipt says how the item was made: one thread, the genesis batch as the lore batch, and each
            # image alone through the sprite model (on the CPU its bits must not depend on its batch neighbours)
            runtime = metadata.receipt["lore"]["runtime"]
            assert runtime["threads"] == 1 and runtime["batch_size"] == batch and runtime["prefix_tokens"] > 0
            assert metadata.receipt["image"]["runtime"]["batch_size"] == 1
            seen_items.add(item)
            combos.add(tuple(metadata.traits[t] for t in table.unique))
            pngs.add(metadata.image_cid)
        assert http.get(f"/ipfs/{published.dir_cid}/{size + 1}").status_code == 404
        image = http.get(f"/ipfs/{published.dir_cid}/images/{size}.png")
        item = token_to_item(size, reveal.offset, size)
        assert image.content == (tmp_path / "g" / "images" / f"{item}.png").read_bytes()
    assert seen_items == set(range(size)) and len(combos) == size and len(pngs) > 1


def test_a_malformed_reveal_hash_is_a_clear_error(revealed: Path, genesis_dir: Path, tmp_path: Path) -> None:
    """ux row 80: `--reveal-hash 0xzz` was a ValueError traceback; now a ConfigError naming the flag and the fix."""
    import shutil

    shutil.copytree(genesis_dir, tmp_path / "fresh")
    for bad in ("0xzz", "0x" + "ab" * 31, "ab" * 33):
        with pytest.raises(ConfigError, match="is not a block hash") as e:
            reveal_genesis(tmp_path / "fresh", block_number=100, block_hash=bad)
        assert "64 hex digits" in (e.value.hint or "")
    assert not (tmp_path / "fresh" / "reveal.json").exists()


@pytest.mark.anvil
def test_a_reveal_hash_is_checked_against_the_node(
    chain: DevChain, genesis_dir: Path, tmp_path: Path
) -> None:
    """ux row 81 / A-M4: a --reveal-hash that is not the node's hash of that block is refused and nothing is
    recorded, so the real hash still works afterwards; the right one (any case) is accepted."""
    import shutil

    out = tmp_path / "g"
    shutil.copytree(genesis_dir, out)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    chain.mine()
    block = chain.w3.eth.block_number
    real = "0x" + bytes(chain.w3.eth.get_block(block)["hash"]).hex()
    with pytest.raises(IntegrityError, match=f"is not the hash of block {block}") as e:
        reveal_genesis(out, block_number=block, block_hash="0x" + "00" * 32, rpc_url=url)
    assert "nothing was recorded" in str(e.value) and not (out / "reveal.json").exists()
    reveal = reveal_genesis(out, block_number=block, block_hash=real.upper().replace("0X", "0x"), rpc_url=url)
    assert reveal.block_hash == real and reveal.offset == int(real, 16) % SIZE


# -- the on-chain commit-reveal (security L9) ----------------------------------------------------------------


def _copy(genesis_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    import shutil

    out = tmp_path / "g"
    shutil.copytree(genesis_dir, out)
    return out, json.loads((out / "provenance.json").read_text())["provenance_sha256"]


def _mine(chain: DevChain, blocks: int) -> None:
    chain.rpc("anvil_mine", hex(blocks))


@pytest.mark.anvil
def test_commit_then_reveal_on_chain_end_to_end(chain: DevChain, genesis_dir: Path, tmp_path: Path) -> None:
    """--commit sends commitReveal once (a second commit sends nothing); the reveal waits for the committed block,
    anyone sends reveal(), and the offset is the contract's revealOffset(N), recorded and published with the
    collection's address."""
    out, ours = _copy(genesis_dir, tmp_path)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    deployment, collection = _deployment(chain, tmp_path)
    admin = KeystoreSigner.from_private_key(dev_key(0))
    stranger = KeystoreSigner.from_private_key(dev_key(1))

    with pytest.raises(ConfigError, match="may not commit the genesis reveal .* needs DEFAULT_ADMIN_ROLE"):
        commit_reveal(out, deployment, stranger, rpc_url=url)
    head = chain.w3.eth.block_number
    commitment, confirmation = commit_reveal(out, deployment, admin, rpc_url=url)
    assert confirmation is not None and confirmation.status == 1
    delay = collection.functions.REVEAL_DELAY().call()
    assert commitment.reveal_block == head + delay + COMMIT_MARGIN and commitment.provenance_sha256 == ours
    assert collection.functions.revealCommitment().call() == [
        bytes.fromhex(ours),
        commitment.reveal_block,
        b"\0" * 32,
    ]
    again, none = commit_reveal(out, deployment, admin, rpc_url=url)  # idempotent: nothing is sent
    assert none is None and again.reveal_block == commitment.reveal_block
    assert chain.w3.eth.block_number == confirmation.block_number

    wait = commitment.reveal_block + 1 - chain.w3.eth.block_number
    with pytest.raises(
        RevealNotReadyError, match=f"reveal block {commitment.reveal_block} is not mined yet"
    ) as e:
        reveal_on_chain(out, deployment, rpc_url=url, signer=lambda: stranger)
    assert e.value.retryable and f"wait {wait} more block(s)" in (e.value.hint or "")
    assert not (out / "reveal.json").exists()

    seen: list[int] = []  # --wait: one progress line per poll, the chain mines one block per poll
    reveal = reveal_on_chain(
        out,
        deployment,
        rpc_url=url,
        signer=lambda: stranger,  # anyone may send reveal()
        wait=True,
        on_wait=lambda c: seen.append(c.blocks_to_wait),
        sleep=lambda _s: _mine(chain, 1),
    )
    assert seen == list(range(wait, 0, -1))
    _, block, recorded = collection.functions.revealCommitment().call()
    assert block == commitment.reveal_block and reveal.block_number == block
    assert (
        recorded == bytes(chain.w3.eth.get_block(block)["hash"])
        and reveal.block_hash == "0x" + recorded.hex()
    )
    assert reveal.offset == collection.functions.revealOffset(SIZE).call() == reveal_offset(recorded, SIZE)
    assert reveal.contract == collection.address and reveal.chain_id == chain.w3.eth.chain_id
    assert json.loads((out / "reveal.json").read_text())["contract"] == collection.address

    head = chain.w3.eth.block_number  # rerun: the recorded reveal, nothing sent; wrong flags are refused
    assert reveal_on_chain(out, deployment, rpc_url=url, block_number=block) == reveal
    assert chain.w3.eth.block_number == head
    with pytest.raises(ConfigError, match=f"--reveal-block {block + 1} is not the reveal block {block}"):
        reveal_on_chain(out, deployment, rpc_url=url, block_number=block + 1)
    with pytest.raises(IntegrityError, match="--reveal-hash 0x00.* is not the hash .* recorded"):
        reveal_on_chain(out, deployment, rpc_url=url, block_hash="0x" + "00" * 32)

    published = publish_genesis(out, IpfsRepo(None), reveal=reveal)
    assert published.reveal.offset == reveal.offset


@pytest.mark.anvil
def test_publish_before_commit_is_refused(chain: DevChain, genesis_dir: Path, tmp_path: Path) -> None:
    out, _ = _copy(genesis_dir, tmp_path)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    deployment, _ = _deployment(chain, tmp_path)
    with pytest.raises(ConfigError, match="has no reveal commitment") as e:
        reveal_on_chain(out, deployment, rpc_url=url)
    assert "--commit" in (e.value.hint or "") and not (out / "reveal.json").exists()


@pytest.mark.anvil
def test_another_committed_provenance_is_refused(chain: DevChain, genesis_dir: Path, tmp_path: Path) -> None:
    out, ours = _copy(genesis_dir, tmp_path)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    deployment, collection = _deployment(chain, tmp_path)
    other = "11" * 32
    block = chain.w3.eth.block_number + 20
    chain.transact(collection.functions.commitReveal(bytes.fromhex(other), block))
    admin = KeystoreSigner.from_private_key(dev_key(0))
    with pytest.raises(
        ConfigError, match=f"already committed provenance {other} .*cannot commit {ours}"
    ) as e:
        commit_reveal(out, deployment, admin, rpc_url=url)
    assert "deploy a new collection" in (e.value.hint or "")
    _mine(chain, 25)
    with pytest.raises(ConfigError, match=f"committed provenance {other}, but .* has {ours}"):
        reveal_on_chain(out, deployment, rpc_url=url, signer=lambda: admin)
    assert collection.functions.revealCommitment().call()[2] == b"\0" * 32  # no reveal() was sent for it


@pytest.mark.anvil
def test_a_missed_reveal_block_moves_and_is_reported(
    chain: DevChain, genesis_dir: Path, tmp_path: Path
) -> None:
    """More than 256 blocks late, reveal() re-commits to a fresh future block: the CLI says so and how long to
    wait, and records nothing until that block is revealed."""
    out, _ = _copy(genesis_dir, tmp_path)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    deployment, _ = _deployment(chain, tmp_path)
    admin = KeystoreSigner.from_private_key(dev_key(0))
    commitment, _ = commit_reveal(out, deployment, admin, rpc_url=url)
    _mine(chain, 300)
    with pytest.raises(RevealNotReadyError, match=f"block {commitment.reveal_block} was missed") as e:
        reveal_on_chain(out, deployment, rpc_url=url, signer=lambda: admin)
    assert "wait" in (e.value.hint or "") and not (out / "reveal.json").exists()
    _mine(chain, 11)
    reveal = reveal_on_chain(out, deployment, rpc_url=url, signer=lambda: admin)
    assert reveal.block_number > commitment.reveal_block + 256


@pytest.mark.anvil
def test_a_reveal_without_a_key_says_which_key(chain: DevChain, genesis_dir: Path, tmp_path: Path) -> None:
    out, _ = _copy(genesis_dir, tmp_path)
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    deployment, _ = _deployment(chain, tmp_path)
    commitment, _ = commit_reveal(out, deployment, KeystoreSigner.from_private_key(dev_key(0)), rpc_url=url)
    _mine(chain, commitment.blocks_to_wait)

    def no_key() -> KeystoreSigner:
        raise ConfigError("no agent key configured", hint="set signer.keystore")

    for signer in (None, no_key):
        with pytest.raises(ConfigError, match="is mined, but its hash is not recorded on-chain yet") as e:
            reveal_on_chain(out, deployment, rpc_url=url, signer=signer)
        assert "--keystore" in (e.value.hint or "") and not (out / "reveal.json").exists()
