"""Every ``chrysalis <command>`` a message, hint or help text names is a real command.

The package's string literals are scanned (AST, so comments and code are not), and each command they name is
resolved through the real click command tree: ``chrysalis ipfs ls`` must be a subcommand of ``ipfs``, ``chrysalis
jobs`` a command. A hint that sends the user to a command that does not exist is a dead end.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import typer

from agent.cli import app

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "oracles")

#: ``chrysalis`` followed by words, inside backticks (how messages quote commands) or in a ``hint=`` text.
QUOTED = re.compile(r"`chrysalis((?: [^`\s]+)+)`")
BARE = re.compile(r"\bchrysalis((?: [a-z][a-z-]*)+)")
WORD = re.compile(r"[a-z][a-z-]*")


def _problem(words: list[str]) -> str | None:
    """Why ``chrysalis <words>`` names no command (None: it does)."""
    command: Any = typer.main.get_command(app)
    for word in words:
        if not hasattr(command, "commands"):  # typer's groups (it vendors click, so not click.Group)
            return None  # a command: the rest are its arguments and options
        if not WORD.fullmatch(word):
            return None  # an option or a placeholder after a group (`chrysalis --version`, `chrysalis <cmd>`)
        sub = command.commands.get(word)
        if sub is None:
            return f"{command.name or 'chrysalis'} has no command {word!r}"
        command = sub
    return None


def _hint_texts(tree: ast.AST) -> set[int]:
    """ids of the string constants passed as ``hint=`` (where bare `chrysalis xxx` is also a command)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "hint":
            found.update(id(c) for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return found


def test_every_command_the_package_names_exists() -> None:
    problems = []
    scanned = 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            hints = _hint_texts(tree)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    continue
                matches = list(QUOTED.finditer(node.value))
                if id(node) in hints:
                    matches += BARE.finditer(node.value)
                for match in matches:
                    scanned += 1
                    problem = _problem(match.group(1).split())
                    if problem:
                        where = f"{path.relative_to(ROOT)}:{node.lineno}"
                        problems.append(f"{where}: {match.group(0)!r}: {problem}")
    assert scanned > 20, "the scan found almost no command names: is the pattern still right?"
    assert not problems, "\n".join(problems)


def test_the_scan_catches_a_command_that_does_not_exist() -> None:
    assert _problem(["jobs"]) is None
    assert _problem(["ipfs", "cat", "bafy"]) is None
    assert _problem(["review", "list", "--limit", "5"]) is None
    assert _problem(["ipfs", "frobnicate"]) == "ipfs has no command 'frobnicate'"
    assert _problem(["frobnicate"]) == "chrysalis has no command 'frobnicate'"


def test_the_unknown_job_hint_names_the_jobs_command(tmp_path: Path) -> None:
    from agent.jobs.errors import JobNotFoundError

    assert "`chrysalis jobs`" in (JobNotFoundError(999).hint or "")
