"""A small living collection for the studio's tests, made with the real parts.

anvil (agent.devnet) with LivingCollection and DevPriceFeed deployed from the compiled artifacts, the shipped
sprite model registered in the collection's model registry, a deployment record written with agent.deployment,
an encrypted agent keystore, and tokens evolved by the real agent (agent.pipeline.Agent): shipped sprite images,
lore from a tiny random-weight causal LM, metadata in the embedded IPFS repo, fulfilments on-chain.

:class:`ReviewedPublisher` is the pipeline's side of review as :mod:`agent.review.gate` documents it (submit
after ``generated``, publish only an :class:`~agent.review.Approved` candidate, with ``approved_by`` in
the metadata), driven through the real agent, whose pipeline calls the gate when ``studio.review`` is on.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.app import build_agent
from agent.devnet import start_anvil
from agent.domain import Artwork
from agent.jobs import JobState, Stage
from agent.pipeline import Agent
from agent.review import Approved, Candidate, ReviewGate
from agent.settings import Settings, StudioSettings
from agent.studio.service import Studio
from tests.support.agent_settings import agent_settings, write_keystore
from tests.support.devchain import TEST_DEPLOY, CollectionChain, deploy_collection

ROOT = Path(__file__).resolve().parents[2]
SPRITES = ROOT / "agent" / "generate" / "shipped" / "sprites32" / "manifest.json"
PASSWORD = "studio-admin-password"
CURATOR = "admin"
API_TOKEN = "studio-api-token-for-tests"


@dataclass
class World:
    """The chain, the settings that point the agent and the studio at it, and the moves the tests make."""

    chain: CollectionChain
    root: Path
    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)

    def agent(self, **changes: Any) -> Agent:
        """The real agent on this world (close it, or use it as a context manager)."""
        settings = self.settings.model_copy(update=changes) if changes else self.settings
        return build_agent(settings, worker_id="studio-tests")

    def evolve(self, *requests: tuple[int, int]) -> None:
        """Open requests (token, holder) and let the real agent fulfil them."""
        with self.lock:
            for token_id, holder in requests:
                self.chain.request(token_id, holder)
            with self.agent(studio=self.settings.studio.model_copy(update={"review": False})) as agent:
                agent.run_until_idle(timeout_s=120)


@contextmanager
def make_world(root: Path, lm_dir: Path) -> Iterator[World]:
    """anvil + deployment + settings + a few evolved tokens; everything under ``root``."""
    with start_anvil() as node:
        sprites = json.loads(SPRITES.read_text())
        params = TEST_DEPLOY.model_copy(
            update={
                "model_digest": "0x" + sprites["weights_sha256"],
                "model_manifest": "chrysalis/sprites-32@1",
            }
        )
        key = secrets.token_bytes(32)
        chain = deploy_collection(node.url, root / "deployments", params, agent_key=key, mints={1: 5, 2: 5})
        secrets_dir = root / "secrets"
        keystore = write_keystore(secrets_dir, key, "agent-pw")
        (secrets_dir / "studio.pw").write_text(PASSWORD)
        (secrets_dir / "studio.token").write_text(API_TOKEN)
        (secrets_dir / "studio.secret").write_text("a-fixed-session-key-for-tests")
        data = root / "data"
        data.mkdir(parents=True)
        settings = agent_settings(chain, keystore, data, f"sqlite:///{data / 'chrysalis.db'}", lm_dir)
        settings.studio = StudioSettings(
            review=True,
            password_env="CHRYSALIS_STUDIO_TEST_UNSET_PASSWORD",
            password_file=secrets_dir / "studio.pw",
            token_env="CHRYSALIS_STUDIO_TEST_UNSET_TOKEN",
            token_file=secrets_dir / "studio.token",
            session_secret_env="CHRYSALIS_STUDIO_TEST_UNSET_SECRET",
            session_secret_file=secrets_dir / "studio.secret",
            poll_interval_s=0.2,
        )
        world = World(chain, root, settings)
        # token 1 evolves twice, token 2 once, token 6 (holder 1) fuses token 7 into itself
        world.evolve((1, 0), (2, 0))
        world.evolve((1, 0))
        with world.lock:
            chain.fuse(6, 7, holder=1)
            with world.agent(studio=settings.studio.model_copy(update={"review": False})) as agent:
                agent.run_until_idle(timeout_s=120)
        yield world


def candidate_from_token(studio: Studio, token_id: int) -> Candidate:
    """A real candidate: a published version's image, lore and receipt."""
    card = studio.catalog.token(token_id).card
    md = card.metadata
    assert md is not None
    png = studio.catalog.image(md.image_cid)
    artwork = Artwork(md.image_cid, hashlib.sha256(png).hexdigest(), md.description, dict(md.receipt))
    return Candidate(artwork, dict(md.traits), md.name)


def submit(studio: Studio, token_id: int = 2, kind: str = "evolve") -> int:
    """Put a real candidate for ``token_id`` up for review; the review item's id."""
    key = f"{kind}:test:{uuid.uuid4().hex[:8]}"
    item = studio.reviews.submit(key, token_id=token_id, stage=3, candidate=candidate_from_token(studio, token_id),
                                 kind=kind)  # fmt: skip
    return item.id


class ReviewedPublisher:
    """Drives the real agent (review mode on) the way ``chrysalis run`` would, one step at a time.

    ``step()`` polls the chain and advances the jobs: a generated result goes to the studio's review gate and
    waits there (nothing pinned remotely, nothing sent); once a curator approves it, the same step publishes it
    with ``approved_by`` and fulfils the request. ``published`` maps job ids to their metadata CIDs.
    """

    def __init__(self, world: World, agent: Any) -> None:
        self.world = world
        self.agent = agent
        self.gate = ReviewGate.for_database(agent.db)
        self.published: dict[int, str] = {}

    def step(self, timeout_s: float = 30.0) -> None:
        agent = self.agent
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            agent.poll_once()
            advanced = agent.work_once()
            if not advanced and not self._approved_in_flight():
                break
            if not advanced:
                time.sleep(0.2)  # an approved job waits out the gate's re-check delay
        for job in agent.store.list_jobs(limit=1000):
            published = job.output(Stage.PUBLISHED)
            if published:
                self.published[job.id] = published["metadata_cid"]

    def _approved_in_flight(self) -> bool:
        for state in (JobState.QUEUED, JobState.RUNNING):
            for job in self.agent.store.list_jobs(state=state, limit=1000):
                if isinstance(self.gate.decision(job.id), Approved):
                    return True
        return False
