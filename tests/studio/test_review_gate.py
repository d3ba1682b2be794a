"""The review gate's guarantee, end to end on anvil with a remote IPFS backend: with review mode on, nothing is
pinned remotely or sent on-chain before a curator approves; afterwards the metadata names who approved it, and
browsers connected to /events hear about the evolution."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import KUBO_TOKEN_ENV
from agent.ipfs.server import NodeServer
from agent.jobs import JobState
from agent.metadata import cid_from_digest, parse_metadata
from agent.review import ReviewState
from agent.settings import IpfsSettings
from agent.studio.app import StudioServer
from agent.studio.service import Studio
from tests.studio.world import API_TOKEN, CURATOR, ReviewedPublisher, World
from tests.support.waiting import eventually


def listen(url: str, events: list[dict], stop: threading.Event) -> None:
    """Collect SSE events from ``url`` as a curator (review events are for curators only) until ``stop`` is set."""
    with httpx.Client(
        timeout=httpx.Timeout(5.0, read=1.0), headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as http:
        while not stop.is_set():
            try:
                with http.stream("GET", url) as response:
                    name = None
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: ") and name:
                            events.append({"event": name, **json.loads(line[6:])})
                        if stop.is_set():
                            return
            except httpx.HTTPError:
                continue


def test_nothing_leaves_the_node_or_goes_on_chain_before_approval(
    world: World, studio: Studio, curator: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote_repo = IpfsRepo(tmp_path / "remote")
    with NodeServer(remote_repo) as remote, StudioServer(studio, port=0) as server:
        monkeypatch.setenv(KUBO_TOKEN_ENV, remote.token)  # the remote node's RPC wants its bearer token
        events: list[dict] = []
        stop = threading.Event()
        listener = threading.Thread(target=listen, args=(f"{server.url}/events", events, stop), daemon=True)
        listener.start()
        try:
            with world.lock:
                rid = world.chain.request(3, 0)
                ipfs = IpfsSettings(kubo_api=remote.multiaddr, replication=2)
                with world.agent(ipfs=ipfs) as agent:
                    publisher = ReviewedPublisher(world, agent)
                    nonce = world.chain.w3.eth.get_transaction_count(world.chain.agent)
                    publisher.step()
                    publisher.step()  # asking again changes nothing while it waits
                    job = agent.store.get_by_key(f"evolve:{world.chain.w3.eth.chain_id}:{rid}")
                    assert job is not None and job.state == JobState.QUEUED and job.stage.value == "generated"
                    item = studio.reviews.by_key(job.id)
                    assert item is not None and item.state == ReviewState.AWAITING and item.token_id == 3

                    # held back: nothing pinned remotely, nothing sent, the request still open
                    assert remote_repo.pin_ls() == {}
                    assert not remote_repo.blockstore.has(remote_repo._cid(item.candidate.image_cid))
                    assert world.chain.evolved(rid) == []
                    assert world.chain.w3.eth.get_transaction_count(world.chain.agent) == nonce
                    assert world.chain.collection.functions.isPending(rid).call()
                    # ... but the curator sees it, from the embedded node
                    assert curator.get(f"/ipfs/{item.candidate.image_cid}").status_code == 200
                    assert f'id="review-{item.id}"' in curator.get("/review").text

                    r = curator.post(f"/review/{item.id}/approve",
                                     data={"csrf_token": curator.csrf, "revision": str(item.revision)})  # fmt: skip
                    assert r.status_code == 303
                    publisher.step()

                    (evolved,) = world.chain.evolved(rid)
                    cid = cid_from_digest(bytes(evolved["args"]["metadataDigest"]))
                    assert publisher.published[job.id] == cid
                    pinned = {str(c) for c in remote_repo.pin_ls()}
                    assert {cid, item.candidate.image_cid} <= pinned
                    metadata = parse_metadata(agent.repo.block_get(cid), cid=cid)
                    assert metadata.approved_by == CURATOR
                    assert "0x" + bytes(evolved["args"]["provenance"]).hex() == item.candidate.provenance

            eventually(
                lambda: any(e["event"] == "evolved" and e["args"]["tokenId"] == 3 for e in events),
                20,
                "the live stream's evolved event of token 3",
                interval=0.1,
            )
            assert any(e["event"] == "review" for e in events)

            page = httpx.get(f"{server.url}/tokens/3").text
            assert f'Approved by</dt><dd class="approved">{CURATOR}' in page
            approved = curator.get("/review?tab=approved").text
            assert "Published on-chain" in approved
        finally:
            stop.set()
            listener.join(5)
