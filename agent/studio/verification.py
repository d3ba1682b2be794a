"""The studio's Verify button: runs in the background, one at a time, with results cached per version.

The verification itself is :func:`agent.verify.core.verify_token`, the path ``chrysalis verify`` takes (chain and
contract checked, metadata, parent chain and images fetched by CID and checked block by block, every link, the
canonical replay): :func:`check_stage` runs it over the studio's node and IPFS repo, so both print the same result.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ChrysalisError, RetryableError
from agent.ipfs.fetch import Fetcher, RepoSource
from agent.studio.catalog import Catalog, StageView
from agent.verify.chain import ChainTarget, CollectionReader
from agent.verify.report import Check, StageCheck

__all__ = [
    "Check",
    "StageCheck",
    "VerifyBusyError",
    "VerifyRunner",
    "VerifyTask",
    "check_stage",
    "verify_key",
]


def check_stage(
    catalog: Catalog,
    token_id: int,
    stage: int | None = None,
    *,
    cache_dir: Path | None = None,
    image_model: str | None = None,
    lore_model: str | None = None,
    trust_anchors: Path | None = None,
) -> StageCheck:
    """Verify ``token_id`` at ``stage`` (default: its current stage) through :func:`agent.verify.core.verify_token`,
    the path ``chrysalis verify`` takes: the studio's node and collection, its IPFS repo as the source.

    Raises:
        NotFoundError: no such token or stage, or its metadata / previous image is not in the repo.
        ConfigError: the node serves another chain, the receipt is not a Chrysalis receipt.
    """
    from agent.verify.core import verify_token

    view = catalog.token(token_id).stage_view(stage)  # the studio's own 404s (unknown, burnt, no such stage)
    deployment = catalog.index.deployment
    target = ChainTarget(
        catalog.index.rpc.url,
        catalog.index.address,
        deployment.chain_id,
        deployment.deploy_block,
        record="the studio's deployment record",
    )
    with Fetcher([RepoSource(catalog.repo)]) as fetcher:
        return verify_token(
            CollectionReader(target),
            fetcher,
            token_id,
            view.stage,
            cache_dir=cache_dir,
            image_model=image_model,
            lore_model=lore_model,
            trust_anchors=trust_anchors,
        )


@dataclass
class VerifyTask:
    """A Verify run in the background (the studio's button)."""

    id: str
    token_id: int
    stage: int | None
    state: str = "queued"  # queued | running | done | error
    result: StageCheck | None = None
    error: str | None = None
    hint: str | None = None
    started_at: float = field(default_factory=time.time)
    key: tuple[Any, ...] | None = None
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "token_id": self.token_id,
            "stage": self.stage,
            "state": self.state,
            "cached": self.cached,
            "result": self.result.to_json() if self.result else None,
            "error": self.error,
            "hint": self.hint,
        }


class VerifyBusyError(RetryableError):
    """The Verify queue is full; ``waiting`` runs are ahead."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        super().__init__(
            f"the Verify queue is full ({waiting} runs waiting or running)",
            hint="try again in a minute; results already computed are shown at once",
        )


def verify_key(token_id: int, view: StageView) -> tuple[Any, ...]:
    """What a Verify result depends on: the version (its metadata CID, hence image and lore), the sha256 of its
    receipt, and the provenance written on-chain. A replay is deterministic, so equal keys give equal results."""
    receipt = json.dumps(dict(view.metadata.receipt), sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(receipt.encode()).hexdigest()
    return (token_id, view.stage, view.cid, digest, view.onchain_provenance)


class VerifyRunner:
    """Runs Verify tasks one at a time on a background thread (they load models and use every CPU thread).

    Asking again for a version whose run is still queued or running returns that run; a version already verified
    (same :func:`verify_key`) gets the stored result at once. At most ``max_queue`` runs wait or run
    (:class:`VerifyBusyError` beyond).
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        cache_dir: Path | None = None,
        trust_anchors: Path | None = None,
        keep: int = 200,
        max_queue: int = 8,
        cache_size: int = 512,
    ) -> None:
        self.catalog = catalog
        self.cache_dir = cache_dir
        self.trust_anchors = trust_anchors
        self.keep = keep
        self.max_queue = max_queue
        self.cache_size = cache_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chrysalis-verify")
        self._tasks: dict[str, VerifyTask] = {}
        self._results: OrderedDict[tuple[Any, ...], StageCheck] = OrderedDict()
        self._lock = threading.Lock()

    def submit(
        self,
        token_id: int,
        stage: int | None,
        *,
        key: tuple[Any, ...] | None = None,
        admit: Callable[[], None] | None = None,
    ) -> VerifyTask:
        """The run of ``token_id`` at ``stage``: a stored result (``key``), the run in progress, or a new one.

        ``admit`` is called only when a new run would start (it raises to refuse, e.g. a per-client limit).

        Raises:
            VerifyBusyError: ``max_queue`` runs are already waiting or running.
        """
        with self._lock:
            if key is not None and key in self._results:
                self._results.move_to_end(key)
                task = VerifyTask(uuid.uuid4().hex[:12], token_id, stage, state="done", key=key, cached=True)
                task.result = self._results[key]
                self._store(task)
                return task
            busy = 0
            for task in self._tasks.values():
                if task.state in ("queued", "running"):
                    if (task.token_id, task.stage) == (token_id, stage):
                        return task
                    busy += 1
            if busy >= self.max_queue:
                raise VerifyBusyError(busy)
            if admit is not None:
                admit()
            task = VerifyTask(uuid.uuid4().hex[:12], token_id, stage, key=key)
            self._store(task)
        self._pool.submit(self._run, task)
        return task

    def _store(self, task: VerifyTask) -> None:
        self._tasks[task.id] = task
        if len(self._tasks) > self.keep:
            for old in list(self._tasks)[: len(self._tasks) - self.keep]:
                if self._tasks[old].state in ("done", "error"):
                    del self._tasks[old]

    def get(self, task_id: str) -> VerifyTask | None:
        with self._lock:
            return self._tasks.get(task_id)

    def latest(self, token_id: int) -> Mapping[int | None, VerifyTask]:
        """The newest task per stage of a token."""
        with self._lock:
            out: dict[int | None, VerifyTask] = {}
            for task in self._tasks.values():
                if task.token_id == token_id:
                    out[task.stage] = task
            return out

    def _run(self, task: VerifyTask) -> None:
        task.state = "running"
        try:
            result = check_stage(
                self.catalog,
                task.token_id,
                task.stage,
                cache_dir=self.cache_dir,
                trust_anchors=self.trust_anchors,
            )
            if task.key is not None and (result.token_id, result.stage, result.cid) == task.key[:3]:
                with self._lock:
                    self._results[task.key] = result
                    while len(self._results) > self.cache_size:
                        self._results.popitem(last=False)
            task.result = result
            task.state = "done"
        except ChrysalisError as exc:
            task.error, task.hint, task.state = exc.message, exc.hint, "error"
        except Exception as exc:  # noqa: BLE001 - shown on the page rather than lost in a thread
            task.error, task.state = f"{type(exc).__name__}: {exc}", "error"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
