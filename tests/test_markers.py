"""Every test that starts anvil carries the ``anvil`` marker.

tests/conftest.py marks each test whose fixtures include one named in ``ANVIL_FIXTURES``. This reads the test
sources for what starts anvil (``start_anvil``, ``find_anvil``, and the helpers that call them, to a fixed point)
and fails when a fixture that does is not in that list, or when a test function that does so itself is not
marked.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from tests.conftest import ANVIL_FIXTURES

TESTS = Path(__file__).resolve().parent
STARTERS = {"start_anvil", "find_anvil"}  # agent/devnet.py

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions() -> list[tuple[Path, ast.Module, Function]]:
    out = []
    for path in sorted(TESTS.rglob("*.py")):
        module = ast.parse(path.read_text(), filename=str(path))
        out.extend((path, module, node) for node in ast.walk(module) if isinstance(node, Function))
    return out


def _names_used(fn: Function) -> set[str]:
    """What a function's body (nested functions included) calls (``f(...)``, ``mod.f(...)``), and the names it
    puts in an argument list or a command line (``Popen([ANVIL, ...])``; not ``if ANVIL is None``)."""
    used: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                used.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                used.add(node.func.attr)
            used.update(arg.id for arg in node.args if isinstance(arg, ast.Name))
        elif isinstance(node, ast.List | ast.Tuple):
            used.update(elt.id for elt in node.elts if isinstance(elt, ast.Name))
    return used


def _is_fixture(fn: Function) -> bool:
    for deco in fn.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
            isinstance(target, ast.Name) and target.id == "fixture"
        ):
            return True
    return False


def _marks(nodes: list[ast.expr]) -> set[str]:
    """The marker names in ``nodes``: ``anvil`` for ``pytest.mark.anvil``, in a list or called."""
    out = set()
    for node in nodes:
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Attribute)
                and sub.value.attr == "mark"
            ):
                out.add(sub.attr)
    return out


def _module_marks(module: ast.Module) -> set[str]:
    return _marks(
        [
            stmt.value
            for stmt in module.body
            if isinstance(stmt, ast.Assign)
            and any(getattr(t, "id", None) == "pytestmark" for t in stmt.targets)
        ]
    )


@functools.cache
def anvil_starters() -> tuple[tuple[Path, ast.Module, Function], ...]:
    """The functions under tests/ that start anvil, directly or through a helper function there."""
    functions = _functions()
    uses = {id(fn): _names_used(fn) for _, _, fn in functions}
    names = set(STARTERS)
    found: dict[int, tuple[Path, ast.Module, Function]] = {}
    while True:
        new = {
            id(fn): entry for entry in functions if id(fn := entry[2]) not in found and uses[id(fn)] & names
        }
        if not new:
            return tuple(found.values())
        found.update(new)
        # through helpers only: a fixture is not called, and a test's name is nobody's business
        names |= {
            fn.name for _, _, fn in new.values() if not _is_fixture(fn) and not fn.name.startswith("test")
        }


def test_the_source_scan_finds_the_known_anvil_fixtures() -> None:
    fixtures = {fn.name for _, _, fn in anvil_starters() if _is_fixture(fn)}
    assert {"anvil", "world"} <= fixtures, fixtures


def test_every_fixture_that_starts_anvil_marks_its_tests() -> None:
    missing = [
        f"{path.relative_to(TESTS.parent)}:{fn.lineno} {fn.name}"
        for path, _, fn in anvil_starters()
        if _is_fixture(fn) and fn.name not in ANVIL_FIXTURES
    ]
    assert not missing, (
        f"these fixtures start anvil: add them to ANVIL_FIXTURES in tests/conftest.py: {missing}"
    )


def test_every_test_that_starts_anvil_itself_is_marked() -> None:
    missing = [
        f"{path.relative_to(TESTS.parent)}:{fn.lineno} {fn.name}"
        for path, module, fn in anvil_starters()
        if fn.name.startswith("test") and "anvil" not in _module_marks(module) | _marks(fn.decorator_list)
    ]
    assert not missing, (
        f"these tests start anvil: mark them (or their module) with pytest.mark.anvil: {missing}"
    )


def test_the_collected_tests_with_an_anvil_fixture_are_marked(request: pytest.FixtureRequest) -> None:
    unmarked = [
        item.nodeid
        for item in request.session.items
        if ANVIL_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        and not item.get_closest_marker("anvil")
    ]
    assert not unmarked, unmarked
