"""What one visitor may cost the studio, and how long a session lasts (audit rows M2, M3, M7, L5, L7, L10, I3).

* Logins run scrypt off the event loop (one per attempt, known name or not), throttled per address and per name.
* The admin password is kept as an scrypt hash, at least 12 characters.
* Logout, removing a curator and changing their password end sessions, copied cookies included.
* ``/events`` streams are capped per client and in all, noticed as gone at once, and carry review counts only to
  curators (nor do pages show them to anonymous visitors).
* Verify results are cached per version and receipt; the queue is bounded; anonymous addresses are rate-limited.
* Bulk approval approves only the revisions the curator saw.
* ``chrysalis studio`` on a busy port: error and hint, exit 1.
"""

from __future__ import annotations

import copy
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from agent.errors import ConfigError, NotFoundError
from agent.http import ServerThread
from agent.review import ReviewState
from agent.settings import StudioSettings
from agent.studio import auth
from agent.studio.app import create_app
from agent.studio.auth import Credentials, RevokedSessions, hash_password
from agent.studio.limits import LoginThrottle, RateLimit
from agent.studio.service import Studio
from agent.studio.verification import VerifyBusyError, VerifyRunner
from tests.studio.conftest import BASE_URL, csrf_of
from tests.studio.world import API_TOKEN, CURATOR, PASSWORD, candidate_from_token, submit
from tests.support.waiting import eventually

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
JSON = {"Accept": "application/json"}


def tuned(studio: Studio, **changes: Any) -> Studio:
    """The session's studio with other ``[studio]`` settings (same stores, hub, credentials, verifier)."""
    clone = copy.copy(studio)
    clone.settings = studio.settings.model_copy(
        update={"studio": studio.settings.studio.model_copy(update=changes)}
    )
    return clone


@pytest.fixture
def app_for(studio: Studio) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(target: Studio | None = None, **changes: Any) -> TestClient:
        c = TestClient(
            create_app(tuned(target or studio, **changes)), base_url=BASE_URL, follow_redirects=False
        )
        clients.append(c.__enter__())
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def login(c: TestClient, name: str = CURATOR, password: str = PASSWORD) -> httpx.Response:
    return c.post(
        "/login", data={"username": name, "password": password, "csrf_token": csrf_of(c.get("/login").text)}
    )


# -- M2: logins off the event loop, one scrypt each --------------------------------------------------------------


def test_a_login_costs_one_scrypt_whether_the_name_exists_or_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    curators = tmp_path / "curators"
    auth.add_curator(curators, "cora", "cora-password-1")
    monkeypatch.setenv("CHRYSALIS_TEST_ADMIN_PW", "admin-password-1")
    creds = Credentials(StudioSettings(password_env="CHRYSALIS_TEST_ADMIN_PW", curators_file=curators))
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(kwargs["n"])
        return real(*args, **kwargs)

    monkeypatch.setattr(auth.hashlib, "scrypt", counting)
    for name, password, ok in [
        ("admin", "admin-password-1", True), ("admin", "wrong", False), ("cora", "cora-password-1", True),
        ("cora", "wrong", False), ("nobody", "wrong", False), ("", "", False),
    ]:  # fmt: skip
        calls.clear()
        assert (creds.login(name, password) is not None) is ok, name
        assert calls == [auth.SCRYPT_N], (name, calls)  # one scrypt, same cost for every name


def test_slow_logins_leave_the_event_loop_free(studio: Studio) -> None:
    slow = tuned(studio, login_free_failures=1000)  # real scrypt (tens of ms); no lockout in the way
    started = time.monotonic()
    assert not slow.credentials.login("nobody", "x")
    one_check = time.monotonic() - started
    with (
        ServerThread(create_app(slow), port=0, name="studio-test") as server,
        httpx.Client(base_url=server.url, headers={"Host": "127.0.0.1"}) as http,
    ):
        token = csrf_of(http.get("/login").text)
        done: list[int] = []

        def guess(i: int) -> None:
            r = http.post("/login", data={"username": f"nobody-{i}", "password": "x", "csrf_token": token})
            done.append(r.status_code)

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        latencies = []
        while len(done) < len(threads):  # while logins are being checked, the studio still answers at once
            t0 = time.monotonic()
            assert http.get("/static/studio.css").status_code == 200
            latencies.append(time.monotonic() - t0)
        for t in threads:
            t.join()
    assert done == [401] * 6
    assert latencies, "no page was fetched while the logins ran"
    latencies.sort()
    assert latencies[len(latencies) // 2] < one_check / 2, (latencies, one_check)


# -- M3: throttling, the admin password ------------------------------------------------------------------------


def test_failed_logins_back_off_then_lock_with_429_and_retry_after(
    app_for: Callable[..., TestClient],
) -> None:
    c = app_for(login_free_failures=3)
    token = csrf_of(c.get("/login").text)

    def attempt(password: str, headers: dict[str, str] | None = None) -> httpx.Response:
        data = {"username": CURATOR, "password": password, "csrf_token": token}
        return c.post("/login", data=data, headers=headers or {})

    assert [attempt("wrong-guess").status_code for _ in range(3)] == [401, 401, 401]
    # the third failure locks for 1 s, the next ones for 2, 4 ... s (up to login_lockout_s)
    locked = attempt(PASSWORD)  # even the right password waits: the lock is per address and per name
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert "too many failed logins" in locked.text and "try again in" in locked.text
    as_json = attempt(PASSWORD, JSON)
    assert as_json.status_code == 429 and as_json.json()["hint"] and "retry-after" in as_json.headers


def test_the_throttle_doubles_the_wait_caps_it_and_forgets() -> None:
    now = [0.0]
    t = LoginThrottle(free=2, max_s=8, base_s=1, clock=lambda: now[0])
    waits = []
    for _ in range(7):
        t.attempt(ip="1.2.3.4", name="admin")
        waits.append(t.wait(ip="1.2.3.4", name="admin"))
    assert waits == [0, 1, 2, 4, 8, 8, 8]
    assert t.wait(ip="5.6.7.8", name="admin") == 8  # the account is locked from any address
    assert t.wait(ip="1.2.3.4", name="other") == 8  # and the address for any account
    assert t.wait(ip="5.6.7.8", name="other") == 0
    now[0] += 100
    t.attempt(ip="1.2.3.4", name="admin")  # long after the last failure: counting starts again
    assert t.wait(ip="1.2.3.4", name="admin") == 0
    t.succeeded(ip="1.2.3.4", name="admin")
    assert t.wait(ip="1.2.3.4", name="admin") == 0


@pytest.mark.parametrize("password", ["short-pw", "", "12345678901"])
def test_an_admin_password_under_12_characters_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("CHRYSALIS_TEST_ADMIN_PW", password)
    settings = StudioSettings(password_env="CHRYSALIS_TEST_ADMIN_PW")
    if not password:  # an empty env var is no password: read-only
        assert not Credentials(settings).can_log_in
        return
    with pytest.raises(ConfigError, match="shorter than 12 characters") as err:
        Credentials(settings)
    assert err.value.hint and "at least 12" in err.value.hint


def test_the_admin_password_is_kept_hashed_and_a_hash_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRYSALIS_TEST_ADMIN_PW", "plain-admin-password")
    creds = Credentials(StudioSettings(password_env="CHRYSALIS_TEST_ADMIN_PW"))
    assert "plain-admin-password" not in repr(vars(creds))
    assert creds.login("admin", "plain-admin-password") and not creds.login("admin", "plain-admin-passwor")
    monkeypatch.setenv("CHRYSALIS_TEST_ADMIN_PW", hash_password("hashed-admin-password"))
    creds = Credentials(StudioSettings(password_env="CHRYSALIS_TEST_ADMIN_PW"))
    assert creds.login("admin", "hashed-admin-password")
    monkeypatch.setenv("CHRYSALIS_TEST_ADMIN_PW", "scrypt$oops")
    with pytest.raises(ConfigError, match="looks like an scrypt hash but is not one"):
        Credentials(StudioSettings(password_env="CHRYSALIS_TEST_ADMIN_PW"))


# -- L5: sessions end ---------------------------------------------------------------------------------------------


def test_a_logged_out_cookie_is_refused_when_replayed(
    app_for: Callable[..., TestClient], studio: Studio
) -> None:
    c = app_for()
    assert login(c).status_code == 303
    copied = c.cookies.get("chrysalis_studio")
    assert c.get("/review").status_code == 200
    assert c.post("/logout", data={"csrf_token": csrf_of(c.get("/").text)}).status_code == 303
    thief = app_for()
    thief.cookies.set("chrysalis_studio", copied)
    assert thief.get("/review").status_code == 401
    assert thief.post("/review/approve", data={"csrf_token": "x"}, headers=JSON).status_code in (401, 403)


def test_logouts_are_remembered_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "studio" / "revoked-sessions.json"
    now = [1000.0]
    RevokedSessions(path, clock=lambda: now[0]).revoke("sid-1", until=2000.0)
    assert RevokedSessions(path).revoked("sid-1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    now[0] = 3000.0
    later = RevokedSessions(path, clock=lambda: now[0])
    later.revoke("sid-2", until=4000.0)  # expired entries are dropped
    assert not RevokedSessions(path).revoked("sid-1") and RevokedSessions(path).revoked("sid-2")


def test_removing_a_curator_or_changing_their_password_ends_their_sessions(
    app_for: Callable[..., TestClient], studio: Studio, tmp_path: Path
) -> None:
    curators = tmp_path / "curators"
    auth.add_curator(curators, "cora", "cora-password-1")
    auth.add_curator(curators, "dan", "dan-password-12")
    team = copy.copy(studio)
    team.credentials = Credentials(studio.settings.studio.model_copy(update={"curators_file": curators}))
    cora, dan = app_for(team), app_for(team)
    assert login(cora, "cora", "cora-password-1").status_code == 303
    assert login(dan, "dan", "dan-password-12").status_code == 303
    assert cora.get("/review").status_code == 200 and dan.get("/review").status_code == 200
    curators.write_text(
        "\n".join(ln for ln in curators.read_text().splitlines() if not ln.startswith("cora:"))
    )
    assert cora.get("/review").status_code == 401  # removed: out at once, no restart
    assert dan.get("/review").status_code == 200
    auth.add_curator(curators, "dan", "dan-new-password")
    assert dan.get("/review").status_code == 401  # a new password ends the old sessions
    assert login(dan, "dan", "dan-new-password").status_code == 303 and dan.get("/review").status_code == 200


# -- L7 and I3: live-update streams -------------------------------------------------------------------------------


class Stream:
    """An ``/events`` stream on its own socket, read on a thread (``text``: what came so far).

    A raw socket, so that :meth:`close` really closes the connection (shutdown wakes the reading thread; a close()
    alone would wait for it).
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = httpx.URL(url)
        self.sock = socket.create_connection((parts.host, parts.port or 80), timeout=10)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "the studio closed the stream"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        self.status = int(head.split()[1])
        self.text = rest.decode()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(4096):
                self.text += chunk.decode()
        except OSError:
            pass

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def served(studio: Studio) -> Iterator[Callable[..., str]]:
    servers: list[ServerThread] = []

    def serve(**changes: Any) -> str:
        server = ServerThread(create_app(tuned(studio, **changes)), port=0, name="studio-test").start()
        servers.append(server)
        return server.url

    yield serve
    studio.hub.close()
    for server in servers:
        server.stop()


@pytest.mark.parametrize(
    ("per_client", "total", "status"), [(2, 10, 429), (10, 2, 503)], ids=["per-client", "in-all"]
)
def test_event_streams_are_capped_and_a_closed_one_frees_its_slot_at_once(
    served: Callable[..., str], studio: Studio, per_client: int, total: int, status: int
) -> None:
    url = served(max_event_streams_per_client=per_client, max_event_streams=total)
    base = studio.hub.subscribers
    with httpx.Client(base_url=url, headers={"Host": "127.0.0.1"}, timeout=10) as http:
        streams = [Stream(url) for _ in range(2)]
        assert [s.status for s in streams] == [200, 200]
        eventually(lambda: studio.hub.subscribers == base + 2, what="two subscribers")
        refused = http.get("/events", headers=JSON)
        assert refused.status_code == status and int(refused.headers["retry-after"]) >= 1
        assert "live-update streams" in refused.json()["error"] and refused.json()["hint"]
        streams[0].close()  # the client goes away: the studio notices at once, not at the next keep-alive
        eventually(lambda: studio.hub.subscribers == base + 1, timeout=3, what="the closed stream to be gone")
        again = Stream(url)
        assert again.status == 200
        for s in (again, streams[1]):
            s.close()


def test_review_counts_are_for_curators_only(
    served: Callable[..., str], client: TestClient, curator: TestClient, studio: Studio
) -> None:
    submit(studio)
    assert 'id="review-count"' not in client.get("/").text  # anonymous: no badge
    assert 'id="review-count"' in curator.get("/").text
    assert client.get("/api/ops").json()["review"] == {}
    assert curator.get("/api/ops").json()["review"]["awaiting_review"] >= 1
    url = served()
    anonymous, trusted = Stream(url), Stream(url, BEARER)
    eventually(
        lambda: "retry: 2000" in anonymous.lines and "retry: 2000" in trusted.lines, what="both streams"
    )
    studio.hub.publish("review", {"awaiting_review": 7})
    studio.hub.publish("transfer", {"args": {"tokenId": 1}})
    for s in (anonymous, trusted):
        eventually(lambda s=s: "event: transfer" in s.lines, what="the public event")
    assert "event: review" not in anonymous.lines
    assert "event: review" in trusted.lines and 'data: {"awaiting_review": 7}' in trusted.lines
    anonymous.close()
    trusted.close()


# -- M7: Verify -------------------------------------------------------------------------------------------------


class _Blocked:
    """A catalog whose every lookup waits for :attr:`go` (a Verify run that takes as long as the test wants)."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def token(self, token_id: int) -> Any:
        self.go.wait(10)
        raise NotFoundError(f"token {token_id}")


def test_the_verify_queue_is_bounded() -> None:
    catalog = _Blocked()
    runner = VerifyRunner(catalog, max_queue=2)  # type: ignore[arg-type]
    try:
        first, second = runner.submit(1, 1), runner.submit(1, 2)
        assert runner.submit(1, 1) is first  # the same version: the run already queued
        with pytest.raises(VerifyBusyError, match="queue is full") as err:
            runner.submit(1, 3)
        assert err.value.hint
        catalog.go.set()
        eventually(lambda: first.state == second.state == "error", what="the runs to end")
        assert runner.submit(1, 3).state in ("queued", "running", "error")  # room again
    finally:
        catalog.go.set()
        runner.close()


def test_verify_results_are_cached_and_anonymous_addresses_are_rate_limited(
    app_for: Callable[..., TestClient], studio: Studio
) -> None:
    c = app_for(verify_per_minute=1)
    token = csrf_of(c.get("/tokens/1").text)
    first = c.post("/tokens/1/verify", data={"csrf_token": token, "stage": "1"}, headers=JSON)
    assert first.status_code == 202, first.text
    task = eventually(lambda: (t := c.get(f"/api/verify/{first.json()['id']}").json())["state"] in ("done", "error")
                    and t, timeout=120, what="the replay")  # fmt: skip
    assert task["state"] == "done" and task["result"]["verdict"] == "match"
    again = c.post("/tokens/1/verify", data={"csrf_token": token, "stage": "1"}, headers=JSON)
    assert again.status_code == 202 and again.json()["state"] == "done" and again.json()["cached"]
    assert again.json()["result"] == task["result"]  # free: no replay, no rate limit
    other = c.post("/tokens/1/verify", data={"csrf_token": token, "stage": "2"}, headers=JSON)
    assert other.status_code == 429 and int(other.headers["retry-after"]) >= 1
    assert "Verify runs this minute" in other.json()["error"] and "log in" in other.json()["hint"]
    curator = app_for(verify_per_minute=1)
    by_token = curator.post("/tokens/1/verify", data={"stage": "2"}, headers=BEARER)
    assert by_token.status_code == 202  # curators are not limited


def test_a_full_verify_queue_is_a_clear_503(app_for: Callable[..., TestClient], studio: Studio) -> None:
    busy = copy.copy(studio)
    catalog = _Blocked()
    busy.verifier = VerifyRunner(catalog, max_queue=1)  # type: ignore[arg-type]
    try:
        c = app_for(busy)
        token = csrf_of(c.get("/tokens/1").text)
        assert (
            c.post("/tokens/1/verify", data={"csrf_token": token, "stage": "1"}, headers=JSON).status_code
            == 202
        )
        full = c.post("/tokens/1/verify", data={"csrf_token": token, "stage": "2"}, headers=JSON)
        assert full.status_code == 503 and full.headers["retry-after"] == "30"
        assert "Verify queue is full" in full.json()["error"] and full.json()["hint"]
    finally:
        catalog.go.set()
        busy.verifier.close()


def test_the_rate_limit_refills() -> None:
    now = [0.0]
    limit = RateLimit(2, clock=lambda: now[0])
    assert [limit.take("a"), limit.take("a")] == [0, 0]
    assert limit.take("a") == pytest.approx(30) and limit.take("b") == 0
    now[0] += 30
    assert limit.take("a") == 0


# -- L10: bulk approval of what was seen --------------------------------------------------------------------------


def test_bulk_approve_skips_a_candidate_regenerated_since_the_page_was_loaded(
    curator: TestClient, studio: Studio
) -> None:
    stale, fresh = submit(studio), submit(studio)
    page = curator.get("/review").text
    seen = {i: studio.reviews.get(i).revision for i in (stale, fresh)}
    assert f'value="{stale}:{seen[stale]}"' in page
    studio.reviews.request_regeneration(stale, "someone", new_seed=True)
    studio.reviews.finish_regeneration(stale, seen[stale], candidate_from_token(studio, 1))
    data = {"csrf_token": curator.csrf, "ids": [f"{i}:{seen[i]}" for i in (stale, fresh)]}
    r = curator.post("/review/approve", data=data, headers=JSON)
    assert r.json()["approved"] == [fresh]
    assert [(k["id"], k["revision"]) for k in r.json()["skipped"]] == [(stale, seen[stale] + 1)]
    assert studio.reviews.get(stale).state == ReviewState.AWAITING
    shown = curator.post("/review/approve", data=data, headers={"Referer": "/review"})
    flashes = curator.get(shown.headers["location"]).text
    assert (
        "skipped 2 that changed since the page was loaded" in flashes
        and f"#{stale} (now awaiting_review" in flashes
    )
    bare = curator.post("/review/approve", data={"csrf_token": curator.csrf, "ids": [str(fresh)]})
    assert (
        bare.status_code == 400
        and "is not ID:REVISION" in bare.text
        and "reload the review page" in bare.text
    )


# -- chrysalis studio on a busy port -------------------------------------------------------------------------------


def test_studio_on_a_busy_port_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["studio", "--host", "127.0.0.1", "--port", str(port)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "hint: pick another port (--port)" in err and "Errno" not in err and "Traceback" not in err
