"""The studio in a real headless Chromium (Debian's ``chromium`` package, driven by playwright; no browser
download): open the gallery, open a token's timeline, run Verify and see "match", approve an item in the
review queue and see it published on-chain.

Screenshots go to ``test-artifacts/studio/``. The README's screenshots come from the demo's studio
(``scripts/screenshots.py``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.studio.app import StudioServer
from agent.studio.service import Studio
from tests.studio.world import CURATOR, PASSWORD, ReviewedPublisher, World

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "studio"
CHROMIUM = os.environ.get("CHRYSALIS_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: run `make setup` (it is pinned in requirements.lock)", pytrace=False
        )
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`, which `make setup` "
            "does when run as root), or point CHRYSALIS_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(studio: Studio) -> Iterator[StudioServer]:
    with StudioServer(studio, port=0) as s:
        yield s


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)  # type: ignore[attr-defined]


def csp_violations(page: object) -> list[str]:
    """Collects what the page's Content-Security-Policy blocked (Chromium reports it on the console)."""
    seen: list[str] = []

    def on_console(message: object) -> None:
        text = message.text  # type: ignore[attr-defined]
        if "Content Security Policy" in text:
            seen.append(text)

    page.on("console", on_console)  # type: ignore[attr-defined]
    return seen


def test_gallery_timeline_and_verify_match(browser: object, server: StudioServer) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 800})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    blocked = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#live.on")  # the live-update stream is connected
    cards = page.locator(".card")
    assert cards.count() >= 6
    assert page.locator('.card[data-token="1"] .stage strong').inner_text() == "2"
    page.locator('.card[data-token="1"] img').evaluate("img => img.decode()")
    assert page.locator('.card[data-token="1"] img').evaluate("img => img.naturalWidth") > 0
    shot(page, "gallery")

    page.click('.card[data-token="1"] a')
    page.wait_for_url("**/tokens/1")
    assert page.locator(".stage-entry").count() == 2
    assert page.locator("#stage-2 .traits").count() == 1
    shot(page, "token-timeline")

    stage = page.locator("#stage-2")
    stage.locator("details.provenance > summary").click()
    stage.locator("form[data-verify] button").click()
    verdict = stage.locator(".verify-result .verdict.ok")
    verdict.wait_for(timeout=120_000)
    assert verdict.inner_text().lower() == "match"
    shot(page, "verify-match")

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)  # type: ignore[attr-defined]
    phone.goto(server.url + "/")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the gallery scrolls sideways on a phone ({width} px)"
    shot(phone, "gallery-phone")
    phone.close()
    page.close()
    assert blocked == [], "the studio's CSP blocked its own scripts, styles or images"


def test_approve_in_the_review_queue_and_see_it_published_on_chain(
    browser: object, server: StudioServer, world: World
) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    with world.lock:
        rid = world.chain.request(4, 0)
        agent = world.agent()
    publisher = ReviewedPublisher(world, agent)

    def run() -> None:
        while not stop.is_set():
            try:
                publisher.step()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                return
            stop.wait(0.3)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
        page.set_default_timeout(TIMEOUT_MS)
        blocked = csp_violations(page)
        page.goto(server.url + "/review")
        assert "Log in first" in page.content()
        page.goto(server.url + "/login?next=/review")
        page.fill('input[name="username"]', CURATOR)
        page.fill('input[name="password"]', PASSWORD)
        page.click('form.stack button[type="submit"]')
        page.wait_for_url("**/review")

        item = page.locator(".review-item", has=page.locator('a[href="/tokens/4"]'))
        for _ in range(60):  # the candidate appears once the agent generated it (live update, or a reload)
            if item.count():
                break
            page.wait_for_timeout(500)
            if not item.count():
                page.reload()
        assert item.count() == 1, errors
        assert world.chain.evolved(rid) == []  # not on-chain while it waits
        shot(page, "review-queue")
        asked: list[str] = []
        page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        page.click('#bulk button[name="all_kind"]')  # its inline confirm() runs (allowed by hash); cancelled
        assert asked == ["Approve every genesis item awaiting review?"]
        page.keyboard.press("j")
        item.locator("button.approve-btn").click()
        page.wait_for_url("**/review")

        page.goto(server.url + "/review?tab=approved")
        published = page.locator(".review-item", has=page.locator('a[href="/tokens/4"]')).locator(
            ".published"
        )
        for _ in range(60):
            if published.count():
                break
            page.wait_for_timeout(500)
            if not published.count():
                page.reload()
        assert published.count() == 1, errors
        text = published.text_content() or ""
        assert "Published on-chain" in text
        (evolved,) = world.chain.evolved(rid)
        assert evolved["transactionHash"].hex().removeprefix("0x")[:8] in text
        shot(page, "review-published")

        page.goto(server.url + "/tokens/4")
        assert page.locator("#current-stage").inner_text() == "1"
        assert CURATOR in page.locator("#stage-1 .approved").inner_text()
        assert blocked == [], "the studio's CSP blocked its own scripts, styles or images"
    finally:
        stop.set()
        worker.join(10)
        agent.close()
    assert not errors, errors
