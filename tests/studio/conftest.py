"""Fixtures: one evolved collection per session (tests/studio/world.py), the studio over it, a logged-in client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agent.studio.app import create_app
from agent.studio.service import Studio
from tests.studio.world import CURATOR, PASSWORD, World, make_world

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
BASE_URL = "http://127.0.0.1"  # a Host the studio answers to (studio.allowed_hosts' default)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[World]:
    with make_world(tmp_path_factory.mktemp("studio-world"), tiny_lm) as w:
        yield w


@pytest.fixture(scope="session")
def studio(world: World) -> Iterator[Studio]:
    s = Studio.from_settings(world.settings)
    try:
        yield s
    finally:
        s.close()


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


@pytest.fixture
def client(studio: Studio) -> Iterator[TestClient]:
    """An anonymous browser (its own cookie jar)."""
    with TestClient(create_app(studio), base_url=BASE_URL, follow_redirects=False) as c:
        yield c


@pytest.fixture
def curator(studio: Studio) -> Iterator[TestClient]:
    """A browser logged in as the admin curator; ``curator.csrf`` holds its session's CSRF token."""
    with TestClient(create_app(studio), base_url=BASE_URL, follow_redirects=False) as c:
        token = csrf_of(c.get("/login").text)
        r = c.post(
            "/login", data={"username": CURATOR, "password": PASSWORD, "csrf_token": token, "next": "/"}
        )
        assert r.status_code == 303, r.text
        c.csrf = csrf_of(c.get("/").text)  # type: ignore[attr-defined]
        yield c


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
