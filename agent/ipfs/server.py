"""The embedded IPFS node over HTTP: a path gateway and the subset of Kubo's RPC API that Chrysalis uses.

Two apps on two listeners, as Kubo has:

* :func:`create_app`, the read-only path gateway ``GET|HEAD /ipfs/<cid>[/<path>]`` (ETag, immutable caching,
  ``If-None-Match``, single byte ranges, ``?format=raw|car``, directory listings). It has no write route:
  ``/api/v0/...`` answers 404 there. This is the only app that may listen off-host (pinning services fetch
  from it in ``mode = "origins"``).
* :func:`create_rpc_app`, ``POST /api/v0/<command>``: ``version``, ``add``, ``cat``, ``pin/add|ls|rm``,
  ``dag/import``, ``dag/export``, ``block/get``, with Kubo's parameter names and reply shapes, so that one
  client (ipfshttpclient, or our Kubo backend) talks to this node and to a real Kubo alike. Errors use Kubo's
  JSON shape ``{"Message", "Code", "Type": "error"}``. It listens on loopback only and every request needs
  ``Authorization: Bearer <token>`` (401 without, 403 with a wrong one, checked before the body is read;
  see :mod:`agent.ipfs.rpc_auth`). Requests that carry an ``Origin`` header are refused (403) too: browsers
  send it, our clients do not. Multipart bodies are capped in parts (:data:`DEFAULT_MAX_PARTS`) and CAR
  imports in links held in memory (:data:`DEFAULT_MAX_CAR_LINKS`), on top of the byte limit.

Every gateway reply carries
:data:`GATEWAY_CSP` (a sandbox: an HTML or SVG file renders, but its scripts never run, in an opaque origin) and
``X-Content-Type-Options: nosniff``. ``create_app(..., safe_types=True)`` (the studio's mount, which shares its
origin with the studio's pages) serves only PNG, JPEG, GIF, WebP and JSON inline, everything else as an
``application/octet-stream`` attachment; the ``filename`` parameter then only names the download.

:class:`NodeServer` runs both (or the gateway alone, ``rpc=False``) with uvicorn on background threads
(tests, the agent); :func:`serve_forever` runs them in the foreground (``chrysalis ipfs serve``).
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import mimetypes
import platform
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from tempfile import SpooledTemporaryFile
from typing import Any, Self
from urllib.parse import quote, unquote

import uvicorn
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agent import __version__
from agent.errors import BackendUnavailableError, ChrysalisError, NotFoundError
from agent.ipfs.cid import CID
from agent.ipfs.errors import (
    CorruptBlockError,
    DagLimitError,
    InvalidBlockError,
    InvalidCIDError,
    InvalidPathError,
    TooManyLinksError,
    UnsupportedCodecError,
)
from agent.ipfs.repo import AddResult, DirEntry, IpfsRepo
from agent.ipfs.rpc_auth import check_loopback

__all__ = [
    "DEFAULT_MAX_CAR_LINKS",
    "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "GATEWAY_CSP",
    "INLINE_SAFE_TYPES",
    "KUBO_VERSION",
    "NodeServer",
    "ServerThread",
    "create_app",
    "create_rpc_app",
    "serve_forever",
    "sniff_content_type",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 256 * 1024 * 1024
"""Largest ``add`` / ``dag/import`` body accepted; larger requests get 413 and nothing is stored."""

DEFAULT_MAX_PARTS = 10_000
"""Most multipart parts (files and directories) one ``add`` / ``dag/import`` may send; more get 413."""

DEFAULT_MAX_CAR_LINKS = 250_000
"""Most blocks plus dag-pb links one ``dag/import`` holds in memory while it checks the CAR; more get 413."""

KUBO_VERSION = "0.30.0-chrysalis"
"""What ``/api/v0/version`` reports: the Kubo RPC release whose shapes this node follows, tagged as ours."""

IMMUTABLE = "public, max-age=29030400, immutable"
_SMALL = 1 << 20  # bodies up to this size are read whole instead of streamed
_STREAM_CHUNK = 256 * 1024
_DRAIN_CAP = 64 * 1024 * 1024  # read (and discard) this much past the limit so clients see the 413
_CAR_TYPE = "application/vnd.ipld.car"
_CAR_RETRY_AFTER_S = 5

CAR_STREAMS = 4
"""How many ``?format=car`` exports one gateway streams at once; the next gets 503 with ``Retry-After``."""
_RAW_TYPE = "application/vnd.ipld.raw"
_OCTETS = "application/octet-stream"

GATEWAY_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
"""The gateway's Content-Security-Policy: no scripts, no fetches, no forms, an opaque origin (``sandbox``)."""

INLINE_SAFE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/json"})
"""What a ``safe_types`` gateway serves inline (by the content's own bytes); the rest is an attachment."""

_EXTENSION_TYPES = {
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".car": _CAR_TYPE,
    ".glb": "model/gltf-binary",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".wasm": "application/wasm",
}


# ----------------------------------------------------------------------------------------------------
# Content types


def sniff_content_type(head: bytes, *, complete: bool = False) -> str:
    """Guess a media type from the first bytes of a file (``complete``: ``head`` is the whole file).

    Recognises PNG, JPEG, GIF, WebP, SVG, JSON and UTF-8 text; anything else is ``application/octet-stream``.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    text = _as_text(head, complete=complete)
    if text is None:
        return _OCTETS
    stripped = text.lstrip("\ufeff \t\r\n")
    lowered = stripped[:512].lower()
    if lowered.startswith("<svg") or (
        (lowered.startswith("<?xml") or lowered.startswith("<!doctype svg"))
        and "<svg" in stripped[:4096].lower()
    ):
        return "image/svg+xml"
    if stripped[:1] in ("{", "["):
        if not complete:
            return "application/json"
        try:
            json.loads(stripped)
            return "application/json"
        except ValueError:
            pass
    if lowered.startswith("<!doctype html") or lowered.startswith("<html"):
        return "text/html; charset=utf-8"
    return "text/plain; charset=utf-8"


def _as_text(head: bytes, *, complete: bool) -> str | None:
    """``head`` decoded as UTF-8 text without control characters, or None."""
    for cut in range(1 if complete else 4):  # an incomplete head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    return text


def _type_from_name(name: str) -> str | None:
    dot = name.rfind(".")
    if dot <= 0 and not name.startswith("."):
        return None
    ext = name[dot:].lower()
    return _EXTENSION_TYPES.get(ext) or mimetypes.guess_type("x" + ext)[0]


# ----------------------------------------------------------------------------------------------------
# The gateway


class _HttpError(Exception):
    """An error reply: gateway errors as text, RPC errors in Kubo's JSON shape."""

    def __init__(
        self, status: int, message: str, *, code: int = 0, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class _Unsatisfiable(Exception):
    pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as ``(start, end_inclusive)``; None means "ignore it" (RFC 9110: malformed or
    multi-range requests may be answered with the whole representation). Raises _Unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, min(end, size - 1)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == "*" or candidate == etag:
            return True
    return False


def _split_ipfs_path(request: Request) -> tuple[str, list[str], bool]:
    """``(root, segments, trailing_slash)`` from the raw path, refusing traversal and odd characters."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    raw_path = raw.decode("latin-1")
    if "\\" in raw_path or "%5c" in raw_path.lower():
        raise _HttpError(400, "backslashes are not allowed in an IPFS path")
    rest = raw_path[len("/ipfs/") :]
    parts = rest.split("/")
    segments: list[str] = []
    for part in parts:
        try:
            name = unquote(part, errors="strict") if "%" in part else part
        except UnicodeDecodeError:
            raise _HttpError(400, f"invalid path segment {part!r}: percent-escapes are not UTF-8") from None
        if name in (".", ".."):
            raise _HttpError(400, f"path traversal is not allowed in an IPFS path (segment {part!r})")
        if "/" in name or "\\" in name or "\x00" in name:
            raise _HttpError(400, f"invalid path segment {part!r}: encoded '/', '\\' or NUL")
        if name:
            segments.append(name)
    if not segments:
        raise _HttpError(400, "missing CID: expected /ipfs/<cid>[/<path>]")
    return segments[0], segments[1:], raw_path.endswith("/")


def _parse_root(value: str) -> CID:
    try:
        return CID.parse(value)
    except InvalidCIDError as exc:
        raise _HttpError(400, f"invalid CID {value!r}: {exc.reason}") from None


class _Gateway:
    """``GET|HEAD /ipfs/<cid>[/<path>]`` over an :class:`IpfsRepo`."""

    def __init__(
        self, repo: IpfsRepo, *, safe_types: bool = False, car: bool = True, car_streams: int = CAR_STREAMS
    ) -> None:
        self.repo = repo
        self.safe_types = safe_types  # only INLINE_SAFE_TYPES inline, by content; names never pick the type
        self.car = car  # answer ?format=car (streamed from a walk, at most car_streams at once)
        self.car_streams = car_streams
        self._car_slots = threading.BoundedSemaphore(car_streams)

    async def handle(self, request: Request) -> Response:
        response = await self._handle(request)
        response.headers.setdefault("Content-Security-Policy", GATEWAY_CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def _handle(self, request: Request) -> Response:
        try:
            return await run_in_threadpool(self._respond, request)
        except _HttpError as exc:
            return Response(
                exc.message + "\n",
                status_code=exc.status,
                media_type="text/plain; charset=utf-8",
                headers=exc.headers,
            )
        except Exception as exc:  # corrupt blocks and the unexpected: a plain 500, logged
            log.exception("gateway: %s %s failed", request.method, request.url.path)
            return Response(
                f"{_public_message(exc)}\n", status_code=500, media_type="text/plain; charset=utf-8"
            )

    def _respond(self, request: Request) -> Response:
        root_text, segments, trailing = _split_ipfs_path(request)
        root = _parse_root(root_text)
        ipfs_path = "/ipfs/" + "/".join([str(root), *segments])
        fmt = self._requested_format(request)
        try:
            cid = self.repo.resolve("/".join([str(root), *segments])) if segments else root
            if fmt == "raw":
                return self._raw_block(request, cid, ipfs_path)
            if fmt == "car":
                return self._car(request, cid, ipfs_path)
            stat = self.repo.stat(cid)
            if stat.kind == "directory":
                return self._directory(request, cid, ipfs_path, trailing)
            name = request.query_params.get("filename") or (segments[-1] if segments else None)
            return self._file(request, cid, self.repo.file_size(cid), ipfs_path, name)
        except NotFoundError as exc:
            raise _HttpError(404, f"{ipfs_path}: {exc.message}") from None
        except DagLimitError as exc:  # a DAG bomb, or content past a limit: refused before any work
            raise _HttpError(403, f"{ipfs_path}: {exc.message}\nhint: {exc.hint}") from None
        except InvalidBlockError as exc:  # malformed content: the node cannot serve it (no traceback logged)
            log.warning("gateway: %s: %s", ipfs_path, exc.message)
            raise _HttpError(500, f"{ipfs_path}: {exc.message}\nhint: {exc.hint}") from None
        except (InvalidCIDError, InvalidPathError) as exc:
            raise _HttpError(400, f"{ipfs_path}: {exc.message}") from None
        except UnsupportedCodecError as exc:
            raise _HttpError(501, f"{ipfs_path}: {exc.message}") from None

    def _requested_format(self, request: Request) -> str | None:
        fmt = request.query_params.get("format")
        if fmt is None:
            accept = request.headers.get("accept", "")
            if _RAW_TYPE in accept:
                return "raw"
            if _CAR_TYPE in accept:
                if not self.car:
                    raise _HttpError(406, f"{_CAR_TYPE} is not offered by this gateway (CAR export is off)")
                return "car"
            return None
        if fmt == "car" and not self.car:
            raise _HttpError(
                400, "?format=car is not offered by this gateway (CAR export is off): use format=raw"
            )
        if fmt not in ("raw", "car"):
            raise _HttpError(
                400,
                f"unsupported ?format={fmt!r}: this gateway answers "
                + ("format=raw and format=car" if self.car else "format=raw"),
            )
        return fmt

    @staticmethod
    def _common(etag: str, ipfs_path: str) -> dict[str, str]:
        return {
            "ETag": etag,
            "Cache-Control": IMMUTABLE,
            "X-Ipfs-Path": quote(ipfs_path, safe="/"),
            "X-Content-Type-Options": "nosniff",
        }

    def _file(self, request: Request, cid: CID, size: int, ipfs_path: str, name: str | None) -> Response:
        etag = f'"{cid}"'
        headers = self._common(etag, ipfs_path) | {"Accept-Ranges": "bytes"}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        declared = _type_from_name(name) if name and not self.safe_types else None
        if "filename" in request.query_params:
            disposition = "attachment" if request.query_params.get("download") == "true" else "inline"
            headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(name or '')}"
        head_only = request.method == "HEAD"
        start, end, status = 0, size - 1, 200
        range_header = request.headers.get("range")
        if range_header:
            try:
                chosen = _parse_range(range_header, size)
            except _Unsatisfiable:
                raise _HttpError(
                    416,
                    f"range {range_header!r} is not satisfiable: the file has {size} bytes",
                    headers=headers | {"Content-Range": f"bytes */{size}"},
                ) from None
            if chosen is not None:
                start, end, status = chosen[0], chosen[1], 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        if size <= _SMALL:  # read the whole file once: sniff it and answer without streaming
            data = b"".join(self.repo.cat(cid)) if (not head_only or declared is None) else b""
            self._set_type(headers, declared or sniff_content_type(data, complete=True), name or str(cid))
            headers["Content-Length"] = str(length)
            body = b"" if head_only else data[start : start + length]
            return Response(body, status_code=status, headers=headers)
        if declared is None:
            declared = sniff_content_type(b"".join(self.repo.cat(cid, offset=0, length=512)))
        self._set_type(headers, declared, name or str(cid))
        headers["Content-Length"] = str(length)
        if head_only:
            return Response(status_code=status, headers=headers)
        return StreamingResponse(
            self.repo.cat(cid, offset=start, length=length), status_code=status, headers=headers
        )

    def _set_type(self, headers: dict[str, str], content_type: str, name: str) -> None:
        """``Content-Type``; under ``safe_types`` anything but INLINE_SAFE_TYPES becomes an attachment of octets."""
        if self.safe_types and content_type.split(";")[0].strip().lower() not in INLINE_SAFE_TYPES:
            headers["Content-Type"] = _OCTETS
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
            return
        headers["Content-Type"] = content_type

    def _raw_block(self, request: Request, cid: CID, ipfs_path: str) -> Response:
        etag = f'"{cid}.raw"'
        headers = self._common(etag, ipfs_path) | {
            "Content-Type": _RAW_TYPE,
            "Content-Disposition": f'attachment; filename="{cid}.bin"',
        }
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        data = self.repo.block_get(cid)
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers | {"Content-Length": str(len(data))})
        return Response(data, headers=headers)

    def _car(self, request: Request, cid: CID, ipfs_path: str) -> Response:
        etag = f'"{cid}.car"'
        headers = self._common(etag, ipfs_path) | {
            "Content-Type": f"{_CAR_TYPE}; version=1",
            "Content-Disposition": f'attachment; filename="{cid}.car"',
        }
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        if not self._car_slots.acquire(blocking=False):
            raise _HttpError(
                503,
                f"{ipfs_path}: {self.car_streams} CAR exports are already streaming from this gateway; "
                "retry after a few seconds",
                headers={"Retry-After": str(_CAR_RETRY_AFTER_S)},
            )
        try:
            size, chunks = self.repo.car_stream(cid)  # walks the DAG once: a missing block fails here
        except BaseException:
            self._car_slots.release()
            raise
        headers["Content-Length"] = str(size)
        if request.method == "HEAD":
            self._car_slots.release()
            return Response(status_code=200, headers=headers)
        return _SlotStream(_coalesce(chunks, _STREAM_CHUNK), self._car_slots.release, headers=headers)

    def _directory(self, request: Request, cid: CID, ipfs_path: str, trailing: bool) -> Response:
        if not trailing:  # relative links in listings and index.html need the slash
            location = quote(ipfs_path) + "/" + (f"?{request.url.query}" if request.url.query else "")
            return Response(
                status_code=301, headers={"Location": location, "X-Ipfs-Path": quote(ipfs_path, safe="/")}
            )
        index = self.repo.reader.lookup(cid, "index.html")  # a lookup: one node per HAMT level, no listing
        if index is not None and self.repo.stat(index.cid).kind != "directory":
            size = self.repo.file_size(index.cid)
            return self._file(request, index.cid, size, ipfs_path + "/index.html", "index.html")
        limit = self.repo.reader.limits.max_listing_entries
        etag = f'"DirIndex-chrysalis_CID-{cid}-{limit}"'
        headers = self._common(etag, ipfs_path)
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        entries = list(islice(self.repo.iter_ls(cid), limit + 1))  # checked as read; never more than limit
        body = _listing_html(ipfs_path, entries[:limit], more=len(entries) > limit).encode()
        headers |= {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))}
        return Response(b"" if request.method == "HEAD" else body, headers=headers)


def _listing_html(ipfs_path: str, entries: list[DirEntry], *, more: bool = False) -> str:
    title = html.escape(ipfs_path)
    rows = "\n".join(
        f'<tr><td><a href="./{quote(e.name)}">{html.escape(e.name)}</a></td>'
        f"<td>{e.size}</td><td><code>{e.cid}</code></td></tr>"
        for e in entries
    )
    count = (
        f"more than {len(entries)} entries: only the first {len(entries)} are listed here "
        "(ipfs.max_listing_entries); open an entry by its name, /ipfs/&lt;cid&gt;/&lt;name&gt;"
        if more
        else f"{len(entries)} entries"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of {title}</title></head>\n'
        f"<body><h1>Index of {title}</h1>\n<p>{count}</p>\n"
        f"<table><tr><th>name</th><th>size</th><th>cid</th></tr>\n{rows}\n</table></body></html>\n"
    )


def _coalesce(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Join small pieces (a CAR's section prefixes) into chunks of about ``size`` bytes: fewer thread hops."""
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


class _SlotStream(StreamingResponse):
    """A streamed reply that holds a slot (``release``) until it is sent, abandoned or dropped, whichever comes
    first: a client that disconnects mid-CAR frees its slot when the ASGI call ends, not when GC runs."""

    def __init__(
        self, chunks: Iterator[bytes], release: Callable[[], None], *, headers: dict[str, str]
    ) -> None:
        super().__init__(chunks, headers=headers)
        self._chunks: Iterator[bytes] | None = chunks
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
        chunks, self._chunks = self._chunks, None
        close = getattr(chunks, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # still running in a worker thread: it stops at its next chunk
                pass

    def __del__(self) -> None:
        self._done()


# ----------------------------------------------------------------------------------------------------
# The Kubo RPC subset


_TRUE = {"1", "t", "T", "true", "True", "TRUE"}
_FALSE = {"0", "f", "F", "false", "False", "FALSE"}


def _bool(request: Request, name: str, default: bool | None) -> bool | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _HttpError(400, f"option {name!r}: cannot parse {value!r} as a boolean", code=1)


def _int(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise _HttpError(400, f"option {name!r}: cannot parse {value!r} as an integer", code=1) from None
    if number < 0:
        raise _HttpError(400, f"option {name!r} must not be negative (got {number})", code=1)
    return number


def _args(request: Request, what: str, *, required: bool = True) -> list[str]:
    args = request.query_params.getlist("arg")
    if required and not args:
        raise _HttpError(400, f"argument {what!r} is required", code=1)
    return args


def _strip_ipfs_prefix(arg: str) -> str:
    arg = arg.strip()
    if arg.startswith("/ipfs/"):
        arg = arg[len("/ipfs/") :]
    elif arg.startswith("ipfs://"):
        arg = arg[len("ipfs://") :]
    return arg.strip("/")


@dataclass
class _Part:
    """One multipart part, spooled: a file (``file`` set) or a directory marker."""

    name: str
    content_type: str
    file: SpooledTemporaryFile[bytes] | None = None

    @property
    def is_directory(self) -> bool:
        return self.content_type == "application/x-directory"


@dataclass
class _AddOptions:
    cid_version: int
    raw_leaves: bool | None
    chunk_size: int
    pin: bool
    only_hash: bool
    wrap: bool


@dataclass
class _Tree:
    """A directory being assembled from multipart paths."""

    children: dict[str, _Tree | AddResult] = field(default_factory=dict)


class _Rpc:
    """``POST /api/v0/<command>``: the Kubo commands in ``self.commands``, with Kubo's replies."""

    def __init__(
        self,
        repo: IpfsRepo,
        *,
        token: str,
        max_request_bytes: int,
        max_parts: int = DEFAULT_MAX_PARTS,
        max_car_links: int = DEFAULT_MAX_CAR_LINKS,
    ) -> None:
        if not token:
            raise ValueError("the RPC API needs a token (see agent.ipfs.rpc_auth.rpc_token)")
        self.repo = repo
        self._expected = f"Bearer {token}".encode()
        self.max_request_bytes = max_request_bytes
        self.max_parts = max_parts
        self.max_car_links = max_car_links
        self.commands: dict[str, Callable[[Request], Any]] = {
            "version": self.version,
            "add": self.add,
            "cat": self.cat,
            "pin/add": self.pin_add,
            "pin/ls": self.pin_ls,
            "pin/rm": self.pin_rm,
            "dag/import": self.dag_import,
            "dag/export": self.dag_export,
            "block/get": self.block_get,
        }

    async def handle(self, request: Request) -> Response:
        command = request.path_params["command"].strip("/")
        try:
            if request.headers.get("origin"):
                raise _HttpError(
                    403, "cross-origin RPC requests are refused (the request carried an Origin header)"
                )
            self._authorize(request)
            if request.method != "POST":
                raise _HttpError(
                    405, f"{request.method} is not allowed: the RPC API takes POST (as Kubo does)"
                )
            handler = self.commands.get(command)
            if handler is None:
                known = ", ".join(sorted(self.commands))
                raise _HttpError(404, f"unknown command {command!r}; this node implements: {known}")
            return await handler(request)
        except _HttpError as exc:
            return _kubo_error(exc.message, exc.status, exc.code, exc.headers)
        except InvalidCIDError as exc:
            return _kubo_error(exc.message, 500, 0)
        except TooManyLinksError as exc:
            return _kubo_error(exc.message, 413, 1)
        except CorruptBlockError as exc:
            log.error("rpc: %s: %s", command, exc.message)  # the block's path stays in the log
            return _kubo_error(_public_message(exc), 500, 0)
        except ChrysalisError as exc:  # not found, bad CAR: Kubo answers 500 with code 0
            return _kubo_error(exc.message, 500, 0)
        except Exception as exc:
            log.exception("rpc: %s failed", command)
            return _kubo_error(_public_message(exc), 500, 0)

    # -- helpers --

    def _authorize(self, request: Request) -> None:
        """``Authorization: Bearer <token>`` or a 401 (none sent) / 403 (wrong), before any body is read."""
        sent = request.headers.get("authorization")
        if not sent:
            raise _HttpError(
                401,
                "the RPC API needs 'Authorization: Bearer <token>' (the token is in $CHRYSALIS_IPFS_RPC_TOKEN "
                "or the repo's rpc.token file)",
                headers={"WWW-Authenticate": 'Bearer realm="chrysalis-ipfs-rpc"'},
            )
        if not hmac.compare_digest(sent.encode("latin-1", "replace"), self._expected):
            raise _HttpError(403, "the RPC token is wrong: nothing was done")

    def _resolve(self, arg: str) -> CID:
        path = _strip_ipfs_prefix(arg)
        if not path:
            raise _HttpError(400, f"invalid path {arg!r}", code=1)
        try:
            return self.repo.resolve(path) if "/" in path else CID.parse(path)
        except InvalidCIDError as exc:
            raise _HttpError(500, f"invalid path {arg!r}: {exc.reason}") from None
        except InvalidPathError as exc:
            raise _HttpError(500, f"invalid path {arg!r}: {exc.reason}") from None

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body, refusing (413) anything past ``max_request_bytes``."""
        limit = self.max_request_bytes
        declared = request.headers.get("content-length")
        too_big = _HttpError(
            413,
            f"request body exceeds the node's limit of {limit} bytes; nothing was stored "
            "(raise ipfs.max_request_bytes, or split the upload)",
        )
        if declared and declared.isdigit() and int(declared) > limit + _DRAIN_CAP:
            raise too_big
        total = 0
        stream = request.stream()
        async for chunk in stream:
            total += len(chunk)
            if total > limit:
                async for extra in stream:  # drain (and drop) a little more so the client reads our reply
                    total += len(extra)
                    if total > limit + _DRAIN_CAP:
                        break
                raise too_big
            yield chunk

    async def _multipart(self, request: Request) -> list[_Part]:
        ctype = request.headers.get("content-type", "")
        kind, params = parse_options_header(ctype)
        boundary = params.get(b"boundary")
        if not kind.startswith(b"multipart/") or not boundary:
            raise _HttpError(
                400,
                "the request body must be multipart/form-data with a boundary (as `ipfs add` sends)",
                code=1,
            )
        parts: list[_Part] = []
        state: dict[str, Any] = {"headers": {}, "field": b"", "value": b""}

        def on_part_begin() -> None:
            state["headers"] = {}

        def on_header_field(data: bytes, start: int, end: int) -> None:
            state["field"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            state["value"] += data[start:end]

        def on_header_end() -> None:
            state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
            state["field"], state["value"] = b"", b""

        def on_headers_finished() -> None:
            if len(parts) >= self.max_parts:
                raise _HttpError(
                    413,
                    f"the request has more than {self.max_parts} multipart parts; nothing was stored "
                    "(add fewer files per request, or send the DAG as one CAR to dag/import)",
                    code=1,
                )
            _, disposition = parse_options_header(state["headers"].get("content-disposition", b""))
            raw_name = disposition.get(b"filename", b"")
            name = unquote(raw_name.decode("utf-8", "replace"))
            content_type = state["headers"].get("content-type", b"").decode("latin-1").split(";")[0].strip()
            part = _Part(name=name, content_type=content_type.lower())
            if not part.is_directory:
                part.file = SpooledTemporaryFile(max_size=_SMALL)
            parts.append(part)

        def on_part_data(data: bytes, start: int, end: int) -> None:
            file = parts[-1].file
            if file is not None:
                file.write(data[start:end])

        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
            },
        )
        try:
            refused: _HttpError | None = None
            drained = 0
            async for chunk in self._body(request):
                if refused is None:
                    try:
                        parser.write(chunk)
                    except _HttpError as exc:  # too many parts: drop what is spooled, read on for the 413
                        refused = exc
                        _close_parts(parts)
                        parts.clear()
                    continue
                drained += len(chunk)  # drain (and drop) a little more so the client reads our reply
                if drained > _DRAIN_CAP:
                    break
            if refused is not None:
                raise refused
            parser.finalize()
        except BaseException as exc:
            _close_parts(parts)
            if isinstance(exc, _HttpError):
                raise
            if isinstance(exc, Exception) and not isinstance(exc, OSError):
                raise _HttpError(400, f"malformed multipart body: {exc}", code=1) from None
            raise
        for part in parts:
            if part.file is not None:
                part.file.seek(0)
        return parts

    # -- commands --

    async def version(self, request: Request) -> Response:
        return JSONResponse(
            {
                "Version": KUBO_VERSION,
                "Commit": "",
                "Repo": "16",
                "System": f"{platform.machine()}/{platform.system().lower()}",
                "Golang": f"n/a (chrysalis {__version__}, Python {platform.python_version()})",
            }
        )

    def _add_options(self, request: Request) -> _AddOptions:
        cid_version = _int(request, "cid-version", 0)
        if cid_version not in (0, 1):
            raise _HttpError(400, f"unknown CID version {cid_version}: use cid-version=0 or 1", code=1)
        chunker = request.query_params.get("chunker") or "size-262144"
        size_text = chunker[len("size-") :] if chunker.startswith("size-") else ""
        if not size_text.isdigit() or not 1 <= int(size_text) <= 1024 * 1024:
            raise _HttpError(
                400,
                f"chunker {chunker!r} is not supported: the embedded node chunks at a fixed size "
                "('size-<bytes>', 1..1048576; Kubo's default is size-262144); "
                "rabin and buzhash are not implemented",
                code=1,
            )
        hash_name = request.query_params.get("hash") or "sha2-256"
        if hash_name != "sha2-256":
            raise _HttpError(400, f"hash function {hash_name!r} is not supported: only sha2-256", code=1)
        for flag in ("trickle", "nocopy", "inline", "fscache"):
            if _bool(request, flag, False):
                raise _HttpError(400, f"option {flag}=true is not supported by the embedded node", code=1)
        if request.query_params.get("to-files"):
            raise _HttpError(400, "option 'to-files' (MFS) is not supported by the embedded node", code=1)
        return _AddOptions(
            cid_version=cid_version,
            raw_leaves=_bool(request, "raw-leaves", None),
            chunk_size=int(size_text),
            pin=bool(_bool(request, "pin", True)),
            only_hash=bool(_bool(request, "only-hash", False)),
            wrap=bool(_bool(request, "wrap-with-directory", False)),
        )

    async def add(self, request: Request) -> Response:
        options = self._add_options(request)
        parts = await self._multipart(request)
        try:
            if not parts:
                raise _HttpError(
                    400, "file argument 'path' is required: send at least one multipart file", code=1
                )
            lines = await run_in_threadpool(self._add_parts, parts, options)
        finally:
            _close_parts(parts)
        body = "".join(json.dumps(line) + "\n" for line in lines)
        return Response(body, media_type="application/json", headers={"X-Chunked-Output": "1"})

    def _add_parts(self, parts: list[_Part], options: _AddOptions) -> list[dict[str, str]]:
        repo = IpfsRepo(None) if options.only_hash else self.repo
        lines: list[dict[str, str]] = []
        top = _Tree()
        dirs: dict[str, _Tree] = {"": top}
        top_level: list[str] = []  # names of top-level entries, in arrival order
        unnamed: list[CID] = []  # parts without a filename (roots of their own, like `ipfs add` of stdin)

        def parent_of(path: str) -> _Tree:
            parent = path.rpartition("/")[0]
            if parent not in dirs:
                tree = _Tree()
                parent_of(parent).children[parent.rpartition("/")[2]] = tree
                dirs[parent] = tree
                if "/" not in parent:
                    top_level.append(parent)
            return dirs[parent]

        for part in parts:
            path = _clean_add_path(part.name)
            if part.is_directory:
                if path and path not in dirs:
                    parent_of(path).children[path.rpartition("/")[2]] = dirs[path] = _Tree()
                    if "/" not in path:
                        top_level.append(path)
                continue
            assert part.file is not None
            result = repo.add(
                part.file,
                cid_version=options.cid_version,
                raw_leaves=options.raw_leaves,
                chunk_size=options.chunk_size,
                pin=False,
            )
            name = path or str(result.cid)
            size = repo.stat(result.cid).cumulative_size  # Kubo reports the DAG's bytes
            lines.append({"Name": name, "Hash": str(result.cid), "Size": str(size)})
            if not path:
                unnamed.append(result.cid)
                continue
            parent_of(path).children[path.rpartition("/")[2]] = result
            if "/" not in path and path not in top_level:
                top_level.append(path)
        built: dict[str, CID] = {}
        for path in sorted((p for p in dirs if p), key=lambda p: -p.count("/")):
            built[path] = self._build_directory(repo, dirs[path], built, path, options.cid_version)
            lines.append({"Name": path, "Hash": str(built[path]), "Size": str(repo.stat(built[path]).size)})
        roots: list[CID] = list(unnamed)
        if options.wrap:
            if unnamed:
                raise _HttpError(400, "wrap-with-directory needs every file part to carry a filename", code=1)
            wrapper = self._build_directory(repo, top, built, "", options.cid_version)
            lines.append({"Name": "", "Hash": str(wrapper), "Size": str(repo.stat(wrapper).size)})
            roots.append(wrapper)
        else:
            for name in top_level:
                child = top.children[name]
                roots.append(built[name] if isinstance(child, _Tree) else child.cid)
        if options.pin and not options.only_hash:
            for root in roots:
                repo.pin_add(root)
        return lines

    @staticmethod
    def _build_directory(
        repo: IpfsRepo, tree: _Tree, built: dict[str, CID], path: str, cid_version: int
    ) -> CID:
        entries: dict[str, CID | AddResult] = {}
        for name, child in tree.children.items():
            child_path = f"{path}/{name}" if path else name
            entries[name] = built[child_path] if isinstance(child, _Tree) else child
        return repo.add_directory(entries, pin=False, cid_version=cid_version)

    async def cat(self, request: Request) -> Response:
        (arg, *_) = _args(request, "ipfs-path")
        offset = _int(request, "offset", 0) or 0
        length = _int(request, "length", None)

        def prepare() -> tuple[CID, int]:
            cid = self._resolve(arg)
            stat = self.repo.stat(cid)
            if stat.kind == "directory":
                raise _HttpError(500, "this dag node is a directory")
            if offset > stat.size:
                raise _HttpError(500, f"offset was past the end of file ({offset} > {stat.size})")
            return cid, stat.size

        cid, size = await run_in_threadpool(prepare)
        remaining = size - offset if length is None else min(length, size - offset)
        headers = {"X-Stream-Output": "1", "Content-Length": str(remaining)}
        if remaining <= _SMALL:
            data = await run_in_threadpool(
                lambda: b"".join(self.repo.cat(cid, offset=offset, length=remaining))
            )
            return Response(data, media_type="text/plain", headers=headers)
        return StreamingResponse(
            self.repo.cat(cid, offset=offset, length=remaining), media_type="text/plain", headers=headers
        )

    async def pin_add(self, request: Request) -> Response:
        args = _args(request, "ipfs-path")
        recursive = bool(_bool(request, "recursive", True))

        def run() -> list[str]:
            cids = [self._resolve(a) for a in args]
            for cid in cids:
                self.repo.pin_add(cid, recursive=recursive)
            return [str(c) for c in cids]

        return JSONResponse({"Pins": await run_in_threadpool(run)})

    async def pin_ls(self, request: Request) -> Response:
        args = _args(request, "ipfs-path", required=False)
        kind = request.query_params.get("type") or "all"
        if kind not in ("all", "direct", "indirect", "recursive"):
            raise _HttpError(
                400, f"invalid type {kind!r}, must be one of {{direct, indirect, recursive, all}}", code=1
            )

        def run() -> dict[str, dict[str, str]]:
            pins = self.repo.pin_ls()
            wanted = (lambda t: True) if kind == "all" else (lambda t: t == kind)
            if not args:
                return {str(c): {"Type": t} for c, t in pins.items() if wanted(t)}
            keys: dict[str, dict[str, str]] = {}
            for arg in args:
                cid = self._resolve(arg)
                pin_type = pins.get(cid)
                if pin_type is None or not wanted(pin_type):
                    raise _HttpError(500, f"path '{arg}' is not pinned")
                keys[str(cid)] = {"Type": pin_type}
            return keys

        return JSONResponse({"Keys": await run_in_threadpool(run)})

    async def pin_rm(self, request: Request) -> Response:
        args = _args(request, "ipfs-path")

        def run() -> list[str]:
            cids = [self._resolve(a) for a in args]
            for cid in cids:  # check all first: remove none unless all can go
                if not self.repo.is_pinned(cid):
                    raise _HttpError(500, f"{cid} is not pinned or pinned indirectly")
            for cid in cids:
                self.repo.pin_rm(cid)
            return [str(c) for c in cids]

        return JSONResponse({"Pins": await run_in_threadpool(run)})

    async def dag_import(self, request: Request) -> Response:
        pin_roots = bool(_bool(request, "pin-roots", True))
        parts = await self._multipart(request)
        files = [p.file for p in parts if p.file is not None]
        try:
            if not files:
                raise _HttpError(400, "argument 'path' is required: send the CAR as a multipart file", code=1)
            roots = await run_in_threadpool(self._import_cars, files, pin_roots)
        finally:
            _close_parts(parts)
        body = "".join(
            json.dumps({"Root": {"Cid": {"/": str(root)}, "PinErrorMsg": ""}}) + "\n" for root in roots
        )
        return Response(body, media_type="application/json", headers={"X-Chunked-Output": "1"})

    def _import_cars(self, files: list[SpooledTemporaryFile[bytes]], pin: bool) -> list[CID]:
        roots: list[CID] = []
        for f in files:  # each import is all or nothing: a truncated CAR stores no block
            for root in self.repo.import_car(f, pin=pin, max_links=self.max_car_links):  # type: ignore[arg-type]
                if root not in roots:
                    roots.append(root)
        return roots

    async def dag_export(self, request: Request) -> Response:
        (arg, *_) = _args(request, "root")
        # Streamed from a walk, nothing spooled; the first walk (measuring) fails on a missing block before any byte.
        size, chunks = await run_in_threadpool(lambda: self.repo.car_stream(self._resolve(arg)))
        return StreamingResponse(
            _coalesce(chunks, _STREAM_CHUNK),
            media_type=_CAR_TYPE,
            headers={"X-Stream-Output": "1", "Content-Length": str(size)},
        )

    async def block_get(self, request: Request) -> Response:
        (arg, *_) = _args(request, "cid")
        data = await run_in_threadpool(lambda: self.repo.block_get(self._resolve(arg)))
        return Response(data, media_type=_OCTETS)


def _clean_add_path(name: str) -> str:
    """A multipart filename as a relative UnixFS path, refusing traversal."""
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise _HttpError(400, f"file name {name!r} contains '..'", code=1)
    return "/".join(parts)


def _close_parts(parts: list[_Part]) -> None:
    for part in parts:
        if part.file is not None:
            part.file.close()


def _public_message(exc: BaseException) -> str:
    """What a 500 reply may say about ``exc``: never a path on the server's disk (the log has the details)."""
    if isinstance(exc, CorruptBlockError):
        return (
            f"block {exc.cid} is corrupt in this node's repo (its bytes do not hash to its CID); not served"
        )
    if isinstance(exc, ChrysalisError):
        return exc.message
    return f"internal error ({type(exc).__name__}); the node's log has the details"


def _kubo_error(message: str, status: int, code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"Message": message, "Code": code, "Type": "error"}, status_code=status, headers=headers
    )


# ----------------------------------------------------------------------------------------------------
# The app and its runners


def create_app(repo: IpfsRepo, *, safe_types: bool = False, car: bool = True) -> Starlette:
    """The node's read-only gateway over ``repo``: ``GET|HEAD /ipfs/...``, nothing else (no RPC, no writes).

    ``safe_types``: serve only :data:`INLINE_SAFE_TYPES` inline (sniffed from the content; ``?filename=`` only
    names the download), everything else as an ``application/octet-stream`` attachment: for a gateway that
    shares its origin with other pages (the studio). ``car=False`` refuses ``?format=car`` (400) and
    ``Accept: application/vnd.ipld.car`` (406). ``/api/v0/...`` answers 404: the RPC API is
    :func:`create_rpc_app`, on its own loopback listener.
    """
    gateway = _Gateway(repo, safe_types=safe_types, car=car)
    app = Starlette(
        routes=[
            Route("/ipfs/{path:path}", gateway.handle, methods=["GET", "HEAD"]),
            Route("/api/v0/{command:path}", _no_rpc_here, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ]
    )
    app.state.repo = repo
    return app


async def _no_rpc_here(request: Request) -> Response:
    return _kubo_error(
        "this is the node's read-only gateway: the RPC API (/api/v0) is not served here; it listens on its "
        "own loopback address (ipfs.rpc_host:ipfs.rpc_port) and needs the node's token",
        404,
        0,
    )


def create_rpc_app(
    repo: IpfsRepo,
    *,
    token: str,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_car_links: int = DEFAULT_MAX_CAR_LINKS,
) -> Starlette:
    """The node's Kubo RPC subset over ``repo`` (``POST /api/v0/...``), for a loopback listener only.

    Every request must carry ``Authorization: Bearer <token>``: 401 without it, 403 with another token, and
    nothing is read or stored. Bodies past ``max_request_bytes``, multipart bodies past ``max_parts`` parts and
    CARs past ``max_car_links`` blocks + links get 413, and nothing is stored.
    """
    rpc = _Rpc(
        repo,
        token=token,
        max_request_bytes=max_request_bytes,
        max_parts=max_parts,
        max_car_links=max_car_links,
    )
    app = Starlette(
        routes=[
            Route("/api/v0/{command:path}", rpc.handle, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ]
    )
    app.state.repo = repo
    return app


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (``port=0``: any free one), for uvicorn's ``sockets=``.

    Binding before uvicorn starts turns a busy port into a clean error instead of uvicorn's raw ``[Errno 98]``.

    Raises:
        BackendUnavailableError: the address is in use or cannot be bound (the hint says what to do).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so (else +40 ms a reply)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise BackendUnavailableError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another port (--port), or stop whatever holds this one",
        ) from None
    return sock


def run_foreground(app: ASGIApp, sock: socket.socket, **config: Any) -> None:
    """Serve ``app`` on ``sock`` (from :func:`listen_socket`) in the foreground until Ctrl-C / SIGTERM."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="off", **config))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class ServerThread:
    """Runs an ASGI app with uvicorn on a background thread, bound before :meth:`start` returns.

    ``port=0`` picks a free port (read it from :attr:`port`). Use as a context manager, or call
    :meth:`start` and :meth:`stop`; stopping waits for in-flight requests (up to ``grace`` seconds).
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, name: str = "http") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> Self:
        sock = listen_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                sock.close()
                raise BackendUnavailableError(f"the {self.name} server on {self.url} failed to start")
            if waited >= timeout:
                self.stop()
                raise BackendUnavailableError(
                    f"the {self.name} server on {self.url} did not start in {timeout} s"
                )
            deadline.wait(0.01)
            waited += 0.01
        self._socket = sock
        return self

    def stop(self, *, grace: float = 5.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(grace)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(grace)
        sock = getattr(self, "_socket", None)
        if sock is not None:
            sock.close()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NodeServer(ServerThread):
    """The embedded IPFS node serving ``repo`` on background threads: the read-only gateway on ``host:port``
    (:attr:`url`) and, unless ``rpc=False``, the token-protected RPC on loopback ``rpc_host:rpc_port``
    (:attr:`rpc_url`, :attr:`multiaddr`, :attr:`token`; a random token when none is given).

    Example::

        with NodeServer(IpfsRepo(path)) as node:
            httpx.get(f"{node.url}/ipfs/{cid}")
            ipfshttpclient.Client(node.multiaddr, headers=node.auth_headers)

    Raises:
        ConfigError: ``rpc_host`` is not a loopback address.
    """

    def __init__(
        self,
        repo: IpfsRepo,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rpc: bool = True,
        rpc_host: str = "127.0.0.1",
        rpc_port: int = 0,
        token: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_parts: int = DEFAULT_MAX_PARTS,
        max_car_links: int = DEFAULT_MAX_CAR_LINKS,
    ) -> None:
        self.repo = repo
        self.token = token or secrets.token_urlsafe(32)
        self.rpc_server: ServerThread | None = None
        if rpc:
            rpc_app = create_rpc_app(
                repo,
                token=self.token,
                max_request_bytes=max_request_bytes,
                max_parts=max_parts,
                max_car_links=max_car_links,
            )
            self.rpc_server = ServerThread(
                rpc_app, host=check_loopback(rpc_host, what="the RPC host"), port=rpc_port, name="ipfs-rpc"
            )
        super().__init__(create_app(repo), host=host, port=port, name="ipfs-gateway")

    @property
    def rpc_url(self) -> str:
        """The RPC listener's base URL (``http://127.0.0.1:<port>``)."""
        return self._rpc().url

    @property
    def multiaddr(self) -> str:
        """The RPC address as the multiaddr ipfshttpclient takes, e.g. ``/ip4/127.0.0.1/tcp/5001/http``."""
        server = self._rpc()
        proto = "ip6" if ":" in server.host else "ip4"
        return f"/{proto}/{server.host}/tcp/{server.port}/http"

    @property
    def gateway_multiaddr(self) -> str:
        """The gateway's address as a multiaddr (what ``origins`` announces), e.g. ``/ip4/127.0.0.1/tcp/8080/http``."""
        proto = "ip6" if ":" in self.host else "ip4"
        return f"/{proto}/{self.host}/tcp/{self.port}/http"

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header every RPC request must carry."""
        return {"Authorization": f"Bearer {self.token}"}

    def _rpc(self) -> ServerThread:
        if self.rpc_server is None:
            raise RuntimeError("this node serves the gateway only (rpc=False)")
        return self.rpc_server

    def start(self, *, timeout: float = 10.0) -> Self:
        if self.rpc_server is not None:
            self.rpc_server.start(timeout=timeout)
        try:
            super().start(timeout=timeout)
        except BaseException:
            if self.rpc_server is not None:
                self.rpc_server.stop()
            raise
        return self

    def stop(self, *, grace: float = 5.0) -> None:
        super().stop(grace=grace)
        if self.rpc_server is not None:
            self.rpc_server.stop(grace=grace)

    def __enter__(self) -> NodeServer:
        self.start()
        return self


def serve_forever(
    repo: IpfsRepo,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    rpc_host: str = "127.0.0.1",
    rpc_port: int = 5001,
    token: str,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    on_ready: Callable[[int, int], None] | None = None,
) -> None:
    """Serve the gateway on ``host:port`` and the RPC on loopback ``rpc_host:rpc_port`` until Ctrl-C.

    Both ports are bound before anything starts, so a busy one is a clean error; ``on_ready(gateway_port,
    rpc_port)`` is called once both listen (port 0 picks a free one).

    Raises:
        ConfigError: ``rpc_host`` is not a loopback address.
        BackendUnavailableError: a port is in use or cannot be bound.
    """
    check_loopback(rpc_host)
    try:
        rpc_sock = listen_socket(rpc_host, rpc_port)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"the RPC API {exc.message}",
            hint="pick another port (--rpc-port or ipfs.rpc_port), or stop whatever holds this one "
            "(a Kubo daemon uses 5001)",
        ) from None
    try:
        gateway_sock = listen_socket(host, port)
    except BaseException:
        rpc_sock.close()
        raise
    rpc_app = create_rpc_app(repo, token=token, max_request_bytes=max_request_bytes)
    rpc = _SocketThread(rpc_app, rpc_sock)
    try:
        rpc.start()
        if on_ready is not None:
            on_ready(gateway_sock.getsockname()[1], rpc_sock.getsockname()[1])
        run_foreground(create_app(repo), gateway_sock)
    finally:
        rpc.stop()


class _SocketThread:
    """uvicorn on a background thread over a socket that is already listening (signals stay with the main
    thread's server: uvicorn only captures them on the main thread)."""

    def __init__(self, app: ASGIApp, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_level="info", lifespan="off", timeout_graceful_shutdown=2)
        self._sock = sock
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="ipfs-rpc", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
        self._sock.close()
