"""The studio web app: server-rendered pages (Jinja2), a little JavaScript, live updates over SSE.

Pages (public, read-only): ``/`` gallery (``?stage=N&trait=name:value``), ``/tokens/{id}`` timeline with the
provenance panel, ``/ops`` operations, ``/ipfs/...`` the embedded IPFS gateway (GET/HEAD only; the node's RPC
API is not exposed), ``/events`` live updates. The review queue ``/review`` needs a login (candidates are not
public before approval).

Actions (POST; a CSRF token from the page, or ``Authorization: Bearer <token>``): ``/tokens/{id}/verify`` (anyone;
results are cached per version and receipt, the queue is bounded and anonymous clients are rate-limited),
``/tokens/{id}/refresh``, ``/review/{id}/approve|reject|regenerate``, ``/review/approve`` (bulk; ``ids`` are
``ID:REVISION`` pairs, and a revision that changed is skipped) (curators).
Browsers get redirects back with a message; clients that send the bearer token or ``Accept: application/json``
get JSON. The same data is under ``/api/...`` as JSON.

Hardening: every reply carries a Content-Security-Policy (``frame-ancestors 'none'``, scripts and styles from
``/static`` only), ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` and ``nosniff``; requests for a
Host outside ``studio.allowed_hosts`` get 400. ``/ipfs/`` serves only PNG, JPEG, GIF, WebP and JSON inline (the
rest as attachments, under the gateway's sandbox CSP) and no CAR export. Logins are checked off the event loop
(one scrypt per attempt, whatever the name, at most two at a time) and throttled per client address and per name
(:mod:`agent.studio.limits`); sessions are checked on every request (logout, account removal and password change
end them); ``/events`` streams are capped per client and in all; review counts are shown to curators only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import __version__
from agent.domain import ModelRef
from agent.errors import BackendUnavailableError, ChrysalisError, ConfigError, NotFoundError
from agent.http import ServerThread, run_foreground
from agent.ipfs.gateway import create_app as create_ipfs_app
from agent.ipfs.repo import IpfsRepo
from agent.redact import redact_text
from agent.review import OPEN_STATES, ReviewConflictError, ReviewInputError, ReviewItem, ReviewState
from agent.studio.auth import CSRF_FIELD, CSRF_HEADER, Curator, csrf_ok, csrf_token
from agent.studio.catalog import filter_cards, trait_values
from agent.studio.limits import LoginThrottle, RateLimit, StreamSlots, retry_after
from agent.studio.ops import gather, token_of
from agent.studio.service import Studio
from agent.studio.verification import VerifyBusyError, verify_key

log = logging.getLogger("chrysalis.studio")

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "chrysalis_studio"
CHAIN_UNAVAILABLE = "chain unavailable"
"""What anonymous visitors are told when the chain (or another backend) fails: the error text, with its
endpoint, is for curators (and, redacted, the logs)."""
LOGIN_THREADS = 2
"""Login checks (scrypt, ~16 MiB and tens of ms each) running at once; more wait their turn off the event loop."""
LOGIN_WAITING = 32
"""Login checks allowed to wait for a thread; beyond, 503 (a flood from many addresses)."""


class HttpProblem(Exception):
    """An HTTP error page: 401 (log in), 403 (CSRF), 404, 409 ..."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        hint: str | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.hint = status, title, message, hint
        self.headers = {"Retry-After": retry_after(retry_after_s)} if retry_after_s is not None else {}


class _SlotStream(StreamingResponse):
    """A streaming reply that gives its :class:`StreamSlots` slot back however the stream ends."""

    def __init__(self, content: Any, *, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def client_of(request: Request) -> str:
    """The client's address (behind a local reverse proxy, uvicorn takes it from ``X-Forwarded-For``)."""
    return request.client.host if request.client else "unknown"


def _short(value: Any, head: int = 6, tail: int = 4) -> str:
    text = str(value or "")
    return text if len(text) <= head + tail + 1 else f"{text[:head]}…{text[-tail:]}"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "—"


def _eth(wei: Any) -> str:
    return f"{int(wei or 0) / 10**18:.6f} ETH"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


_INLINE_HANDLER = re.compile(r"""\son[a-z]+\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _inline_handler_hashes() -> list[str]:
    """CSP hashes of the templates' constant inline event handlers (e.g. a confirm() on a button)."""
    found: set[str] = set()
    for template in sorted((HERE / "templates").glob("*.html")):
        for match in _INLINE_HANDLER.finditer(template.read_text(encoding="utf-8")):
            code = html.unescape(match.group(1) if match.group(1) is not None else match.group(2))
            if "{{" in code or "{%" in code:
                continue  # not constant: it could not be allowed by a hash anyway
            digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
            found.add(f"'sha256-{digest}'")
    return sorted(found)


def page_csp(viewer_gateway: str | None = None) -> str:
    """The studio pages' Content-Security-Policy: everything from the studio itself, nothing inline but the
    templates' own event handlers (by hash), never framed; frames only from ``viewer_gateway`` (the token viewer,
    ``studio.viewer_gateway``), none without it."""
    hashes = _inline_handler_hashes()
    scripts = " ".join(["'self'", *(["'unsafe-hashes'", *hashes] if hashes else [])])
    frames = viewer_gateway or "'none'"
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self'; connect-src 'self'; "
        f"frame-src {frames}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def viewer_src(gateway: str | None, animation_url: str | None) -> str | None:
    """The token viewer's address on ``gateway`` for a version's ``animation_url`` (``ipfs://<site>/?token=...``);
    None when either is missing or the link is not an ``ipfs://`` one (never frame another origin)."""
    if not gateway or not animation_url or not animation_url.startswith("ipfs://"):
        return None
    return f"{gateway}/ipfs/{animation_url.removeprefix('ipfs://')}"


class _SecurityHeaders:
    """Adds the studio's security headers to every reply that does not set its own (the gateway sets its CSP)."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": csp,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def allowed_hosts(configured: str, *extra: str | None) -> list[str]:
    """Default Host names for the studio: where it listens plus the loopback names (IPv6 in brackets)."""
    hosts: list[str] = []
    for host in (configured, *extra, "localhost", "127.0.0.1", "::1"):
        if not host:
            continue
        name = f"[{host}]" if ":" in host and not host.startswith("[") else host
        if name.lower() not in hosts:
            hosts.append(name.lower())
    return hosts


def safe_back(referer: str | None, default: str, host: str | None) -> str:
    """Where to send a browser back to: the Referer when it is a page of this studio (a path starting with a
    single ``/``, from this ``host`` when it names one), else ``default``: never another site
    (``https://evil.example/x``, ``//evil.example``, ``/\\evil``)."""
    if not referer or any(ord(c) < 33 or ord(c) == 127 for c in referer):
        return default
    parts = urlsplit(referer)
    if parts.scheme not in ("", "http", "https") or (
        parts.netloc and parts.netloc.lower() != (host or "").lower()
    ):
        return default
    path = parts.path
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return default
    return path + (f"?{parts.query}" if parts.query else "")


class _Gateway:
    """The embedded node's path gateway only (GET/HEAD ``/ipfs/...``); its RPC API stays unexposed.

    It shares the studio's origin, so it serves only images and JSON inline (``safe_types``) and no CAR export.
    """

    def __init__(self, repo: IpfsRepo) -> None:
        self.node = create_ipfs_app(repo, safe_types=True, car=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await Response("the studio's gateway is read-only", status_code=405)(scope, receive, send)
            return
        await self.node(scope, receive, send)


def create_app(studio: Studio, *, host: str | None = None) -> Starlette:
    """The ASGI app over ``studio`` (which the caller starts and closes); ``host``: where it listens, when not
    ``studio.host`` (a Host name it answers to unless ``studio.allowed_hosts`` is set)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(short=_short, when=_when, eth=_eth, pretty=_pretty, redact=redact_text)
    env.globals.update(version=__version__)
    creds = studio.credentials
    s = studio.settings.studio
    throttle = LoginThrottle(free=s.login_free_failures, max_s=s.login_lockout_s)
    login_threads = anyio.CapacityLimiter(LOGIN_THREADS)
    verify_rate = RateLimit(s.verify_per_minute)
    streams = StreamSlots(total=s.max_event_streams, per_client=s.max_event_streams_per_client)
    session_keys = ("user", "sid", "fp", "iat")

    # -- helpers --------------------------------------------------------------------------------------------

    def curator(request: Request) -> Curator | None:
        by_token = creds.bearer(request.headers.get("authorization"))
        if by_token is not None:
            return by_token
        session = request.session
        name = session.get("user")
        if not name:
            return None
        sid, fp, iat = session.get("sid"), session.get("fp"), session.get("iat")
        if (
            not isinstance(sid, str)
            or not isinstance(fp, str)
            or not isinstance(iat, int | float)
            or time.time() - iat > s.session_max_age_s  # a login lasts this long, however often it is used
            or studio.revoked.revoked(sid)  # logged out
            or not creds.session_ok(str(name), fp)  # removed, or its password changed
        ):
            for key in session_keys:
                session.pop(key, None)
            return None
        return Curator(str(name), "session")

    def wants_json(request: Request) -> bool:
        return (
            request.url.path.startswith("/api/")
            or "authorization" in request.headers
            or "application/json" in request.headers.get("accept", "")
        )

    def require_curator(request: Request) -> Curator:
        who = curator(request)
        if who is None:
            if request.headers.get("authorization"):
                raise HttpProblem(401, "Not authorised", "the bearer token is not the studio's API token",
                                  f"send the token set in {studio.settings.studio.token_env}")  # fmt: skip
            raise HttpProblem(
                401,
                "Log in first",
                "this needs a curator: log in, or send Authorization: Bearer <token>",
                "log in with the admin password (studio.password_env) or a curator account"
                if creds.can_log_in
                else f"no login is configured: set {studio.settings.studio.password_env} (or studio.password_file) "
                "and restart the studio",
            )
        return who

    async def form_of(request: Request) -> Mapping[str, Any]:
        """The POSTed form, after the CSRF check (skipped for bearer-token requests)."""
        form = await request.form()
        if creds.bearer(request.headers.get("authorization")) is None:
            sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
            if not csrf_ok(request.session, str(sent) if sent else None):
                raise HttpProblem(
                    403,
                    "Forbidden: CSRF check failed",
                    "this form's security token is missing or does not belong to your session",
                    "reload the page and submit the form again (forms expire when the studio restarts or you log out)",
                )
        return form

    def poll_error(request: Request) -> str | None:
        """The poller's last error for curators (URLs redacted); a generic line for anonymous visitors."""
        error = studio.poller.last_error
        if error is None:
            return None
        return redact_text(error) if curator(request) is not None else CHAIN_UNAVAILABLE

    def flash(request: Request, message: str, kind: str = "ok") -> None:
        request.session.setdefault("flash", []).append({"kind": kind, "text": message})

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        review_open = 0
        if studio.review_enabled and curator(request) is not None:  # the queue is not public
            try:
                counts = studio.reviews.counts()
                review_open = counts[ReviewState.AWAITING] + counts[ReviewState.REGENERATING]
            except ChrysalisError:
                review_open = 0
        base = {
            "request": request,
            "user": curator(request),
            "csrf": csrf_token(request.session),
            "csrf_field": CSRF_FIELD,
            "flashes": request.session.pop("flash", []),
            "review_enabled": studio.review_enabled,
            "review_open": review_open,
            "poll_error": poll_error(request),
            "collection": studio.index.address,
            "chain_id": studio.index.deployment.chain_id,
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def back(request: Request, default: str) -> RedirectResponse:
        target = safe_back(request.headers.get("referer"), default, request.headers.get("host"))
        return RedirectResponse(target, status_code=303)

    def int_param(value: Any, what: str) -> int | None:
        if value in (None, ""):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise HttpProblem(
                400, "Bad request", f"{what} {value!r} is not a whole number", f"pass {what} as digits"
            ) from None

    # -- pages ----------------------------------------------------------------------------------------------

    async def gallery(request: Request) -> Response:
        cards = await run_in_threadpool(studio.catalog.cards)
        stage = int_param(request.query_params.get("stage"), "stage")
        wanted: dict[str, str] = {}
        for raw in request.query_params.getlist("trait"):
            name, sep, value = raw.partition(":")
            if sep and value:
                wanted[name] = value
        shown = filter_cards(cards, stage=stage, traits=wanted)
        if wants_json(request):
            return JSONResponse({"tokens": [_card_json(c) for c in shown], "total": len(cards)})
        return render(
            request,
            "gallery.html",
            cards=shown,
            total=len(cards),
            stages=sorted({c.stage for c in cards}),
            traits=trait_values(cards),
            stage=stage,
            wanted=wanted,
        )

    async def token_page(request: Request) -> Response:
        token_id = int(request.path_params["token_id"])
        detail = await run_in_threadpool(studio.catalog.token, token_id)
        if wants_json(request):
            return JSONResponse(_detail_json(detail))
        models: dict[str, Any] = {}
        for view in detail.timeline:
            refs = list(view.metadata.models.values())
            if view.image_lora is not None:
                refs.append(_lora_ref(view.image_lora))
            for ref in refs:
                if ref.weights_sha256 not in models:
                    models[ref.weights_sha256] = await run_in_threadpool(_model_view, studio, ref)
        tasks = studio.verifier.latest(token_id)
        focus = request.query_params.get("verify")
        task = studio.verifier.get(focus) if focus else None
        reviews = []
        if studio.review_enabled and curator(request) is not None:
            reviews = await run_in_threadpool(
                lambda: studio.reviews.list_items(states=OPEN_STATES, token_id=token_id, limit=20)
            )
        current = detail.card.metadata
        animation_url = current.animation_url if current is not None else None
        viewer = viewer_src(studio.settings.studio.viewer_gateway, animation_url)
        return render(request, "token.html", detail=detail, card=detail.card, timeline=list(reversed(detail.timeline)),
                      models=models, tasks=tasks, focus_task=task, reviews=reviews, animation_url=animation_url,
                      viewer=viewer)  # fmt: skip

    async def ops_page(request: Request) -> Response:
        def build() -> Any:
            studio.index.ensure_synced()
            review = {k.value: v for k, v in studio.reviews.counts().items()} if private else {}
            return gather(studio.jobs, studio.index, review=review)

        private = studio.review_enabled and curator(request) is not None  # the queue is not public
        view = await run_in_threadpool(build)
        if wants_json(request):
            return JSONResponse(view.to_json())
        return render(request, "ops.html", ops=view, token_of=token_of)

    async def review_page(request: Request) -> Response:
        who = require_curator(request)
        if not studio.review_enabled:
            raise HttpProblem(
                404, "Review mode is off", "the review queue is used only in review mode",
                "set studio.review = true (CHRYSALIS_STUDIO__REVIEW=true) for the agent and the studio",
            )  # fmt: skip
        tab = request.query_params.get("tab", "open")
        states = {
            "open": OPEN_STATES,
            "approved": [ReviewState.APPROVED],
            "rejected": [ReviewState.REJECTED],
        }.get(tab)
        if states is None:
            raise HttpProblem(400, "Bad request", f"unknown tab {tab!r}", "use open, approved or rejected")
        kind = request.query_params.get("kind") or None

        def build() -> tuple[list[ReviewItem], dict[str, int], dict[int, dict[str, Any] | None]]:
            items = studio.reviews.list_items(states=states, kind=kind, limit=200, newest_first=tab != "open")
            counts = {k.value: v for k, v in studio.reviews.counts().items()}
            published = {i.id: _published(studio, i) for i in items if i.state == ReviewState.APPROVED}
            return items, counts, published

        items, counts, published = await run_in_threadpool(build)
        if wants_json(request):
            return JSONResponse(
                {"items": [i.to_json(published=published.get(i.id)) for i in items], "counts": counts}
            )
        return render(request, "review.html", items=items, counts=counts, tab=tab, kind=kind, curator=who,
                      published=published)  # fmt: skip

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/"), can_log_in=creds.can_log_in,
                      password_env=studio.settings.studio.password_env)  # fmt: skip

    def login_refused(
        request: Request, status: int, target: str, error: str, wait: float | None = None
    ) -> Response:
        response = render(request, "login.html", status=status, next=target, can_log_in=creds.can_log_in,
                          password_env=s.password_env, error=error)  # fmt: skip
        if wait is not None:
            response.headers["Retry-After"] = retry_after(wait)
        return response

    async def login(request: Request) -> Response:
        form = await form_of(request)
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        name = str(form.get("username") or "").strip()[:200]
        password = str(form.get("password") or "")
        ip = client_of(request)
        wait = throttle.wait(ip=ip, name=name)
        if wait > 0:
            message = f"too many failed logins from your address or for this name: try again in {retry_after(wait)} s"
            if wants_json(request):
                raise HttpProblem(
                    429, "Too many attempts", message, "wait, then try again", retry_after_s=wait
                )
            return login_refused(request, 429, target, message, wait)
        if login_threads.statistics().tasks_waiting >= LOGIN_WAITING:
            raise HttpProblem(503, "Busy", "too many logins are being checked right now",
                              "try again in a few seconds", retry_after_s=5)  # fmt: skip
        throttle.attempt(ip=ip, name=name)  # a failure until it succeeds: parallel guesses count too
        who = await anyio.to_thread.run_sync(creds.login, name, password, limiter=login_threads)
        if who is None:
            log.warning("failed studio login for %r from %s", name, ip)
            return login_refused(request, 401, target, "wrong name or password")
        throttle.succeeded(ip=ip, name=name)
        request.session.clear()
        request.session.update(
            user=who.name, sid=secrets.token_urlsafe(18), fp=creds.fingerprint(who.name), iat=int(time.time())
        )
        csrf_token(request.session)  # a fresh token for the new session
        flash(request, f"logged in as {who.name}")
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request) -> Response:
        await form_of(request)
        sid, iat = request.session.get("sid"), request.session.get("iat")
        if isinstance(
            sid, str
        ):  # the cookie may have been copied: its id stays refused until it would expire
            since = float(iat) if isinstance(iat, int | float) else time.time()
            studio.revoked.revoke(sid, since + s.session_max_age_s)
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    async def events(request: Request) -> Response:
        ip = client_of(request)
        full = streams.acquire(ip)
        if full == "client":
            raise HttpProblem(429, "Too many live-update streams",
                              f"your address already holds {s.max_event_streams_per_client} live-update streams",
                              "close other studio tabs (pages still work without live updates)",
                              retry_after_s=30)  # fmt: skip
        if full == "total":
            raise HttpProblem(503, "Too many live-update streams",
                              f"the studio already serves {s.max_event_streams} live-update streams",
                              "try again later (pages still work without live updates)",
                              retry_after_s=30)  # fmt: skip
        return _SlotStream(
            studio.hub.stream(request.is_disconnected, private=lambda: curator(request) is not None),
            release=lambda: streams.release(ip),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- actions --------------------------------------------------------------------------------------------

    async def verify(request: Request) -> Response:
        form = await form_of(request)
        token_id = int(request.path_params["token_id"])
        stage = int_param(form.get("stage"), "stage")
        detail = await run_in_threadpool(studio.catalog.token, token_id)
        view = detail.stage_view(stage)  # NotFoundError now, not in the background
        anonymous = curator(request) is None

        def admit() -> None:  # only asked when a new replay would start (cached and running ones are free)
            wait = verify_rate.take(client_of(request)) if anonymous else 0.0
            if wait > 0:
                raise HttpProblem(429, "Too many Verify runs",
                                  f"your address started {s.verify_per_minute} Verify runs this minute: "
                                  f"try again in {retry_after(wait)} s",
                                  "wait, or log in as a curator (curators are not limited)",
                                  retry_after_s=wait)  # fmt: skip

        try:
            task = studio.verifier.submit(token_id, stage, key=verify_key(token_id, view), admit=admit)
        except VerifyBusyError as exc:
            raise HttpProblem(503, "Verify is busy", exc.message, exc.hint, retry_after_s=30) from None
        if wants_json(request):
            return JSONResponse(task.to_json(), status_code=202)
        anchor = f"#stage-{stage}" if stage is not None else ""
        return RedirectResponse(f"/tokens/{token_id}?verify={task.id}{anchor}", status_code=303)

    async def verify_status(request: Request) -> Response:
        task = studio.verifier.get(request.path_params["task_id"])
        if task is None:
            raise HttpProblem(404, "Not found", "no such Verify run (runs are kept while the studio runs)",
                              "start it again from the token page")  # fmt: skip
        return JSONResponse(task.to_json())

    async def refresh(request: Request) -> Response:
        who = require_curator(request)
        await form_of(request)
        token_id = int(request.path_params["token_id"])
        job_id, created = await run_in_threadpool(studio.request_refresh, token_id, who.name)
        if wants_json(request):
            return JSONResponse({"job_id": job_id, "created": created}, status_code=202)
        flash(request, f"refresh of token {token_id} queued as job {job_id}" if created
              else f"a refresh of token {token_id} is already queued (job {job_id})")  # fmt: skip
        return RedirectResponse(f"/tokens/{token_id}", status_code=303)

    def review_action(action: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            who = require_curator(request)
            form = await form_of(request)
            if not studio.review_enabled:
                raise HttpProblem(409, "Review mode is off", "there is nothing to review",
                                  "set studio.review = true")  # fmt: skip
            review_id = int(request.path_params["review_id"])
            revision = int_param(form.get("revision"), "revision")
            if action == "approve":
                item = await run_in_threadpool(studio.reviews.approve, review_id, who.name, revision=revision)
                message = f"approved {item.label} (review #{item.id}, revision {item.revision})"
            elif action == "reject":
                reason = str(form.get("reason") or "")
                item = await run_in_threadpool(
                    studio.reviews.reject, review_id, who.name, reason, revision=revision
                )
                message = f"rejected {item.label} (review #{item.id}): {item.reason}"
            else:
                strength_raw = form.get("strength")
                try:
                    strength = float(strength_raw) if strength_raw not in (None, "") else None
                except ValueError:
                    raise ReviewInputError(
                        f"strength {strength_raw!r} is not a number",
                        hint="enter a number in (0, 1], e.g. 0.5",
                    ) from None
                new_seed = str(form.get("new_seed") or "").lower() in ("1", "on", "true", "yes")
                item = await run_in_threadpool(
                    lambda: studio.reviews.request_regeneration(
                        review_id, who.name, new_seed=new_seed, strength=strength, revision=revision
                    )
                )
                studio.regenerator.kick()
                message = f"regenerating {item.label} (review #{item.id})"
            if wants_json(request):
                return JSONResponse(item.to_json())
            flash(request, message)
            return back(request, "/review")

        return handle

    async def bulk_approve(request: Request) -> Response:
        who = require_curator(request)
        form = await form_of(request)
        if str(form.get("all_kind") or ""):
            kind = str(form.get("all_kind"))
            done = await run_in_threadpool(studio.reviews.approve_all, who.name, kind=kind)
            conflicts: list[ReviewConflictError] = []
        else:
            pairs = [_id_revision(v) for v in form.getlist("ids")]  # type: ignore[attr-defined]
            if not pairs:
                raise ReviewInputError(
                    "no items were selected", hint="tick the items to approve (x selects one)"
                )
            done, conflicts = await run_in_threadpool(studio.reviews.approve_many, pairs, who.name)
        skipped = [
            {"id": c.item.id, "state": c.item.state.value, "revision": c.item.revision, "error": c.message}
            for c in conflicts
        ]
        if wants_json(request):
            return JSONResponse(
                {
                    "approved": [i.id for i in done],
                    "skipped": skipped,
                    "conflicts": [c.message for c in conflicts],
                }
            )
        flash(request, f"approved {len(done)} item(s)")
        if skipped:
            flash(
                request,
                f"skipped {len(skipped)} that changed since the page was loaded or were already decided: "
                + ", ".join(f"#{k['id']} (now {k['state']}, revision {k['revision']})" for k in skipped)
                + "; look at them again before approving",
                "warn",
            )
        return back(request, "/review")

    # -- errors ---------------------------------------------------------------------------------------------

    def problem(
        request: Request,
        status: int,
        title: str,
        message: str,
        hint: str | None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        headers = dict(headers or {})
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="chrysalis-studio"'
        if wants_json(request):
            return JSONResponse(
                {"error": message, "hint": hint, "status": status}, status_code=status, headers=headers
            )
        response = render(request, "error.html", status=status, title=title, message=message, hint=hint,
                          login_link=status == 401, code=status)  # fmt: skip
        if headers:
            response.headers.update(headers)
        return response

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpProblem)
        return problem(request, exc.status, exc.title, exc.message, exc.hint, exc.headers)

    async def on_chrysalis(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ChrysalisError)
        if isinstance(exc, NotFoundError):
            status, title = 404, "Not found"
        elif isinstance(exc, ReviewConflictError):
            status, title = 409, "Already decided"
        elif isinstance(exc, ReviewInputError | ConfigError):
            status, title = 400, "Bad request"
        elif isinstance(exc, BackendUnavailableError) or exc.retryable:
            status, title = 503, "Unavailable"
            if curator(request) is None:  # the error names the endpoint: not for anonymous visitors
                log.warning(
                    "studio: %s %s failed: %s", request.method, request.url.path, redact_text(exc.message)
                )
                return problem(request, status, title, CHAIN_UNAVAILABLE, "try again in a moment")
        else:
            status, title = 500, "Error"
        return problem(request, status, title, redact_text(exc.message), exc.hint and redact_text(exc.hint))

    async def api_tokens(request: Request) -> Response:
        cards = await run_in_threadpool(studio.catalog.cards)
        return JSONResponse({"tokens": [_card_json(c) for c in cards]})

    async def api_token(request: Request) -> Response:
        detail = await run_in_threadpool(studio.catalog.token, int(request.path_params["token_id"]))
        return JSONResponse(_detail_json(detail))

    routes = [
        Route("/", gallery),
        Route("/tokens/{token_id:int}", token_page),
        Route("/tokens/{token_id:int}/verify", verify, methods=["POST"]),
        Route("/tokens/{token_id:int}/refresh", refresh, methods=["POST"]),
        Route("/ops", ops_page),
        Route("/review", review_page),
        Route("/review/approve", bulk_approve, methods=["POST"]),
        Route("/review/{review_id:int}/approve", review_action("approve"), methods=["POST"]),
        Route("/review/{review_id:int}/reject", review_action("reject"), methods=["POST"]),
        Route("/review/{review_id:int}/regenerate", review_action("regenerate"), methods=["POST"]),
        Route("/login", login_page),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/events", events),
        Route("/api/tokens", api_tokens),
        Route("/api/tokens/{token_id:int}", api_token),
        Route("/api/ops", ops_page),
        Route("/api/review", review_page),
        Route("/api/verify/{task_id}", verify_status),
        Route("/ipfs/{path:path}", _Gateway(studio.repo)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders, csp=page_csp(studio.settings.studio.viewer_gateway)),
            Middleware(
                TrustedHostMiddleware,
                allowed_hosts=s.allowed_hosts if s.allowed_hosts is not None else allowed_hosts(s.host, host),
                www_redirect=False,
            ),
            Middleware(
                SessionMiddleware,
                secret_key=creds.session_secret,
                session_cookie=SESSION_COOKIE,
                max_age=s.session_max_age_s,
                same_site="lax",
                https_only=s.secure_cookies,
            ),
        ],
        exception_handlers={HttpProblem: on_problem, ChrysalisError: on_chrysalis},
    )
    app.state.studio = studio
    return app


# -- JSON and view helpers ------------------------------------------------------------------------------------


def _id_revision(value: Any) -> tuple[int, int]:
    """A bulk-approve ``ID:REVISION`` pair (the revision the curator saw)."""
    review_id, sep, revision = str(value).partition(":")
    if not (sep and review_id.strip().isdigit() and revision.strip().isdigit()):
        raise HttpProblem(
            400, "Bad request", f"selected item {str(value)[:40]!r} is not ID:REVISION",
            "post each selected item as ID:REVISION (the revision shown in the queue); reload the review page",
        )  # fmt: skip
    return int(review_id), int(revision)


def _card_json(card: Any) -> dict[str, Any]:
    s = card.state
    return {
        "token_id": card.token_id,
        "name": card.name,
        "stage": card.stage,
        "owner": s.owner,
        "traits": dict(card.traits),
        "image": f"ipfs://{card.image_cid}" if card.image_cid else None,
        "metadata_cid": card.metadata_cid,
        "token_uri": s.token_uri,
        "pending_request": hex(s.pending_request) if s.pending_request is not None else None,
        "problem": card.problem,
    }


def _detail_json(detail: Any) -> dict[str, Any]:
    return {
        **_card_json(detail.card),
        "timeline": [
            {
                "stage": v.stage,
                "cid": v.cid,
                "kind": v.kind,
                "image": v.metadata.image,
                "lore": v.metadata.description,
                "traits": dict(v.metadata.traits),
                "changed": sorted(v.changed),
                "tx_hash": v.tx_hash,
                "block_number": v.block_number,
                "request_id": hex(v.request_id) if v.request_id is not None else None,
                "provenance": v.onchain_provenance,
                "provenance_matches": v.provenance_matches,
                "approved_by": v.metadata.approved_by,
                "inputs": dict(v.metadata.inputs),
            }
            for v in detail.timeline
        ],
    }


def _published(studio: Studio, item: ReviewItem) -> dict[str, Any] | None:
    """Where an approved candidate was written on-chain: the version of its token carrying its provenance."""
    if item.token_id is None:
        return None
    try:
        detail = studio.catalog.token(item.token_id)
    except ChrysalisError:
        return None
    for view in detail.timeline:
        if view.onchain_provenance == item.candidate.provenance:
            return {
                "tx_hash": view.tx_hash,
                "block_number": view.block_number,
                "cid": view.cid,
                "stage": view.stage,
            }
    return None


def _model_view(studio: Studio, ref: Any) -> dict[str, Any]:
    """A model as the provenance panel shows it: its on-chain registry entry, its lineage (to the training data's
    commitment, :mod:`agent.studio.lineage`) and its model card, if known."""
    out: dict[str, Any] = {"model_id": ref.model_id, "weights_sha256": ref.weights_sha256}
    try:
        record = studio.index.model_record(ref.weights_sha256)
    except ChrysalisError as exc:
        record, out["registry_error"] = None, exc.message
    out["registry"] = record
    if "registry_error" not in out:
        out["lineage"] = studio.lineages.of(ref.weights_sha256, record.manifest_uri if record else None)
    card = _model_card(ref.weights_sha256)
    if card is not None:
        out.update(card)
    return out


def _lora_ref(lora: Mapping[str, Any]) -> ModelRef:
    """The LoRA of a version's image (:attr:`~agent.studio.catalog.StageView.image_lora`) as a model, so the
    provenance panel looks up its registry record and lineage by its weights digest (the LoRA file's sha256, what
    ``chrysalis model publish`` registers) exactly as it does for the metadata's models."""
    return ModelRef(
        model_id=str(lora.get("source") or lora.get("file") or "LoRA"),
        weights_sha256=str(lora["sha256"]),
        kind="image",
        backend="diffusers",
    )


def _model_card(weights_sha256: str) -> dict[str, Any] | None:
    """The shipped model's manifest (and MODEL_CARD.md when present) when its weights digest matches."""
    try:
        from agent.generate import shipped

        root = Path(shipped.__file__).resolve().parent
    except ImportError:  # pragma: no cover
        return None
    for manifest_path in sorted(root.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("weights_sha256") == weights_sha256:
            card_path = manifest_path.with_name("MODEL_CARD.md")
            fields = ("model_id", "parameters", "native_size", "output_size", "classes", "training_steps",
                      "dataset_generator_version")  # fmt: skip
            facts = {k: manifest[k] for k in fields if k in manifest}
            return {
                "card_facts": facts,
                "card_text": card_path.read_text() if card_path.is_file() else None,
                "card_source": f"shipped with Chrysalis ({manifest_path.parent.name})",
            }
    return None


class StudioServer(ServerThread):
    """The studio on a background thread (tests, ``make demo``): starts the studio's threads too.

    Example::

        with StudioServer(Studio.from_settings(settings), port=0) as server:
            print(server.url)
    """

    def __init__(self, studio: Studio, *, host: str | None = None, port: int | None = None) -> None:
        self.studio = studio
        s = studio.settings.studio
        host = host or s.host
        super().__init__(
            create_app(studio, host=host), host=host, port=s.port if port is None else port, name="studio"
        )

    def start(self, *, timeout: float = 10.0) -> StudioServer:
        self.studio.start()
        super().start(timeout=timeout)
        return self

    def stop(self, *, grace: float = 5.0) -> None:
        self.studio.hub.close()
        super().stop(grace=grace)

    def __enter__(self) -> StudioServer:  # noqa: PYI034 - ServerThread's own signature
        return self.start()


def serve(studio: Studio, *, host: str, sock: socket.socket) -> None:
    """Serve on ``sock`` (bound with :func:`agent.http.listen_socket`, so that a busy port is a clean
    error before anything starts) in the foreground until interrupted (``chrysalis studio``)."""
    studio.start()
    run_foreground(create_app(studio, host=host), sock)


def query(**params: Any) -> str:
    """A query string without empty values (templates build filter links with it)."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")}, doseq=True)
