"""Verify one version of a token: replay its inference receipt and check it against the chain and the metadata.

Shared by the studio's Verify button and ``chrysalis verify TOKEN [--stage N]``, so both print the same result.
On top of :func:`agent.generate.verify.verify` (which re-runs the canonical inference and names every receipt
field that differs) it checks what ties the receipt to the token:

* ``chain.provenance``: the provenance hash the fulfilling transaction wrote on-chain is the receipt's sha256;
* ``metadata.image``: the image the metadata points to is the PNG the receipt hashed;
* ``metadata.description``: the metadata's lore is the receipt's lore text;
* ``input_snapshot_sha256``: the input snapshot in the metadata hashes to the receipt's (inside ``verify``).
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
from agent.generate.receipt import InferenceReceipt
from agent.generate.verify import (
    EXIT_MATCH,
    EXIT_MISMATCH,
    EXIT_NOT_REPRODUCIBLE,
    FieldMismatch,
    VerifyResult,
)
from agent.studio.catalog import Catalog, StageView


@dataclass(frozen=True)
class StageCheck:
    """The outcome of verifying one version of a token.

    Attributes:
        token_id, stage, cid: What was verified.
        match: Every field matched and the outputs were reproduced.
        reproducible: False when the receipt was made on a GPU / in half precision (outputs not compared).
        mismatches: Every field that differs (receipt / on-chain value = ``expected``, replay = ``actual``).
        note: What was replayed and how.
        checked: Every field compared.
        seconds: How long it took.
    """

    token_id: int
    stage: int
    cid: str
    match: bool
    reproducible: bool
    mismatches: list[FieldMismatch]
    note: str
    checked: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.mismatches:
            return EXIT_MISMATCH
        return EXIT_MATCH if self.match else EXIT_NOT_REPRODUCIBLE

    @property
    def verdict(self) -> str:
        """``match``, ``mismatch`` or ``not reproducible here``."""
        if self.mismatches:
            return "mismatch"
        return "match" if self.match else "not reproducible here"

    def to_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "stage": self.stage,
            "cid": self.cid,
            "verdict": self.verdict,
            "match": self.match,
            "reproducible": self.reproducible,
            "mismatches": [
                {"field": m.field, "expected": m.expected, "actual": m.actual} for m in self.mismatches
            ],
            "note": self.note,
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
        }

    def report(self) -> str:
        """Lines for the terminal (what ``chrysalis verify`` prints)."""
        lines = [f"token {self.token_id} stage {self.stage} ({self.cid}): {self.verdict.upper()}", self.note]
        for m in self.mismatches:
            lines.append(f"  {m.field}: expected {m.expected!r}, got {m.actual!r}")
        lines.append(f"{len(self.checked)} fields checked in {self.seconds:.1f} s")
        return "\n".join(lines)


def check_stage(
    catalog: Catalog,
    token_id: int,
    stage: int | None = None,
    *,
    cache_dir: Path | None = None,
    image_model: str | None = None,
    lore_model: str | None = None,
) -> StageCheck:
    """Verify ``token_id`` at ``stage`` (default: its current stage).

    Raises:
        NotFoundError: no such token or stage, or its metadata / previous image is not in the repo.
        ConfigError: the receipt is not a Chrysalis receipt, or a model it names cannot be loaded.
    """
    from agent.generate.verify import verify

    started = time.monotonic()
    detail = catalog.token(token_id)
    view = detail.stage_view(stage)
    receipt = InferenceReceipt.from_json(dict(view.metadata.receipt))

    def init_image(sha256: str, cid: str | None) -> bytes:
        if not cid:
            raise ChrysalisError(
                f"the receipt names a previous image (sha256 {sha256}) but no CID",
                hint="this receipt cannot be replayed from IPFS alone",
            )
        return catalog.image(cid)

    result: VerifyResult = verify(
        receipt,
        init_image_loader=init_image,
        snapshot=dict(view.metadata.inputs),
        image_model=image_model,
        lore_model=lore_model,
        cache_dir=cache_dir,
    )
    mismatches = list(result.mismatches)
    checked = list(result.checked)
    mismatches += _links(catalog, view, receipt, checked)
    match = result.match and not mismatches
    note = result.note
    if mismatches and not result.mismatches:
        note = "MISMATCH: " + ", ".join(m.field for m in mismatches) + "; the replay itself: " + result.note
    return StageCheck(
        token_id=token_id,
        stage=view.stage,
        cid=view.cid,
        match=match,
        reproducible=result.reproducible,
        mismatches=mismatches,
        note=note,
        checked=checked,
        seconds=time.monotonic() - started,
    )


def _links(
    catalog: Catalog, view: StageView, receipt: InferenceReceipt, checked: list[str]
) -> list[FieldMismatch]:
    out: list[FieldMismatch] = []

    def eq(name: str, expected: Any, actual: Any) -> None:
        checked.append(name)
        if expected != actual:
            out.append(FieldMismatch(name, expected, actual))

    if view.onchain_provenance is not None:
        eq("chain.provenance", view.onchain_provenance, receipt.provenance_hex())
    if receipt.image is not None:
        png = catalog.image(view.metadata.image_cid)
        eq("metadata.image", receipt.image.output.get("png_sha256"), hashlib.sha256(png).hexdigest())
    if receipt.lore is not None:
        eq("metadata.description", receipt.lore.output.get("text"), view.metadata.description)
    return out


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
        keep: int = 200,
        max_queue: int = 8,
        cache_size: int = 512,
    ) -> None:
        self.catalog = catalog
        self.cache_dir = cache_dir
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
            result = check_stage(self.catalog, task.token_id, task.stage, cache_dir=self.cache_dir)
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
