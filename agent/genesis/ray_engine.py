"""Making genesis batches on a Ray cluster (``chrysalis genesis --ray auto|HOST:PORT``).

:func:`run_on_ray` has :func:`agent.genesis.worker.run_in_pool`'s contract: it makes the given batches and yields
each :class:`~agent.genesis.worker.BatchResult` as it finishes, in any order, and the genesis process alone writes
the ledger, so a run on a cluster resumes like a local one (and may be resumed locally, or the other way round).

The batches go through Ray Data: one row per genesis batch, ``map_batches`` over a pool of actors that each load
the models once (:class:`_RayMaker`, a :class:`~agent.genesis.worker.BatchMaker` with ``spec.threads`` torch
threads, one by default, so the files are bit-identical to those of local worker processes with the same thread
count). An actor may run on another machine, which does not share the genesis directory: it returns the batch's
files as bytes and this process writes them (atomically) before it yields the result. On a cluster with GPUs,
models whose device is ``auto`` or ``cuda`` get one GPU per actor.

The progress bar moves a batch at a time (the actors report nothing within a batch). When this process dies, Ray
ends its job and the actors with it; nothing of theirs lands in the genesis directory after it.

Ray is optional at run time (``pip install 'ray[data]==2.52.1' pyarrow==21.0.0``, both in requirements.lock); the
nodes of a remote cluster need the same chrysalis and models installed (the actors import
:mod:`agent.genesis.worker` and load the models the settings name from their own disk).
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import re
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ChrysalisError, ConfigError
from agent.genesis.worker import BatchFailure, BatchMaker, BatchResult, WorkerSpec, atomic_write

CONNECT_TIMEOUT_S = 3.0
"""How long a cluster address may take to accept a connection before it counts as not answering."""

STOP_TIMEOUT_S = 10.0
"""How long a stopped run waits for each of Ray Data's threads to end (they take well under a second)."""

RAY_PIN = "'ray[data]==2.52.1' pyarrow==21.0.0"
_FILE_NAME = re.compile(r"(images/\d+\.png|receipts/\d+\.json)")


@dataclass(frozen=True)
class Cluster:
    """The cluster a run uses: where it is, whether this process started it, and what it has."""

    address: str
    started_here: bool
    cpus: float
    gpus: float


def run_on_ray(
    spec: WorkerSpec,
    batches: Sequence[tuple[int, list[tuple[int, dict[str, str], int]]]],
    address: str,
    on_progress: Callable[[int, float], None] | None = None,
    *,
    actors: int | None = None,
    on_cluster: Callable[[Cluster, int], None] | None = None,
) -> Iterator[BatchResult]:
    """Make ``batches`` on the Ray cluster at ``address`` and yield the results as they finish (any order).

    Args:
        spec: The genesis's worker spec (``spec.threads`` torch threads per actor; None: 1).
        batches: ``(batch, rows)`` to make. address: ``"auto"`` (the running cluster this machine knows, else a
            local one started here with every CPU and shut down at the end) or a cluster's ``HOST:PORT``.
        on_progress: ``on_progress(batch, items)`` as each batch arrives.
        actors: Model-holding actors (None: one per GPU when the models use them, else one per ``threads`` CPUs
            of the cluster); never more than there are batches.
        on_cluster: Told the cluster and the actor count once they are known (for the run's timings).

    A ChrysalisError raised in an actor is raised here with its hint.

    Raises:
        ConfigError: Ray is not installed, the address does not answer, or the models ask for CUDA and the
            cluster has no GPU.
    """
    todo = list(batches)
    if not todo:
        return
    ray = _import_ray()
    threads = spec.threads or 1
    with _connected(ray, address) as cluster:
        want_gpu = _wants_gpu(spec, cluster)
        if actors is None:
            actors = int(cluster.gpus) if want_gpu else int(cluster.cpus // threads)
        actors = max(1, min(actors, len(todo)))
        if on_cluster is not None:
            on_cluster(cluster, actors)
        # fractional CPUs: whole ones for every actor would leave none for Ray Data's own tasks (a deadlock on
        # a 2-CPU cluster); the torch thread count, not this, is what bounds an actor's CPU use
        cpus = min(float(threads), max(0.1, (cluster.cpus - 1) / actors))
        pickled = [{"batch": b, "rows": pickle.dumps(rows)} for b, rows in todo]
        dataset = ray.data.from_items(pickled, override_num_blocks=len(pickled)).map_batches(
            _RayMaker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            num_gpus=1 if want_gpu else 0,
        )
        before = set(threading.enumerate())
        rows = iter(dataset.iter_rows())
        try:
            for row in rows:
                outcome = pickle.loads(row["result"])
                if isinstance(outcome, BatchFailure):
                    raise outcome.error()
                _write_files(spec.out_dir, outcome)
                if on_progress is not None:
                    on_progress(outcome.batch, float(len(outcome.outputs)))
                yield outcome
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
            del rows, close
            _wait_for_ray_data(before)


class _RayMaker:
    """A Ray Data actor: loads the models once, then makes one genesis batch per call (files kept as bytes)."""

    def __init__(self, spec: WorkerSpec) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch

        torch.set_num_threads(spec.threads or 1)
        self.maker: BatchMaker | None = None
        self.failure: BatchFailure | None = None
        try:
            self.maker = BatchMaker(spec, keep_files=True)
        except (
            ChrysalisError
        ) as e:  # e.g. a model missing on this node: said for the first batch, with its hint
            self.failure = BatchFailure(type(e), e.message, e.hint)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        number = int(batch["batch"][0])
        outcome: BatchResult | BatchFailure
        if self.maker is None:
            assert self.failure is not None
            outcome = self.failure
        else:
            try:
                outcome = self.maker.make(number, pickle.loads(batch["rows"][0]))
            except ChrysalisError as e:
                outcome = BatchFailure(type(e), e.message, e.hint)
        return {"batch": np.array([number]), "result": np.array([pickle.dumps(outcome)], dtype=object)}


def _wait_for_ray_data(before: set[threading.Thread]) -> None:
    """Let the dataset's execution stop before Ray is shut down (the caller closed and dropped the row iterator).

    A run stopped early (an error, Ctrl-C) leaves Ray Data's executor thread (and the thread feeding the row
    iterator) calling into Ray for a moment after the iterator is dropped; one still doing so when ``ray.shutdown``
    runs crashes this process (a segfault in ``CoreWorker::Wait``, seen with ray 2.52.1 when the next run connects
    again). So the dropped iterator is collected (which shuts its executor down), and those threads (Ray
    internals, found by name: at worst not waited for) are given a few seconds to end.
    """
    gc.collect()
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith(("StreamingExecutor-", "map_tp_filling_worker")):
            thread.join(timeout=STOP_TIMEOUT_S)


def _write_files(out_dir: Path, result: BatchResult) -> None:
    """Write a batch's files an actor returned under ``out_dir`` (only the names a batch makes)."""
    for dirname in ("images", "receipts"):
        (out_dir / dirname).mkdir(parents=True, exist_ok=True)
    for name, data in result.files.items():
        if not _FILE_NAME.fullmatch(name):  # pragma: no cover - BatchMaker makes no other name
            raise ValueError(f"unexpected genesis file name {name!r}")
        atomic_write(out_dir / name, data)
    result.files = {}


def _wants_gpu(spec: WorkerSpec, cluster: Cluster) -> bool:
    """Whether the actors get a GPU: ``cuda`` needs one (a ConfigError on a cluster with none), ``auto`` takes
    one when the cluster has any, ``cpu`` (and ``mps``) never."""
    device = str(spec.models.device)
    if device == "cuda" or device.startswith("cuda:"):
        if cluster.gpus < 1:
            raise ConfigError(
                f"models.device is {device!r} but the Ray cluster at {cluster.address} has no GPU",
                hint="add GPU nodes to the cluster, or set models.device = 'cpu' (CHRYSALIS_MODELS__DEVICE=cpu)",
            )
        return True
    return device == "auto" and cluster.gpus >= 1


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError(
            f"--ray needs Ray, which is not installed here ({e})",
            hint=f"pip install {RAY_PIN} (the versions in requirements.lock), or leave --ray out",
        ) from None
    return ray


@contextmanager
def _connected(ray: Any, address: str) -> Iterator[Cluster]:
    """Connect to (or start) the cluster for ``address``; disconnect (or shut down) at the end.

    A process already connected (``ray.init`` called before) keeps its connection, whatever the address.
    """
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the genesis has its own bar
    ctx.print_on_execution_start = False
    if ray.is_initialized():
        yield _describe(ray, "this process's", started_here=False)
        return
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    with warnings.catch_warnings():
        # ray 2.52 tells, at every init, that a later Ray will stop hiding GPUs from actors that asked for none
        warnings.simplefilter("ignore", FutureWarning)
        started, shown, temp = _init(ray, address, quiet)
    try:
        yield _describe(ray, shown, started_here=started)
    finally:
        ray.shutdown()
        if temp is not None:
            temp.cleanup()


def _init(
    ray: Any, address: str, quiet: dict[str, Any]
) -> tuple[bool, str, tempfile.TemporaryDirectory[str] | None]:
    """``ray.init`` for ``address``: whether it started the cluster, its address as shown, its temporary folder."""
    temp: tempfile.TemporaryDirectory[str] | None = None
    if address == "auto":
        found = _running_cluster(ray)
        if found is not None:
            ray.init(address=found, **quiet)
            started, shown = False, found
        else:
            temp = tempfile.TemporaryDirectory(prefix="chrysalis-ray-", ignore_cleanup_errors=True)
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _temp_dir=temp.name,
                **quiet,
            )
            started, shown = True, "local"
    else:
        _check_answers(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(
                f"could not join the Ray cluster at {address}: {e}",
                hint=f"start one there with `ray start --head --port {_port(address)}`, or pass --ray auto",
            ) from None
        started, shown = False, address
    return started, shown, temp


def _describe(ray: Any, address: str, *, started_here: bool) -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(address, started_here, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))


def _running_cluster(ray: Any) -> str | None:
    """The address of a running cluster this machine knows (``RAY_ADDRESS``, else the last ``ray start``'s), if
    it answers."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        try:
            from ray._private.services import find_bootstrap_address

            address = find_bootstrap_address(None)
        except Exception:  # a private API that may move: then only RAY_ADDRESS is looked at
            address = None
    if not address or address == "auto":
        return None
    try:
        _check_answers(address)
    except ConfigError:
        return None  # a stale record of a cluster that is gone
    return address


def _port(address: str) -> str:
    return address.rpartition(":")[2] or "6379"


def _check_answers(address: str) -> None:
    """Fail within seconds when nothing listens at ``address`` (``ray.init`` itself retries for a minute)."""
    if address.startswith("ray://"):
        raise ConfigError(
            f"{address} is a Ray Client address, which chrysalis does not use",
            hint="start the genesis on a node of the cluster and pass the head's HOST:PORT (GCS, 6379 by default)",
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"bad Ray address {address!r}", hint="pass --ray HOST:PORT (the head's GCS port) or --ray auto"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({e.strerror or e})",
            hint=f"start one there with `ray start --head --port {port}`, or pass --ray auto for a local one",
        ) from None


__all__ = ["CONNECT_TIMEOUT_S", "Cluster", "run_on_ray"]
