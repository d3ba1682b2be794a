"""Each stage on its own: rules, inputs at the request's block (anvil), generation (shipped sprite model and a
tiny random LM), publishing through the Replicator, and settling a request from the chain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.credentials import (
    ContentCredentials,
    CredentialClaim,
    create_dev_credentials,
    has_manifest,
    inspect_png,
    png_pixels_sha256,
    strip_manifest,
)
from agent.domain import (
    Artwork,
    Inputs,
    PreviousVersion,
    Published,
    TokenFacts,
    snapshot_from_json,
)
from agent.errors import RetryableError
from agent.generate.factory import load_image_generator, load_lore_writer
from agent.generate.verify import verify
from agent.ipfs.backends import EmbeddedBackend, KuboBackend, Replicator
from agent.ipfs.errors import ReplicationError
from agent.ipfs.repo import IpfsRepo
from agent.metadata import MetadataSchemaError, parse_metadata
from agent.pipeline.assets import AssetStore
from agent.pipeline.collection import CollectionReader
from agent.pipeline.errors import PreviousMetadataMissingError, SourceOrphanedError
from agent.pipeline.generate import GenerateStage, ImageSigning
from agent.pipeline.inputs import InputsStage
from agent.pipeline.publish import PublishStage, TokenViewer
from agent.pipeline.request import EvolutionRequest
from agent.pipeline.submit import Ready, Settler
from agent.pipeline.traits import FUSION_FACT, FUSION_STRENGTH, evaluate_traits
from agent.rules import load_rules
from agent.settings import ModelSettings
from agent.watch.rpc import RpcClient
from oracles.chainlink import ChainlinkOracle
from oracles.wallet import WalletOracle
from tests.support.devchain import CollectionChain
from tests.support.inputs import input_snapshot

# -- rules ----------------------------------------------------------------------------------------------------


def test_rules_step_is_deterministic_and_a_fusion_adds_its_fact_and_repaints_more() -> None:
    engine = load_rules()
    previous = {
        "aura": "faint",
        "element": "earth",
        "form": "chrysalis",
        "mood": "radiant",
        "species": "chrysalid",
    }
    plain = evaluate_traits(engine, input_snapshot(), stage=3, token_id=1, previous=previous)
    again = evaluate_traits(engine, input_snapshot(), stage=3, token_id=1, previous=previous)
    fused = evaluate_traits(engine, input_snapshot(), stage=3, token_id=1, previous=previous, fused=True)

    assert plain == again
    assert plain.traits["mood"] == "radiant" and plain.traits["form"] == "imago"
    assert plain.changed == ("form",) and plain.strength == 0.5  # by_stage[3]
    assert "fusion" not in plain.facts
    assert fused.facts["fusion"] == FUSION_FACT and fused.strength == FUSION_STRENGTH
    assert fused.traits == plain.traits and fused.rules_sha256 == engine.sha256


def test_request_payload_and_snapshot_records_round_trip() -> None:
    snapshot = input_snapshot()
    assert snapshot_from_json(snapshot.to_json()).sha256 == snapshot.sha256
    request = EvolutionRequest(2**32 + 1, 1, "0x" + "11" * 20, 0, "0x" + "22" * 32, 9, "0xabc", "0xdef", 3, 5)
    assert EvolutionRequest.from_payload(request.to_payload()) == request
    assert request.stage == 1
    task = request.task()
    assert (task.token_id, task.stage, task.seed, task.block_number) == (1, 1, request.seed, 9)
    assert task.fused_burn_id == 5 and task.seed_bytes == request.seed_bytes


def test_every_arrow_round_trips_through_the_json_a_job_stores() -> None:
    previous = PreviousVersion("bafkreiparent", "bafkreiimage", {"mood": "serene"}, 1)
    inputs = _inputs_record(2, previous)
    assert Inputs.from_json(inputs.to_json()) == inputs
    # the exact shape earlier releases stored (old records must still load)
    assert set(inputs.to_json()) == {"snapshot", "snapshot_sha256", "token", "rules"}
    assert inputs.to_json()["token"] == {
        "name": "Chrysalis #2", "stage": 2, "fused_burn_id": None, "previous": previous.to_json()
    }  # fmt: skip
    artwork = Artwork("bafkreiimg", "ab" * 32, "lore", {"seed": {"onchain_seed": "0x" + "11" * 32}})
    assert Artwork.from_json(artwork.to_json()) == artwork
    assert artwork.to_json()["provenance"] == "0x" + artwork.receipt_sha256
    published = Published(
        "bafkreimeta", "0x" + "cd" * 32, "bafkreiimg", "ipfs://bafkreimeta", artwork.provenance
    )
    assert Published.from_json(published.to_json()) == published


# -- inputs (anvil) -----------------------------------------------------------------------------------------------


@pytest.fixture
def reader(chain: CollectionChain) -> CollectionReader:
    return CollectionReader(RpcClient(chain.url, retries=0), chain.collection.address)


@pytest.fixture
def repo(tmp_path: Path) -> IpfsRepo:
    return IpfsRepo(tmp_path / "ipfs", sync=False)


def _inputs(chain: CollectionChain, reader: CollectionReader, repo: IpfsRepo) -> InputsStage:
    oracles = [WalletOracle(from_block=0), ChainlinkOracle(chain.feed.address, window_s=3_600)]
    return InputsStage(reader, oracles, load_rules(), repo, collection_name=reader.name())


def test_inputs_are_read_at_the_request_block_whatever_happens_later(
    chain: CollectionChain, reader: CollectionReader, repo: IpfsRepo
) -> None:
    stage = _inputs(chain, reader, repo)
    request = chain.open_request(1)
    first = stage.run(request.task())
    # Later: the holder gives another token away; the request's inputs do not move.
    chain.transact(
        chain.collection.functions.transferFrom(chain.holders[0], chain.holders[1], 2), chain.holders[0]
    )
    again = stage.run(request.task())

    assert first == again
    snapshot = first.snapshot
    values = snapshot.values()
    assert snapshot.block_number == request.block_number and snapshot.block_hash == request.block_hash
    assert first.to_json()["snapshot_sha256"] == snapshot.sha256
    assert values["wallet.tokens_held"] == 8 and values["context.token_id"] == 1
    assert values["price.change_pct"] == 5.0
    assert first.token == TokenFacts(name="Chrysalis #1", stage=1, fused_burn_id=None, previous=None)
    assert first.rules.traits["mood"] == "radiant" and first.rules.traits["form"] == "larva"


def test_inputs_of_an_orphaned_block_are_refused_as_retryable(
    chain: CollectionChain, reader: CollectionReader, repo: IpfsRepo
) -> None:
    before = chain.rpc("evm_snapshot")
    request = chain.open_request(1)
    chain.rpc("evm_revert", before)
    chain.mine(2)
    with pytest.raises(SourceOrphanedError) as err:
        _inputs(chain, reader, repo).run(request.task())
    assert isinstance(err.value, RetryableError) and f"#{request.block_number}" in str(err.value)


def test_a_token_whose_current_metadata_is_not_in_the_repo_is_a_clear_error(
    chain: CollectionChain, reader: CollectionReader, repo: IpfsRepo
) -> None:
    f = chain.collection.functions
    first = chain.open_request(1)
    chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin), chain.admin)
    chain.transact(
        f.fulfillEvolution(first.request_id, first.seed_bytes, b"\x42" * 32, bytes(32)), chain.admin
    )
    with pytest.raises(PreviousMetadataMissingError) as err:
        _inputs(chain, reader, repo).run(chain.open_request(1).task())
    assert err.value.cid in str(err.value) and "chrysalis retry" in (err.value.hint or "")


# -- generate and publish ------------------------------------------------------------------------------------------


@pytest.fixture
def models(tiny_lm: Path, tmp_path: Path) -> tuple:
    settings = ModelSettings(
        lore_backend="transformers", lore_model=str(tiny_lm), lore_max_new_tokens=12, device="cpu", threads=1,
        cache_dir=tmp_path / "models",
    )  # fmt: skip
    return load_image_generator(settings), load_lore_writer(settings)


def _inputs_record(token_id: int, previous: PreviousVersion | None) -> Inputs:
    engine = load_rules()
    snapshot = input_snapshot(**{"context.token_id": token_id})
    stage = 2 if previous else 1
    return Inputs(
        snapshot=snapshot,
        token=TokenFacts(name=f"Chrysalis #{token_id}", stage=stage, previous=previous),
        rules=evaluate_traits(
            engine, snapshot, stage=stage, token_id=token_id, previous=previous.traits if previous else None
        ),
    )


def test_generate_batches_evolutions_starts_from_the_previous_image_and_writes_verifiable_receipts(
    models: tuple, repo: IpfsRepo, tmp_path: Path
) -> None:
    image, lore = models
    assets = AssetStore(tmp_path / "assets")
    stage = GenerateStage(image, lore, repo, assets)
    fresh = EvolutionRequest(2**32 + 1, 1, "0x" + "11" * 20, 0, "0x" + "5a" * 32, 9, "0xa", "0xb", 0)
    (first,) = stage.run([(fresh.task(), _inputs_record(1, None))])
    previous = PreviousVersion(metadata_cid="", image_cid=first.image_cid, traits={"mood": "serene"}, stage=1)
    evolving = EvolutionRequest(2**33 + 1, 2, "0x" + "11" * 20, 1, "0x" + "5b" * 32, 9, "0xa", "0xc", 1)
    outputs = stage.run(
        [(fresh.task(), _inputs_record(1, None)), (evolving.task(), _inputs_record(2, previous))]
    )

    assert outputs[0].png_sha256 == first.png_sha256  # same request, same bits
    second = outputs[1]
    png = b"".join(repo.cat(second.image_cid))
    assert hashlib.sha256(png).hexdigest() == second.png_sha256 and repo.is_pinned(second.image_cid)
    assert (tmp_path / "assets" / "2" / "2.png").read_bytes() == png
    request = second.receipt["image"]["request"]
    assert request["init_image_cid"] == first.image_cid and request["strength"] is not None
    assert second.provenance == "0x" + second.receipt_sha256
    result = verify(dict(second.receipt), init_image_loader=lambda sha, cid: b"".join(repo.cat(cid)))
    assert result.match, result.mismatches


def test_signed_images_carry_content_credentials_and_still_replay_from_their_receipts(
    models: tuple, repo: IpfsRepo, tmp_path: Path
) -> None:
    image, lore = models
    dev = create_dev_credentials(tmp_path / "credentials")
    signer = ContentCredentials.from_files(
        dev.key_file, dev.certificate_chain, trust_anchors=dev.trust_anchors
    )
    contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    stage = GenerateStage(
        image, lore, repo, AssetStore(tmp_path / "assets"), signing=ImageSigning(signer, 31337, contract)
    )
    fresh = EvolutionRequest(2**32 + 1, 1, "0x" + "11" * 20, 0, "0x" + "5a" * 32, 9, "0xa", "0xb", 0)
    (first,) = stage.run([(fresh.task(), _inputs_record(1, None))])
    previous = PreviousVersion(metadata_cid="", image_cid=first.image_cid, traits={"mood": "serene"}, stage=1)
    evolving = EvolutionRequest(2**33 + 1, 1, "0x" + "11" * 20, 1, "0x" + "5b" * 32, 9, "0xa", "0xc", 1)
    (second,) = stage.run([(evolving.task(), _inputs_record(2, previous))])

    model = image.model_ref
    for artwork, token_stage, ingredients in ((first, 1, ()), (second, 2, (f"ipfs://{first.image_cid}",))):
        png = b"".join(repo.cat(artwork.image_cid))
        # the published file is the signed one ...
        assert hashlib.sha256(png).hexdigest() == artwork.png_sha256 and has_manifest(png)
        report = inspect_png(png, trust_anchors=dev.trust_anchors)
        assert report.valid and report.trusted and report.problems == (), report.problems
        assert report.claim == CredentialClaim(
            chain_id=31337, contract=contract, token_id=1, stage=token_stage,
            receipt_sha256=artwork.receipt_sha256, weights_sha256=model.weights_sha256, model_id=model.model_id,
        )  # fmt: skip
        assert report.ingredients == ingredients
        # ... and the receipt still hashes what the model made: the unsigned PNG and its pixels
        output = artwork.receipt["image"]["output"]
        assert hashlib.sha256(strip_manifest(png)).hexdigest() == output["png_sha256"] != artwork.png_sha256
        assert (
            png_pixels_sha256(png, width=output["width"], height=output["height"]) == output["pixels_sha256"]
        )
    request = second.receipt["image"]["request"]
    signed_parent = b"".join(repo.cat(first.image_cid))
    # the evolution started from the bytes the parent was published as, signed
    assert request["init_image_sha256"] == hashlib.sha256(signed_parent).hexdigest()
    result = verify(dict(second.receipt), init_image_loader=lambda sha, cid: b"".join(repo.cat(cid)))
    assert result.match, result.mismatches  # signing never breaks replay


@pytest.mark.slow  # the unreachable Kubo backend's own retries take a few seconds
def test_publish_stores_the_metadata_as_one_raw_block_only_once_replicated(
    models: tuple, repo: IpfsRepo, tmp_path: Path
) -> None:
    image, lore = models
    assets = AssetStore(tmp_path / "assets")
    request = EvolutionRequest(2**32 + 1, 1, "0x" + "11" * 20, 0, "0x" + "5a" * 32, 9, "0xa", "0xb", 0)
    inputs = _inputs_record(1, None)
    (generated,) = GenerateStage(image, lore, repo, assets).run([(request.task(), inputs)])
    infos = {"image": image.model_ref, "lore": lore.model_ref}

    replicated = Replicator([EmbeddedBackend(repo)], required=1, source=repo)
    record = PublishStage(repo, replicated, assets, infos).run(request.task(), inputs, generated)
    data = repo.block_get(record.metadata_cid)
    assert record.digest == "0x" + hashlib.sha256(data).hexdigest()
    metadata = parse_metadata(data, cid=record.metadata_cid)
    assert metadata.description == generated.lore and metadata.image_cid == generated.image_cid
    assert metadata.receipt == generated.receipt and metadata.parent is None
    assert (tmp_path / "assets" / "1" / "1.json").read_bytes() == data
    assert repo.is_pinned(record.metadata_cid)

    unreachable = KuboBackend("/ip4/127.0.0.1/tcp/1/http")
    strict = Replicator([EmbeddedBackend(repo), unreachable], required=2, source=repo)
    with pytest.raises(ReplicationError) as err:
        PublishStage(repo, strict, assets, infos).run(request.task(), inputs, generated)
    assert err.value.retryable and "1 of 2 backends confirmed" in str(err.value)


def test_with_a_viewer_the_animation_url_names_the_core_document_pinned_beside_the_metadata(
    models: tuple, repo: IpfsRepo, tmp_path: Path
) -> None:
    """A document cannot hold its own CID: ``animation_url`` names the same metadata without the link (the core),
    which is pinned too; the on-chain digest stays the full document's."""
    image, lore = models
    assets = AssetStore(tmp_path / "assets")
    request = EvolutionRequest(2**32 + 1, 1, "0x" + "11" * 20, 0, "0x" + "5a" * 32, 9, "0xa", "0xb", 0)
    inputs = _inputs_record(1, None)
    (generated,) = GenerateStage(image, lore, repo, assets).run([(request.task(), inputs)])
    site = "bafybeicukhhco7jnpsh47uh5r2yj6feopnbqwo374mhijlob6efcyvlrri"
    replicated = Replicator([EmbeddedBackend(repo)], required=1, source=repo)
    extra = repo.add_raw_block(b'{"format": "chrysalis-rules/1"}', pin=False)  # what the link needs besides
    viewer = TokenViewer(lambda core: f"ipfs://{site}/?token={core}&model=bafymodel", ((extra, "rules"),))
    stage = PublishStage(
        repo, replicated, assets, {"image": image.model_ref, "lore": lore.model_ref}, viewer=viewer
    )
    assert not repo.is_pinned(extra)
    record = stage.run(request.task(), inputs, generated)
    assert repo.is_pinned(extra)  # replicated with the first metadata that links to it
    data = repo.block_get(record.metadata_cid)
    assert record.digest == "0x" + hashlib.sha256(data).hexdigest()
    metadata = parse_metadata(data, cid=record.metadata_cid)
    core_cid = metadata.animation_url.split("token=")[1].split("&")[0] if metadata.animation_url else ""
    assert metadata.animation_url == f"ipfs://{site}/?token={core_cid}&model=bafymodel"
    core = parse_metadata(repo.block_get(core_cid), cid=core_cid)
    assert core.animation_url is None and core == metadata.core()
    assert core.to_json() == {k: v for k, v in metadata.to_json().items() if k != "animation_url"}
    assert repo.is_pinned(core_cid) and repo.is_pinned(record.metadata_cid)
    # the same inputs give the same documents (the metadata is deterministic from the recorded stages)
    assert stage.metadata(request.task(), inputs, generated) == data
    # a bad link is refused when read back, naming the field
    bad = json.loads(data)
    bad["animation_url"] = "javascript:alert(1)"
    with pytest.raises(MetadataSchemaError, match="animation_url"):
        parse_metadata(json.dumps(bad).encode())


# -- settling from the chain ---------------------------------------------------------------------------------------


def test_the_settler_reads_what_became_of_a_request_from_the_chain(
    chain: CollectionChain, reader: CollectionReader
) -> None:
    f = chain.collection.functions
    settler = Settler(reader, chain.agent)
    pending = chain.open_request(1)
    ours = Ready(1, pending, b"\x33" * 32, bytes(32))
    assert settler.settle(ours).action == "pending"

    chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin), chain.admin)
    chain.transact(
        f.fulfillEvolution(pending.request_id, pending.seed_bytes, b"\x33" * 32, bytes(32)), chain.admin
    )
    other = settler.settle(ours)
    assert other.action == "cancel" and chain.admin in (other.reason or "")

    by_agent = Settler(reader, chain.admin).settle(ours)  # as if the admin were this agent
    assert by_agent.action == "confirm" and by_agent.result["digest"] == "0x" + "33" * 32

    before = chain.rpc("evm_snapshot")
    gone = chain.open_request(2)
    chain.rpc("evm_revert", before)
    assert settler.settle(Ready(2, gone, b"\x44" * 32, bytes(32))).action == "cancel"
