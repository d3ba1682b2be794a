"""What the node's two HTTP listeners (:mod:`agent.ipfs.gateway`, :mod:`agent.ipfs.kubo_rpc`) answer with alike.

Guarantees:

* :class:`HttpError` is the one way a handler refuses a request: the gateway turns it into a text reply, the RPC
  into Kubo's JSON error shape (:func:`kubo_error`), both with its status and headers.
* :func:`public_message` never puts a path on the server's disk into a reply (the log keeps the details).
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.responses import JSONResponse

from agent.errors import ChrysalisError
from agent.ipfs.errors import CorruptBlockError

__all__ = [
    "CAR_TYPE",
    "OCTETS",
    "SMALL_BODY",
    "STREAM_CHUNK",
    "HttpError",
    "coalesce",
    "kubo_error",
    "public_message",
]

SMALL_BODY = 1 << 20
"""Bodies up to this size are read whole instead of streamed (and spooled in memory, not on disk)."""

STREAM_CHUNK = 256 * 1024
"""About how many bytes one streamed chunk carries."""

CAR_TYPE = "application/vnd.ipld.car"
OCTETS = "application/octet-stream"


class HttpError(Exception):
    """An error reply: gateway errors as text, RPC errors in Kubo's JSON shape.

    Args:
        status: the HTTP status.
        message: what the reply says.
        code: Kubo's error ``Code`` (0: a server error, 1: a client error).
        headers: extra reply headers (``WWW-Authenticate``, ``Retry-After``, ``Content-Range``).
    """

    def __init__(
        self, status: int, message: str, *, code: int = 0, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def public_message(exc: BaseException) -> str:
    """What a 500 reply may say about ``exc``: never a path on the server's disk (the log has the details).

    Args:
        exc: the error that ended the request.
    """
    if isinstance(exc, CorruptBlockError):
        return (
            f"block {exc.cid} is corrupt in this node's repo (its bytes do not hash to its CID); not served"
        )
    if isinstance(exc, ChrysalisError):
        return exc.message
    return f"internal error ({type(exc).__name__}); the node's log has the details"


def kubo_error(message: str, status: int, code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """A reply in Kubo's error shape, ``{"Message", "Code", "Type": "error"}``.

    Args:
        message: the ``Message``.
        status: the HTTP status.
        code: Kubo's ``Code`` (0: a server error, 1: a client error).
        headers: extra reply headers.
    """
    return JSONResponse(
        {"Message": message, "Code": code, "Type": "error"}, status_code=status, headers=headers
    )


def coalesce(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Join small pieces (a CAR's section prefixes) into chunks of about ``size`` bytes: fewer thread hops.

    Args:
        chunks: the pieces, in order.
        size: the least a joined chunk holds (the last one may hold less).
    """
    parts: list[bytes] = []
    held = 0
    for chunk in chunks:
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)
