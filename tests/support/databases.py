"""Database backends for tests: a temporary SQLite file, or a throwaway schema on the PostgreSQL server at
``CHRYSALIS_TEST_POSTGRES_URL``.

Parametrise a fixture over :data:`BACKENDS` to run its tests on both (the PostgreSQL case carries the
``postgres`` marker); :func:`database_url` gives the URL of one. A PostgreSQL schema is dropped afterwards, and a
server that is down fails the test loudly instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "CHRYSALIS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards. Fails loudly if the server is down."""
    admin = sa.create_engine(POSTGRES_URL, pool_pre_ping=True)
    schema = f"chrysalis_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc.orig}). Start it, or point "
            "CHRYSALIS_TEST_POSTGRES_URL at a server where the user may create schemas.",
            pytrace=False,
        )
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh database on ``backend`` (``sqlite``: a file under ``tmp_path``; ``postgres``)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'chrysalis.db'}"
    else:
        with postgres_schema_url() as url:
            yield url
