"""Copy the benchmark tables from bench/results/*.md into README.md, so the README never drifts from what ran.

    .venv/bin/python scripts/readme_tables.py          # rewrite README.md in place
    .venv/bin/python scripts/readme_tables.py --check  # exit 1 if README.md is out of date

README.md marks each table with a pair of comments; everything between them is replaced by the results file:

    <!-- bench:gas -->
    ...
    <!-- /bench:gas -->
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def render(readme: str, results: Path) -> tuple[str, list[str]]:
    missing: list[str] = []

    def fill(m: re.Match[str]) -> str:
        path = results / f"{m['name']}.md"
        if not path.is_file():
            missing.append(m["name"])
            return m.group(0)
        body = path.read_text().strip()
        body = re.sub(r"^### ", "#### ", body, flags=re.M)  # tables sit under README's own ### headings
        return f"{m.group(1)}{body}\n{m.group(4)}"

    return BLOCK.sub(fill, readme), missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is out of date")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    a = p.parse_args(argv)
    old = a.readme.read_text()
    new, missing = render(old, a.results)
    for name in missing:
        print(
            f"readme_tables: bench/results/{name}.md does not exist; run the benchmark that writes it (make bench)",
            file=sys.stderr,
        )
    if a.check:
        if new != old:
            print("readme_tables: README.md is out of date; run scripts/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        a.readme.write_text(new)
        print(f"readme_tables: updated {a.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
