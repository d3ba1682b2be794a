"""``chrysalis verify`` and ``chrysalis review`` against the evolved collection (in-process, env-configured)."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.metadata import build_metadata, metadata_digest
from agent.review import ReviewState
from agent.studio.service import Studio
from tests.studio.world import World, candidate_from_token


@pytest.fixture
def env(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    s = world.settings
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    monkeypatch.chdir(world.root)  # no ./chrysalis.toml here
    for key, value in {
        "CHRYSALIS_DATA_DIR": s.data_dir,
        "CHRYSALIS_CHAIN__RPC_URL": s.chain.rpc_url,
        "CHRYSALIS_CHAIN__DEPLOYMENT": s.chain.deployment,
        "CHRYSALIS_DATABASE__URL": s.database.url,
        "CHRYSALIS_MODELS__CACHE_DIR": s.models.cache_dir,
    }.items():
        monkeypatch.setenv(key, str(value))
    return world


def run(*args: str) -> tuple[int, str]:
    from agent.errors import ChrysalisError, exit_code_of

    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, ChrysalisError):  # what agent.cli.main prints before exiting
        code = exit_code_of(result.exception)
        return code, result.output + f"error: {result.exception.message}\nhint: {result.exception.hint}"
    return result.exit_code, result.output


def test_verify_prints_match_and_exits_zero(env: World) -> None:
    code, out = run("verify", "1", "--stage", "1")
    assert code == 0, out
    # (the first model load in a process may print transformers' "Loading weights" bar on stderr before it)
    assert "token 1 stage 1 (bafkrei" in out and "MATCH" in out
    code, out = run("verify", "1", "--json")
    assert code == 0 and json.loads(out)["verdict"] == "match" and json.loads(out)["stage"] == 2


def test_verify_names_the_field_and_exits_one_when_the_metadata_lies(env: World, studio: Studio) -> None:
    """Token 5 is fulfilled (by the admin, granted AGENT_ROLE) with metadata whose lore is not the receipt's."""
    world = env
    real = studio.catalog.token(2).timeline[0].metadata
    tampered = build_metadata(
        name="Chrysalis #5", lore="A story nobody generated.", image_cid=real.image_cid, traits=real.traits,
        stage=1, parent=None, receipt=real.receipt, models=real.models,
        snapshot=_snapshot(real.inputs),
    ).encode()  # fmt: skip
    studio.repo.add_raw_block(tampered)
    with world.lock:
        f = world.chain.collection.functions
        world.chain.transact(f.grantRole(f.AGENT_ROLE().call(), world.chain.admin), world.chain.admin)
        rid = world.chain.request(5, 0)
        provenance = bytes.fromhex(studio.catalog.token(2).timeline[0].receipt_provenance[2:])
        (requested,) = world.chain.collection.events.EvolutionRequested().get_logs(
            from_block=0, argument_filters={"requestId": rid}
        )
        seed = bytes(requested["args"]["seed"])
        world.chain.transact(
            f.fulfillEvolution(rid, seed, metadata_digest(tampered), provenance), world.chain.admin
        )
    code, out = run("verify", "5")
    assert code == 1, out
    assert "MISMATCH" in out and "metadata.description" in out and "A story nobody generated." in out


def _snapshot(inputs: dict) -> object:
    from agent.domain import snapshot_from_json

    return snapshot_from_json(inputs)


def test_verify_of_a_token_without_metadata_is_a_clear_error(env: World) -> None:
    code, out = run("verify", "8")
    assert code == 3 and "token 8 has no metadata yet" in out  # 3: could not verify (1 is a mismatch)


def test_review_list_approve_and_reject_from_the_terminal(env: World, studio: Studio) -> None:
    ids = []
    for _ in range(2):
        item = studio.reviews.submit(f"cli:{uuid.uuid4().hex[:8]}", token_id=2, stage=2,
                                     candidate=candidate_from_token(studio, 2))  # fmt: skip
        ids.append(item.id)
    code, out = run("review", "list", "--json")
    assert code == 0
    listed = {row["id"]: row for row in (json.loads(line) for line in out.splitlines() if line.strip())}
    assert set(ids) <= set(listed)
    # the same shape as /api/review's items (ReviewItem.to_json; `published` is the studio's lookup)
    assert listed[ids[0]] == json.loads(json.dumps(studio.reviews.get(ids[0]).to_json(), default=str))
    assert listed[ids[0]]["image"] == f"ipfs://{listed[ids[0]]['image_cid']}"
    code, out = run("review", "approve", str(ids[0]), "--as", "grace")
    assert code == 0 and f"approved #{ids[0]}" in out
    assert studio.reviews.get(ids[0]).decided_by == "grace"
    code, out = run("review", "reject", str(ids[1]), "--as", "grace")
    assert code != 0 and "--reason" in out  # the reason is required
    code, out = run("review", "reject", str(ids[1]), "--reason", "off-model colours", "--as", "grace")
    assert code == 0 and studio.reviews.get(ids[1]).state == ReviewState.REJECTED
    code, out = run("review", "approve", str(ids[1]), "--as", "grace")
    assert code == 1 and "it is rejected by grace" in out
