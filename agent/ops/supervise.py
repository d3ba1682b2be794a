"""Run a command so that nothing it starts outlives it: ``python -m agent.ops.supervise -- CMD ...``.

``make demo`` runs ``ape run demo`` through this. Ape starts anvil, the demo starts ``chrysalis run``; if the demo
crashes, hangs or is interrupted at the wrong moment, either could be left running. Here the command runs in a
process group of its own, and whatever way it ends, the whole group is stopped before this process exits:

- the first SIGINT or SIGTERM is passed on to the command, which stops its agent, studio and chain in order;
- if it has not exited ``grace_s`` seconds later, or on a second signal, the group gets SIGTERM, then SIGKILL;
- when the command exits by itself (success or crash), anything left in its group gets SIGTERM, then SIGKILL.

The exit code is the command's (128 + signal number when a signal ended it).

``--free-port VAR`` sets ``VAR=http://127.0.0.1:PORT`` for the command, with a port free at that moment, unless
``VAR`` is already set. ``make demo`` passes ``--free-port APE_FOUNDRY_HOST``: with ``host: auto``, ape-foundry
tries port 8545 first, so two demos (or a demo beside any other anvil on 8545) would start two nodes on one port,
and the second would wait 20 s for a node that could never bind, or join the other's chain.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

#: Seconds the command gets to stop by itself after the first signal.
GRACE_S = 60.0
#: Seconds between SIGTERM and SIGKILL to the group.
KILL_AFTER_S = 5.0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process we cannot signal still holds the group id
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_group(pgid: int, *, kill_after_s: float = KILL_AFTER_S) -> None:
    """SIGTERM every process left in ``pgid``, then SIGKILL those still there after ``kill_after_s``."""
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + kill_after_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick from its ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(cmd: Sequence[str], *, grace_s: float = GRACE_S, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in its own process group and return its exit code, leaving no process of that group behind."""
    proc = subprocess.Popen(list(cmd), start_new_session=True, env=env)
    pgid = proc.pid
    signalled_at: list[float] = []  # monotonic time of each signal received

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signalled_at.append(time.monotonic())
        if len(signalled_at) == 1:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass
        else:  # a second signal: stop everything now
            _signal_group(pgid, signal.SIGKILL)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if signalled_at and time.monotonic() - signalled_at[0] > grace_s:
                print(
                    f"supervise: the command did not stop within {grace_s:g} s of the signal; stopping its processes",
                    file=sys.stderr,
                )
                stop_group(pgid)
    finally:
        stop_group(pgid)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    while args[:1] == ["--free-port"]:
        if len(args) < 2 or not args[1].isidentifier():
            print("error: --free-port needs an environment variable name, e.g. --free-port APE_FOUNDRY_HOST",
                  file=sys.stderr)  # fmt: skip
            return 2
        env.setdefault(args[1], f"http://127.0.0.1:{free_port()}")
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m agent.ops.supervise [--free-port VAR] -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    return run(args, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
