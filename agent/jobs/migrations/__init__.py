"""Alembic migrations of the agent database (jobs and the watcher cursor); run by agent.jobs.db."""
