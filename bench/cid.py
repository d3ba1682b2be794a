"""Throughput of CID parsing and printing: ``agent.ipfs.cid`` beside the maintained Python CID libraries.

Run: ``.venv/bin/python -m bench.cid [--n N] [--rounds R]``. Each operation runs over ``--n`` distinct CIDs (sha2-256
of ``i``), fresh ones every round, so no cache helps: ours caches parsed strings (an LRU of 8192) and each CID's own
string, and the libraries cache nothing. The table shows the best round, in thousands of operations per second, and
how many times slower than ours each library is. The libraries are the ones that could replace ours:
``multiformats`` (what the architecture review named) and ``py-cid`` (already installed, for ethpm-types). A library
that is not installed gets an empty column and a note; before timing, every library's results are checked against
ours on the first CIDs of the set.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent.ipfs.cid import CID, DAG_PB, RAW, raw_cid
from bench._table import emit

T = TypeVar("T")


@dataclass(frozen=True)
class Inputs:
    """One round's CIDs, in every form an operation starts from."""

    digests: list[bytes]
    v1: list[CID]
    v0: list[CID]
    v1_text: list[str]
    v0_text: list[str]
    v1_bytes: list[bytes]


Timed = Callable[[], object]
"""The work one operation times; what it needs is made before (outside the timing)."""

Setup = Callable[[Inputs], Timed]


@dataclass(frozen=True)
class Operation:
    """One timed operation: its name, the code path that does it, and its setup per round."""

    name: str
    hot_path: str
    setup: Setup


def _inputs(n: int, round_: int) -> Inputs:
    digests = [hashlib.sha256(f"{round_}:{i}".encode()).digest() for i in range(n)]
    v1 = [CID(1, RAW, b"\x12\x20" + d) for d in digests]
    v0 = [CID(0, DAG_PB, b"\x12\x20" + d) for d in digests]
    return Inputs(
        digests=digests,
        v1=v1,
        v0=v0,
        v1_text=[
            str(CID(1, RAW, c.multihash)) for c in v1
        ],  # printed from copies: v1/v0 keep no cached string
        v0_text=[str(CID(0, DAG_PB, c.multihash)) for c in v0],
        v1_bytes=[c.to_bytes() for c in v1],
    )


def _each(fn: Callable[[T], object], items: Sequence[T]) -> Timed:
    return lambda: [fn(item) for item in items]


OURS = [
    Operation(
        "build CIDv1 raw from a sha2-256 digest",
        "importer leaves",
        lambda x: _each(lambda d: CID(1, RAW, b"\x12\x20" + d), x.digests),
    ),
    Operation("str(): CIDv1 base32", "replies, logs, records", lambda x: _each(str, x.v1)),
    Operation("str(): CIDv0 base58btc", "Kubo-default adds (CIDv0)", lambda x: _each(str, x.v0)),
    Operation(
        "parse a CIDv1 string (bafk...)", "gateway paths, pin file", lambda x: _each(CID.parse, x.v1_text)
    ),
    Operation(
        "parse a CIDv0 string (Qm...)", "gateway paths, RPC args", lambda x: _each(CID.parse, x.v0_text)
    ),
    Operation("parse a binary CIDv1", "dag-pb links, CAR sections", lambda x: _each(CID.parse, x.v1_bytes)),
]


def _multiformats() -> tuple[str, list[Setup]] | str:
    try:
        from multiformats import CID as MfCID
        from multiformats import multihash
    except ImportError:
        return "multiformats is not installed (pip install multiformats)"

    def v1(d: bytes) -> MfCID:
        return MfCID("base32", 1, "raw", multihash.wrap(d, "sha2-256"))

    def v0(d: bytes) -> MfCID:
        return MfCID("base58btc", 0, "dag-pb", multihash.wrap(d, "sha2-256"))

    probe = _inputs(4, -1)
    for d, ours_v1, ours_v0, raw in zip(probe.digests, probe.v1, probe.v0, probe.v1_bytes, strict=True):
        assert str(v1(d)) == str(ours_v1) and MfCID.decode(str(ours_v1)) == v1(d) and bytes(v1(d)) == raw
        assert str(v0(d)) == str(ours_v0) and MfCID.decode(str(ours_v0)) == v0(d)
    return f"multiformats {importlib.metadata.version('multiformats')}", [
        lambda x: _each(v1, x.digests),
        lambda x: _each(str, [v1(d) for d in x.digests]),
        lambda x: _each(str, [v0(d) for d in x.digests]),
        lambda x: _each(MfCID.decode, x.v1_text),
        lambda x: _each(MfCID.decode, x.v0_text),
        lambda x: _each(MfCID.decode, x.v1_bytes),
    ]


def _py_cid() -> tuple[str, list[Setup]] | str:
    try:
        import cid as pycid  # py-cid
    except ImportError:
        return "py-cid is not installed (pip install py-cid)"

    def v1(d: bytes) -> pycid.CIDv1:
        return pycid.make_cid(1, "raw", b"\x12\x20" + d)

    def v0(d: bytes) -> pycid.CIDv0:
        return pycid.make_cid(0, "dag-pb", b"\x12\x20" + d)

    def v1_str(c: pycid.CIDv1) -> str:
        return c.encode("base32").decode()

    def v0_str(c: pycid.CIDv0) -> str:
        return c.encode().decode()

    probe = _inputs(4, -1)
    for d, ours_v1, ours_v0, raw in zip(probe.digests, probe.v1, probe.v0, probe.v1_bytes, strict=True):
        assert v1_str(v1(d)) == str(ours_v1) and pycid.from_string(str(ours_v1)).buffer == raw
        assert pycid.from_bytes(raw).buffer == raw
        assert v0_str(v0(d)) == str(ours_v0) and pycid.from_string(str(ours_v0)).buffer == ours_v0.to_bytes()
    return f"py-cid {importlib.metadata.version('py-cid')}", [
        lambda x: _each(v1, x.digests),
        lambda x: _each(v1_str, [v1(d) for d in x.digests]),
        lambda x: _each(v0_str, [v0(d) for d in x.digests]),
        lambda x: _each(pycid.from_string, x.v1_text),
        lambda x: _each(pycid.from_string, x.v0_text),
        lambda x: _each(pycid.from_bytes, x.v1_bytes),
    ]


def _seconds(setup: Setup, inputs: Inputs) -> float:
    work = setup(inputs)
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _cell(ops_per_s: float, ours: float | None) -> str:
    text = f"{ops_per_s / 1000:,.1f}"
    if ours is None:
        return text
    if ops_per_s > ours:
        return f"{text} ({ops_per_s / ours:.1f}x faster)"
    return f"{text} ({ours / ops_per_s:.1f}x slower)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="distinct CIDs per operation and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    columns = ["operation", "hot path", "agent.ipfs.cid (k ops/s)"]
    libraries: list[list[Setup]] = []
    notes = [
        f"Best of {args.rounds} rounds over {args.n:,} distinct CIDs each; "
        "'str()' times printing CIDs that already exist."
    ]
    for found in (_multiformats(), _py_cid()):
        if isinstance(found, str):
            notes.append(f"Skipped: {found}.")
            continue
        columns.append(f"{found[0]} (k ops/s)")
        libraries.append(found[1])
    best = [[float("inf")] * len(OURS) for _ in range(1 + len(libraries))]
    raw_cid(b"warm-up")
    for round_ in range(args.rounds):
        inputs = _inputs(args.n, round_)
        for column, setups in enumerate([[op.setup for op in OURS], *libraries]):
            for row, setup in enumerate(setups):
                best[column][row] = min(best[column][row], _seconds(setup, inputs))
    rows = []
    for row, op in enumerate(OURS):
        our_rate = args.n / best[0][row]
        cells = [_cell(args.n / best[column][row], our_rate) for column in range(1, len(best))]
        rows.append([op.name, op.hot_path, _cell(our_rate, None), *cells])
    emit("cid", "CIDs: parse and print, ours beside the libraries", columns, rows, notes=" ".join(notes))


if __name__ == "__main__":
    main()
