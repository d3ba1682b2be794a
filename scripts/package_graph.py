"""Print the agent's package graph: the edges between packages, the cycles and each package's line count.

Every import counts, module-level and function-level alike (a lazy import that dodges a cycle is still an
edge), except imports under ``if TYPE_CHECKING:``, which never run. A package is ``agent.<name>`` for a
sub-package, ``agent.<module>`` for a top-level module, and ``oracles``.

Usage: ``python scripts/package_graph.py [ROOT]`` (ROOT defaults to the repository root), or with
``--markdown`` for the tables the architecture issue's closing note quotes.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "oracles":
        return "oracles"
    if parts[0] != "agent" or len(parts) < 2:
        return None
    return parts[1]


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def imports_of(root: Path, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    here = module_name(root, path)
    is_pkg = path.name == "__init__.py"
    found: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                drop = node.level - 1 if is_pkg else node.level
                base = base[: len(base) - drop] if drop else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
            found.extend(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    edges: dict[str, set[str]] = defaultdict(set)
    lines: dict[str, int] = defaultdict(int)
    files = [*sorted((root / "agent").rglob("*.py")), *sorted((root / "oracles").rglob("*.py"))]
    for path in files:
        src = package_of(module_name(root, path))
        if src is None or src == "__init__":
            src = "__init__"
        lines[src] += len(path.read_text(encoding="utf-8").splitlines())
        for target in imports_of(root, path):
            dst = package_of(_resolve(root, target))
            if dst and dst != src:
                edges[src].add(dst)
    lines.pop("__init__", None)
    edges.pop("__init__", None)
    return edges, lines


def _resolve(root: Path, module: str) -> str:
    """The longest prefix of ``module`` that is a file (``from agent import __version__`` is ``agent``)."""
    parts = module.split(".")
    while parts:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return module


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    nodes = set(edges) | {d for ds in edges.values() for d in ds}

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    edges, lines = graph(args.root)
    loops = cycles(edges)
    if args.markdown:
        print("| package | lines | imports |\n|---|---:|---|")
        for pkg in sorted(lines, key=lambda p: (-lines[p], p)):
            print(f"| `{pkg}` | {lines[pkg]:,} | {', '.join(sorted(edges.get(pkg, ()))) or '-'} |")
        print(f"\n{sum(lines.values()):,} lines in {len(lines)} packages and modules.")
    else:
        for pkg in sorted(lines):
            print(f"{pkg:<12} {lines[pkg]:>6}  -> {' '.join(sorted(edges.get(pkg, ())))}")
    print("\ncycles: " + ("; ".join("{" + ", ".join(c) + "}" for c in loops) if loops else "none"))
    return 1 if loops else 0


if __name__ == "__main__":
    raise SystemExit(main())
