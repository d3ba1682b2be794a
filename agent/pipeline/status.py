"""Reading what the agent recorded, from outside it: the commands that inspect or decide on its database.

``chrysalis status``, ``jobs``, ``retry``, ``refresh status`` and ``review`` open the agent's database while the
agent runs (or not at all). Guarantee: none of them creates a database. A SQLite file that does not exist is a
:class:`~agent.errors.NotFoundError` naming ``database.url``, never a new empty database where the agent never
ran. (How far the watcher is behind the chain is :func:`agent.watch.cursor.watch_lag`, for every status view.)
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from agent.errors import NotFoundError
from agent.settings import Settings
from agent.store import SqlJobStore, open_job_store


def open_store(settings: Settings) -> SqlJobStore:
    """The agent's job store (its ``db`` is the agent's database; closing the store closes it).

    Args:
        settings: The agent's settings (``database.url``, ``database.busy_timeout_ms``).

    Raises:
        NotFoundError: a SQLite database file that does not exist (see :func:`require_database`).
    """
    require_database(settings)
    return open_job_store(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)


def require_database(settings: Settings) -> None:
    """Refuse a SQLite database file that does not exist (commands that only read or decide on what the agent
    recorded must not create an empty one).

    Args:
        settings: The agent's settings (``database.url``).

    Raises:
        NotFoundError: the file is missing; the hint says to run the agent or fix ``database.url``.
    """
    url = settings.database.url
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - opening the database gives the proper ConfigError for a malformed URL
        parsed = None
    if (
        parsed is not None
        and parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
    ):
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise NotFoundError(
                f"no agent database at {path} (database.url = {url})",
                hint="the agent has not run with this configuration: start it with `chrysalis run`, or point "
                "database.url (CHRYSALIS_DATABASE__URL) at its database",
            )
