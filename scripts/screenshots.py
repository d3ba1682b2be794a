"""Take the README's studio screenshots from a running studio (the one `make demo` ends with).

    make demo                      # leaves the studio on http://127.0.0.1:8090 until Ctrl-C
    .venv/bin/python scripts/screenshots.py http://127.0.0.1:8090
    .venv/bin/python scripts/screenshots.py --viewer 'http://127.0.0.1:<gateway port>/ipfs/<site>/?token=...'

``--viewer`` takes one of the token viewer URLs the demo prints (on the gateway's own origin) and captures it once
the token has re-rendered (``docs/token-viewer.png``) instead of the studio pages.

Uses Debian's chromium through playwright (no browser download), like the studio's browser tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", default="http://127.0.0.1:8090")
    p.add_argument("--token", type=int, default=1, help="token whose timeline to capture")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--viewer", help="a token viewer URL the demo printed: capture it instead")
    a = p.parse_args(argv)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium)
        if a.viewer:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(a.viewer)
            # a selector, not wait_for_function: the viewer's policy forbids eval
            page.wait_for_selector('body:not([data-state="loading"])', timeout=180_000)
            if page.locator("#preview-run").count():  # and the preview of the next stage, from the snapshot
                page.click("#preview-run")
                page.wait_for_selector(
                    '#preview:not([data-state="running"]):not([data-state="idle"])', timeout=180_000
                )
            page.screenshot(path=str(a.out / "token-viewer.png"), full_page=True)
            print(a.out / "token-viewer.png", page.get_attribute("body", "data-state"))
            browser.close()
            return 0
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        for path, name in (("/", "studio-gallery.png"), (f"/tokens/{a.token}", "studio-token.png")):
            page.goto(a.url.rstrip("/") + path, wait_until="networkidle")
            page.screenshot(path=str(a.out / name))
            print(a.out / name)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
