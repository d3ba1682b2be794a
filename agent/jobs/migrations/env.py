"""Alembic environment for the agent's database. Run programmatically by :mod:`agent.jobs.db`, which passes an
open connection (already inside the migration transaction) in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import agent.jobs.models
import agent.watch.cursor_sql  # noqa: F401  (registers the watcher's cursor tables)

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI path; Chrysalis always passes a connection
    raise RuntimeError("run migrations through agent.jobs.db.upgrade(), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
