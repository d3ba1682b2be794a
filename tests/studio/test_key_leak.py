"""The RPC provider's API key never reaches a studio page (audit M6): the poller's banner, error pages and job
errors on /ops show the endpoint redacted, and anonymous visitors only learn that the chain is unavailable.

The studio here reaches the world's anvil through a FaultProxy under a URL with a key in its path and its query
(the proxy ignores both), then the proxy starts answering 503.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agent.jobs import JobKind
from agent.redact import HIDDEN
from agent.studio.app import CHAIN_UNAVAILABLE, create_app
from agent.studio.service import Studio
from tests.studio.conftest import csrf_of
from tests.studio.world import CURATOR, PASSWORD, World
from tests.support.rpc_proxy import FaultProxy

PATH_KEY = "SECRET-PROVIDER-KEY-123"
QUERY_KEY = "SECRET-QUERY-KEY-456"


def assert_clean(text: str) -> None:
    assert PATH_KEY not in text and QUERY_KEY not in text, text


@pytest.fixture
def proxy(world: World) -> Iterator[FaultProxy]:
    p = FaultProxy(world.chain.url)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def keyed_studio(world: World, proxy: FaultProxy, tmp_path: Path) -> Iterator[Studio]:
    """A studio over the world's chain through ``proxy``, with its own (empty) job database."""
    chain = world.settings.chain.model_copy(
        update={"rpc_url": f"{proxy.url}/v3/{PATH_KEY}?apiKey={QUERY_KEY}", "rpc_retries": 0}
    )
    database = world.settings.database.model_copy(update={"url": f"sqlite:///{tmp_path / 'jobs.db'}"})
    studio = Studio.from_settings(world.settings.model_copy(update={"chain": chain, "database": database}))
    try:
        yield studio
    finally:
        studio.close()


def test_no_page_shows_the_rpc_key(
    keyed_studio: Studio, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    studio = keyed_studio
    # a job error stored with the full URL (by an agent from before the fix, or any other path)
    job, _ = studio.jobs.enqueue(JobKind.REFRESH, "refresh:leak", payload={"token_id": 1})
    assert studio.jobs.claim("w") is not None
    studio.jobs.report_error(job.id, "w", f"RPC {studio.settings.chain.rpc_url} unavailable: HTTP 503")
    caplog.clear()  # (the job store logged the planted error as given)
    assert studio.poller.run_once() >= 0 and studio.poller.last_error is None

    with TestClient(create_app(studio), base_url="http://localhost", follow_redirects=False) as anonymous:
        ops = anonymous.get("/ops")
        assert ops.status_code == 200 and f"RPC {proxy.url}/{HIDDEN} unavailable" in ops.text
        assert_clean(ops.text)
        assert_clean(anonymous.get("/ops", headers={"accept": "application/json"}).text)

        proxy.fail_next = [(503, {})] * 1000  # the provider goes down
        studio.poller.run_once()
        error = studio.poller.last_error
        assert error is not None and f"{proxy.url}/{HIDDEN}" in error  # the banner's text, for curators
        assert_clean(error)

        for path in ("/", "/login", "/ops", "/tokens/1"):
            page = anonymous.get(path)
            assert page.status_code in (200, 503), (path, page.status_code)
            assert_clean(page.text)
            assert error not in page.text  # anonymous visitors get no error text from the chain
            assert CHAIN_UNAVAILABLE in page.text, path
        login = anonymous.get("/login")
        assert f"live updates paused: {CHAIN_UNAVAILABLE}" in login.text
        api = anonymous.get("/api/tokens")
        assert_clean(api.text)

    with TestClient(create_app(studio), base_url="http://localhost", follow_redirects=False) as curator:
        token = csrf_of(curator.get("/login").text)
        r = curator.post("/login", data={"username": CURATOR, "password": PASSWORD, "csrf_token": token})
        assert r.status_code == 303, r.text
        page = curator.get("/ops")
        assert f"live updates paused: {error}" in page.text  # curators see the error, redacted
        assert_clean(page.text)

    assert proxy.injected["http_503"] > 0
    assert_clean(caplog.text)
