"""The embedded IPFS node's read-only path gateway: ``GET|HEAD /ipfs/<cid>[/<path>]``, and nothing else.

:func:`create_app` answers with an ETag, immutable caching, ``If-None-Match``, single byte ranges,
``?format=raw|car`` and directory listings. It has no write route: ``/api/v0/...`` answers 404 (the RPC API is
:mod:`agent.ipfs.kubo_rpc`, on its own loopback listener). This is the only app that may listen off-host (pinning
services fetch from it in ``mode = "origins"``).

Guarantees:

* Every reply carries :data:`GATEWAY_CSP` (a sandbox: an HTML or SVG file renders, but its scripts never run, in
  an opaque origin) and ``X-Content-Type-Options: nosniff``; only files under a directory named in
  ``create_app(..., script_roots=...)`` (the token viewer) get :data:`APP_CSP` instead: their own scripts and
  WebAssembly, fetches from this gateway only.
* ``create_app(..., safe_types=True)`` (the studio's mount, which shares its origin with the studio's pages)
  serves only PNG, JPEG, GIF, WebP and JSON inline, everything else as an ``application/octet-stream``
  attachment; the ``filename`` parameter then only names the download.
* Paths with ``..``, ``.``, backslashes or encoded ``/`` or NUL are refused (400) before the repo is touched;
  DAG bombs and content past the repo's limits are refused (403) before any work.
* At most :data:`CAR_STREAMS` ``?format=car`` exports stream at once; the next gets 503 with ``Retry-After``.
* A 500 never says a path on the server's disk (:func:`~agent.ipfs.replies.public_message`).
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import threading
from collections.abc import Callable, Collection, Iterator
from itertools import islice
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent.errors import NotFoundError
from agent.ipfs.cid import CID
from agent.ipfs.errors import (
    DagLimitError,
    InvalidBlockError,
    InvalidCIDError,
    InvalidPathError,
    UnsupportedCodecError,
)
from agent.ipfs.replies import (
    CAR_TYPE,
    OCTETS,
    SMALL_BODY,
    STREAM_CHUNK,
    HttpError,
    coalesce,
    kubo_error,
    public_message,
)
from agent.ipfs.repo import DirEntry, IpfsRepo

__all__ = [
    "APP_CSP",
    "CAR_STREAMS",
    "GATEWAY_CSP",
    "IMMUTABLE",
    "INLINE_SAFE_TYPES",
    "create_app",
    "sniff_content_type",
]

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=29030400, immutable"
"""The ``Cache-Control`` of every content reply: what a CID names never changes."""

CAR_STREAMS = 4
"""How many ``?format=car`` exports one gateway streams at once; the next gets 503 with ``Retry-After``."""

_CAR_RETRY_AFTER_S = 5
_RAW_TYPE = "application/vnd.ipld.raw"

GATEWAY_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
"""The gateway's Content-Security-Policy: no scripts, no fetches, no forms, an opaque origin (``sandbox``)."""

APP_CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; "
    "connect-src 'self' https: http://127.0.0.1:* http://localhost:*; img-src 'self' blob: data:; "
    "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors *"
)
"""The policy of content under a ``script_roots`` directory (the token viewer, ``renderer/index.html``): its own
scripts and WebAssembly, images from this gateway only. Fetches go to this gateway and, for the viewer's "what would
I become" preview, to the JSON-RPC URL its user types (any https:// node, or one on this machine): everything the
page renders from is still fetched from the gateway and checked against its CID."""

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
    ".mjs": "text/javascript; charset=utf-8",
    ".car": CAR_TYPE,
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
        return OCTETS
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
# Requests


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
        raise HttpError(400, "backslashes are not allowed in an IPFS path")
    rest = raw_path[len("/ipfs/") :]
    parts = rest.split("/")
    segments: list[str] = []
    for part in parts:
        try:
            name = unquote(part, errors="strict") if "%" in part else part
        except UnicodeDecodeError:
            raise HttpError(400, f"invalid path segment {part!r}: percent-escapes are not UTF-8") from None
        if name in (".", ".."):
            raise HttpError(400, f"path traversal is not allowed in an IPFS path (segment {part!r})")
        if "/" in name or "\\" in name or "\x00" in name:
            raise HttpError(400, f"invalid path segment {part!r}: encoded '/', '\\' or NUL")
        if name:
            segments.append(name)
    if not segments:
        raise HttpError(400, "missing CID: expected /ipfs/<cid>[/<path>]")
    return segments[0], segments[1:], raw_path.endswith("/")


def _parse_root(value: str) -> CID:
    try:
        return CID.parse(value)
    except InvalidCIDError as exc:
        raise HttpError(400, f"invalid CID {value!r}: {exc.reason}") from None


class _Gateway:
    """``GET|HEAD /ipfs/<cid>[/<path>]`` over an :class:`IpfsRepo`."""

    def __init__(
        self,
        repo: IpfsRepo,
        *,
        safe_types: bool = False,
        car: bool = True,
        car_streams: int = CAR_STREAMS,
        script_roots: Collection[CID | str] = (),
    ) -> None:
        self.repo = repo
        self.script_roots = frozenset(CID.parse(str(c)) for c in script_roots)
        self.safe_types = safe_types  # only INLINE_SAFE_TYPES inline, by content; names never pick the type
        self.car = car  # answer ?format=car (streamed from a walk, at most car_streams at once)
        self.car_streams = car_streams
        self._car_slots = threading.BoundedSemaphore(car_streams)

    async def handle(self, request: Request) -> Response:
        response = await self._handle(request)
        response.headers.setdefault("Content-Security-Policy", self._policy(request))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    def _policy(self, request: Request) -> str:
        """:data:`APP_CSP` for a path under one of ``script_roots`` (a GET that is not ``?format=``), else
        :data:`GATEWAY_CSP`."""
        if not self.script_roots or "format" in request.query_params:
            return GATEWAY_CSP
        try:
            root = CID.parse(_split_ipfs_path(request)[0])
        except (HttpError, InvalidCIDError):
            return GATEWAY_CSP
        return APP_CSP if root in self.script_roots else GATEWAY_CSP

    async def _handle(self, request: Request) -> Response:
        try:
            return await run_in_threadpool(self._respond, request)
        except HttpError as exc:
            return Response(
                exc.message + "\n",
                status_code=exc.status,
                media_type="text/plain; charset=utf-8",
                headers=exc.headers,
            )
        except Exception as exc:  # corrupt blocks and the unexpected: a plain 500, logged
            log.exception("gateway: %s %s failed", request.method, request.url.path)
            return Response(
                f"{public_message(exc)}\n", status_code=500, media_type="text/plain; charset=utf-8"
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
            raise HttpError(404, f"{ipfs_path}: {exc.message}") from None
        except DagLimitError as exc:  # a DAG bomb, or content past a limit: refused before any work
            raise HttpError(403, f"{ipfs_path}: {exc.message}\nhint: {exc.hint}") from None
        except InvalidBlockError as exc:  # malformed content: the node cannot serve it (no traceback logged)
            log.warning("gateway: %s: %s", ipfs_path, exc.message)
            raise HttpError(500, f"{ipfs_path}: {exc.message}\nhint: {exc.hint}") from None
        except (InvalidCIDError, InvalidPathError) as exc:
            raise HttpError(400, f"{ipfs_path}: {exc.message}") from None
        except UnsupportedCodecError as exc:
            raise HttpError(501, f"{ipfs_path}: {exc.message}") from None

    def _requested_format(self, request: Request) -> str | None:
        fmt = request.query_params.get("format")
        if fmt is None:
            accept = request.headers.get("accept", "")
            if _RAW_TYPE in accept:
                return "raw"
            if CAR_TYPE in accept:
                if not self.car:
                    raise HttpError(406, f"{CAR_TYPE} is not offered by this gateway (CAR export is off)")
                return "car"
            return None
        if fmt == "car" and not self.car:
            raise HttpError(
                400, "?format=car is not offered by this gateway (CAR export is off): use format=raw"
            )
        if fmt not in ("raw", "car"):
            raise HttpError(
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
                raise HttpError(
                    416,
                    f"range {range_header!r} is not satisfiable: the file has {size} bytes",
                    headers=headers | {"Content-Range": f"bytes */{size}"},
                ) from None
            if chosen is not None:
                start, end, status = chosen[0], chosen[1], 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        if size <= SMALL_BODY:  # read the whole file once: sniff it and answer without streaming
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
            headers["Content-Type"] = OCTETS
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
            "Content-Type": f"{CAR_TYPE}; version=1",
            "Content-Disposition": f'attachment; filename="{cid}.car"',
        }
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        if not self._car_slots.acquire(blocking=False):
            raise HttpError(
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
        return _SlotStream(coalesce(chunks, STREAM_CHUNK), self._car_slots.release, headers=headers)

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
# The app


def create_app(
    repo: IpfsRepo,
    *,
    safe_types: bool = False,
    car: bool = True,
    script_roots: Collection[CID | str] = (),
) -> Starlette:
    """The node's read-only gateway over ``repo``: ``GET|HEAD /ipfs/...``, nothing else (no RPC, no writes).

    ``safe_types``: serve only :data:`INLINE_SAFE_TYPES` inline (sniffed from the content; ``?filename=`` only
    names the download), everything else as an ``application/octet-stream`` attachment: for a gateway that
    shares its origin with other pages (the studio). ``car=False`` refuses ``?format=car`` (400) and
    ``Accept: application/vnd.ipld.car`` (406). ``/api/v0/...`` answers 404: the RPC API is
    :func:`agent.ipfs.kubo_rpc.create_rpc_app`, on its own loopback listener.

    Args:
        repo: the repo whose blocks are served.
        safe_types: serve only :data:`INLINE_SAFE_TYPES` inline, the rest as attachments.
        car: answer ``?format=car``.
        script_roots: directories (their CIDs) whose files are served under :data:`APP_CSP` instead of the
            sandbox, so a page there runs its own scripts: the token viewer ``chrysalis renderer publish`` pins.
            Everything else keeps :data:`GATEWAY_CSP`. Default none.
    """
    gateway = _Gateway(repo, safe_types=safe_types, car=car, script_roots=script_roots)
    app = Starlette(
        routes=[
            Route("/ipfs/{path:path}", gateway.handle, methods=["GET", "HEAD"]),
            Route("/api/v0/{command:path}", _no_rpc_here, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ]
    )
    app.state.repo = repo
    app.state.gateway = gateway
    return app


def allow_scripts(app: Starlette, root: CID | str) -> None:
    """Let the pages under directory ``root`` run their own scripts on the gateway ``app`` (:func:`create_app`'s
    ``script_roots``, added while it serves: the agent publishes its token viewer after its gateway started)."""
    gateway: _Gateway = app.state.gateway
    gateway.script_roots = gateway.script_roots | {CID.parse(str(root))}


async def _no_rpc_here(request: Request) -> Response:
    return kubo_error(
        "this is the node's read-only gateway: the RPC API (/api/v0) is not served here; it listens on its "
        "own loopback address (ipfs.rpc_host:ipfs.rpc_port) and needs the node's token",
        404,
        0,
    )
