"""Running ``chrysalis`` in-process, as its console script does (``agent.cli.main``), and what came out."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout and stderr with rich's line wrapping undone (whitespace runs collapsed)."""
        return " ".join((self.out + "\n" + self.err).split())


def invoke_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """Run ``chrysalis *args`` through ``agent.cli.main`` (its error handling included) and capture its output."""
    from agent.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
