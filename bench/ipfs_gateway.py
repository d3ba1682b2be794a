"""Requests per second of the embedded node's path gateway for small cached assets.

Run: ``.venv/bin/python -m bench.ipfs_gateway [--requests N] [--seconds S]``. The node (uvicorn, h11, one
worker) serves an in-memory repo on 127.0.0.1 from a background thread; the client is a separate process
(so the two do not share a GIL) using one httpx keep-alive connection, sequential requests. Each scenario
runs after a short warm-up until ``--requests`` requests or ``--seconds`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import NamedTuple

from bench._table import emit


class Scenario(NamedTuple):
    name: str
    path: str
    headers: dict[str, str]
    expect: int


def _client(
    url: str,
    scenarios: list[tuple[str, str, dict[str, str], int]],
    max_requests: int,
    max_seconds: float,
    out: mp.Queue,
) -> None:
    import httpx

    results = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for scenario in map(Scenario._make, scenarios):
            for _ in range(50):  # warm-up: connection, threadpool, caches
                client.get(scenario.path, headers=scenario.headers)
            latencies: list[float] = []
            started = time.perf_counter()
            deadline = started + max_seconds
            while len(latencies) < max_requests and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                reply = client.get(scenario.path, headers=scenario.headers)
                latencies.append(time.perf_counter() - t0)
                if reply.status_code != scenario.expect:
                    raise RuntimeError(
                        f"{scenario.name}: got {reply.status_code}, expected {scenario.expect}"
                    )
            results.append((scenario.name, len(latencies), time.perf_counter() - started, latencies))
    out.put(results)


def _assets() -> tuple[bytes, bytes]:
    meta = {
        "name": "Chrysalis #42",
        "image": "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/42.png",
        "attributes": [{"trait_type": f"trait-{i}", "value": i} for i in range(20)],
        "description": "",
    }
    while len(json.dumps(meta)) < 2048:  # pad to 2 KB
        meta["description"] += "A living sprite. "[len(meta["description"]) % 17]
    doc = json.dumps(meta).encode()
    png = b"\x89PNG\r\n\x1a\n" + bytes((i * 7) % 251 for i in range(20 * 1024 - 8))
    return doc, png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="most requests per scenario")
    parser.add_argument("--seconds", type=float, default=5.0, help="most seconds per scenario")
    args, _ = parser.parse_known_args()  # `python -m bench ipfs_gateway` leaves its own argv here
    load = os.getloadavg()[0]

    from agent.ipfs.repo import IpfsRepo
    from agent.ipfs.server import NodeServer

    repo = IpfsRepo(None)
    doc, png = _assets()
    doc_cid, png_cid = repo.add(doc).cid, repo.add(png).cid
    scenarios = [
        Scenario(f"JSON {len(doc) / 1024:.0f} KB", f"/ipfs/{doc_cid}", {}, 200),
        Scenario(f"PNG {len(png) / 1024:.0f} KB", f"/ipfs/{png_cid}", {}, 200),
        Scenario("PNG, If-None-Match", f"/ipfs/{png_cid}", {"If-None-Match": f'"{png_cid}"'}, 304),
        Scenario("PNG, Range 1 KB", f"/ipfs/{png_cid}", {"Range": "bytes=0-1023"}, 206),
    ]
    with NodeServer(repo) as node:
        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()
        # Import the client by its module name so spawn can pickle it under `python -m bench` too.
        client = importlib.import_module("bench.ipfs_gateway")._client
        proc = ctx.Process(
            target=client, args=(node.url, [tuple(s) for s in scenarios], args.requests, args.seconds, queue)
        )
        proc.start()
        results = queue.get(timeout=len(scenarios) * (args.seconds + 60))
        proc.join(30)
    rows = []
    for name, count, elapsed, latencies in results:
        ms = sorted(x * 1000 for x in latencies)
        rows.append(
            (
                name,
                count,
                f"{elapsed:.2f}",
                f"{count / elapsed:,.0f}",
                f"{statistics.median(ms):.2f}",
                f"{ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f}",
            )
        )
    emit(
        "ipfs_gateway",
        "Embedded gateway: sequential GETs over one keep-alive connection",
        ["asset", "requests", "seconds", "req/s", "p50 ms", "p99 ms"],
        rows,
        notes=(
            "Server: uvicorn (h11) on a thread of the benchmark process; client: httpx in another process. "
            f"Load average when it started: {load:.1f} on {os.cpu_count()} CPU threads (shared machine)."
        ),
    )


if __name__ == "__main__":
    main()
