"""A crash hook for the restart tests: ``CHRYSALIS_TEST_KILL_AFTER=<point>[:<n>]`` SIGKILLs the process.

Points: ``inputs``, ``generated``, ``published`` (after that stage's record is stored), ``sent`` (after a
fulfilment transaction is broadcast, BEFORE the ``submitted`` record is stored: the narrowest window),
``submitted`` (after the record, before waiting) and ``confirmed``. ``<n>`` kills at the n-th time the
point is reached (default 1). Unset (always, in production) it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "CHRYSALIS_TEST_KILL_AFTER"
POINTS = ("inputs", "generated", "published", "sent", "submitted", "confirmed")

log = logging.getLogger(__name__)
_seen: dict[str, int] = {}


def reached(point: str) -> None:
    """Note that ``point`` was reached; kill the process if the env var asks for it."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={wanted!r}: the point must be one of {', '.join(POINTS)}")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(nth or 1):
        log.warning("%s=%s: killing the agent (pid %d) now", ENV, wanted, os.getpid())
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
