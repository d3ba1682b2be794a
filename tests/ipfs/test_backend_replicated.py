"""Replication across real backends: embedded, Kubo RPC (the embedded node), the test pinning service."""

from __future__ import annotations

import pytest

from agent.errors import BackendUnavailableError, ConfigError
from agent.ipfs.backends import (
    EmbeddedBackend,
    KuboBackend,
    PinningServiceBackend,
    Replicator,
    RetryPolicy,
    backends_from_settings,
)
from agent.ipfs.cid import CID
from agent.ipfs.errors import BackendAuthError, ReplicationError
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.settings import IpfsSettings, PinningServiceSettings
from tests.ipfs.pinning_test_server import PinningTestServer

# ipfshttpclient 0.7.0 passes urllib3 an option it deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")

FAST = RetryPolicy(attempts=2, base_delay=0.01, deadline=5)


@pytest.fixture
def local() -> IpfsRepo:
    return IpfsRepo(None)


@pytest.fixture
def asset(local: IpfsRepo) -> CID:
    return local.add_directory(
        {"meta.json": local.add(b'{"name": "Chrysalis #1"}'), "art.png": local.add(b"\x89PNG..")}
    )


def test_embedded_backend_copies_from_another_repo(local: IpfsRepo, asset: CID) -> None:
    target = IpfsRepo(None)
    backend = EmbeddedBackend(target)
    assert not backend.is_pinned(asset)
    assert backend.pin(asset, source=local).backend == "embedded"
    assert target.is_pinned(asset)
    assert backend.pin(asset, source=local).detail == "already pinned"
    backend.unpin(asset)
    assert not backend.is_pinned(asset)
    assert str(backend.add(b"hello world\n")) == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def test_two_of_three_publishes(
    node: NodeServer, repo: IpfsRepo, pinning_server: PinningTestServer, local: IpfsRepo, asset: CID
) -> None:
    # The service fetches from our node, so the asset must be served there: `repo` is the node's repo.
    served = _copy(local, repo, asset)
    backends = [
        EmbeddedBackend(local),
        PinningServiceBackend(
            pinning_server.url, token="test-token", name="good", origins=[node.url], poll_interval=0.02
        ),
        PinningServiceBackend(pinning_server.url, token="revoked", name="bad", origins=[node.url]),
    ]
    with Replicator(backends, required=2, source=local) as replicator:
        receipts = replicator.publish(served, name="token-1")
        assert [r.backend for r in receipts] == ["embedded", "good"]
        assert replicator.is_published(served)


def test_too_few_confirmations_is_a_replication_error(
    node: NodeServer, local: IpfsRepo, asset: CID, closed_port: int
) -> None:
    backends = [
        EmbeddedBackend(local),
        KuboBackend(f"http://127.0.0.1:{closed_port}", name="kubo-down", policy=FAST),
    ]
    with Replicator(backends, required=2, source=local) as replicator:
        with pytest.raises(ReplicationError) as caught:
            replicator.publish(asset)
        assert not replicator.is_published(asset)
    error = caught.value
    assert error.retryable
    assert error.required == 2
    assert [o.backend for o in error.outcomes] == ["embedded", "kubo-down"]
    assert error.outcomes[0].confirmed and not error.outcomes[1].confirmed
    assert isinstance(error.outcomes[1].error, BackendUnavailableError)
    assert "1 of 2 backends confirmed" in error.message
    assert "kubo-down: BackendUnavailableError" in error.message


def test_each_failure_is_listed(pinning_server: PinningTestServer, local: IpfsRepo, asset: CID) -> None:
    backends = [
        EmbeddedBackend(local),
        PinningServiceBackend(pinning_server.url, token="nope", name="psa-a"),
        PinningServiceBackend(pinning_server.url, token="nope", name="psa-b"),
    ]
    with (
        Replicator(backends, required=3, source=local) as replicator,
        pytest.raises(ReplicationError) as caught,
    ):
        replicator.publish(asset)
    outcomes = {o.backend: o for o in caught.value.outcomes}
    assert isinstance(outcomes["psa-a"].error, BackendAuthError)
    assert isinstance(outcomes["psa-b"].error, BackendAuthError)


def test_backends_from_settings(monkeypatch: pytest.MonkeyPatch, repo: IpfsRepo) -> None:
    monkeypatch.setenv("CHRYSALIS_PINNING_MY_PINS_TOKEN", "from-env")
    settings = IpfsSettings(
        kubo_api="/ip4/127.0.0.1/tcp/5001",
        pinning_services=[
            PinningServiceSettings(name="my-pins", endpoint="https://pins.example/psa", mode="car")
        ],
        replication=3,
        gateway_port=8181,
    )
    backends = backends_from_settings(settings, repo)
    assert [type(b).__name__ for b in backends] == ["EmbeddedBackend", "KuboBackend", "PinningServiceBackend"]
    service = backends[2]
    assert isinstance(service, PinningServiceBackend)
    assert service.mode == "car"
    assert service.origins == ["/ip4/127.0.0.1/tcp/8181/http", "http://127.0.0.1:8181"]
    assert service.http._client.headers["authorization"] == "Bearer from-env"
    replicator = Replicator.from_settings(settings, repo)
    assert replicator.required == 3
    replicator.close()
    with pytest.raises(ConfigError, match="replication is 4"):
        Replicator.from_settings(settings.model_copy(update={"replication": 4}), repo)


def _copy(source: IpfsRepo, target: IpfsRepo, cid: CID) -> CID:
    EmbeddedBackend(target).pin(cid, source=source)
    return cid
