"""Suite-wide fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Give every test the environment it started with.

    ``chrysalis --config FILE`` (and ``load_settings(FILE)``) export ``CHRYSALIS_CONFIG`` for the rest of the
    process, as a CLI should; in-process CLI tests would otherwise leak it (and its ``[ipfs] repo``, database, ...)
    into every later test that builds ``Settings``.
    """
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
