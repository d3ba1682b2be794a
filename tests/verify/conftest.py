"""A collection evolved by the real agent, its IPFS repo served by the embedded gateway alone, and the moves the
verify tests make on it: rewriting a token's metadata on-chain (as an operator could), gateways that lie or hang.

The world (tests/studio/world.py: anvil, the collection, the real agent) evolves tokens 1 (twice), 2 and 6 (a fuse
burnt 7); here, with development Content Credentials signing every image from now on, 3, 5 and 8 evolve once, 4
twice, and a refresh renders token 9 (a first render, stage 0). Holder 0
mints 11-16. Those tokens stay as the agent made them. Tests that write a version of their own
(:class:`Forger`: made the way the agent makes them, then changed) take a token each: 10, 11, 12, 14, 15, 16 and
4's third stage; 13 never evolves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.app import build_agent
from agent.credentials import DevCredentials, create_dev_credentials
from agent.domain import Artwork, Inputs, PreviousVersion, RenderTask, canonical_json
from agent.generate.base import ImageGenerator
from agent.generate.factory import load_image_generator, load_lore_writer
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.jobs import JobState, Stage
from agent.metadata import cid_from_digest, metadata_cid
from agent.pipeline.assets import AssetStore
from agent.pipeline.generate import GenerateStage, ImageSigning
from agent.pipeline.publish import PublishStage
from agent.settings import CredentialsSettings, RefreshSettings
from agent.store import open_job_store
from tests.studio.world import World, make_world


@pytest.fixture(scope="session")
def dev_credentials(tmp_path_factory: pytest.TempPathFactory) -> DevCredentials:
    """A development CA and signing certificate (``chrysalis init --dev-credentials``)."""
    return create_dev_credentials(tmp_path_factory.mktemp("dev-credentials"))


@pytest.fixture(scope="session")
def world(
    tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path, dev_credentials: DevCredentials
) -> Iterator[World]:
    with make_world(tmp_path_factory.mktemp("verify-world"), tiny_lm) as w:
        # from here on the agent signs Content Credentials into its images (1, 2 and 6 stay unsigned)
        w.settings.credentials = CredentialsSettings(**dev_credentials.settings())
        w.evolve((3, 0), (4, 0), (5, 0), (8, 1))
        w.evolve((4, 0))
        _refresh(w, [9])
        with w.lock:
            w.chain.mint(w.chain.holders[0], 6)  # 11..16
        yield w


def _refresh(world: World, tokens: list[int]) -> None:
    """A manual refresh of ``tokens`` by the real agent (a first render for a token that never evolved)."""
    settings = world.settings.model_copy(
        update={
            "refresh": RefreshSettings(first_render=True),
            "studio": world.settings.studio.model_copy(update={"review": False}),
        }
    )
    with world.lock, build_agent(settings, worker_id="verify-tests") as agent:
        job, _ = agent.refresh.queue_manual(tokens)
        deadline = time.monotonic() + 120
        while not agent.store.get(job.id).state.terminal:
            agent.poll_once()
            if not agent.work_once():
                time.sleep(0.05)
            assert time.monotonic() < deadline, f"refresh job {job.id}: {agent.store.get(job.id).last_error}"
        done = agent.store.get(job.id)
        assert done.state == JobState.CONFIRMED, done.last_error


@pytest.fixture(scope="session")
def repo(world: World) -> IpfsRepo:
    """The agent's IPFS repo (the gateway serves it; tests add rewritten metadata to it)."""
    return IpfsRepo(world.settings.ipfs_repo)


@pytest.fixture(scope="session")
def gateway(repo: IpfsRepo) -> Iterator[str]:
    """The embedded node's gateway alone (no RPC) over the agent's repo: what a stranger reaches."""
    with NodeServer(repo, rpc=False) as node:
        yield node.url


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new, empty working directory and no CHRYSALIS_* setting: nothing of the operator's."""
    for key in list(os.environ):
        if key.startswith("CHRYSALIS_"):
            monkeypatch.delenv(key)
    folder = tmp_path / "stranger"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def public_args(world: World, gateway: str, *more: str) -> list[str]:
    """``--rpc``, ``--contract``, ``--chain-id`` and ``--gateway``: all a stranger needs."""
    return [
        "--rpc", world.chain.url, "--contract", world.chain.deployment.address(),
        "--chain-id", str(world.chain.deployment.chain_id), "--gateway", gateway, *more,
    ]  # fmt: skip


# -- reading and rewriting metadata -----------------------------------------------------------------------------


def current_cid(world: World, token_id: int) -> str:
    digest = bytes(world.chain.collection.functions.metadataDigestOf(token_id).call())
    return cid_from_digest(digest)


def document(repo: IpfsRepo, cid: str) -> dict[str, Any]:
    """The metadata ``cid`` as a JSON object (a fresh copy to change)."""
    return json.loads(repo.block_get(cid))


def rewrite(world: World, repo: IpfsRepo, token_id: int, doc: dict[str, Any], provenance: str) -> str:
    """Write ``doc`` as ``token_id``'s metadata on-chain (``refreshMetadata`` from the admin, granted
    REFRESHER_ROLE), with ``provenance``; the doc is added to the repo the gateway serves. Its CID."""
    data = canonical_json(doc)
    repo.add_raw_block(data)
    with world.lock:
        chain = world.chain
        f = chain.collection.functions
        chain.transact(f.grantRole(f.REFRESHER_ROLE().call(), chain.admin), chain.admin)
        chain.transact(
            f.refreshMetadata([token_id], [hashlib.sha256(data).digest()], bytes.fromhex(provenance[2:])),
            chain.admin,
        )
    return metadata_cid(data)


def receipt_provenance(doc: dict[str, Any]) -> str:
    return "0x" + hashlib.sha256(canonical_json(doc["properties"]["receipt"])).hexdigest()


@dataclass
class Forged:
    """A version made the way the agent makes one, for a request the test opened; not written yet."""

    token_id: int
    request_id: int
    seed: str
    doc: dict[str, Any]
    artwork: Artwork


class Forger:
    """Makes a token's next version with the agent's own stages (generate, then the publish stage's metadata) from
    the inputs of one of the agent's earlier jobs, re-pinned to a request the test opens; :meth:`fulfil` writes it
    from the admin (granted AGENT_ROLE), with whatever the test changed first."""

    def __init__(self, world: World, repo: IpfsRepo, assets: Path) -> None:
        self.world = world
        self.repo = repo
        models = world.settings.models
        image, lore = load_image_generator(models), load_lore_writer(models)
        self.generate = GenerateStage(image, lore, repo, AssetStore(assets))
        self.publish = PublishStage(
            repo,
            None,
            AssetStore(assets),
            {"image": image.model_ref, "lore": lore.model_ref},  # type: ignore[arg-type]
        )

    def inputs_of(self, token_id: int, stage: int) -> Inputs:
        """The inputs of the agent's job that took ``token_id`` to ``stage``."""
        store = open_job_store(self.world.settings.database.url)
        for job in store.list_jobs(limit=1000):
            recorded = job.output(Stage.INPUTS)
            if recorded and job.state == JobState.CONFIRMED:
                inputs = Inputs.from_json(recorded)
                if (
                    inputs.refresh is None
                    and inputs.token.stage == stage
                    and f"#{token_id}" in inputs.token.name
                ):
                    return inputs
        raise AssertionError(f"no confirmed job took token {token_id} to stage {stage}")

    def forge(
        self,
        token_id: int,
        holder: int,
        like: Inputs,
        *,
        previous: PreviousVersion | None = None,
        signing: ImageSigning | None = None,
        image: ImageGenerator | None = None,
    ) -> Forged:
        """Open a request for ``token_id`` and make its next version from ``like`` (its rules and readings), named
        for this token, read at the request's block, with ``previous`` as the version before (its image made by
        ``image`` instead of the world's model, and signed with ``signing``)."""
        chain = self.world.chain
        with self.world.lock:
            request = chain.open_request(token_id, holder)
        stage = int(chain.collection.functions.stageOf(token_id).call()) + 1
        snapshot = dataclasses.replace(
            like.snapshot,
            block_number=request.block_number,
            block_hash=request.block_hash,
            readings=tuple(
                dataclasses.replace(r, block_number=request.block_number) for r in like.snapshot.readings
            ),
        )
        facts = dataclasses.replace(like.token, name=f"Chrysalis #{token_id}", stage=stage, previous=previous)
        inputs = dataclasses.replace(like, snapshot=snapshot, token=facts)
        task = RenderTask(token_id, stage, request.seed, request.block_number, request.block_hash)
        generate, publish = self.generate, self.publish
        if signing is not None or image is not None:
            generate = GenerateStage(
                image or generate.image, generate.lore, generate.repo, generate.assets, signing=signing
            )
            models = {"image": generate.image.model_ref, "lore": generate.lore.model_ref}
            publish = PublishStage(self.repo, None, generate.assets, models)  # type: ignore[arg-type]
        [artwork] = generate.run([(task, inputs)])
        doc = json.loads(publish.metadata(task, inputs, artwork))
        return Forged(token_id, request.request_id, request.seed, doc, artwork)

    def fulfil(self, forged: Forged, *, provenance: str | None = None) -> str:
        """Write ``forged.doc`` (as it is now) on-chain for its request; provenance: the receipt's sha256 unless
        given. The metadata's CID."""
        data = canonical_json(forged.doc)
        self.repo.add_raw_block(data)
        chain = self.world.chain
        f = chain.collection.functions
        with self.world.lock:
            chain.transact(f.grantRole(f.AGENT_ROLE().call(), chain.admin), chain.admin)
            chain.transact(
                f.fulfillEvolution(
                    forged.request_id,
                    bytes.fromhex(forged.seed[2:]),
                    hashlib.sha256(data).digest(),
                    bytes.fromhex((provenance or receipt_provenance(forged.doc))[2:]),
                ),
                chain.admin,
            )
        return metadata_cid(data)


@pytest.fixture(scope="session")
def forger(world: World, repo: IpfsRepo, tmp_path_factory: pytest.TempPathFactory) -> Forger:
    return Forger(world, repo, tmp_path_factory.mktemp("forged-assets"))


# -- gateways that misbehave ------------------------------------------------------------------------------------


@dataclass
class LyingGateway:
    """A gateway in front of a real one that flips the last byte of what it returns for :attr:`lie_about`
    (raw blocks and files alike; it offers no CAR, so a fetcher asks block by block)."""

    url: str
    lie_about: set[str]


@pytest.fixture
def lying_gateway(gateway: str) -> Iterator[LyingGateway]:
    lies: set[str] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if "format=car" in self.path:
                self.send_error(400, "no CAR here")
                return
            try:
                with urllib.request.urlopen(gateway + self.path, timeout=10) as upstream:
                    body = upstream.read()
                    status = upstream.status
            except urllib.error.HTTPError as exc:
                body, status = exc.read(), exc.code
            cid = self.path.split("?")[0].removeprefix("/ipfs/").split("/")[0]
            if cid in lies and status == 200 and body:
                body = body[:-1] + bytes([body[-1] ^ 0x01])
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LyingGateway(f"http://127.0.0.1:{server.server_address[1]}", lies)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_gateway() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers: a gateway that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def empty_gateway(tmp_path: Path) -> Iterator[str]:
    """A real gateway over a repo that holds nothing."""
    with NodeServer(IpfsRepo(None), rpc=False) as node:
        yield node.url
