"""A test pinning service: the IPFS Pinning Service API on 127.0.0.1, for tests only.

It is a real HTTP server (starlette + uvicorn on a background thread) that implements the spec's endpoints
(``GET/POST /pins``, ``GET/POST/DELETE /pins/{requestid}``), moves each request through
``queued -> pinning -> pinned | failed``, and *really* fetches the DAG by CID from the pin's ``origins``
(``GET <origin>/ipfs/<cid>?format=car`` on our node's read-only gateway: origins expose no RPC) into
its own :class:`IpfsRepo`, verifying every block and the root before it says ``pinned``.

Test knobs: a bearer token (401 without it), :meth:`PinningTestServer.inject` to answer the next requests
with 429 (+ ``Retry-After``) or 5xx, a request log with timestamps, ways to lie (:attr:`ignore_cid_filter`:
list results for other CIDs; :attr:`padding`: bloated replies; :attr:`requestid_prefix`: ids holding ``/``,
``?`` and ``#``), and the CAR-upload mode that
:class:`~agent.ipfs.backends.PinningServiceBackend` uses with ``mode="car"`` (``POST /car``).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.errors import ChrysalisError
from agent.http import ServerThread
from agent.ipfs.cid import CID
from agent.ipfs.errors import InvalidCIDError
from agent.ipfs.repo import IpfsRepo

STATUSES = ("queued", "pinning", "pinned", "failed")


@dataclass
class RequestRecord:
    """One request the server answered."""

    method: str
    path: str
    status: int
    at: float  # time.monotonic() when the answer was decided


@dataclass
class _Injection:
    status: int
    times: int
    retry_after: str | None
    method: str | None
    path_prefix: str | None


@dataclass
class _PinRecord:
    requestid: str
    created: datetime
    pin: dict[str, Any]
    status: str = "queued"
    info: dict[str, str] = field(default_factory=dict)
    car: bytes | None = None  # CAR-upload mode: the uploaded body

    def json(self, delegates: list[str]) -> dict[str, Any]:
        return {
            "requestid": self.requestid,
            "status": self.status,
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "pin": self.pin,
            "delegates": delegates,
            "info": self.info,
        }


def _failure(
    status: int, reason: str, details: str = "", headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"reason": reason, "details": details}}, status_code=status, headers=headers
    )


def origin_to_url(origin: str) -> str | None:
    """``/ip4/127.0.0.1/tcp/8080/http`` or ``http://127.0.0.1:8080`` as a base URL (libp2p ones: None)."""
    if origin.startswith(("http://", "https://")):
        return origin.rstrip("/")
    parts = origin.strip("/").split("/")
    if len(parts) >= 4 and parts[0] in ("ip4", "ip6", "dns", "dns4", "dns6") and parts[2] == "tcp":
        host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
        scheme = "https" if "https" in parts[4:] else "http"
        return f"{scheme}://{host}:{parts[3]}"
    return None


class PinningTestServer:
    """A Pinning Service API server for tests; see the module docstring."""

    def __init__(
        self, *, token: str = "test-token", step_delay: float = 0.05, repo: IpfsRepo | None = None
    ) -> None:
        self.token = token
        self.step_delay = step_delay
        self.repo = repo if repo is not None else IpfsRepo(None)
        self.requests: list[RequestRecord] = []
        self.pins: dict[str, _PinRecord] = {}
        self.ignore_cid_filter = False  # a lying list: GET /pins?cid=X answers pins of other CIDs too
        self.padding = 0  # bytes of junk added to every PinStatus / PinResults reply
        self.requestid_prefix = ""  # prepended to new request ids (e.g. "a/b?c#d-")
        self._injections: list[_Injection] = []
        self._lock = threading.Lock()
        self._last_created = datetime.now(UTC)
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        app = Starlette(
            routes=[
                Route("/pins", self._pins, methods=["GET", "POST"]),
                Route("/pins/{requestid:path}", self._pin, methods=["GET", "POST", "DELETE"]),
                Route("/car", self._car, methods=["POST"]),
            ]
        )
        self._thread = ServerThread(self._middleware(app), name="pinning-test-server")

    # -- lifecycle --

    @property
    def url(self) -> str:
        return self._thread.url

    def start(self) -> PinningTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.stop()
        for worker in self._workers:
            worker.join(5)

    def __enter__(self) -> PinningTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test knobs --

    def inject(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (429 with ``Retry-After``, 503...)."""
        with self._lock:
            self._injections.append(_Injection(status, times, retry_after, method, path_prefix))

    def records(self, method: str | None = None, path_prefix: str = "") -> list[RequestRecord]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.startswith(path_prefix)
        ]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every pin request has reached ``pinned`` or ``failed``."""
        for worker in list(self._workers):
            worker.join(timeout)

    # -- plumbing --

    def _middleware(self, app: Starlette) -> Any:
        server = self

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request = Request(scope, receive)
            injected = server._take_injection(request)
            response: Response | None = None
            if injected is not None:
                headers = {"Retry-After": injected.retry_after} if injected.retry_after is not None else None
                response = _failure(injected.status, "INJECTED", "injected by the test", headers)
            elif request.headers.get("authorization") != f"Bearer {server.token}":
                response = _failure(401, "UNAUTHORIZED", "Access token is missing or invalid")
            status_box: dict[str, int] = {}

            async def record_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status_box["status"] = message["status"]
                    server.requests.append(
                        RequestRecord(scope["method"], scope["path"], message["status"], time.monotonic())
                    )
                await send(message)

            if response is not None:
                await response(scope, receive, record_send)
            else:
                await app(scope, receive, record_send)

        return asgi

    def _take_injection(self, request: Request) -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.method and injection.method != request.method:
                    continue
                if injection.path_prefix and not request.url.path.startswith(injection.path_prefix):
                    continue
                injection.times -= 1
                if injection.times <= 0:
                    self._injections.remove(injection)
                return injection
        return None

    def _delegates(self) -> list[str]:
        port = self._thread.port
        return [f"/ip4/127.0.0.1/tcp/{port}/http"]

    def _new_created(self) -> datetime:
        """A strictly increasing creation time (the spec paginates by it)."""
        with self._lock:
            now = max(datetime.now(UTC), self._last_created + timedelta(microseconds=1))
            self._last_created = now
            return now

    # -- endpoints --

    async def _pins(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._create(request)
        query = request.query_params
        cids = {c for v in query.getlist("cid") for c in v.split(",") if c}
        statuses = {s for v in query.getlist("status") for s in v.split(",") if s} or {"pinned"}
        if not statuses <= set(STATUSES):
            return _failure(400, "BAD_REQUEST", f"unknown status in {sorted(statuses)}")
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            return _failure(400, "BAD_REQUEST", "limit must be an integer")
        if not 1 <= limit <= 1000:
            return _failure(400, "BAD_REQUEST", "limit must be within 1..1000")
        name = query.get("name")
        before, after = query.get("before"), query.get("after")
        matches = []
        for record in sorted(self.pins.values(), key=lambda r: r.created, reverse=True):
            if cids and record.pin["cid"] not in cids and not self.ignore_cid_filter:
                continue
            if record.status not in statuses or (name is not None and record.pin.get("name") != name):
                continue
            if before and record.created >= _parse_time(before):
                continue
            if after and record.created <= _parse_time(after):
                continue
            matches.append(record)
        delegates = self._delegates()
        return self._reply({"count": len(matches), "results": [r.json(delegates) for r in matches[:limit]]})

    def _reply(self, body: dict[str, Any], status_code: int = 200) -> JSONResponse:
        if self.padding:
            body = body | {"padding": "x" * self.padding}
        return JSONResponse(body, status_code=status_code)

    async def _read_pin(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = await request.json()
        except ValueError:
            return _failure(400, "BAD_REQUEST", "body must be a JSON Pin object")
        if not isinstance(body, dict) or not isinstance(body.get("cid"), str):
            return _failure(400, "BAD_REQUEST", "Pin.cid is required")
        try:
            CID.parse(body["cid"])
        except InvalidCIDError as exc:
            return _failure(400, "BAD_REQUEST", f"invalid cid: {exc}")
        origins = body.get("origins") or []
        if not isinstance(origins, list) or len(origins) > 20:
            return _failure(400, "BAD_REQUEST", "origins must be a list of at most 20 multiaddrs")
        return {
            "cid": body["cid"],
            "name": body.get("name") or "",
            "origins": origins,
            "meta": body.get("meta") or {},
        }

    def _start(self, pin: dict[str, Any], car: bytes | None = None) -> _PinRecord:
        requestid = self.requestid_prefix + str(uuid.uuid4())
        record = _PinRecord(requestid=requestid, created=self._new_created(), pin=pin, car=car)
        self.pins[record.requestid] = record
        worker = threading.Thread(
            target=self._work, args=(record,), name=f"pin-{record.requestid[:8]}", daemon=True
        )
        self._workers.append(worker)
        worker.start()
        return record

    async def _create(self, request: Request) -> Response:
        pin = await self._read_pin(request)
        if isinstance(pin, Response):
            return pin
        record = self._start(pin)
        return self._reply(record.json(self._delegates()), status_code=202)

    async def _pin(self, request: Request) -> Response:
        record = self.pins.get(request.path_params["requestid"])
        if record is None:
            return _failure(404, "NOT_FOUND", "The specified resource was not found")
        if request.method == "GET":
            return self._reply(record.json(self._delegates()))
        if request.method == "DELETE":
            self._remove(record)
            return Response(status_code=202)
        pin = await self._read_pin(request)  # replace: a new request for the new pin, the old one removed
        if isinstance(pin, Response):
            return pin
        new = self._start(pin)
        self._remove(record)
        return JSONResponse(new.json(self._delegates()), status_code=202)

    async def _car(self, request: Request) -> Response:
        body = await request.body()
        name = request.query_params.get("name", "")
        try:
            header_roots = _car_roots(body)
        except ChrysalisError as exc:
            return _failure(400, "BAD_CAR", exc.message)
        if len(header_roots) != 1:
            return _failure(400, "BAD_CAR", f"expected exactly one root, got {len(header_roots)}")
        record = self._start({"cid": str(header_roots[0]), "name": name, "origins": [], "meta": {}}, car=body)
        return JSONResponse(record.json(self._delegates()), status_code=202)

    def _remove(self, record: _PinRecord) -> None:
        self.pins.pop(record.requestid, None)
        cid = CID.parse(record.pin["cid"])
        still_wanted = any(
            r.pin["cid"] == record.pin["cid"] and r.status == "pinned" for r in self.pins.values()
        )
        if not still_wanted and self.repo.is_pinned(cid):
            self.repo.pin_rm(cid)

    # -- the pinning work --

    def _work(self, record: _PinRecord) -> None:
        if self._stopping.wait(self.step_delay):
            return
        record.status = "pinning"
        if self._stopping.wait(self.step_delay):
            return
        cid = CID.parse(record.pin["cid"])
        try:
            car = record.car if record.car is not None else self._fetch(cid, record.pin["origins"])
            scratch = IpfsRepo(None)  # verify completely before anything reaches our repo
            roots = scratch.import_car(BytesIO(car), pin=False)
            if cid not in roots:
                raise ValueError(f"the CAR's roots {[str(r) for r in roots]} do not include {cid}")
            scratch.export_car(cid, BytesIO())  # every block of the DAG is present
            self.repo.import_car(BytesIO(car), pin=False)
            self.repo.pin_add(cid)
        except Exception as exc:  # the reason is what a real service would put in status_details
            record.info = {"status_details": f"{type(exc).__name__}: {exc}"}
            record.status = "failed"
            return
        record.info = {"dag_size": str(len(car))}
        record.status = "pinned"

    def _fetch(self, cid: CID, origins: list[str]) -> bytes:
        errors = []
        for origin in origins:
            base = origin_to_url(origin)
            if base is None:
                errors.append(f"{origin}: not an HTTP origin")
                continue
            try:
                with httpx.Client(base_url=base, timeout=10) as client:
                    reply = client.get(
                        f"/ipfs/{cid}",
                        params={"format": "car"},
                        headers={"Accept": "application/vnd.ipld.car"},
                    )
                    if reply.status_code == 200:
                        return reply.content
                    errors.append(f"{origin}: HTTP {reply.status_code}")
            except httpx.HTTPError as exc:
                errors.append(f"{origin}: {type(exc).__name__}")
        raise LookupError(
            f"could not fetch {cid} from any origin ({'; '.join(errors) or 'no origins given'})"
        )


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _car_roots(body: bytes) -> list[CID]:
    """The roots a CAR declares (parsed by the core importer into a scratch repo)."""
    return IpfsRepo(None).import_car(BytesIO(body), pin=False)
