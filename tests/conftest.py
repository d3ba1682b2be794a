"""Suite-wide fixtures and markers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: The shared fixtures (chain, models, databases) every package gets: tests/support/fixtures.py.
pytest_plugins = ["tests.support.fixtures"]

#: Fixtures that start an anvil node: ``anvil`` (tests/support/fixtures.py; tests/watch's, one per test),
#: ``anvil_url`` (a module of tests/ops overrides it with its own node) and the studio's session ``world``
#: (tests/studio/world.py). Every test whose fixture closure holds one of them gets the ``anvil`` marker;
#: tests/test_markers.py finds the fixtures that start anvil and fails if one is missing here.
ANVIL_FIXTURES = frozenset({"anvil", "anvil_url", "world"})

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

    Settings loading writes nothing to the environment (``--config`` travels on the click context), but commands run
    in-process still set process-wide defaults for the model libraries: ``chrysalis run`` and the model commands
    call :func:`agent.ops.logs.disable_progress_bars` / :func:`agent.generate.quiet.quiet_libraries`, which
    ``setdefault`` ``HF_HUB_DISABLE_PROGRESS_BARS`` and ``TQDM_DISABLE``; without this, a later test would see
    tqdm and Hugging Face bars off depending on which tests ran before it.
    """
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
