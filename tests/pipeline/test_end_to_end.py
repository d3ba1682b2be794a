"""From a holder's request on anvil to an evolved token whose tokenURI resolves through the embedded gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.app import build_agent
from agent.generate.verify import verify
from agent.ipfs.cid import CID
from agent.ipfs.fetch import RemoteBlocks
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import KUBO_TOKEN_ENV
from agent.ipfs.server import NodeServer
from agent.jobs import JobState
from agent.metadata import cid_from_digest, parse_metadata
from agent.pipeline.errors import PreviousMetadataMissingError
from agent.pipeline.inputs import read_previous
from agent.settings import IpfsSettings, Settings
from tests.support.agent_settings import Keystore, agent_settings
from tests.support.devchain import CollectionChain

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_request_is_fulfilled_and_its_token_uri_resolves_to_verified_metadata(
    chain: CollectionChain, settings: Settings
) -> None:
    rid = chain.request(1)
    with build_agent(settings) as agent:
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


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_whole_pipeline_on_postgresql(chain: CollectionChain, settings: Settings) -> None:
    assert settings.database.url.startswith("postgresql")
    rids = [chain.request(1), chain.fuse(2, 3)]
    with build_agent(settings) as agent:
        status = agent.run_until_idle(timeout_s=90)
    assert status.jobs["confirmed"] == 2 and status.pending == 0
    assert sorted(int(e["args"]["requestId"]) for e in chain.evolved()) == sorted(rids)


def test_a_second_evolution_starts_from_the_previous_image_and_links_its_parent(
    chain: CollectionChain, settings: Settings
) -> None:
    with build_agent(settings) as agent:
        chain.request(1)
        agent.run_until_idle(timeout_s=90)
        first_cid = cid_from_digest(chain.collection.functions.metadataDigestOf(1).call())
        rid = chain.request(1)
        agent.run_until_idle(timeout_s=90)
        job = agent.store.get_by_key(f"evolve:{chain.w3.eth.chain_id}:{rid}")
        repo = agent.repo
        second_cid = cid_from_digest(chain.collection.functions.metadataDigestOf(1).call())
        second = parse_metadata(repo.block_get(second_cid), cid=second_cid)
        first = parse_metadata(repo.block_get(first_cid), cid=first_cid)

    assert job is not None and job.state == JobState.CONFIRMED
    assert chain.collection.functions.stageOf(1).call() == 2
    assert second.stage == 2 and second.parent == first_cid
    image = second.receipt["image"]["request"]
    assert image["init_image_cid"] == first.image_cid and image["strength"] is not None
    assert job.output("inputs")["token"]["previous"]["metadata_cid"] == first_cid

    def load(sha256: str, cid: str | None) -> bytes:
        assert cid == first.image_cid
        return b"".join(repo.cat(cid))

    result = verify(dict(second.receipt), init_image_loader=load)
    assert result.match, result.mismatches


def test_requests_are_fulfilled_together_in_one_transaction_and_fuse_is_marked(
    chain: CollectionChain, settings: Settings
) -> None:
    rids = [chain.request(1), chain.request(9, holder=1), chain.fuse(2, 3)]
    with build_agent(settings) as agent:
        agent.run_until_idle(timeout_s=90)
        jobs = [agent.store.get_by_key(f"evolve:{chain.w3.eth.chain_id}:{rid}") for rid in rids]
        status = agent.status()

    assert all(j is not None and j.state == JobState.CONFIRMED for j in jobs)
    assert len({j.result["tx_hash"] for j in jobs}) == 1 and jobs[0].result["batch_size"] == 3
    assert chain.agent_nonce() == 1
    assert status.gas_spent == jobs[0].result["gas_used"] > 0
    fused = jobs[2]
    assert fused.payload["fused_burn_id"] == 3
    assert fused.output("inputs")["rules"]["facts"]["fusion"] == "fused with one of its kin"
    assert jobs[0].output("inputs")["rules"]["facts"].get("fusion") is None


def test_an_agent_with_a_repo_of_its_own_evolves_further_a_token_another_agent_published(
    chain: CollectionChain,
    settings: Settings,
    keystore: Keystore,
    tiny_lm: Path,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Agents on two machines: each has its own embedded repo, both replicate to one Kubo node. The second
    reads the token's previous version (metadata and image) from that node, each block checked against its CID,
    and evolves the token from it; without a node to ask, it says which block it lacks and where to point."""
    with NodeServer(IpfsRepo(tmp_path / "kubo")) as kubo:
        monkeypatch.setenv(KUBO_TOKEN_ENV, kubo.token)
        shared = IpfsSettings(kubo_api=kubo.multiaddr, replication=2)
        with build_agent(settings.model_copy(update={"ipfs": shared})) as first:
            chain.request(1)
            assert first.run_until_idle(timeout_s=90).jobs["confirmed"] == 1
        first_cid = cid_from_digest(chain.collection.functions.metadataDigestOf(1).call())
        first_md = parse_metadata(kubo.repo.block_get(first_cid), cid=first_cid)

        digest = bytes(chain.collection.functions.metadataDigestOf(1).call())
        other = agent_settings(chain, keystore, tmp_path / "other-machine", db_url, tiny_lm)
        alone = IpfsRepo(other.ipfs_repo)
        with pytest.raises(PreviousMetadataMissingError) as err:
            read_previous(alone, 1, digest)
        assert "ipfs.kubo_api" in (err.value.hint or "")
        remote = RemoteBlocks(alone, ipfs_apis=["http://127.0.0.1:1"], timeout_s=2)  # nothing listens
        with pytest.raises(PreviousMetadataMissingError) as err:
            read_previous(alone, 1, digest, remote)
        assert "nor in the replication backends (http://127.0.0.1:1" in err.value.message

        rid = chain.request(1)
        with build_agent(other.model_copy(update={"ipfs": shared})) as second:
            assert not second.repo.blockstore.has(CID.parse(first_cid))
            second.run_until_idle(timeout_s=90)
            job = second.store.get_by_key(f"evolve:{chain.w3.eth.chain_id}:{rid}")
            assert job is not None and job.state == JobState.CONFIRMED, job and job.last_error
            second_cid = cid_from_digest(chain.collection.functions.metadataDigestOf(1).call())
            second_md = parse_metadata(second.repo.block_get(second_cid), cid=second_cid)
            previous_png = b"".join(second.repo.cat(first_md.image_cid))  # fetched, and kept
    assert second_md.stage == 2 and second_md.parent == first_cid
    assert second_md.receipt["image"]["request"]["init_image_cid"] == first_md.image_cid
    result = verify(dict(second_md.receipt), init_image_loader=lambda sha, cid: previous_png)
    assert result.match, result.mismatches
