"""Shared table output for benchmarks: a rich table on the terminal and a Markdown copy in bench/results/."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """One line describing where the numbers were taken."""
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}"


def emit(
    name: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], notes: str = ""
) -> str:
    """Print ``rows`` as a table and write ``bench/results/<name>.md``. Returns the Markdown."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)
    if notes:
        Console().print(notes)
    md = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    md += ["", f"_{machine()}; {stamp}._" + (f" {notes}" if notes else ""), ""]
    text = "\n".join(md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return text
