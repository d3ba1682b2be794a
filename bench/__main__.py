"""Run every benchmark in turn: `python -m bench [name ...]` (names: see ``ALL``).

Each prints its table and writes bench/results/<name>.md, which the README quotes."""

from __future__ import annotations

import importlib
import runpy
import sys

ALL = [
    "gas",
    "ipfs_import",
    "ipfs_gateway",
    "cid",
    "image_quality",
    "gates",
    "inference",
    "submit",
    "latency",
    "genesis",
    "refresh",
    "credentials",
    "lore_style",
    "onnx_agreement",
    "renderer_agreement",
    "token_agreement",
    "agents",
]


def main(argv: list[str]) -> int:
    names = argv or ALL
    failed = []
    for name in names:
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"bench: no benchmark named {name!r}; choose from {', '.join(ALL)}", file=sys.stderr)
            return 2
        print(f"\n=== bench.{name}")
        try:
            runpy.run_module(f"bench.{name}", run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
