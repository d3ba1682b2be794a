"""The agent's database: one :class:`Database` (engine, SQLite/PostgreSQL settings, migrations), every table
(:mod:`agent.store.tables`) on one metadata, the migrations (:mod:`agent.store.migrations`) and the SQL job
store (:class:`SqlJobStore`).

The composition code opens ONE database and hands it to every store that keeps tables in it::

    db = Database.open(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)  # migrated
    jobs = SqlJobStore(db, policy=policy)          # agent.jobs.JobStore
    cursors = SqlCursorStore(db)                   # agent.watch.cursor_sql
    journal = SqlBroadcastJournal(db)              # agent.submit.journal_sql
    reviews = ReviewStore(db)                      # agent.review
    refreshes = RefreshStore(db)                   # agent.refresh.store

This package sits below the stages: it imports only :mod:`agent.domain`, :mod:`agent.errors`,
:mod:`agent.settings` (the default URL) and the pure job types of :mod:`agent.jobs`.
"""

from agent.store.db import Database
from agent.store.jobs import SqlJobStore, open_job_store

__all__ = ["Database", "SqlJobStore", "open_job_store"]
