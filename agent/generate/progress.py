"""Progress inside one ``generate`` / ``write`` call, for callers that show a bar (``chrysalis genesis``).

A generator calls :func:`advance` after each chunk it finishes (an image on the CPU, a decoded lore batch);
a caller that wants to know wraps its calls in :func:`reporting`. Nothing is reported (and nothing costs
anything) outside such a block. The callback is per thread, so concurrent generations do not mix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()

Callback = Callable[[str, int], None]
"""``callback(kind, n)``: ``n`` more requests of ``kind`` (``"image"`` or ``"lore"``) are done."""


@contextmanager
def reporting(callback: Callback) -> Iterator[None]:
    """Call ``callback(kind, n)`` on this thread whenever a generator finishes a chunk, inside the block."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def advance(kind: str, n: int) -> None:
    """Report that ``n`` more requests of ``kind`` are done (no-op unless inside :func:`reporting`)."""
    callback: Callback | None = getattr(_local, "callback", None)
    if callback is not None and n > 0:
        callback(kind, n)
