"""Suite-wide fixtures and markers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: Fixtures that start an anvil node: every ``anvil_url`` (the pipeline, submit, oracles, watch and ops conftests;
#: refresh and genesis re-export theirs) and the studio's session ``world`` (tests/studio/world.py). Every test
#: whose fixture closure holds one of them gets the ``anvil`` marker; tests/test_markers.py finds the fixtures
#: that start anvil and fails if one is missing here.
ANVIL_FIXTURES = frozenset({"anvil_url", "world"})

#: Fixtures whose setup alone takes over 5 s (``--durations``, 2 busy cores): the session's SmolLM2 conversion
#: (tests/generate/conftest.py, ~45 s), the studio's evolved collection (``world``, ~9 s) and test_verify's
#: ``chrysalis model sample`` subprocess (``sampled``, ~8 s). A test that needs one is ``slow``: it pays for the
#: fixture whenever it runs first, or alone, or is the only one left under ``-m "not slow"``.
SLOW_FIXTURES = frozenset({"smollm2_writer", "world", "sampled"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & ANVIL_FIXTURES:
            item.add_marker(pytest.mark.anvil)
        if fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


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
