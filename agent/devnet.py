"""A throwaway local chain: anvil on a free 127.0.0.1 port, for tests, benchmarks and the demo.

    with start_anvil("--accounts", "4") as node:
        w3 = Web3(Web3.HTTPProvider(node.url))

anvil keeps a cache under ``$HOME/.foundry`` that grows without bound, so each node gets a temporary HOME removed on
exit (and ``make setup``'s ``.venv/bin/anvil`` shim adds ``--prune-history``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent.errors import BackendUnavailableError, NotFoundError

ROOT = Path(__file__).resolve().parents[1]


def find_anvil() -> str:
    """The anvil binary: the project's ``.venv/bin/anvil`` shim first, then ``$PATH``.

    Raises:
        NotFoundError: neither exists.
    """
    found = shutil.which("anvil", path=str(ROOT / ".venv" / "bin")) or shutil.which("anvil")
    if found is None:
        raise NotFoundError("anvil is not installed", hint="run `make setup` (it installs anvil from npm)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class AnvilNode:
    """A running anvil: its JSON-RPC URL (HTTP; WebSocket on the same port) and process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextmanager
def start_anvil(*args: str, startup_timeout_s: float = 20.0) -> Iterator[AnvilNode]:
    """Run anvil with ``args`` (e.g. ``"--accounts", "4"``, ``"--no-mining"``) until the block exits.

    Raises:
        NotFoundError: anvil is not installed.
        BackendUnavailableError: it exited or did not answer ``eth_chainId`` within ``startup_timeout_s``.
    """
    binary = find_anvil()
    port = free_port()
    home = tempfile.mkdtemp(prefix="chrysalis-anvil-")
    log = open(os.path.join(home, "anvil.log"), "w+b")  # a file, not a pipe: a full pipe would stall anvil
    proc = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--silent", *args],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "HOME": home},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1.0)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    err = log.read().decode(errors="replace").strip()[-2000:]
                    raise BackendUnavailableError(
                        f"anvil did not start on port {port} (exit code {proc.poll()}){': ' + err if err else ''}",
                        hint=f"check the arguments {list(args)} and that {binary} runs",
                    ) from None
                time.sleep(0.05)
        yield AnvilNode(url=url, port=port, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
