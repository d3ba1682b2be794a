"""The generate stage with gates: a planted duplicate is rerolled (and still verifies), the reroll loop ends, and a
candidate that fails every try either reaches review flagged or fails its job (review off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.domain import Inputs, TokenFacts
from agent.gates import GateReport, GateResult, Gates, GatesFailedError, reroll_seed
from agent.generate.factory import load_image_generator, load_lore_writer
from agent.generate.verify import verify
from agent.ipfs.repo import IpfsRepo
from agent.pipeline.assets import AssetStore
from agent.pipeline.generate import GenerateStage, gate_failure
from agent.pipeline.request import EvolutionRequest
from agent.pipeline.traits import evaluate_traits
from agent.review import ReviewGate, ReviewStore, find_reroll
from agent.rules import load_rules
from agent.settings import GatesSettings, ModelSettings
from agent.store import Database
from tests.support.inputs import input_snapshot


@pytest.fixture(scope="module")
def models(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    settings = ModelSettings(
        lore_backend="transformers", lore_model=str(tiny_lm), lore_max_new_tokens=12, device="cpu", threads=1,
        cache_dir=tmp_path_factory.mktemp("models"), image_steps=10,
    )  # fmt: skip
    return load_image_generator(settings), load_lore_writer(settings)


def _inputs(token_id: int) -> Inputs:
    snapshot = input_snapshot(**{"context.token_id": token_id})
    rules = evaluate_traits(load_rules(), snapshot, stage=1, token_id=token_id, previous=None)
    return Inputs(snapshot=snapshot, token=TokenFacts(name=f"Chrysalis #{token_id}", stage=1), rules=rules)


def _task(token_id: int, seed_byte: str = "5a"):  # noqa: ANN202
    return EvolutionRequest(2**32 + token_id, token_id, "0x" + "11" * 20, 0, "0x" + seed_byte * 32, 9, "0xa",
                            "0xb", 0).task()  # fmt: skip


LENIENT = GatesSettings(lore_min_chars=0, lore_max_chars=100_000)
"""The tiny random-weight LM writes odd lore; these tests are about the image gates and the loop."""


def test_a_planted_duplicate_is_rerolled_and_the_reroll_verifies(models: tuple, tmp_path: Path) -> None:
    image, lore = models
    repo = IpfsRepo(tmp_path / "ipfs", sync=False)
    plain = GenerateStage(image, lore, repo, AssetStore(tmp_path / "a"))
    task = _task(1)
    (ungated,) = plain.run([(task, _inputs(1))])
    gates = Gates(LENIENT)
    gates.accept(99, 1, "planted", b"".join(repo.cat(ungated.image_cid)))  # another token has this very image

    stage = GenerateStage(image, lore, repo, AssetStore(tmp_path / "b"), gates=gates)
    (art,) = stage.run([(task, _inputs(1))])
    report = GateReport.from_json(art.gates or {})
    assert report.passed and report.reroll == 1 and report.request_seed == task.seed
    assert len(report.history) == 1 and report.history[0][0].startswith(
        "near_duplicate: 0 bits from token 99"
    )
    receipt_seed = art.receipt["seed"]["onchain_seed"]
    assert receipt_seed == reroll_seed(task.seed, 1) and find_reroll(task.seed, receipt_seed) == 1
    assert art.png_sha256 != ungated.png_sha256
    result = verify(dict(art.receipt))
    assert result.match, result.mismatches
    # the kept image is now indexed: the same token again is not its own duplicate; another token's copy is
    assert gates.duplicate(b"".join(repo.cat(art.image_cid)), token_id=1).passed
    assert not gates.duplicate(b"".join(repo.cat(art.image_cid)), token_id=2).passed

    # a candidate that passes first time is byte for byte the ungated one (only the report is added)
    (again,) = GenerateStage(image, lore, repo, AssetStore(tmp_path / "c"), gates=Gates(LENIENT)).run(
        [(task, _inputs(1))]
    )
    assert again.receipt == ungated.receipt and again.png_sha256 == ungated.png_sha256
    assert again.gates is not None and again.gates["passed"] and again.gates["reroll"] == 0


def never_passes(png: bytes, traits: object, backend: object) -> list[GateResult]:
    return [GateResult("always_fails", False, 0, 1, "this plug-in fails everything")]


def test_the_reroll_loop_ends_flagged_for_review_or_failing_without_it(models: tuple, tmp_path: Path) -> None:
    image, lore = models
    repo = IpfsRepo(tmp_path / "ipfs", sync=False)
    settings = LENIENT.model_copy(
        update={"max_rerolls": 2, "metrics": ["tests.gates.test_reroll:never_passes"]}
    )
    stage = GenerateStage(image, lore, repo, AssetStore(tmp_path / "a"), gates=Gates(settings))
    arts = stage.run([(_task(1), _inputs(1)), (_task(2, "5b"), _inputs(2))])
    for art, task in zip(arts, [_task(1), _task(2, "5b")], strict=True):
        report = GateReport.from_json(art.gates or {})
        assert not report.passed and report.reroll == 2 and report.tries == 3
        assert art.receipt["seed"]["onchain_seed"] == reroll_seed(task.seed, 2)
    # review off: the job fails visibly, naming the gate and the fix
    err = gate_failure(arts[0], "job 7")
    assert isinstance(err, GatesFailedError)
    assert "job 7 failed the quality gates (always_fails) on all 3 tries" in err.message
    assert "studio.review" in (err.hint or "") and "max_rerolls" in (err.hint or "")
    # review on: it waits for a curator, flagged, and a curator's regenerate continues from reroll 2
    db = Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        review = ReviewGate(ReviewStore(db))
        assert review.review(7, token_id=1, stage=1, artwork=arts[0], traits={}, name="Chrysalis #1") is None
        item = ReviewStore(db).by_key(7)
        assert item is not None
        assert item.candidate.flagged and item.candidate.reroll == 2
        assert item.candidate.request_seed == _task(1).seed
        data = item.to_json()
        assert data["flagged"] and data["gates"]["reasons"] == ["always_fails: this plug-in fails everything"]
    finally:
        db.close()
