"""The review store and the pipeline's gate on SQLite and PostgreSQL: idempotent submits, guarded decisions,
one winner when two curators act at once, and rerolled seeds anyone can recompute."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.domain import Artwork, CuratorApproval, CuratorRejection
from agent.errors import NotFoundError
from agent.generate.seed import derive_seed
from agent.jobs import JobKind, JobStore
from agent.review import (
    Approved,
    Candidate,
    Pending,
    Rejected,
    ReviewConflictError,
    ReviewGate,
    ReviewInputError,
    ReviewState,
    ReviewStore,
    find_reroll,
    reroll_seed,
)
from agent.store import Database, SqlJobStore
from tests.support.databases import BACKENDS, database_url

SEED = "0x" + "ab" * 32


def candidate(n: int = 0, *, strength: float | None = 0.6) -> Candidate:
    receipt = {
        "schema": "chrysalis.inference-receipt/1",
        "seed": {
            "onchain_seed": SEED,
            "token_id": 5,
            "derived_seed": derive_seed(bytes.fromhex("ab" * 32), 5),
        },
        "image": {"request": {"strength": strength, "traits": {"mood": "serene"}}},
        "n": n,
    }
    artwork = Artwork(f"bafkreiimage{n}", hashlib.sha256(b"%d" % n).hexdigest(), f"lore {n}", receipt)
    return Candidate(artwork, {"mood": "serene"}, "Chrysalis #5")


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_url(request.param, tmp_path) as url:
        db = Database.open(url)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture
def jobs(db: Database) -> JobStore:
    return SqlJobStore(db)


@pytest.fixture
def gate(db: Database) -> ReviewGate:
    return ReviewGate.for_database(db)


def job_id(jobs: JobStore, key: str = "evolve:1:1") -> int:
    job, _ = jobs.enqueue(JobKind.EVOLVE, key, payload={"token_id": 5})
    return job.id


def test_submit_is_idempotent_and_pending_until_a_curator_decides(jobs: JobStore, gate: ReviewGate) -> None:
    jid = job_id(jobs)
    gate.submit(jid, 5, 2, candidate(1))
    gate.submit(jid, 5, 2, candidate(2))  # a retried job: the first candidate stays
    decision = gate.decision(jid)
    assert isinstance(decision, Pending) and decision.state == ReviewState.AWAITING
    item = gate.store.by_key(jid)
    assert item is not None and item.candidate.lore == "lore 1" and item.job_id == jid and item.revision == 1
    assert gate.approval(jid) is None
    assert [e.action for e in gate.store.events(item.id)] == ["submitted"]


def test_approved_gives_the_record_to_publish_and_who_approved(jobs: JobStore, gate: ReviewGate) -> None:
    jid = job_id(jobs)
    gate.submit(jid, 5, 2, candidate(1))
    item = gate.store.by_key(jid)
    gate.store.approve(item.id, "ada", revision=1)
    decision = gate.decision(jid)
    assert isinstance(decision, Approved) and decision.approved_by == "ada"
    assert decision.artwork.to_json() == {
        "image_cid": "bafkreiimage1",
        "png_sha256": hashlib.sha256(b"1").hexdigest(),
        "lore": "lore 1",
        "receipt": candidate(1).receipt,
        "receipt_sha256": candidate(1).receipt_sha256,
        "provenance": "0x" + candidate(1).receipt_sha256,
    }
    approval = gate.approval(jid)
    assert (
        approval is not None
        and approval.approved_by == "ada"
        and approval.provenance == candidate(1).provenance
    )


def test_rejected_carries_the_reason_for_the_job(jobs: JobStore, gate: ReviewGate) -> None:
    jid = job_id(jobs)
    gate.submit(jid, 5, 2, candidate())
    item = gate.store.by_key(jid)
    with pytest.raises(ReviewInputError, match="needs a reason"):
        gate.store.reject(item.id, "ada", "")
    gate.store.reject(item.id, "ada", "wrong palette")
    decision = gate.decision(jid)
    assert isinstance(decision, Rejected)
    assert decision.describe() == f"rejected in review #{item.id} by ada: wrong palette"
    with pytest.raises(ReviewConflictError, match="it is rejected by ada"):
        gate.store.approve(item.id, "bob")


def test_review_puts_an_artwork_up_once_and_answers_with_the_decision(
    jobs: JobStore, gate: ReviewGate
) -> None:
    """What the pipeline and refresh call: None while waiting, then the approved artwork (the candidate the
    curator saw, maybe a regenerated revision) or the rejection with the job's reason."""
    first, later = candidate(1), candidate(2)
    artwork = Artwork(first.image_cid, first.png_sha256, first.lore, first.receipt)
    ask = {"token_id": 5, "stage": 2, "traits": {"mood": "serene"}, "name": "Chrysalis #5"}
    approved, rejected = job_id(jobs, "evolve:1:1"), job_id(jobs, "evolve:1:2")
    assert gate.review(approved, artwork=artwork, **ask) is None
    item = gate.store.by_key(approved)
    assert item is not None and item.candidate == first and item.kind == "evolve"
    regenerated = Artwork(later.image_cid, later.png_sha256, later.lore, later.receipt)
    gate.store.request_regeneration(item.id, "ada", new_seed=True)
    gate.store.finish_regeneration(item.id, 1, later)
    assert (
        gate.review(approved, artwork=artwork, **ask) is None
    )  # still waiting: the artwork is not resubmitted
    gate.store.approve(item.id, "ada", revision=2)
    assert gate.review(approved, artwork=artwork, **ask) == CuratorApproval(regenerated, "ada")

    assert gate.review(rejected, artwork=artwork, kind="refresh", **ask) is None
    item = gate.store.by_key(rejected)
    assert item is not None and item.kind == "refresh"
    gate.store.reject(item.id, "bob", "too dark")
    assert gate.review(rejected, artwork=artwork, **ask) == CuratorRejection(
        f"rejected in review #{item.id} by bob: too dark"
    )


def test_asking_about_a_job_never_submitted_names_the_fix(gate: ReviewGate) -> None:
    with pytest.raises(NotFoundError, match="submit it before asking"):
        gate.decision(12345)


def test_two_curators_approving_at_once_one_wins(jobs: JobStore, gate: ReviewGate) -> None:
    jid = job_id(jobs)
    gate.submit(jid, 5, 2, candidate())
    item = gate.store.by_key(jid)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def act(name: str) -> None:
        barrier.wait()
        try:
            gate.store.approve(item.id, name, revision=1)
            outcomes.append("won:" + name)
        except ReviewConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=act, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won:")]
    assert len(winners) == 1 and outcomes.count("lost") == 3
    assert gate.store.get(item.id).decided_by == winners[0][4:]
    assert [e.action for e in gate.store.events(item.id)] == ["submitted", "approved"]


def test_regeneration_requests_are_validated_and_bump_the_revision(jobs: JobStore, gate: ReviewGate) -> None:
    jid = job_id(jobs)
    gate.submit(jid, 5, 2, candidate(strength=None))
    item = gate.store.by_key(jid)
    with pytest.raises(ReviewInputError, match="a new seed or a new strength"):
        gate.store.request_regeneration(item.id, "ada")
    with pytest.raises(ReviewInputError, match="has no previous image"):
        gate.store.request_regeneration(item.id, "ada", strength=0.5)
    waiting = gate.store.request_regeneration(item.id, "ada", new_seed=True)
    assert waiting.state == ReviewState.REGENERATING and waiting.regenerate.reroll == 1
    assert isinstance(gate.decision(jid), Pending)
    with pytest.raises(ReviewConflictError):
        gate.store.approve(item.id, "ada")  # nothing to approve while it is being remade
    done = gate.store.finish_regeneration(item.id, 1, candidate(7))
    assert done.state == ReviewState.AWAITING and done.revision == 2 and done.candidate.lore == "lore 7"
    failed = gate.store.request_regeneration(item.id, "ada", new_seed=True)
    back = gate.store.fail_regeneration(failed.id, failed.revision, "model missing")
    assert (
        back.state == ReviewState.AWAITING
        and back.error == "model missing"
        and back.candidate.lore == "lore 7"
    )


def test_counts_list_and_bulk_genesis(jobs: JobStore, gate: ReviewGate) -> None:
    store = gate.store
    for i in range(3):
        store.submit(f"genesis:test:{i}", token_id=None, stage=0, candidate=candidate(i), kind="genesis")
    jid = job_id(jobs)
    gate.submit(jid, 5, 2, candidate())
    approved = store.approve_all("ada", kind="genesis")
    assert len(approved) == 3 and all(i.kind == "genesis" and i.decided_by == "ada" for i in approved)
    counts = store.counts()
    assert counts[ReviewState.APPROVED] == 3 and counts[ReviewState.AWAITING] == 1
    assert [i.key for i in store.list_items(states=[ReviewState.AWAITING])] == [f"job:{jid}"]
    assert store.list_items(kind="genesis")[0].label == "Chrysalis #5"


def test_reroll_seeds_are_public_and_recoverable() -> None:
    assert reroll_seed(SEED, 0) == SEED
    first, second = reroll_seed(SEED, 1), reroll_seed(SEED, 2)
    assert (
        first
        == "0x"
        + hashlib.sha256(
            b"chrysalis.reroll.v1" + bytes.fromhex("ab" * 32) + (1).to_bytes(4, "big")
        ).hexdigest()
    )
    assert len({SEED, first, second}) == 3
    assert find_reroll(SEED, second) == 2 and find_reroll(SEED, "0x" + "00" * 32) is None
    with pytest.raises(ReviewInputError, match="32 bytes"):
        reroll_seed("0x1234", 1)


def test_a_review_store_on_a_new_database_finds_it_migrated(tmp_path: Path) -> None:
    store = ReviewStore(Database.open(f"sqlite:///{tmp_path / 'fresh.db'}"))
    item = store.submit("genesis:x", token_id=None, stage=0, candidate=candidate(), kind="genesis")
    assert store.get(item.id).state == ReviewState.AWAITING
    with pytest.raises(NotFoundError, match="no review item #999"):
        store.get(999)
    store.close()
