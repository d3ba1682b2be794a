"""Device, dtype and thread helpers, model-source resolution, and the canonical verification configuration.

Reproducibility rule (measured, see shared/STACK.md): on the CPU, the same library versions + the same thread
count + the same seed give bit-identical outputs across processes. GPU output never matches CPU bits. So a
receipt is *canonical* when it was produced the way a verifier replays it:

    device cpu, dtype float32, 1 torch thread, batch size 1, the library versions recorded in the receipt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agent.errors import ConfigError, NotFoundError

CANONICAL_DEVICE = "cpu"
CANONICAL_DTYPE = "float32"
CANONICAL_THREADS = 1
CANONICAL_BATCH_SIZE = 1

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA, else MPS, else CPU. An explicit device that is not there is a ConfigError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but torch sees no CUDA device", hint="set models.device = 'auto'"
        )
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(
            "device 'mps' was asked for but it is not available", hint="set models.device = 'auto'"
        )
    if device not in ("cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}", hint="use auto, cpu, cuda or mps")
    return torch.device(device)


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device, *, gpu_default: str = "float16"
) -> torch.dtype:
    """``"auto"`` -> ``gpu_default`` on CUDA/MPS, float32 on CPU. float16 on the CPU is refused (slow, lossy)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return _DTYPES[gpu_default] if device.type in ("cuda", "mps") else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", hint="use auto, float32, float16 or bfloat16")
    if dtype == "float16" and device.type == "cpu":
        raise ConfigError(
            "dtype float16 on the CPU is not supported by every kernel and is slower than float32",
            hint="use dtype 'float32' (or 'auto') on the CPU; float16/bfloat16 are for GPUs",
        )
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def library_versions() -> dict[str, str]:
    """Versions that decide output bits; recorded in every receipt."""
    import diffusers
    import numpy
    import PIL
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how one output was computed."""

    device: str
    dtype: str
    threads: int
    batch_size: int
    versions: Mapping[str, str]

    @property
    def canonical(self) -> bool:
        return is_canonical(self.device, self.dtype, self.threads, self.batch_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "versions": dict(self.versions),
            "canonical": self.canonical,
        }


def is_canonical(device: str, dtype: str, threads: int, batch_size: int) -> bool:
    return (
        device == CANONICAL_DEVICE
        and dtype == CANONICAL_DTYPE
        and threads == CANONICAL_THREADS
        and batch_size == CANONICAL_BATCH_SIZE
    )


def current_runtime(device: torch.device | str, dtype: torch.dtype | str, batch_size: int) -> RuntimeConfig:
    dev = str(device) if not isinstance(device, torch.device) else device.type
    dt = dtype_name(dtype) if isinstance(dtype, torch.dtype) else dtype
    return RuntimeConfig(dev, dt, torch.get_num_threads(), batch_size, library_versions())


_THREADS_LOCK = threading.RLock()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (None: leave as is), restoring the previous count after.

    Blocks that pin a count run one at a time in a process (a reentrant lock, so they nest: ``verify`` pins the
    receipt's count around a generator that pins its own). With torch's OpenMP backend the count belongs to the
    calling OS thread: another Python thread keeps the count it had, so pin it where the work runs.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ConfigError(f"{n} torch threads", hint="use 1 or more (1 is the canonical configuration)")
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def canonical_runtime() -> contextlib.AbstractContextManager[None]:
    """The canonical verification configuration's thread count (device/dtype/batch are chosen by the loader)."""
    return torch_threads(CANONICAL_THREADS)


# --- hashing -------------------------------------------------------------------------------------------------

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (what ``sha256sum`` prints), memoised by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


def weight_files(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every weight file under ``root`` (or of ``root`` itself if it is a file)."""
    if root.is_file():
        return {root.name: file_sha256(root)}
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and ".cache" not in p.parts:
            out[p.relative_to(root).as_posix()] = file_sha256(p)
    return out


def weights_digest(files: Mapping[str, str]) -> str:
    """Digest of a model made of several weight files: sha256 over the canonical JSON of ``{path: sha256}``.

    A model with a single weight file gets that file's own sha256 (what ``sha256sum`` prints), so the digest
    of a one-file model can be checked without Chrysalis.
    """
    if len(files) == 1:
        return next(iter(files.values()))
    blob = json.dumps(dict(sorted(files.items())), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# --- model sources -------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def resolve_model_source(source: str, *, what: str, setting: str) -> Path:
    """A local directory or file for ``source`` (a path, or a hub id in the local HF cache).

    Never waits on the network when the hub is offline: a hub id that is not cached raises at once.

    Args:
        source: A local path or a hub id (``owner/name``).
        what: What the model is for, used in messages ("image model", "lore model").
        setting: The settings key to fix, used in hints (``models.image_model``).
    """
    if not source or not str(source).strip():
        raise ConfigError(f"no {what} configured", hint=f"set {setting} to a local directory or a hub id")
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve()
    looks_like_path = source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
    if looks_like_path or not _HUB_ID.match(source):
        raise NotFoundError(
            f"{what} path {path} does not exist",
            hint=f"set {setting} to an existing model directory (a save_pretrained output) or a hub id",
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if hub_offline():
        raise NotFoundError(
            f"{what} {source!r} is not a local path and not in the local Hugging Face cache, "
            "and the hub is offline (HF_HUB_OFFLINE=1)",
            hint=f"download it where there is network (`hf download {source}`) and copy the cache "
            f"(HF_HOME), or set {setting} to a local directory",
        )
    try:
        return Path(snapshot_download(source))
    except Exception as e:  # network errors, gated repos, unknown ids
        raise NotFoundError(
            f"{what} {source!r} could not be fetched from the hub: {e}",
            hint=f"check the id, or set {setting} to a local directory",
        ) from e
