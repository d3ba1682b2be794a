"""``chrysalis verify`` from a second, empty folder: nothing but the chain's RPC URL, the collection's address and the
embedded node's gateway, against a collection the real agent evolved. Then every link tampered with in turn.

Exit codes: 0 match, 1 mismatch (the differing fields named), 2 cannot reproduce here, 3 bad input or an unreachable
source (a gateway that returns other bytes than a CID names is a source that cannot be used: 3, with the CID named).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from agent.credentials import ContentCredentials, DevCredentials
from agent.domain import PreviousVersion
from agent.generate.factory import load_image_generator
from agent.generate.image.embedded import SHIPPED_DIR
from agent.generate.published import describe_model_dir
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.ops.models import pin_model
from agent.pipeline.generate import ImageSigning
from agent.settings import CredentialsSettings
from agent.studio.app import StudioServer
from agent.studio.service import Studio
from agent.studio.verification import check_stage
from tests.studio.world import World
from tests.support.cli import CliResult, invoke_cli
from tests.verify.conftest import (
    Forger,
    LyingGateway,
    current_cid,
    document,
    public_args,
    receipt_provenance,
)


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    return invoke_cli(capsys, "verify", *args)


def checks_of(out: str) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads(out)["checks"]}


# -- MATCH ------------------------------------------------------------------------------------------------------


def test_a_stranger_verifies_a_token_from_an_empty_folder_through_a_gateway(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "1", *public_args(world, gateway))
    assert r.code == 0, r.text
    head = r.out.splitlines()[0]
    assert head.startswith("token 1 stage 2 (bafkrei") and head.endswith(": MATCH")
    for line in (
        "ok chain.id the node at",
        "ok contract 'Chrysalis' at",
        "ok ipfs.metadata 2 versions fetched by CID",
        "ok chain.provenance request 0x",
        "ok chain.seed the receipt's seed is the request's on-chain seed",
        "ok chain.model modelOf(1) is model 1",
        "ok parent.image the evolution started from the previous version's image",
        "ok metadata.image",
        "ok replay",
    ):
        assert line in r.text, line
    assert f"gateway {gateway}" in r.out  # where the blocks came from
    # nothing of the operator's was needed, and nothing is left behind but the model cache (a portable receipt's
    # replay converts the model there once, as a model fetched by CID is kept there: see the next tests)
    left = sorted(
        str(p.relative_to(empty)) for p in empty.rglob("*") if p.parent in (empty, empty / ".chrysalis")
    )
    assert left in ([], [".chrysalis", ".chrysalis/models"]), left


def test_the_json_report_lists_every_check_and_an_earlier_stage_verifies_too(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "1", "--stage", "1", "--json", *public_args(world, gateway))
    assert r.code == 0, r.text
    report = json.loads(r.out)
    assert report["verdict"] == "match" and report["exit_code"] == 0 and report["stage"] == 1
    assert report["chain_id"] == world.chain.deployment.chain_id
    assert report["contract"] == world.chain.deployment.address()
    checks = checks_of(r.out)
    assert checks["parent.image"] == "ok" and checks["history.onchain"] == "ok" and checks["replay"] == "ok"
    assert checks["credentials"] in ("ok", "skipped")
    assert {
        "chain.provenance",
        "metadata.image",
        "image.output.pixels_sha256",
        "input_snapshot_sha256",
    } <= set(report["checked"])


def test_a_fused_token_and_a_refreshed_token_verify(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify(capsys, "6", *public_args(world, gateway)).code == 0
    r = verify(capsys, "9", "--json", *public_args(world, gateway))  # a refresh's first render, stage 0
    assert r.code == 0, r.text
    report = json.loads(r.out)
    refresh = next(c for c in report["checks"] if c["name"] == "chain.provenance")
    assert "refresh in tx" in refresh["detail"] and "batch of 1 token" in refresh["detail"]
    assert checks_of(r.out)["chain.seed"] == "ok"  # a refresh's seed: the hash of its block


def test_through_a_kubo_rpc_api_too(
    world: World,
    repo: IpfsRepo,
    empty: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with NodeServer(repo) as node:
        args = public_args(world, "unused")[:-2] + ["--ipfs-api", node.rpc_url]
        refused = verify(capsys, "2", *args)
        assert refused.code == 3 and "needs 'Authorization: Bearer <token>'" in refused.text
        monkeypatch.setenv("CHRYSALIS_KUBO_API_TOKEN", node.token)
        r = verify(capsys, "2", *args)
    assert r.code == 0, r.text
    assert f"IPFS API {node.rpc_url}" in r.out


def test_through_the_studios_read_only_gateway_as_after_make_demo(
    world: World, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The studio mounts the embedded gateway at /ipfs/ (safe types, no CAR): raw blocks are all verify needs."""
    settings = world.settings.model_copy(
        update={"studio": world.settings.studio.model_copy(update={"review": False})}
    )
    studio = Studio.from_settings(settings)
    try:
        with StudioServer(studio, port=0) as server:
            r = verify(capsys, "8", *public_args(world, server.url))
    finally:
        studio.close()
    assert r.code == 0, r.text
    assert f"gateway {server.url}" in r.out


def test_the_operators_verify_and_the_studios_verify_take_the_same_path(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the operator's settings (no --contract): the record's chain and address, the agent's repo as source."""
    s = world.settings
    monkeypatch.chdir(tmp_path)
    for key, value in {
        "CHRYSALIS_DATA_DIR": s.data_dir,
        "CHRYSALIS_CHAIN__RPC_URL": s.chain.rpc_url,
        "CHRYSALIS_CHAIN__DEPLOYMENT": s.chain.deployment,
        "CHRYSALIS_MODELS__CACHE_DIR": s.models.cache_dir,
    }.items():
        monkeypatch.setenv(key, str(value))
    r = verify(capsys, "8", "--json")
    assert r.code == 0, r.text
    cli = json.loads(r.out)
    assert f"repo {s.ipfs_repo}" in cli["note"]
    studio = Studio.from_settings(s)
    try:
        result = check_stage(studio.catalog, 8, cache_dir=s.models.cache_dir).to_json()
    finally:
        studio.close()
    assert [(c["name"], c["status"]) for c in result["checks"]] == [
        (c["name"], c["status"]) for c in cli["checks"]
    ]
    assert result["checked"] == cli["checked"] and result["verdict"] == cli["verdict"] == "match"


# -- tampering: each link in turn --------------------------------------------------------------------------------


def test_a_gateway_that_returns_other_bytes_for_the_metadata_is_caught(
    world: World, lying_gateway: LyingGateway, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = current_cid(world, 2)
    lying_gateway.lie_about.add(cid)
    r = verify(capsys, "2", *public_args(world, lying_gateway.url))
    assert r.code == 3, r.text
    assert f"fetching metadata {cid} of token 2" in r.text and "do not hash to" in r.text
    assert "a gateway is never trusted" in r.text  # the hint


def test_a_gateway_that_returns_other_bytes_for_the_parent_image_is_caught(
    world: World, repo: IpfsRepo, lying_gateway: LyingGateway, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = document(repo, document(repo, current_cid(world, 1))["properties"]["parent"])
    image = parent["image"].removeprefix("ipfs://")
    lying_gateway.lie_about.add(image)
    r = verify(capsys, "1", *public_args(world, lying_gateway.url))
    assert r.code == 3, r.text
    assert f"fetching the previous image {image}" in r.text and "do not hash to" in r.text


def test_a_receipt_that_is_not_the_one_committed_on_chain_is_a_mismatch_naming_the_fields(
    world: World, forger: Forger, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = forger.forge(11, 0, forger.inputs_of(8, 1))
    committed = receipt_provenance(forged.doc)  # the operator commits to the real receipt...
    forged.doc["properties"]["receipt"]["lore"]["output"]["text"] = (
        "A story nobody generated."  # ...publishes another
    )
    forger.fulfil(forged, provenance=committed)
    r = verify(capsys, "11", "--json", *public_args(world, gateway))
    assert r.code == 1, r.text
    report = json.loads(r.out)
    fields = {m["field"] for m in report["mismatches"]}
    assert {"chain.provenance", "metadata.description", "lore.output.text"} <= fields
    assert report["verdict"] == "mismatch"
    assert checks_of(r.out)["chain.seed"] == "ok" and checks_of(r.out)["metadata.image"] == "ok"


def test_the_version_made_the_agents_way_matches_before_any_change(
    world: World, forger: Forger, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The forger's own baseline: untouched, its versions verify (so the mismatches above are the changes')."""
    forged = forger.forge(12, 0, forger.inputs_of(8, 1))
    forger.fulfil(forged)
    r = verify(capsys, "12", *public_args(world, gateway))
    assert r.code == 0, r.text


def test_an_evolution_that_did_not_start_from_the_previous_image_is_a_mismatch(
    world: World,
    repo: IpfsRepo,
    forger: Forger,
    gateway: str,
    empty: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Token 4 evolves to stage 3 from another token's picture while its metadata names its stage 2 as parent."""
    current = current_cid(world, 4)
    mine = document(repo, current)
    other = document(repo, current_cid(world, 2))["image"].removeprefix("ipfs://")
    previous = PreviousVersion(current, other, {a["trait_type"]: a["value"] for a in mine["attributes"]
                                                if a["trait_type"] != "stage"}, 2)  # fmt: skip
    forged = forger.forge(4, 0, forger.inputs_of(4, 2), previous=previous)
    forger.fulfil(forged)
    r = verify(capsys, "4", *public_args(world, gateway))
    assert r.code == 1, r.text
    assert "FAIL parent.image the receipt started from image " + other in r.text
    assert f"shows {mine['image'].removeprefix('ipfs://')}" in r.text
    assert "MISMATCH: parent.image;" in r.text  # the replay itself reproduces it: only the link is wrong
    assert "ok chain.provenance" in r.text and "ok history.onchain" in r.text


def test_a_model_that_is_not_here_cannot_be_reproduced_and_a_changed_weight_byte_is_a_mismatch(
    world: World,
    forger: Forger,
    gateway: str,
    empty: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Token 10's version names an image model registered on-chain but not shipped here (and not on IPFS)."""
    forged = forger.forge(10, 1, forger.inputs_of(8, 1))
    other = "ab" * 32
    forged.doc["properties"]["receipt"]["image"]["model"]["weights_sha256"] = other
    forged.doc["properties"]["models"]["image"]["weights_sha256"] = other
    chain = world.chain
    f = chain.collection.functions
    with world.lock:
        chain.transact(f.registerModel(bytes.fromhex(other), "chrysalis/elsewhere@1"), chain.admin)
        chain.transact(f.setActiveModel(int(f.modelCount().call())), chain.admin)
    try:
        forger.fulfil(forged)
    finally:
        with world.lock:
            chain.transact(f.setActiveModel(1), chain.admin)
    r = verify(capsys, "10", *public_args(world, gateway))
    assert r.code == 2, r.text
    assert "NOT REPRODUCIBLE HERE" in r.out and "CANNOT REPRODUCE HERE: the image model" in r.out
    assert f"(weights sha256 {other}) is not the one shipped" in r.out and "ok chain.model" in r.text
    assert "hint:" in r.out and "--image-model" in r.out

    # the shipped model given as its location: it loads, and its weights are not the receipt's
    r = verify(capsys, "10", "--image-model", str(SHIPPED_DIR), *public_args(world, gateway))
    assert r.code == 1, r.text
    assert "image.model.weights_sha256" in r.text and other in r.text


def test_a_model_published_on_ipfs_is_fetched_by_the_registrys_cid_and_replayed(
    world: World,
    repo: IpfsRepo,
    forger: Forger,
    gateway: str,
    empty: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Token 15 evolves with another sprite model, published as an IPFS directory (`chrysalis model publish`'s
    pinning) and registered by its ``ipfs://`` URI; a stranger's verify fetches it through the gateway alone into
    the model cache (every block, every file, the weights against the registry) and replays with it. Token 16's
    receipt names weights that the registry points at another directory for: a mismatch naming the weights."""
    other = _tampered_sprites(tmp_path, rewrite_manifest=True)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model_id"] = "chrysalis/sprites-32@2"
    (other / "manifest.json").write_text(json.dumps(manifest))
    pinned = pin_model(repo, describe_model_dir(other, kind="image", backend="embedded"))
    image = load_image_generator(world.settings.models.model_copy(update={"image_model": str(other)}))
    weights = image.model_ref.weights_sha256
    assert weights == manifest["weights_sha256"]
    chain = world.chain
    f = chain.collection.functions
    with world.lock:
        chain.transact(f.registerModel(bytes.fromhex(weights), pinned.uri), chain.admin)
        chain.transact(f.setActiveModel(int(f.modelCount().call())), chain.admin)
    try:
        forger.fulfil(forger.forge(15, 0, forger.inputs_of(8, 1), image=image))
        lying = forger.forge(16, 0, forger.inputs_of(8, 1), image=image)
        claimed = "cd" * 32  # the receipt claims weights the registry points at the same directory for
        lying.doc["properties"]["receipt"]["image"]["model"]["weights_sha256"] = claimed
        lying.doc["properties"]["models"]["image"]["weights_sha256"] = claimed
        with world.lock:
            chain.transact(f.registerModel(bytes.fromhex(claimed), pinned.uri), chain.admin)
            chain.transact(f.setActiveModel(int(f.modelCount().call())), chain.admin)
        forger.fulfil(lying)
    finally:
        with world.lock:
            chain.transact(f.setActiveModel(1), chain.admin)
    r = verify(capsys, "15", *public_args(world, gateway))
    assert r.code == 0, r.text
    assert f"image model: {pinned.uri} (model " in r.text and "fetched into the model cache" in r.text
    assert (empty / ".chrysalis" / "models" / "ipfs" / str(pinned.cid)).is_dir()
    r = verify(capsys, "16", *public_args(world, gateway))
    assert r.code == 1, r.text
    assert "FAIL image.model.weights_sha256 the model the registry publishes at " + pinned.uri in r.text


def _tampered_sprites(tmp_path: Path, *, rewrite_manifest: bool) -> Path:
    copy = tmp_path / "sprites"
    shutil.copytree(SHIPPED_DIR, copy, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    weights = copy / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    if rewrite_manifest:  # a consistent copy of a different model
        manifest = json.loads((copy / "manifest.json").read_text())
        digest = hashlib.sha256(bytes(data)).hexdigest()
        manifest["weights_sha256"] = manifest["files"][weights.name] = digest
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_one_changed_weight_byte_is_a_mismatch_naming_the_weights_digest(
    world: World, gateway: str, empty: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "8", "--image-model", str(_tampered_sprites(tmp_path, rewrite_manifest=True)),
               *public_args(world, gateway))  # fmt: skip
    assert r.code == 1, r.text
    assert "image.model.weights_sha256" in r.text


def test_weights_that_do_not_match_their_own_manifest_cannot_be_loaded_here(
    world: World, gateway: str, empty: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "8", "--image-model", str(_tampered_sprites(tmp_path, rewrite_manifest=False)),
               *public_args(world, gateway))  # fmt: skip
    assert r.code == 2, r.text
    assert "CANNOT REPRODUCE HERE: the receipt's image model" in r.out and "cannot be loaded here" in r.out


def test_a_changed_lore_weight_byte_is_a_mismatch_naming_the_weights_digest(
    world: World, gateway: str, empty: Path, tmp_path: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "lm"
    shutil.copytree(tiny_lm, copy)
    (weights,) = copy.glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    r = verify(capsys, "2", "--lore-model", str(copy), *public_args(world, gateway))
    assert r.code == 1, r.text
    assert "lore.model.weights_sha256" in r.text


# -- bad input and unreachable sources: exit 3 ------------------------------------------------------------------


def test_a_node_of_another_chain_than_expected_is_refused(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = public_args(world, gateway)
    args[args.index("--chain-id") + 1] = "1"
    r = verify(capsys, "1", *args)
    assert r.code == 3, r.text
    assert (
        f"serves chain {world.chain.deployment.chain_id}, but --chain-id is 1" in r.text and "hint:" in r.text
    )


def test_the_operators_record_of_another_chain_is_refused(
    world: World,
    gateway: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = json.loads(world.chain.record.read_text())
    record["chain_id"] = 1
    chain1 = world.chain.record.parent / "chain-1.json"
    chain1.write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", world.chain.url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(chain1))
    r = verify(capsys, "1", "--gateway", gateway)
    assert r.code == 3, r.text
    assert f"serves chain 31337, but deployment record {chain1} is for chain 1" in r.text


@pytest.mark.parametrize(
    ("token", "expect"),
    [
        ("99", "token 99 does not exist (the collection has minted 16)"),
        ("7", "token 7 was burnt"),
        ("13", "token 13 has no metadata yet"),  # 13 never evolves
        ("x", "TOKEN 'x' is not a whole number"),
    ],
)
def test_tokens_that_cannot_be_verified(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str], token: str, expect: str
) -> None:
    r = verify(capsys, token, *public_args(world, gateway))
    assert r.code == 3 and expect in r.text and "hint:" in r.text, r.text


def test_a_stage_the_token_never_had(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "1", "--stage", "5", *public_args(world, gateway))
    assert r.code == 3 and "token 1 has no stage 5" in r.text and "its timeline has stages 1, 2" in r.text


def test_a_cid_no_gateway_has(
    world: World, empty_gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "2", *public_args(world, empty_gateway))
    assert r.code == 3, r.text
    cid = current_cid(world, 2)
    assert f"no source has block {cid}" in r.text and "HTTP 404" in r.text and "hint:" in r.text


def test_a_gateway_that_never_answers_times_out_with_a_clear_message(
    world: World, silent_gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "2", "--timeout", "1", *public_args(world, silent_gateway))
    assert r.code == 3, r.text
    assert f"no gateway answered for CID {current_cid(world, 2)} within 1 s" in r.text
    assert "--timeout" in r.text  # the hint


@pytest.mark.parametrize("kind", ["closed port", "not JSON-RPC"])
def test_a_bad_rpc_url(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    args = public_args(world, gateway)
    args[args.index("--rpc") + 1] = "http://127.0.0.1:9" if kind == "closed port" else gateway
    r = verify(capsys, "1", *args)
    assert r.code == 3, r.text
    expect = (
        "cannot reach the node at http://127.0.0.1:9" if kind == "closed port" else "did not answer JSON-RPC"
    )
    assert expect in r.text and "hint:" in r.text


def test_an_address_that_is_not_a_living_collection(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = public_args(world, gateway)
    args[args.index("--contract") + 1] = world.chain.deployment.address("DevPriceFeed")
    r = verify(capsys, "1", *args)
    assert r.code == 3 and "is not a LivingCollection" in r.text, r.text
    args[args.index("--contract") + 1] = world.chain.holders[0]
    r = verify(capsys, "1", *args)
    assert r.code == 3 and "no contract at" in r.text, r.text


def test_no_config_no_record_and_no_contract_says_what_to_pass(
    world: World, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = verify(capsys, "1", "--rpc", world.chain.url)
    assert r.code == 3 and "no deployment record at" in r.text and "--contract ADDRESS" in r.text, r.text


# -- Content Credentials ----------------------------------------------------------------------------------------


def test_signed_images_verify_with_their_content_credentials(
    world: World,
    gateway: str,
    dev_credentials: DevCredentials,
    empty: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # stage 2 (the agent's; a test above forges a stage 3): an evolution of a signed image
    r = verify(capsys, "4", "--stage", "2", "--json", *public_args(world, gateway))
    assert r.code == 0, r.text
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    assert checks["credentials"]["status"] == "ok", checks["credentials"]
    assert "on no trust list given here" in checks["credentials"]["detail"]
    image = checks["metadata.image"]["detail"]
    assert (
        "has the receipt's pixels (its PNG bytes differ" in image
    )  # the signed PNG is not the receipt's bytes
    anchors = str(dev_credentials.trust_anchors)
    trusted = verify(capsys, "4", "--stage", "2", "--trust-anchors", anchors, *public_args(world, gateway))
    assert trusted.code == 0 and "a trusted signer" in trusted.text, trusted.text
    unsigned = verify(capsys, "2", *public_args(world, gateway))  # made before the agent had credentials
    assert unsigned.code == 0 and "-- credentials no Content Credentials in the image" in unsigned.text


def test_credentials_that_claim_another_chain_are_a_mismatch(
    world: World,
    forger: Forger,
    dev_credentials: DevCredentials,
    gateway: str,
    empty: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    signer = ContentCredentials.from_settings(CredentialsSettings(**dev_credentials.settings()))
    forged = forger.forge(
        14, 0, forger.inputs_of(8, 1), signing=ImageSigning(signer, 1, world.chain.deployment.address())
    )
    forger.fulfil(forged)
    r = verify(capsys, "14", *public_args(world, gateway))
    assert r.code == 1, r.text
    assert (
        "FAIL credentials the image's Content Credentials do not hold: chain_id: expected 31337, got 1"
        in r.text
    )
