"""Schema migrations on both backends: fresh upgrade, round trip, an older database upgrading, and that the tables
(every one of them, from :mod:`agent.store.tables`) match the migrations."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from agent.domain import Artwork
from agent.jobs import JobKind
from agent.review import Candidate, ReviewStore
from agent.store import Database, open_job_store
from agent.store.db import MIGRATIONS_DIR, create_db_engine
from agent.store.tables import JOBS, METADATA
from agent.watch.cursor import CursorState
from agent.watch.cursor_sql import SqlCursorStore
from agent.watch.events import BlockRef

OURS = {
    "jobs", "job_stages", "watch_cursors", "watch_blocks", "review_items", "review_events",
    "refresh_runs", "refresh_items", "refresh_txs", "refresh_triggers", "broadcasts", "gate_hashes",
    "agents", "agent_roles",
}  # fmt: skip
REVISIONS = [
    "0001_jobs", "0002_watch_cursor", "0003_review_queue", "0004_refresh", "0005_broadcasts", "0006_gate_hashes",
    "0007_agents",
]  # fmt: skip
HEAD = REVISIONS[-1]


def _tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_the_revisions_keep_their_ids_and_order() -> None:
    """Databases record the revision id they are at: renaming or reordering one strands every such database."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert [s.revision for s in reversed(list(script.walk_revisions()))] == REVISIONS
    assert script.get_current_head() == HEAD


def test_upgrade_on_an_empty_database_creates_every_table(db_url: str) -> None:
    db = Database.open(db_url, migrate=False)
    assert _tables(db) == set() and db.current_revision() is None
    db.upgrade()
    assert _tables(db) == OURS == set(METADATA.tables)
    assert db.current_revision() == HEAD
    db.close()


def test_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    db = Database.open(db_url)
    db.downgrade("0001_jobs")
    assert _tables(db) == {"jobs", "job_stages"}
    db.downgrade("base")
    assert _tables(db) == set() and db.current_revision() is None
    db.upgrade()
    assert _tables(db) == OURS
    store = open_job_store(db_url)  # opening a migrated database again is a no-op
    job, created = store.enqueue(JobKind.EVOLVE, "evolve:1:1", payload={"a": 1})
    assert created and store.get(job.id).payload == {"a": 1}
    store.close()
    db.close()


def test_a_database_an_earlier_release_migrated_upgrades_and_keeps_its_rows(db_url: str) -> None:
    """A database left at 0003 (jobs, cursor, review queue; no refresh or broadcast tables yet) with rows in it
    opens with this release: the missing migrations run and every row reads back through today's stores."""
    old = Database.open(db_url, migrate=False)
    old.upgrade("0003_review_queue")
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with old.begin() as conn:  # rows as that release wrote them
        conn.execute(
            JOBS.insert().values(
                key="evolve:1:7", kind="evolve", state="queued", payload={"tokenId": 7}, attempts=0,
                max_attempts=5, run_after=now, created_at=now, updated_at=now,
            )
        )  # fmt: skip
    tip = BlockRef(12, "0x" + "ab" * 32)
    SqlCursorStore(old).save("1:0xc0ffee", CursorState(1, tip, None, (tip,)))
    receipt = {"seed": {"onchain_seed": "0x" + "11" * 32}}
    candidate = Candidate(
        Artwork("bafkreiimage", "00" * 32, "lore", receipt), {"aura": "gold"}, "Chrysalis #7"
    )
    ReviewStore(old).submit("genesis:7", token_id=7, stage=0, candidate=candidate, kind="genesis")
    old.close()

    db = Database.open(db_url)
    assert db.current_revision() == HEAD and _tables(db) == OURS
    store = open_job_store(db_url)
    job = store.get_by_key("evolve:1:7")
    assert job is not None and job.payload == {"tokenId": 7}
    store.close()
    assert SqlCursorStore(db).load("1:0xc0ffee") == CursorState(1, tip, None, (tip,))
    item = ReviewStore(db).by_key("genesis:7")
    assert item is not None and item.candidate == candidate
    db.close()


def test_the_tables_match_the_migrations(db_url: str) -> None:
    """What autogenerate would write: nothing (it compares every table of agent.store.tables)."""
    db = Database.open(db_url)
    with db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), METADATA)
    assert diff == [], f"tables and migrations differ: write a migration\n{diff}"
    db.close()


def test_concurrent_opens_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            open_job_store(db_url).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = Database(create_db_engine(db_url))
    assert db.current_revision() == HEAD
    db.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'sub' / 'agent.db'}")
    with db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    assert (tmp_path / "sub" / "agent.db").is_file()
    db.close()
