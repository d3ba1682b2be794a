"""Throughput of the UnixFS importer beside raw ``hashlib.sha256`` on the same input, in the same run.

Run: ``.venv/bin/python -m bench.ipfs_import [--mb 100] [--rounds 5]``. The input is ``--mb`` million random
bytes. Every round measures sha256 (256 KiB pieces, one ``hashlib`` object each: the floor the importer cannot
beat) and then each case; the table shows the best round of each. On-disk cases add into an ``IpfsRepo`` in a
temporary directory whose flatfs shard directories already exist (a warm-up add, then gc), as in a repo in use;
the repo is emptied with gc between rounds (not timed).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.ipfs.cid import raw_cid
from agent.ipfs.importer import import_file
from agent.ipfs.repo import IpfsRepo
from bench._table import emit

CHUNK = 262144


def _sha256(data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        hashlib.sha256(view[start : start + CHUNK]).digest()


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="input size in millions of bytes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    data = random.Random(0).randbytes(args.mb * 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="bench-ipfs-import-"))
    try:
        source = work / "input.bin"
        source.write_bytes(data)
        repo = IpfsRepo(work / "repo")
        repo.add(random.Random(1).randbytes(400 * CHUNK), pin=False)  # warm-up: shard directories exist
        repo.gc()
        nosync = IpfsRepo(work / "repo-nosync", sync=False)
        nosync.add(random.Random(1).randbytes(400 * CHUNK), pin=False)
        nosync.gc()

        def from_file() -> None:
            with source.open("rb") as f:
                import_file(f, None)

        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        chunk_cids = [raw_cid(chunk) for chunk in chunks]

        def store_only() -> None:
            with repo.blockstore.batch():
                for cid, chunk in zip(chunk_cids, chunks, strict=True):
                    repo.blockstore.put(cid, chunk)

        def on_disk(target: IpfsRepo, version: int) -> Callable[[], object]:
            return lambda: target.add(data, cid_version=version, pin=False)

        cases: list[tuple[str, Callable[[], object], IpfsRepo | None]] = [
            ("CID only, CIDv1 raw leaves (bytes)", lambda: import_file(data, None), None),
            ("CID only, CIDv0 (bytes)", lambda: import_file(data, None, cid_version=0), None),
            ("CID only, CIDv1 raw leaves (streamed from a file)", from_file, None),
            ("on disk, CIDv1 raw leaves (fsync each block)", on_disk(repo, 1), repo),
            ("on disk, CIDv0 (fsync each block)", on_disk(repo, 0), repo),
            ("on disk, CIDv1 raw leaves, sync=False", on_disk(nosync, 1), nosync),
            ("disk floor: the same blocks' puts alone, hashes precomputed (fsync)", store_only, repo),
        ]
        sha_times: list[float] = []
        times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(args.rounds):
            sha_times.append(_timed(lambda: _sha256(data)))
            for name, fn, target in cases:
                times[name].append(_timed(fn))
                if target is not None:
                    target.gc()
        mb = len(data) / 1e6
        sha_best = mb / min(sha_times)
        rows: list[list[object]] = [
            [
                "hashlib.sha256, 256 KiB pieces (reference)",
                f"{sha_best:.0f}",
                f"{mb / statistics.median(sha_times):.0f}",
                "1.00",
            ]
        ]
        for name, _, _ in cases:
            best = mb / min(times[name])
            rows.append(
                [name, f"{best:.0f}", f"{mb / statistics.median(times[name]):.0f}", f"{best / sha_best:.2f}"]
            )
        emit(
            "ipfs_import",
            f"UnixFS import of {mb:.0f} MB (Kubo defaults: 256 KiB chunks, 174 links)",
            ["case", "MB/s (best)", "MB/s (median)", "x sha256 (best)"],
            rows,
            notes=f"Best and median of {args.rounds} rounds. On-disk cases write through IpfsRepo.add into flatfs "
            "(per block: temp file, fsync, rename; each directory fsynced once at the end of the add; 16 writer "
            "threads) in a repo whose shard directories exist. Disk numbers depend on the disk and on what else "
            "writes to it; the last row, the blockstore alone, is the ceiling for on-disk imports on this disk.",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
