"""The studio's parts, wired from settings: chain index, IPFS repo, catalog, job store, review store, Verify
runner, regenerator and the live-update poller. The web app (:mod:`agent.studio.app`) and the CLI use it."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Self

from agent.credentials import ContentCredentials
from agent.gates import Gates
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo
from agent.jobs import JobKind
from agent.pipeline.generate import ImageSigning
from agent.review import ReviewStore
from agent.settings import Settings
from agent.store import Database, SqlJobStore
from agent.studio.auth import Credentials, RevokedSessions
from agent.studio.catalog import Catalog
from agent.studio.events import FORWARDED, EventHub, Poller
from agent.studio.index import CollectionIndex, event_json
from agent.studio.lineage import Lineages
from agent.studio.regenerate import Regenerator
from agent.studio.verification import VerifyRunner

log = logging.getLogger("chrysalis.studio")


def repo_path(settings: Settings) -> Path:
    """The embedded IPFS repo the agent writes to (:attr:`~agent.settings.Settings.ipfs_repo`)."""
    return settings.ipfs_repo


class Studio:
    """Everything the studio reads and does. Build it with :meth:`from_settings`; :meth:`start` the background
    threads (poller, regenerator) when serving; :meth:`close` at the end.

    Attributes:
        settings, index, repo, db (the agent's database), jobs, reviews, catalog, lineages (model lineages, cached
        per CID), verifier, regenerator, hub, poller, credentials, revoked (session ids that logged out).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        index: CollectionIndex,
        repo: IpfsRepo,
        db: Database,
        credentials: Credentials | None = None,
        signing: ImageSigning | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.repo = repo
        self.db = db
        self.jobs = SqlJobStore(db)
        self.reviews = ReviewStore(db)
        self.catalog = Catalog(index, repo)
        self.lineages = Lineages(repo, limits=DagLimits.from_settings(settings.ipfs))
        self.verifier = VerifyRunner(
            self.catalog,
            cache_dir=settings.models.cache_dir,
            trust_anchors=settings.credentials.trust_anchors,
            max_queue=settings.studio.verify_queue,
        )
        self.regenerator = Regenerator(
            self.reviews,
            repo,
            settings.models,
            poll_s=max(settings.studio.poll_interval_s, 0.2),
            signing=signing,
            # gated as the generate stage gates, against the collection's near-duplicate index as it is now
            gates=lambda: Gates.from_settings(settings.gates, db=db, collection=index.address),
        )
        self.hub = EventHub()
        self.poller = Poller(self.tick, self.hub, interval_s=settings.studio.poll_interval_s)
        self.credentials = credentials or Credentials(settings.studio)
        self.revoked = RevokedSessions(Path(settings.data_dir) / "studio" / "revoked-sessions.json")
        self._review_version: tuple[int, int] | None = None
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings, *, credentials: Credentials | None = None) -> Studio:
        """Open the deployment record, the node, the IPFS repo and the database named by ``settings``.

        ``credentials`` replaces the logins read from ``settings.studio`` (the demo's session password).

        Raises:
            NotFoundError: no deployment record (or, in review mode, a ``[credentials]`` file).
            ConfigError: a bad setting or secret file (or C2PA key or certificate).
            BackendUnavailableError: the database cannot be reached.
        """
        with contextlib.ExitStack() as stack:
            credentials = credentials or Credentials(settings.studio)
            index = CollectionIndex.from_settings(settings)
            db = Database.open(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
            stack.callback(db.close)
            repo = IpfsRepo(repo_path(settings), limits=DagLimits.from_settings(settings.ipfs))
            signing = None
            if settings.studio.review and settings.credentials.enabled:  # rerolled candidates are signed too
                signing = ImageSigning(
                    ContentCredentials.from_settings(settings.credentials),
                    chain_id=index.deployment.chain_id,
                    contract=index.address,
                )
            studio = cls(settings, index=index, repo=repo, db=db, credentials=credentials, signing=signing)
            stack.pop_all()
        return studio

    @property
    def review_enabled(self) -> bool:
        return bool(self.settings.studio.review)

    # -- live updates ---------------------------------------------------------------------------------------

    def tick(self) -> list[tuple[str, Any]]:
        """One poll: sync the chain index and compare the review queue; returns the events to publish."""
        out: list[tuple[str, Any]] = []
        for event in self.index.sync():
            name = FORWARDED.get(event.name)
            if name is not None:
                out.append((name, event_json(event)))
        version = self.reviews.version()
        if self._review_version is not None and version != self._review_version:  # curators' streams only
            out.append(("review", {k.value: v for k, v in self.reviews.counts().items()}))
        self._review_version = version
        return out

    def start(self) -> None:
        """Start the poller (and the regenerator in review mode)."""
        if self._started:
            return
        self._started = True
        self.poller.run_once()
        self.poller.start()
        if self.review_enabled:
            self.regenerator.start()

    # -- actions --------------------------------------------------------------------------------------------

    def request_refresh(self, token_id: int, by: str) -> tuple[int, bool]:
        """Queue a metadata refresh of ``token_id`` (a ``refresh`` job); returns ``(job id, created)``.

        One refresh per token and current stage is queued at a time: asking again returns the queued job.
        """
        detail = self.catalog.token(token_id)  # NotFoundError for a token that does not exist
        key = f"refresh:{self.index.deployment.chain_id}:{token_id}:{detail.card.stage}:studio"
        job, created = self.jobs.enqueue(
            JobKind.REFRESH,
            key,
            payload={
                "token_id": token_id,
                "stage": detail.card.stage,
                "source": "studio",
                "requested_by": by,
            },
        )
        if not created and job.state.terminal:  # the last one finished: queue the next under a fresh key
            job, created = self.jobs.enqueue(
                JobKind.REFRESH,
                f"{key}:{job.id}",
                payload={
                    "token_id": token_id,
                    "stage": detail.card.stage,
                    "source": "studio",
                    "requested_by": by,
                },
            )
        return job.id, created

    def close(self) -> None:
        self.poller.stop()
        self.regenerator.stop()
        self.verifier.close()
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
