"""The embedded IPFS node's subset of Kubo's RPC API: ``POST /api/v0/<command>``, for a loopback listener.

:func:`create_rpc_app` answers ``version``, ``add``, ``cat``, ``pin/add|ls|rm``, ``dag/import``, ``dag/export``
and ``block/get`` with Kubo's parameter names and reply shapes, so that one client (ipfshttpclient, or our Kubo
backend) talks to this node and to a real Kubo alike. Errors use Kubo's JSON shape
``{"Message", "Code", "Type": "error"}``.

Guarantees:

* Every request needs ``Authorization: Bearer <token>``: 401 without, 403 with a wrong one, checked before the
  body is read (the token itself: :mod:`agent.ipfs.rpc_auth`). Requests that carry an ``Origin`` header are
  refused (403) too: browsers send it, our clients do not.
* Bodies past ``max_request_bytes`` (:data:`DEFAULT_MAX_REQUEST_BYTES`), multipart bodies past
  :data:`DEFAULT_MAX_PARTS` parts and CAR imports past :data:`DEFAULT_MAX_CAR_LINKS` blocks + links held in
  memory get 413, and nothing is stored.
* ``add`` and ``dag/import`` are all or nothing per request part: a truncated CAR stores no block.
* A 500 never says a path on the server's disk (:func:`~agent.ipfs.replies.public_message`).
"""

from __future__ import annotations

import hmac
import json
import logging
import platform
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent import __version__
from agent.errors import ChrysalisError
from agent.ipfs.cid import CID
from agent.ipfs.errors import CorruptBlockError, InvalidCIDError, InvalidPathError, TooManyLinksError
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
from agent.ipfs.repo import AddResult, IpfsRepo

__all__ = [
    "DEFAULT_MAX_CAR_LINKS",
    "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "KUBO_VERSION",
    "create_rpc_app",
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

_DRAIN_CAP = 64 * 1024 * 1024  # read (and discard) this much past the limit so clients see the 413


# ----------------------------------------------------------------------------------------------------
# Request parameters


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
    raise HttpError(400, f"option {name!r}: cannot parse {value!r} as a boolean", code=1)


def _int(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise HttpError(400, f"option {name!r}: cannot parse {value!r} as an integer", code=1) from None
    if number < 0:
        raise HttpError(400, f"option {name!r} must not be negative (got {number})", code=1)
    return number


def _args(request: Request, what: str, *, required: bool = True) -> list[str]:
    args = request.query_params.getlist("arg")
    if required and not args:
        raise HttpError(400, f"argument {what!r} is required", code=1)
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
class _HeaderState:
    """The headers of the multipart part being parsed, and the header name and value being read."""

    headers: dict[str, bytes] = field(default_factory=dict)
    name: bytes = b""
    value: bytes = b""


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
        self.commands: dict[str, Callable[[Request], Awaitable[Response]]] = {
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
                raise HttpError(
                    403, "cross-origin RPC requests are refused (the request carried an Origin header)"
                )
            self._authorize(request)
            if request.method != "POST":
                raise HttpError(
                    405, f"{request.method} is not allowed: the RPC API takes POST (as Kubo does)"
                )
            handler = self.commands.get(command)
            if handler is None:
                known = ", ".join(sorted(self.commands))
                raise HttpError(404, f"unknown command {command!r}; this node implements: {known}")
            return await handler(request)
        except HttpError as exc:
            return kubo_error(exc.message, exc.status, exc.code, exc.headers)
        except InvalidCIDError as exc:
            return kubo_error(exc.message, 500, 0)
        except TooManyLinksError as exc:
            return kubo_error(exc.message, 413, 1)
        except CorruptBlockError as exc:
            log.error("rpc: %s: %s", command, exc.message)  # the block's path stays in the log
            return kubo_error(public_message(exc), 500, 0)
        except ChrysalisError as exc:  # not found, bad CAR: Kubo answers 500 with code 0
            return kubo_error(exc.message, 500, 0)
        except Exception as exc:
            log.exception("rpc: %s failed", command)
            return kubo_error(public_message(exc), 500, 0)

    # -- helpers --

    def _authorize(self, request: Request) -> None:
        """``Authorization: Bearer <token>`` or a 401 (none sent) / 403 (wrong), before any body is read."""
        sent = request.headers.get("authorization")
        if not sent:
            raise HttpError(
                401,
                "the RPC API needs 'Authorization: Bearer <token>' (the token is in $CHRYSALIS_IPFS_RPC_TOKEN "
                "or the repo's rpc.token file)",
                headers={"WWW-Authenticate": 'Bearer realm="chrysalis-ipfs-rpc"'},
            )
        if not hmac.compare_digest(sent.encode("latin-1", "replace"), self._expected):
            raise HttpError(403, "the RPC token is wrong: nothing was done")

    def _resolve(self, arg: str) -> CID:
        path = _strip_ipfs_prefix(arg)
        if not path:
            raise HttpError(400, f"invalid path {arg!r}", code=1)
        try:
            return self.repo.resolve(path) if "/" in path else CID.parse(path)
        except InvalidCIDError as exc:
            raise HttpError(500, f"invalid path {arg!r}: {exc.reason}") from None
        except InvalidPathError as exc:
            raise HttpError(500, f"invalid path {arg!r}: {exc.reason}") from None

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body, refusing (413) anything past ``max_request_bytes``."""
        limit = self.max_request_bytes
        declared = request.headers.get("content-length")
        too_big = HttpError(
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
            raise HttpError(
                400,
                "the request body must be multipart/form-data with a boundary (as `ipfs add` sends)",
                code=1,
            )
        parts: list[_Part] = []
        state = _HeaderState()

        def on_part_begin() -> None:
            state.headers = {}

        def on_header_field(data: bytes, start: int, end: int) -> None:
            state.name += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            state.value += data[start:end]

        def on_header_end() -> None:
            state.headers[state.name.decode("latin-1").lower()] = state.value
            state.name, state.value = b"", b""

        def on_headers_finished() -> None:
            if len(parts) >= self.max_parts:
                raise HttpError(
                    413,
                    f"the request has more than {self.max_parts} multipart parts; nothing was stored "
                    "(add fewer files per request, or send the DAG as one CAR to dag/import)",
                    code=1,
                )
            _, disposition = parse_options_header(state.headers.get("content-disposition", b""))
            raw_name = disposition.get(b"filename", b"")
            name = unquote(raw_name.decode("utf-8", "replace"))
            content_type = state.headers.get("content-type", b"").decode("latin-1").split(";")[0].strip()
            part = _Part(name=name, content_type=content_type.lower())
            if not part.is_directory:
                part.file = SpooledTemporaryFile(max_size=SMALL_BODY)
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
            refused: HttpError | None = None
            drained = 0
            async for chunk in self._body(request):
                if refused is None:
                    try:
                        parser.write(chunk)
                    except HttpError as exc:  # too many parts: drop what is spooled, read on for the 413
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
            if isinstance(exc, HttpError):
                raise
            if isinstance(exc, Exception) and not isinstance(exc, OSError):
                raise HttpError(400, f"malformed multipart body: {exc}", code=1) from None
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
            raise HttpError(400, f"unknown CID version {cid_version}: use cid-version=0 or 1", code=1)
        chunker = request.query_params.get("chunker") or "size-262144"
        size_text = chunker[len("size-") :] if chunker.startswith("size-") else ""
        if not size_text.isdigit() or not 1 <= int(size_text) <= 1024 * 1024:
            raise HttpError(
                400,
                f"chunker {chunker!r} is not supported: the embedded node chunks at a fixed size "
                "('size-<bytes>', 1..1048576; Kubo's default is size-262144); "
                "rabin and buzhash are not implemented",
                code=1,
            )
        hash_name = request.query_params.get("hash") or "sha2-256"
        if hash_name != "sha2-256":
            raise HttpError(400, f"hash function {hash_name!r} is not supported: only sha2-256", code=1)
        for flag in ("trickle", "nocopy", "inline", "fscache"):
            if _bool(request, flag, False):
                raise HttpError(400, f"option {flag}=true is not supported by the embedded node", code=1)
        if request.query_params.get("to-files"):
            raise HttpError(400, "option 'to-files' (MFS) is not supported by the embedded node", code=1)
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
                raise HttpError(
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
                raise HttpError(400, "wrap-with-directory needs every file part to carry a filename", code=1)
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
                raise HttpError(500, "this dag node is a directory")
            if offset > stat.size:
                raise HttpError(500, f"offset was past the end of file ({offset} > {stat.size})")
            return cid, stat.size

        cid, size = await run_in_threadpool(prepare)
        remaining = size - offset if length is None else min(length, size - offset)
        headers = {"X-Stream-Output": "1", "Content-Length": str(remaining)}
        if remaining <= SMALL_BODY:
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
            raise HttpError(
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
                    raise HttpError(500, f"path '{arg}' is not pinned")
                keys[str(cid)] = {"Type": pin_type}
            return keys

        return JSONResponse({"Keys": await run_in_threadpool(run)})

    async def pin_rm(self, request: Request) -> Response:
        args = _args(request, "ipfs-path")

        def run() -> list[str]:
            cids = [self._resolve(a) for a in args]
            for cid in cids:  # check all first: remove none unless all can go
                if not self.repo.is_pinned(cid):
                    raise HttpError(500, f"{cid} is not pinned or pinned indirectly")
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
                raise HttpError(400, "argument 'path' is required: send the CAR as a multipart file", code=1)
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
            coalesce(chunks, STREAM_CHUNK),
            media_type=CAR_TYPE,
            headers={"X-Stream-Output": "1", "Content-Length": str(size)},
        )

    async def block_get(self, request: Request) -> Response:
        (arg, *_) = _args(request, "cid")
        data = await run_in_threadpool(lambda: self.repo.block_get(self._resolve(arg)))
        return Response(data, media_type=OCTETS)


def _clean_add_path(name: str) -> str:
    """A multipart filename as a relative UnixFS path, refusing traversal."""
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise HttpError(400, f"file name {name!r} contains '..'", code=1)
    return "/".join(parts)


def _close_parts(parts: list[_Part]) -> None:
    for part in parts:
        if part.file is not None:
            part.file.close()


# ----------------------------------------------------------------------------------------------------
# The app


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

    Args:
        repo: the repo the commands read and write.
        token: the bearer token every request must carry (see :func:`agent.ipfs.rpc_auth.rpc_token`).
        max_request_bytes: the largest body accepted.
        max_parts: the most multipart parts one request may send.
        max_car_links: the most blocks plus links one ``dag/import`` may hold in memory.
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
