"""Alembic environment for the agent's database. Run programmatically by :class:`agent.store.db.Database`, which
passes an open connection (already inside the migration transaction) in ``config.attributes["connection"]``.

``target_metadata`` is :data:`agent.store.tables.METADATA`, which holds every table of the agent's, so
autogenerate compares the whole schema (jobs, broadcasts, watcher cursors, review queue, refreshes)."""

from __future__ import annotations

from alembic import context

from agent.store.tables import METADATA

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI path; Chrysalis always passes a connection
    raise RuntimeError("run migrations through agent.store.db.Database.upgrade(), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=METADATA,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
