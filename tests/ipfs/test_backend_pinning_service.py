"""The Pinning Service API backend against the test pinning service, which fetches from our node."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest

from agent.errors import BackendUnavailableError
from agent.ipfs.backends import PinningServiceBackend, RetryPolicy
from agent.ipfs.backends.retry import parse_retry_after
from agent.ipfs.cid import CID, raw_cid
from agent.ipfs.errors import (
    BackendAuthError,
    BackendRequestError,
    CIDMismatchError,
    PinFailedError,
    PinTimeoutError,
)
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from tests.ipfs.pinning_test_server import PinningTestServer

TOKEN = "test-token"


@pytest.fixture
def asset(repo: IpfsRepo) -> CID:
    """A small directory (metadata + image) in the node's repo."""
    return repo.add_directory(
        {
            "meta.json": repo.add(b'{"name": "Chrysalis #7"}'),
            "art.bin": repo.add(random.Random(8).randbytes(300_000)),
        }
    )


@pytest.fixture
def backend(node: NodeServer, pinning_server: PinningTestServer) -> Iterator[PinningServiceBackend]:
    with PinningServiceBackend(
        pinning_server.url,
        token=TOKEN,
        name="psa",
        origins=[node.gateway_multiaddr],
        poll_interval=0.02,
        timeout=30,
        policy=RetryPolicy(base_delay=0.05, deadline=30),
    ) as b:
        yield b


def test_pin_is_fetched_from_our_node_and_confirmed(
    backend: PinningServiceBackend, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    receipt = backend.pin(asset, source=repo, name="token-7")
    assert (receipt.backend, receipt.cid) == ("psa", asset)
    assert receipt.request_id in pinning_server.pins
    assert pinning_server.pins[receipt.request_id].pin["name"] == "token-7"
    assert pinning_server.repo.is_pinned(asset)  # the service really holds the DAG
    theirs = pinning_server.repo
    assert b"".join(theirs.cat(theirs.resolve(f"{asset}/meta.json"))) == b'{"name": "Chrysalis #7"}'
    assert len(pinning_server.records("GET", "/pins/")) >= 1  # it polled through queued/pinning
    assert backend.is_pinned(asset)
    again = backend.pin(asset, source=repo)
    assert again.detail == "already pinned"
    assert len(pinning_server.records("POST", "/pins")) == 1  # no duplicate request
    backend.unpin(asset)
    assert not backend.is_pinned(asset)
    assert not pinning_server.repo.is_pinned(asset)


def test_failed_pin_carries_the_services_reason(backend: PinningServiceBackend, repo: IpfsRepo) -> None:
    absent = raw_cid(b"nobody has this")
    with pytest.raises(PinFailedError) as caught:
        backend.pin(absent, source=repo)
    assert not caught.value.retryable
    assert "could not fetch" in caught.value.message
    assert str(absent) in caught.value.message


def test_429_retry_after_is_honoured(
    backend: PinningServiceBackend, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    pinning_server.inject(429, retry_after="1", method="POST", path_prefix="/pins")
    backend.pin(asset, source=repo)
    posts = pinning_server.records("POST", "/pins")
    assert [r.status for r in posts] == [429, 202]
    assert posts[1].at - posts[0].at >= 1.0


def test_5xx_backs_off_then_succeeds(
    backend: PinningServiceBackend, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    pinning_server.inject(503, times=2, method="POST")
    backend.pin(asset, source=repo)
    posts = pinning_server.records("POST", "/pins")
    assert [r.status for r in posts] == [503, 503, 202]
    first_wait, second_wait = posts[1].at - posts[0].at, posts[2].at - posts[1].at
    assert first_wait >= 0.05 and second_wait >= 0.1  # base 0.05 s, doubled


def test_persistent_5xx_gives_up_as_unavailable(
    node: NodeServer, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    pinning_server.inject(502, times=100)
    policy = RetryPolicy(attempts=3, base_delay=0.01, deadline=10)
    with PinningServiceBackend(pinning_server.url, token=TOKEN, origins=[node.url], policy=policy) as backend:
        with pytest.raises(BackendUnavailableError, match="502"):
            backend.pin(asset, source=repo)
    assert len(pinning_server.requests) == 3


def test_wrong_token_is_401(
    node: NodeServer, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    with PinningServiceBackend(
        pinning_server.url, token="wrong", origins=[node.url], token_env="CHRYSALIS_PINNING_PSA_TOKEN"
    ) as backend:
        with pytest.raises(BackendAuthError) as caught:
            backend.pin(asset, source=repo)
    assert "401" in caught.value.message
    assert "CHRYSALIS_PINNING_PSA_TOKEN" in (caught.value.hint or "")
    assert not caught.value.retryable


def test_unreachable_service_is_retryable_with_url(closed_port: int, repo: IpfsRepo, asset: CID) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    policy = RetryPolicy(attempts=2, base_delay=0.01, deadline=5)
    with PinningServiceBackend(url, token=TOKEN, policy=policy) as backend:
        with pytest.raises(BackendUnavailableError) as caught:
            backend.pin(asset, source=repo)
    assert caught.value.retryable
    assert url in caught.value.message
    assert caught.value.hint


def test_car_upload_mode(pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID) -> None:
    with PinningServiceBackend(pinning_server.url, token=TOKEN, mode="car", poll_interval=0.02) as backend:
        receipt = backend.pin(asset, source=repo)
    assert receipt.detail == "pinned (car)"
    assert pinning_server.repo.is_pinned(asset)
    assert pinning_server.records("POST", "/car")[0].status == 202


def test_slow_service_times_out(node: NodeServer, repo: IpfsRepo, asset: CID) -> None:
    with (
        PinningTestServer(step_delay=5) as slow,
        PinningServiceBackend(
            slow.url, token=TOKEN, origins=[node.url], poll_interval=0.05, timeout=0.5
        ) as backend,
    ):
        with pytest.raises(PinTimeoutError, match="within 0.5 s"):
            backend.pin(asset, source=repo)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_the_test_service_follows_the_spec(
    node: NodeServer, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    """List (default: pinned only), get, replace and delete, as ipfs/pinning-services-api-spec describes."""
    other = repo.add(b"the next stage of token 7").cid
    with httpx.Client(base_url=pinning_server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        created = http.post(
            "/pins", json={"cid": str(asset), "name": "stage-1", "origins": [node.gateway_multiaddr]}
        )
        assert created.status_code == 202
        assert created.json()["status"] == "queued"
        first = created.json()["requestid"]
        pinning_server.wait_idle()
        assert http.get(f"/pins/{first}").json()["status"] == "pinned"
        assert http.get("/pins", params={"cid": str(asset)}).json()["count"] == 1
        replaced = http.post(
            f"/pins/{first}", json={"cid": str(other), "name": "stage-2", "origins": [node.url]}
        )
        assert replaced.status_code == 202
        second = replaced.json()["requestid"]
        assert second != first
        assert http.get(f"/pins/{first}").status_code == 404
        pinning_server.wait_idle()
        assert pinning_server.repo.is_pinned(other) and not pinning_server.repo.is_pinned(asset)
        assert [r["pin"]["name"] for r in http.get("/pins").json()["results"]] == ["stage-2"]
        assert http.delete(f"/pins/{second}").status_code == 202
        everything = http.get(
            "/pins", params=[("status", s) for s in ("queued", "pinning", "pinned", "failed")]
        )
        assert everything.json() == {"count": 0, "results": []}
        bad = http.post("/pins", json={"cid": "not-a-cid"})
        assert (bad.status_code, bad.json()["error"]["reason"]) == (400, "BAD_REQUEST")
        assert httpx.get(f"{pinning_server.url}/pins").status_code == 401


# -- a service that lies (L8): every list result is checked, ids are escaped, replies are capped --


def test_a_list_result_for_another_cid_is_never_a_confirmation(
    backend: PinningServiceBackend, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    backend.pin(asset, source=repo)  # the service really pins `asset`
    other = repo.add(b"never sent to the service").cid
    pinning_server.ignore_cid_filter = True  # now it answers "pinned" for any CID with `asset`'s pin
    with pytest.raises(CIDMismatchError) as caught:
        backend.is_pinned(other)
    assert str(other) in caught.value.message and str(asset) in caught.value.message
    with pytest.raises(CIDMismatchError):
        backend.pin(other, source=repo)  # not "already pinned"
    assert not pinning_server.repo.is_pinned(other)
    assert len(pinning_server.records("POST", "/pins")) == 1  # nothing new was asked for either


def test_a_requestid_with_url_characters_stays_one_path_segment(
    backend: PinningServiceBackend, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    pinning_server.requestid_prefix = "a/../b?c=d#e-"
    receipt = backend.pin(asset, source=repo)
    assert receipt.request_id is not None and receipt.request_id.startswith("a/../b?c=d#e-")
    polls = pinning_server.records("GET", "/pins/")
    assert polls and all(r.path == f"/pins/{receipt.request_id}" and r.status == 200 for r in polls)
    backend.unpin(asset)
    assert [r.path for r in pinning_server.records("DELETE")] == [f"/pins/{receipt.request_id}"]
    assert not pinning_server.repo.is_pinned(asset)


def test_a_bloated_reply_is_refused_clearly(
    backend: PinningServiceBackend, pinning_server: PinningTestServer, repo: IpfsRepo, asset: CID
) -> None:
    backend.http.max_response_bytes = 16 * 1024
    pinning_server.padding = 64 * 1024
    with pytest.raises(BackendRequestError) as caught:
        backend.is_pinned(asset)
    assert "answered more than 16384 bytes" in caught.value.message
    assert not caught.value.retryable
    pinning_server.padding = 1024  # a reply under the cap is read as before
    assert not backend.is_pinned(asset)
