"""Generating a genesis: images and lore for every item, in batches, resumable, with a receipt per item.

:func:`run_genesis` is what ``chrysalis genesis`` runs. For a table, a size and a seed it

1. deals the traits (:func:`agent.genesis.assign.assign`) and writes ``assignment.json`` and ``rarity.md``;
2. opens the ledger (:mod:`agent.genesis.ledger`) and checks the files of batches already finished (a batch whose
   PNG or receipt is missing or does not match its recorded sha256 is generated again);
3. generates the remaining batches with the models :class:`~agent.settings.ModelSettings` names
   (:mod:`agent.generate.factory`), in this process, in worker processes (:mod:`agent.genesis.worker`) or in
   the actors of a Ray cluster (:mod:`agent.genesis.ray_engine`):
   images, then lore, then one inference receipt per item (:func:`agent.generate.receipt.build_receipt`, seed
   chain ``derive_seed(genesis_seed, item)``), written as ``images/<item>.png`` and ``receipts/<item>.json``,
   then the batch is marked done in the ledger;
4. with ``gates``, runs the quality gates over the items in item order (:func:`agent.genesis.report.gate_genesis`):
   a failing item is made again with the next public reroll of the genesis seed, same traits, up to
   ``gates.max_rerolls`` times, in this process with the run's torch thread count; each verdict is recorded in the
   ledger, and ``gates.md`` / ``gates.json`` are written;
5. computes the provenance hash over the item records (:mod:`agent.genesis.provenance`; a rerolled item's record
   says its reroll, and ``provenance.json`` lists them) and writes ``provenance.json`` and a contact sheet.

A rich progress bar shows items done, speed and the time left. A killed run, run again with the same options,
skips the finished batches and produces the same files and the same provenance hash as a run that was never
interrupted (batches are fixed slices of the item order, so every image is made in the same batch as before).

Speed (10,000 items on 2 CPU cores; bench/genesis.py measures it): a genesis batch is one model batch for both
models (:func:`genesis_models`), lore batches share their prompt prefix and drop finished rows
(:class:`agent.generate.lore.SharedPrefix`, :func:`agent.generate.lore.decode_phases`), and ``workers`` processes
with one torch thread each keep every core busy (:func:`auto_workers`; ``chrysalis genesis`` uses it by default).

Genesis images read no chain data: each receipt's input snapshot is :func:`genesis_snapshot` (chain id 0, block 0,
readings ``genesis.item``, ``genesis.size``, ``genesis.table_sha256``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agent.errors import ConfigError
from agent.genesis.assign import Assignment, assign
from agent.genesis.ledger import ItemOutput, Ledger
from agent.genesis.provenance import SCHEME, provenance_hash
from agent.genesis.traits import TraitTable
from agent.genesis.worker import (
    ZERO_HASH,
    BatchMaker,
    BatchResult,
    WorkerSpec,
    atomic_write,
    genesis_snapshot,
    run_here,
    run_in_pool,
)
from agent.settings import GatesSettings, ModelSettings, model_keys

if TYPE_CHECKING:
    from agent.genesis.report import GateRow

SCHEMA = "chrysalis.genesis/1"
DEFAULT_BATCH_SIZE = 64
MAX_AUTO_WORKERS = 4
GENESIS_IMAGE_STEPS = 25
"""DDIM steps of the embedded sprite model in a genesis, unless ``models.image_steps`` says otherwise: the fewest
whose measured quality matches 50 steps (``python -m bench.genesis --sweep``: palette adherence 0.909 vs 0.924,
mood accuracy 0.984 vs 0.992, element accuracy 0.984 vs 0.961 on 128 sprites; at 20 steps mood accuracy falls to
0.953, at 15 to 0.844), for half the CPU time per image."""

MODEL_KEYS = model_keys("image", "lore", output_only=True)
"""ModelSettings fields that decide what a genesis generates; a resumed run must use the same values."""


@dataclass
class Timings:
    """Where this run's generation time went (finished batches cost nothing).

    ``images``, ``lore`` and ``receipts`` (receipts, hashes, CIDs and files) are wall seconds and the ``*_cpu``
    fields CPU seconds, both summed over the workers, so with several workers they add up to more than the
    elapsed time. ``load_models`` is the slowest worker's model loading; ``generate`` the wall time from the
    first batch to the last; ``workers`` and ``threads`` say how the run was spread. ``engine`` says where the
    batches were made: ``"here"`` (this process), ``"processes"`` (worker processes) or ``"ray"`` (``workers``
    are then the cluster's actors and ``cluster`` its address, or ``"local"`` for one started by the run).
    """

    images: float = 0.0
    lore: float = 0.0
    receipts: float = 0.0
    load_models: float = 0.0
    images_cpu: float = 0.0
    lore_cpu: float = 0.0
    receipts_cpu: float = 0.0
    generate: float = 0.0
    workers: int = 1
    threads: int = 0
    engine: str = "here"
    cluster: str | None = None

    def add(self, result: BatchResult) -> None:
        for stage in ("images", "lore", "receipts"):
            setattr(self, stage, getattr(self, stage) + result.seconds.get(stage, 0.0))
            setattr(self, f"{stage}_cpu", getattr(self, f"{stage}_cpu") + result.cpu_seconds.get(stage, 0.0))
        self.load_models = max(self.load_models, result.load_s)

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GenesisResult:
    """What :func:`run_genesis` left in ``out_dir``.

    Attributes:
        out_dir: The genesis directory. size: Items. seed: The operator seed.
        assignment_sha256: Hash of the trait assignment. provenance_sha256: The provenance hash to publish.
        generated: Items generated by this run. resumed: Items that were already finished.
        elapsed_s: Wall time of this run. timings: Where the generation time went.
        assignment: The trait assignment.
        gates: What the quality gates caught, per gate (None: not run); also in ``gates.md``.
    """

    out_dir: Path
    size: int
    seed: str
    assignment_sha256: str
    provenance_sha256: str
    generated: int
    resumed: int
    elapsed_s: float
    timings: Timings = field(default_factory=Timings)
    assignment: Assignment | None = field(default=None, repr=False, compare=False)
    gates: list[GateRow] | None = field(default=None, compare=False)


def run_params(
    table: TraitTable, assignment: Assignment, models: ModelSettings, *, batch_size: int, threads: int
) -> dict[str, Any]:
    """The parameters that identify a genesis run (stored in the ledger; a resumed run must match)."""
    return {
        "schema": SCHEMA,
        "name": table.name,
        "size": assignment.size,
        "seed": assignment.seed,
        "table_sha256": table.sha256,
        "batch_size": batch_size,
        "torch_threads": threads,
        "models": {
            k: None if getattr(models, k) is None else str(getattr(models, k))
            for k in MODEL_KEYS
            # the torch image runtime (the default) is left out, so ledgers from before the setting still resume
            if not (k == "image_runtime" and models.image_runtime == "torch")
        },
        "assignment_sha256": assignment.sha256,
    }


def genesis_models(models: ModelSettings, batch_size: int) -> ModelSettings:
    """The model settings a genesis runs with, for what the settings do not set explicitly.

    - ``image_batch_size`` and ``lore_batch_size`` become the genesis batch size, so a genesis batch goes through
      each model as one batch (the settings' defaults of 8 suit one token's evolution; SmolLM2 decoding 64 rows
      takes about 60% of the CPU time per text that 8 rows take). On the CPU the image generators still compute
      each image alone, so that its receipt replays bit for bit; the image batch applies on a GPU.
    - ``image_steps`` of the embedded sprite model becomes :data:`GENESIS_IMAGE_STEPS`.
    - ``image_runtime = "auto"`` becomes ``"torch"`` (a genesis draws in batches; ``"portable"`` is kept when set).

    Explicit values are kept (a GPU's memory may need smaller batches). The effective settings are recorded in
    the ledger, and every receipt records the batch size and steps that made it.
    """
    fixed = models.model_fields_set
    update: dict[str, Any] = {
        key: batch_size for key in ("image_batch_size", "lore_batch_size") if key not in fixed
    }
    if models.image_backend == "embedded" and "image_steps" not in fixed and models.image_steps is None:
        update["image_steps"] = GENESIS_IMAGE_STEPS
    if (
        models.image_runtime == "auto"
    ):  # a genesis keeps the batched torch runtime (its speed) unless told otherwise
        update["image_runtime"] = models.image_runtime_for(genesis=True)
    return models.model_copy(update=update) if update else models


def auto_workers(models: ModelSettings) -> int:
    """Worker processes for ``workers=None``: one per CPU core (at most 4) on the CPU, one on a GPU."""
    from agent.generate.runtime import resolve_device

    if resolve_device(models.device).type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cores // (models.threads or 1)))


def run_genesis(
    table: TraitTable,
    size: int,
    seed: str,
    out_dir: Path,
    *,
    models: ModelSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = 1,
    sheet_size: int = 64,
    progress: bool = True,
    console: Console | None = None,
    gates: GatesSettings | None = None,
    ray: str | None = None,
) -> GenesisResult:
    """Generate (or finish generating) a genesis in ``out_dir``; see the module docstring.

    Args:
        table: The trait table. size: Items. seed: The operator seed (any text).
        out_dir: State and output directory (created; reused to resume).
        models: Which models run (default: the embedded ones); see :func:`genesis_models` for batch sizes.
        batch_size: Items per batch (also the resume granularity).
        workers: Processes making batches: 1 makes them in this process; more spawn worker processes with
            ``models.threads`` torch threads each (default 1); None picks :func:`auto_workers`. The outputs do
            not depend on it, so a run may be resumed with another worker count. Workers are spawned, so a
            script that calls this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
        sheet_size: Items on the contact sheet (0: none).
        progress: Show a progress bar. console: Where it goes.
        gates: Run these quality gates over the generated items and reroll the failing ones before the provenance
            hash is computed (:func:`agent.genesis.report.gate_genesis`: ``gates.md``, ``gates.json``); None or
            disabled: not run (items already rerolled by an earlier gated run keep their reroll).
        ray: Make the batches on a Ray cluster (:func:`agent.genesis.ray_engine.run_on_ray`): ``"auto"`` (the
            running cluster this machine knows, else a local one with every CPU) or its ``HOST:PORT``.
            ``workers`` is then the number of actors (None: one per GPU, or per ``models.threads`` CPUs, of the
            cluster), each with ``models.threads`` (default 1) torch threads like a worker process, so the
            outputs are the same as with worker processes.

    Raises:
        ConfigError: a bad table, size, seed or worker count, or ``out_dir`` holds a different run (or one gated
            with other ``[gates]`` settings).
        UniquenessError: the unique traits cannot be dealt.
    """
    from agent.generate.runtime import torch_threads

    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} is below 1", hint="pass --batch-size 1 or more")
    models = genesis_models(models or ModelSettings(), batch_size)
    if workers is None and ray is None:
        workers = auto_workers(models)
    if workers is not None and workers < 1:
        raise ConfigError(
            f"{workers} workers", hint="pass --workers 1 or more (or leave it out: one per core)"
        )
    started = time.perf_counter()
    assignment = assign(table, size, seed)
    out_dir = Path(out_dir)
    # one worker runs here with the settings' threads; worker processes and Ray actors get models.threads or 1
    here = workers == 1 and ray is None
    worker_threads = models.threads if here else (models.threads or 1)
    with torch_threads(worker_threads if here else None):
        import torch

        threads = torch.get_num_threads() if here else int(worker_threads or 1)
        params = run_params(table, assignment, models, batch_size=batch_size, threads=threads)
        with Ledger.open(
            out_dir,
            params,
            [(assignment.items[i], assignment.item_seed(i)) for i in range(size)],
            batch_size=batch_size,
        ) as ledger:
            _write_json(out_dir / "assignment.json", _assignment_json(table, assignment))
            from agent.genesis.report import rarity_markdown

            (out_dir / "rarity.md").write_text(rarity_markdown(table, assignment))
            _recheck(out_dir, ledger)
            resumed = ledger.done_count()
            timings = Timings(workers=workers or 0, threads=threads, engine="here" if ray is None else "ray")
            pending = ledger.pending_batches()
            if pending:
                spec = spec_of(table, assignment, models, out_dir, None if here else threads)
                _generate(spec, ledger, pending, workers, timings, progress, console, ray=ray)
            gate_rows = None
            if gates is not None and gates.enabled:
                gate_rows = _gate(
                    spec_of(table, assignment, models, out_dir, threads), ledger, gates, threads
                )
            digests = [o.record_sha256 for o in ledger.outputs()]
            if len(digests) != size:  # pragma: no cover - every batch was finished above
                raise ConfigError(f"{size - len(digests)} items are unfinished", hint="run the genesis again")
            provenance = provenance_hash(digests)
            _write_json(
                out_dir / "provenance.json",
                {
                    "scheme": SCHEME,
                    "provenance_sha256": provenance,
                    "size": size,
                    "name": table.name,
                    "table_sha256": table.sha256,
                    "assignment_sha256": assignment.sha256,
                    "record_sha256": digests,
                }
                | _rerolls_json(ledger),
            )
    if sheet_size > 0:
        from agent.genesis.report import contact_sheet

        contact_sheet(out_dir, sample=sheet_size)
    return GenesisResult(
        out_dir=out_dir,
        size=size,
        seed=seed,
        assignment_sha256=assignment.sha256,
        provenance_sha256=provenance,
        generated=size - resumed,
        resumed=resumed,
        elapsed_s=time.perf_counter() - started,
        timings=timings,
        assignment=assignment,
        gates=gate_rows,
    )


def spec_of(
    table: TraitTable, assignment: Assignment, models: ModelSettings, out_dir: Path, threads: int | None
) -> WorkerSpec:
    """What a :class:`~agent.genesis.worker.BatchMaker` of this genesis needs."""
    return WorkerSpec(
        name=table.name,
        lore_facts=dict(table.lore_facts),
        table_sha256=table.sha256,
        size=assignment.size,
        genesis_seed=assignment.genesis_seed,
        models=models,
        out_dir=out_dir,
        threads=threads,
    )


def gates_params(gates: GatesSettings) -> dict[str, Any]:
    """The ``[gates]`` settings that decide which items are rerolled (recorded in the ledger; a resumed run must
    use the same)."""
    return gates.model_dump(mode="json", exclude={"enabled"})


def _gate(spec: WorkerSpec, ledger: Ledger, gates: GatesSettings, threads: int) -> list[GateRow]:
    """The quality gates over the generated items, rerolling failing ones (:func:`agent.genesis.report.gate_genesis`)
    with the run's models, in this process, with the run's torch thread count (so the rerolled files are the same
    whatever the worker count). The models load only when a first item needs a reroll."""
    from agent.generate.runtime import torch_threads
    from agent.genesis.assign import item_seed
    from agent.genesis.report import gate_genesis

    wanted = gates_params(gates)
    stored = ledger.params().get("gates")
    if stored is None:
        ledger.set_param("gates", wanted)
    elif stored != wanted:
        changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise ConfigError(
            f"{spec.out_dir} was gated with gates.{changed[0]} = {stored.get(changed[0])!r}, not "
            f"{wanted.get(changed[0])!r} (the gates decide which items are rerolled)",
            hint="rerun with the run's [gates] settings (CHRYSALIS_GATES__*), or start a new genesis with another "
            "--out",
        )
    makers: list[BatchMaker] = []
    traits = ledger.item_traits()

    def remake(item: int, reroll: int) -> ItemOutput:
        if not makers:
            makers.append(BatchMaker(spec))
            _check_weights(ledger, makers[0].weights, spec.out_dir)
        row = (item, traits[item], item_seed(spec.genesis_seed, item, reroll))
        return makers[0].make(item // int(ledger.params()["batch_size"]), [row], reroll=reroll).outputs[0]

    with torch_threads(threads):
        return gate_genesis(spec.out_dir, gates, ledger=ledger, remake=remake)


def _rerolls_json(ledger: Ledger) -> dict[str, Any]:
    """``{"rerolls": {item: n}}`` when the gates rerolled any item (each record says its ``reroll`` too), else
    nothing (so a genesis whose items all passed on the first try has the same ``provenance.json`` as before)."""
    rerolls = ledger.rerolls()
    return {"rerolls": {str(i): n for i, n in rerolls.items()}} if rerolls else {}


def _generate(
    spec: WorkerSpec,
    ledger: Ledger,
    pending: list[int],
    workers: int | None,
    timings: Timings,
    show: bool,
    console: Console | None,
    *,
    ray: str | None = None,
) -> None:
    from agent.generate.runtime import torch_threads

    batches = [(b, ledger.batch_items(b)) for b in pending]
    if ray is None:
        # no process for a worker that would get no batch; one batch is made here, with a worker's thread count
        workers = max(1, min(workers or 1, len(batches)))
        timings.workers = workers
    columns = [
        TextColumn("[bold]genesis"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task("genesis", total=spec.size, completed=ledger.done_count(), rate="")
        partial: dict[int, float] = {}  # items' worth of progress reported inside batches not yet finished

        def note(batch: int, items: float) -> None:
            if batch in partial:  # a late note of a batch already counted whole is dropped
                partial[batch] += items
                bar.update(task, advance=items)

        for batch, _ in batches:
            partial[batch] = 0.0
        threads: AbstractContextManager[None]
        results: Iterator[BatchResult]
        if ray is not None:
            from agent.genesis.ray_engine import Cluster, run_on_ray

            def joined(cluster: Cluster, actors: int) -> None:
                timings.engine, timings.cluster, timings.workers = "ray", cluster.address, actors

            threads = nullcontext()
            results = run_on_ray(spec, batches, ray, note, actors=workers, on_cluster=joined)
        elif workers == 1:
            threads = torch_threads(spec.threads)
            results = run_here(lambda: BatchMaker(spec), batches, note)
        else:
            timings.engine = "processes"
            threads = nullcontext()
            results = run_in_pool(spec, batches, timings.workers, note)
        done_here, run_start = 0, time.perf_counter()
        with threads:
            for result in results:
                _check_weights(ledger, result.weights, spec.out_dir)
                ledger.finish_batch(result.outputs)
                timings.add(result)
                done_here += len(result.outputs)
                rate = done_here / max(time.perf_counter() - run_start, 1e-9)
                advance = len(result.outputs) - partial.pop(result.batch, 0.0)
                bar.update(task, advance=advance, rate=f"{rate:.2f} items/s")
        timings.generate = time.perf_counter() - run_start


def _check_weights(ledger: Ledger, weights: dict[str, str], out_dir: Path) -> None:
    """The models that made a batch are the ones the run started with (recorded by its first batch)."""
    stored = ledger.params().get("weights")
    if stored is None:
        ledger.set_param("weights", weights)
    elif stored != weights:
        raise ConfigError(
            f"{out_dir} was generated with model weights {stored}, but the loaded models have {weights}",
            hint="restore the models the run started with, or start a new genesis with another --out",
        )


def _recheck(out_dir: Path, ledger: Ledger) -> None:
    """Reopen finished batches whose files are missing or do not match the ledger (an interrupted write)."""
    broken: set[int] = set()
    params = ledger.params()
    batch_size = int(params["batch_size"])
    for out in ledger.outputs():
        png = out_dir / "images" / f"{out.item}.png"
        receipt = out_dir / "receipts" / f"{out.item}.json"
        if (
            not (png.is_file() and receipt.is_file())
            or _sha256_file(png) != out.png_sha256
            or _sha256_file(receipt) != out.receipt_sha256
        ):
            broken.add(out.item // batch_size)
    if broken:
        ledger.reopen_batches(sorted(broken))


def _assignment_json(table: TraitTable, assignment: Assignment) -> dict[str, Any]:
    return {
        "schema": "chrysalis.genesis.assignment/1",
        "name": table.name,
        "size": assignment.size,
        "seed": assignment.seed,
        "genesis_seed": "0x" + assignment.genesis_seed.hex(),
        "table_sha256": table.sha256,
        "assignment_sha256": assignment.sha256,
        "table": table.to_json(),
        "items": [assignment.record(i) for i in range(assignment.size)],
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = [
    "GENESIS_IMAGE_STEPS",
    "ZERO_HASH",
    "GenesisResult",
    "Timings",
    "auto_workers",
    "genesis_models",
    "genesis_snapshot",
    "run_genesis",
    "run_params",
]
