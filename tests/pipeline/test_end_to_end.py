"""From a holder's request on anvil to an evolved token whose tokenURI resolves through the embedded gateway."""

from __future__ import annotations

import httpx
import pytest

from agent.generate.verify import verify
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.jobs import JobState
from agent.pipeline import Agent
from agent.publish.metadata import cid_from_digest, parse_metadata
from agent.settings import Settings
from tests.pipeline.conftest import Chain

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_request_is_fulfilled_and_its_token_uri_resolves_to_verified_metadata(
    chain: Chain, settings: Settings
) -> None:
    rid = chain.request(1)
    with Agent.from_settings(settings) as agent:
        status = agent.run_until_idle(timeout_s=90)
        job = agent.store.get_by_key(f"evolve:{chain.w3.eth.chain_id}:{rid}")

    assert status.jobs["confirmed"] == 1 and status.pending == 0
    assert job is not None and job.state == JobState.CONFIRMED
    assert [int(e["args"]["requestId"]) for e in chain.evolved()] == [rid]
    assert not chain.is_pending(rid) and chain.collection.functions.stageOf(1).call() == 1

    uri = chain.collection.functions.tokenURI(1).call()
    cid = cid_from_digest(chain.collection.functions.metadataDigestOf(1).call())
    assert uri == f"ipfs://{cid}" == job.result["token_uri"]
    with NodeServer(IpfsRepo(settings.data_dir / "ipfs")) as node, httpx.Client(base_url=node.url) as http:
        metadata = parse_metadata(http.get(f"/ipfs/{cid}").raise_for_status().content, cid=cid)
        png = http.get(f"/ipfs/{metadata.image_cid}").raise_for_status().content
    assert png.startswith(PNG)
    assert metadata.stage == 1 and metadata.parent is None
    assert metadata.traits["mood"] == "radiant"  # the feed rose 5 % over the window
    assert metadata.inputs["block_number"] == job.block_number
    assert (settings.data_dir / "assets" / "1" / "1.png").read_bytes() == png

    result = verify(dict(metadata.receipt))
    assert result.match, result.mismatches
