"""Schema migrations on both backends: fresh upgrade, round trip, and that the models match the migrations."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import agent.refresh.models  # noqa: F401  (registers the refresh tables)
import agent.studio.review  # noqa: F401  (registers the review queue's tables)
import agent.watch.cursor_sql  # noqa: F401  (registers the watcher's tables)
from agent.jobs import JobKind, JobStore
from agent.jobs.db import create_db_engine, current_revision, downgrade, open_database, upgrade

OURS = {
    "jobs", "job_stages", "watch_cursors", "watch_blocks", "review_items", "review_events",
    "refresh_runs", "refresh_items", "refresh_txs", "refresh_triggers", "broadcasts",
}  # fmt: skip
HEAD = "0005_broadcasts"


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_on_an_empty_database_creates_every_table(db_url: str) -> None:
    engine = create_db_engine(db_url)
    assert _tables(engine) == set() and current_revision(engine) is None
    upgrade(engine)
    assert _tables(engine) == OURS
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    engine = open_database(db_url)
    downgrade(engine, "0001_jobs")
    assert _tables(engine) == {"jobs", "job_stages"}
    downgrade(engine, "base")
    assert _tables(engine) == set() and current_revision(engine) is None
    upgrade(engine)
    assert _tables(engine) == OURS
    store = JobStore.open(db_url)  # opening a migrated database again is a no-op
    job, created = store.enqueue(JobKind.EVOLVE, "evolve:1:1", payload={"a": 1})
    assert created and store.get(job.id).payload == {"a": 1}
    store.close()
    engine.dispose()


def test_the_models_match_the_migrations(db_url: str) -> None:
    engine = open_database(db_url)
    ours = sa.MetaData()
    for name in sorted(OURS):
        SQLModel.metadata.tables[name].to_metadata(ours)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), ours)
    assert diff == [], f"models and migrations differ: write a migration\n{diff}"
    engine.dispose()


def test_concurrent_opens_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            JobStore.open(db_url).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = create_db_engine(db_url)
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'sub' / 'agent.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    assert (tmp_path / "sub" / "agent.db").is_file()
    engine.dispose()
