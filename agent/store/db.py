"""The agent's database: one :class:`Database` (SQLite by default, PostgreSQL by URL) that owns the SQLAlchemy
engine and migrates the schema with alembic.

Every store that keeps tables in it (jobs, the watcher's cursors, broadcasts, review items, refreshes) takes the
same :class:`Database`, so they share one connection pool and one schema version.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Every SQLite transaction starts with
``BEGIN IMMEDIATE``: writers queue on the busy timeout instead of failing with "database is locked" halfway
through, which is what makes a guarded ``UPDATE`` an atomic claim there. Migrations run in one transaction,
serialised between processes (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL).
"""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from agent.errors import BackendUnavailableError, ConfigError
from agent.settings import DEFAULT_DATABASE_URL

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""The alembic script directory (``script_location``) of the agent's schema."""
_PG_MIGRATION_LOCK = 0x43485259  # "CHRY": pg_advisory_xact_lock key held while migrating


class Database:
    """The agent's database: its engine, its dialect and its schema version.

    Build it with :meth:`open` (which migrates), or from an engine. Stores keep a reference and open
    connections with :meth:`begin` / :meth:`connect`; :meth:`close` releases the pooled connections (the
    engine stays usable: a later call opens new ones).

    Args:
        engine: An engine made by :func:`create_db_engine` (so SQLite has the settings above).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(
        cls, url: str = DEFAULT_DATABASE_URL, *, migrate: bool = True, busy_timeout_ms: int = 30_000
    ) -> Database:
        """The database at ``url`` (SQLite path or PostgreSQL URL), migrated to the latest schema unless
        ``migrate`` is false. ``settings.database`` holds the URL.

        Raises:
            ConfigError: a malformed URL, an unsupported backend, a missing driver, or a file that is not a
                SQLite database.
            BackendUnavailableError: the database server cannot be reached.
        """
        db = cls(create_db_engine(url, busy_timeout_ms=busy_timeout_ms))
        if migrate:
            db.upgrade()
        return db

    # -- what it is -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL, with any password hidden (for messages)."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def postgres(self) -> bool:
        """True on PostgreSQL, False on SQLite."""
        return self.engine.dialect.name == "postgresql"

    @property
    def sqlite(self) -> bool:
        """True on SQLite."""
        return self.engine.dialect.name == "sqlite"

    def has_table(self, name: str) -> bool:
        """Whether the table ``name`` exists (e.g. one a later migration adds, read by an older command)."""
        return sa.inspect(self.engine).has_table(name)

    # -- connections ----------------------------------------------------------------------------------------

    def begin(self) -> Any:
        """``with db.begin() as conn``: a connection in a transaction, committed on success."""
        return self.engine.begin()

    def connect(self) -> sa.Connection:
        """A connection (``with db.connect() as conn``) for reads."""
        return self.engine.connect()

    def insert(self, table: sa.Table) -> PostgresInsert | SqliteInsert:
        """An ``INSERT`` into ``table`` in this dialect (both have ``on_conflict_do_nothing``)."""
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    def unavailable(
        self, exc: OperationalError, *, hint: str, prefix: str = "database"
    ) -> BackendUnavailableError:
        """The error for a connection that failed while in use (the server went away, a lock timed out).

        Args:
            exc: What SQLAlchemy raised.
            hint: What to do about it (each store says what happens to its work).
            prefix: How the message names the database (``database``, ``the database at``).
        """
        return BackendUnavailableError(f"{prefix} {self.url} failed: {exc.orig}", hint=hint)

    # -- schema ---------------------------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Migrate up to ``revision`` (atomically; concurrent callers wait for each other)."""
        self._migrate(lambda cfg: command.upgrade(cfg, revision))

    def downgrade(self, revision: str) -> None:
        """Migrate down to ``revision`` (``"base"`` drops every table of ours)."""
        self._migrate(lambda cfg: command.downgrade(cfg, revision))

    def current_revision(self) -> str | None:
        """The revision the database is at (``None`` before the first migration)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _migrate(self, op: Callable[[Config], None]) -> None:
        engine = self.engine
        try:
            conn = _locked(engine)
        except OperationalError as exc:
            raise BackendUnavailableError(
                f"cannot connect to the database at {self.url}: {exc.orig}",
                hint="check database.url and that the server is running",
            ) from exc
        except (
            DatabaseError
        ) as exc:  # sqlite3.DatabaseError: "file is not a database", "disk image is malformed"
            if not self.sqlite:
                raise
            raise corrupt_sqlite_error(f"{engine.url.database}", exc.orig) from None
        try:
            op(_alembic_config(conn))
            conn.commit()
        except DatabaseError as exc:
            _rollback_quietly(conn)
            if not self.sqlite or isinstance(exc, OperationalError):
                raise
            raise corrupt_sqlite_error(f"{engine.url.database}", exc.orig) from None
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    # -- lifetime -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"


def create_db_engine(
    url: str = DEFAULT_DATABASE_URL, *, busy_timeout_ms: int = 30_000, echo: bool = False
) -> Engine:
    """An engine for ``url`` with the SQLite settings above; creates the SQLite file's directory.

    Raises:
        ConfigError: a malformed URL, an unsupported backend, or a PostgreSQL driver that is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"invalid database URL {url!r}: {exc}",
            hint="use sqlite:///path/to.db or postgresql+psycopg2://user@host:5432/db",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:")
        if not memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
        }
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = sa.create_engine(parsed, echo=echo, **kwargs)
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    if backend in ("postgresql", "postgres"):
        parsed = _with_postgres_driver(parsed)
        try:
            return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
        except (ImportError, NoSuchModuleError) as exc:
            raise ConfigError(
                f"the PostgreSQL driver {parsed.get_driver_name()!r} of database.url "
                f"{parsed.render_as_string(hide_password=True)} is not installed ({exc})",
                hint=_PG_DRIVER_HINT,
            ) from None
    raise ConfigError(
        f"unsupported database backend {backend!r} in {parsed.render_as_string(hide_password=True)}",
        hint="Chrysalis supports SQLite and PostgreSQL",
    )


_PG_DRIVER_HINT = (
    "name an installed driver in database.url: postgresql+psycopg2://user@host:5432/db (psycopg2, which "
    "Chrysalis installs) or postgresql+psycopg://... (after `pip install psycopg`)"
)


def _with_postgres_driver(parsed: URL) -> URL:
    """``postgresql://`` (and Heroku's ``postgres://``) with no driver named: the installed one, psycopg2 first.

    SQLAlchemy's default for a bare ``postgresql://`` is psycopg2 in 2.0 and psycopg (3) in 2.1; Chrysalis
    installs psycopg2, so a URL copied from ``psql`` works either way.
    """
    if "+" in parsed.drivername and parsed.get_backend_name() == "postgresql":
        return parsed
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return parsed.set(drivername=f"postgresql+{driver}")
    raise ConfigError(
        f"no PostgreSQL driver is installed for database.url {parsed.render_as_string(hide_password=True)}",
        hint="install one (`pip install psycopg2-binary`, or reinstall Chrysalis), or use SQLite "
        "(sqlite:///path/to.db)",
    )


def corrupt_sqlite_error(where: str, cause: object) -> ConfigError:
    """The error for a file SQLite cannot read as a database (another kind of file, or a damaged one)."""
    return ConfigError(
        f"{where} is not a SQLite database (or is corrupt): {cause}",
        hint="point database.url (CHRYSALIS_DATABASE__URL) at the agent's database, or restore it from a backup; "
        "Chrysalis has not changed the file (to start afresh, move it away: its jobs and cursor are lost)",
    )


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite's own BEGIN handling is off; _on_begin emits ours
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _journal_mode_wal(cur, busy_timeout_ms)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _journal_mode_wal(cur: Any, busy_timeout_ms: int) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock.

    Switching a new database file to WAL needs an exclusive lock, and SQLite answers a concurrent switch with
    "database is locked" at once, without its busy handler (seen with a few processes or threads opening a new
    database together). Once the file is in WAL mode (persistent) the pragma is a no-op.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _locked(engine: Engine) -> sa.Connection:
    conn = engine.connect()
    conn.begin()
    if engine.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    return conn


def _rollback_quietly(conn: sa.Connection) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - the database is unreadable; the original error is the one to report
        pass
