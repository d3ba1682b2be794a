"""Alembic migrations of the agent's database (every table of :mod:`agent.store.tables`); run by
:class:`agent.store.db.Database`. Revision ids never change: a database migrated by an earlier release upgrades
from the revision it records."""
