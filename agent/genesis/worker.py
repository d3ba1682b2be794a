"""Making genesis batches: images, lore, receipts and files for one fixed batch of items.

:class:`BatchMaker` loads the models :class:`~agent.settings.ModelSettings` names and turns a batch's ledger rows
into files (``images/<item>.png``, ``receipts/<item>.json``) and :class:`~agent.genesis.ledger.ItemOutput` rows.
It runs in the genesis process itself (one worker) or in each of several worker processes
(:func:`run_in_pool`): a process per CPU core with one torch thread each uses both cores of a 2-core machine
without the threads of one process fighting each other, and while one worker denoises images the other decodes
lore, so the stages overlap.

A batch's outputs depend only on its items, the models and the torch thread count of the process that makes it,
never on which worker made it or when, so a genesis made by two workers is bit-identical to one made by one worker
with the same thread count (tests/genesis/test_run.py checks it). Each receipt records the thread count and
batch sizes that produced it.

Only the genesis process writes the ledger: a worker writes its batch's files (atomically, under names of its own)
and returns the outputs (a Ray actor, which may run on another machine, returns the files' bytes instead and the
genesis process writes them: :mod:`agent.genesis.ray_engine`); the batch counts as finished once the ledger says
so. A worker whose genesis process dies (even by SIGKILL) exits at once instead of writing on.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from queue import Empty
from typing import Any

from agent.domain import InputSnapshot, OracleReading
from agent.errors import ChrysalisError
from agent.genesis.assign import item_onchain_seed
from agent.genesis.ledger import ItemOutput
from agent.genesis.provenance import item_record, record_sha256
from agent.settings import ModelSettings

ZERO_HASH = "0x" + "00" * 32
STAGES = ("images", "lore", "receipts")


def genesis_snapshot(table_sha256: str, size: int, item: int) -> InputSnapshot:
    """The input snapshot of a genesis item: no chain data, only where the item sits in the genesis."""
    readings = (
        OracleReading("genesis.item", item, "genesis", 0),
        OracleReading("genesis.size", size, "genesis", 0),
        OracleReading("genesis.table_sha256", table_sha256, "genesis", 0),
    )
    return InputSnapshot(chain_id=0, block_number=0, block_hash=ZERO_HASH, readings=readings)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to make any batch of one genesis (picklable: it crosses into worker processes).

    Attributes:
        name: The collection's name (lore template text). lore_facts: The table's lore facts.
        table_sha256: The trait table's hash (in every input snapshot). size: Items in the genesis.
        genesis_seed: The seed chain's root (``derive_seed(genesis_seed, item)`` is each item's seed).
        models: The model settings. out_dir: The genesis directory.
        threads: torch threads in a worker process (None: leave torch's default; the genesis process's own).
    """

    name: str
    lore_facts: Mapping[str, str]
    table_sha256: str
    size: int
    genesis_seed: bytes
    models: ModelSettings
    out_dir: Path
    threads: int | None = None


@dataclass
class BatchResult:
    """What making one batch gave: its ledger rows, the model digests and where the time went.

    Attributes:
        batch: The batch number. outputs: One row per item, in item order.
        weights: ``{"image": sha256, "lore": sha256}`` of the models that made it.
        seconds: Wall seconds per stage (``images``, ``lore``, ``receipts``: receipts, hashes, CIDs, files).
        cpu_seconds: This process's CPU seconds per stage.
        load_s: Seconds spent loading the models before this batch (only a worker's first batch has any).
        pid: The process that made it.
        files: The batch's files by path under the genesis directory (``images/<item>.png``,
            ``receipts/<item>.json``) when the maker keeps them (``BatchMaker(keep_files=True)``) instead of
            writing them; empty otherwise.
    """

    batch: int
    outputs: list[ItemOutput]
    weights: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    load_s: float = 0.0
    pid: int = 0
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchFailure:
    """A ChrysalisError raised in a worker, carried back whole (its hint survives the trip)."""

    error_type: type[ChrysalisError]
    message: str
    hint: str | None

    def error(self) -> ChrysalisError:
        return self.error_type(self.message, hint=self.hint)


class BatchMaker:
    """Loads the models once and makes batches (see the module docstring).

    ``keep_files``: return each batch's files in :attr:`BatchResult.files` instead of writing them under
    ``spec.out_dir`` (which may not exist where the maker runs: a Ray actor on another node).
    """

    def __init__(self, spec: WorkerSpec, *, keep_files: bool = False) -> None:
        from agent.generate.factory import load_image_generator, load_lore_writer

        self.spec = spec
        self.keep_files = keep_files
        t = time.perf_counter()
        self.image_gen = load_image_generator(spec.models)
        self.lore_writer = load_lore_writer(spec.models)
        self._load_s = time.perf_counter() - t
        self.weights = {
            "image": self.image_gen.model_ref.weights_sha256,
            "lore": self.lore_writer.model_ref.weights_sha256,
        }
        if not keep_files:
            (spec.out_dir / "images").mkdir(parents=True, exist_ok=True)
            (spec.out_dir / "receipts").mkdir(parents=True, exist_ok=True)

    def make(
        self,
        batch: int,
        rows: Sequence[tuple[int, Mapping[str, str], int]],
        on_progress: Callable[[float], None] | None = None,
        *,
        reroll: int = 0,
    ) -> BatchResult:
        """Generate one batch's images and lore, and write its files (or keep them: ``keep_files``); the caller
        marks it done in the ledger.

        ``on_progress(items)`` is called as the models finish chunks (an image counts half an item, its lore the
        other half), so a progress bar moves within a batch. ``reroll``: every item is made with that public reroll
        of the genesis seed (its receipt's on-chain seed; the rows' seeds must be
        :func:`agent.genesis.assign.item_seed` of it, which the receipt checks) and its record says so.
        """

        from agent.generate import progress
        from agent.generate.base import ImageRequest, LoreRequest
        from agent.generate.receipt import build_receipt, image_record, lore_record
        from agent.ipfs.importer import import_file

        spec = self.spec
        result = BatchResult(batch, [], dict(self.weights), load_s=self._load_s, pid=os.getpid())
        self._load_s = 0.0
        onchain = item_onchain_seed(spec.genesis_seed, reroll)
        image_requests = [
            ImageRequest(traits=dict(traits), seed=seed, label=f"genesis item {item}")
            for item, traits, seed in rows
        ]
        lore_requests = [
            LoreRequest(
                name=spec.name,
                stage=0,
                traits=dict(traits),
                facts=dict(spec.lore_facts),
                seed=seed,
                label=f"genesis item {item}",
            )
            for item, traits, seed in rows
        ]
        report = progress.reporting(lambda _kind, n: on_progress(n / 2)) if on_progress else nullcontext()
        with report:
            with _stage(result, "images"):
                images = self.image_gen.generate(image_requests)
            with _stage(result, "lore"):
                lores = self.lore_writer.write(lore_requests)
        with _stage(result, "receipts"):
            for (item, traits, seed), ireq, img, lreq, lore in zip(
                rows, image_requests, images, lore_requests, lores, strict=False
            ):
                receipt = build_receipt(
                    onchain_seed=onchain,
                    token_id=item,
                    snapshot=genesis_snapshot(spec.table_sha256, spec.size, item),
                    image=image_record(self.image_gen, ireq, img),
                    lore=lore_record(self.lore_writer, lreq, lore),
                )
                receipt_bytes = receipt.canonical_json()
                png_sha = hashlib.sha256(img.png).hexdigest()
                cid = str(import_file(img.png).cid)
                lore_sha = hashlib.sha256(lore.text.encode("utf-8")).hexdigest()
                receipt_sha = hashlib.sha256(receipt_bytes).hexdigest()
                record = item_record(
                    item=item,
                    traits=traits,
                    seed=seed,
                    image_cid=cid,
                    png_sha256=png_sha,
                    lore_sha256=lore_sha,
                    receipt_sha256=receipt_sha,
                    reroll=reroll,
                )
                if self.keep_files:
                    result.files[f"images/{item}.png"] = img.png
                    result.files[f"receipts/{item}.json"] = receipt_bytes
                else:
                    atomic_write(spec.out_dir / "images" / f"{item}.png", img.png)
                    atomic_write(spec.out_dir / "receipts" / f"{item}.json", receipt_bytes)
                result.outputs.append(
                    ItemOutput(item, cid, png_sha, receipt_sha, lore_sha, record_sha256(record))
                )
        return result


class _stage:
    """Adds a block's wall and CPU seconds to a result's stage."""

    def __init__(self, result: BatchResult, name: str) -> None:
        self.result, self.name = result, name

    def __enter__(self) -> None:
        self.t, self.c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        r = self.result
        r.seconds[self.name] = r.seconds.get(self.name, 0.0) + time.perf_counter() - self.t
        r.cpu_seconds[self.name] = r.cpu_seconds.get(self.name, 0.0) + time.process_time() - self.c


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary name of this process's own, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- worker processes ------------------------------------------------------------------------------------------

_MAKER: BatchMaker | None = None
_PROGRESS: Any = None  # the genesis process's queue of (batch, items) progress notes, when it shows a bar


def _init_worker(spec: WorkerSpec, progress_queue: Any = None) -> None:
    """Worker process start: exit with the genesis process, set the thread count, load the models."""
    global _MAKER, _PROGRESS
    _PROGRESS = progress_queue
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)
    _MAKER = BatchMaker(spec)


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)  # the genesis process is gone: no file of this worker's may land after it


def _make_batch(batch: int, rows: list[tuple[int, dict[str, str], int]]) -> BatchResult | BatchFailure:
    assert _MAKER is not None, "worker was not initialised"
    queue = _PROGRESS
    note = None if queue is None else (lambda items: queue.put((batch, items)))
    try:
        return _MAKER.make(batch, rows, note)
    except ChrysalisError as e:
        return BatchFailure(type(e), e.message, e.hint)


def run_in_pool(
    spec: WorkerSpec,
    batches: Sequence[tuple[int, list[tuple[int, dict[str, str], int]]]],
    workers: int,
    on_progress: Callable[[int, float], None] | None = None,
) -> Iterator[BatchResult]:
    """Make ``batches`` in ``workers`` processes (spawned, one torch thread each by default); yields results as
    they finish, in any order. A ChrysalisError in a worker is raised here with its hint.

    At most two batches per worker are queued ahead, so stopping (an error, Ctrl-C) abandons little work. No more
    processes are started than there are batches. ``on_progress(batch, items)`` is called here (in this process)
    as the workers report progress within their batches.
    """
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold torch's thread pools
    todo = list(batches)
    workers = max(1, min(workers, len(todo)))
    queue = context.Queue() if on_progress is not None else None
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(spec, queue)
    ) as pool:
        running: set[Future[BatchResult | BatchFailure]] = set()
        try:
            while todo or running:
                while todo and len(running) < 2 * workers:
                    batch, rows = todo.pop(0)
                    running.add(pool.submit(_make_batch, batch, rows))
                done, running = _wait(running, timeout=None if queue is None else 0.25)
                _drain(queue, on_progress)
                for future in done:
                    result = future.result()
                    if isinstance(result, BatchFailure):
                        raise result.error()
                    yield result
        except BaseException:
            for future in running:
                future.cancel()
            raise


def _wait(
    futures: set[Future[Any]], timeout: float | None = None
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    done, pending = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
    return set(done), set(pending)


def _drain(queue: Any, on_progress: Callable[[int, float], None] | None) -> None:
    """Hand every progress note the workers queued so far to ``on_progress``."""
    if queue is None or on_progress is None:
        return
    while True:
        try:
            batch, items = queue.get_nowait()
        except Empty:
            return
        on_progress(batch, items)


def run_here(
    maker_factory: Callable[[], BatchMaker],
    batches: Sequence[tuple[int, list[tuple[int, dict[str, str], int]]]],
    on_progress: Callable[[int, float], None] | None = None,
) -> Iterator[BatchResult]:
    """Make ``batches`` one after another in this process (``on_progress`` as :func:`run_in_pool`'s)."""
    maker = maker_factory()
    for batch, rows in batches:
        note = None if on_progress is None else partial(on_progress, batch)
        yield maker.make(batch, rows, note)


__all__ = [
    "BatchFailure",
    "BatchMaker",
    "BatchResult",
    "WorkerSpec",
    "atomic_write",
    "genesis_snapshot",
    "run_here",
    "run_in_pool",
]
