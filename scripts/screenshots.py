"""Take the README's studio screenshots from a running studio (the one `make demo` ends with).

    make demo                      # leaves the studio on http://127.0.0.1:8090 until Ctrl-C
    .venv/bin/python scripts/screenshots.py http://127.0.0.1:8090

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
    a = p.parse_args(argv)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium)
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        for path, name in (("/", "studio-gallery.png"), (f"/tokens/{a.token}", "studio-token.png")):
            page.goto(a.url.rstrip("/") + path, wait_until="networkidle")
            page.screenshot(path=str(a.out / name))
            print(a.out / name)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
