"""The training receipt: ``training-receipt.json`` beside a fine-tuned model's weights.

A receipt says exactly how the weights were made, so that anyone holding the dataset can make them again
(``chrysalis model verify-training``): the base model (name, weights sha256, and CID when it came from IPFS), the
dataset (its root commitment, item count, kind and mode, and every item's name and sha256 so a changed item can be
named), every hyperparameter, the seed, the data order's digest, the per-step loss curve's digest plus the losses
every ``loss_every`` steps (to localise a divergence), the library versions, the device, dtype and thread count,
the machine, and the output weights' sha256. ``train_seconds`` is recorded but is not part of what must match.

The file is canonical JSON (sorted keys, no spaces); :meth:`TrainingReceipt.sha256` is the sha256 of those bytes,
which the model's ``manifest.json`` records, so the manifest (and through it the on-chain model record) binds
the receipt. Same inputs -> same receipt bytes, except ``train_seconds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, NotFoundError
from agent.training.result import canonical_json

SCHEMA = "chrysalis.training-receipt/1"
RECEIPT_NAME = "training-receipt.json"


class ReceiptError(ConfigError):
    """A training receipt is missing, unreadable or not of a known schema."""


@dataclass(frozen=True)
class TrainingReceipt:
    """Everything that decided a training run (see the module docstring)."""

    trainer: str
    base: dict[str, Any]
    """``{"name", "weights_sha256", "cid"}`` (cid None unless the base was loaded from or published to IPFS)."""
    dataset: dict[str, Any]
    """``{"root", "n", "kind", "mode", "items": [[name, sha256], ...]}``."""
    hyperparameters: dict[str, Any]
    seed: int
    steps: int
    data_order_sha256: str
    loss_curve_sha256: str
    loss_every: int
    loss_checkpoints: list[list[float]]
    """``[[step, loss], ...]`` every ``loss_every`` steps and at the last step (steps count from 1)."""
    weights_sha256: str
    libraries: dict[str, str]
    device: str
    dtype: str
    threads: int
    machine: str
    train_seconds: float = 0.0
    schema: str = SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json()) + b"\n"

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def write(self, path: Path) -> str:
        """Write the canonical bytes to ``path``; returns their sha256."""
        data = self.to_bytes()
        path.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_json(cls, d: dict[str, Any], *, where: str = "receipt") -> TrainingReceipt:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise ReceiptError(
                f"{where} is not a training receipt of schema {SCHEMA} (schema: {got!r})",
                hint=f"pass the {RECEIPT_NAME} written by `chrysalis model train`",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in d and n not in ("train_seconds", "extra"))
        unknown = sorted(set(d) - names)
        if missing or unknown:
            raise ReceiptError(
                f"{where} has missing fields {missing} or unknown fields {unknown}",
                hint=f"pass an unmodified {RECEIPT_NAME}",
            )
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> TrainingReceipt:
        path = Path(path)
        if path.is_dir():
            path = path / RECEIPT_NAME
        if not path.is_file():
            raise NotFoundError(
                f"no training receipt at {path}",
                hint=f"pass a fine-tuned model directory or its {RECEIPT_NAME}",
            )
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReceiptError(
                f"{path} is not JSON ({exc})",
                hint=f"pass the {RECEIPT_NAME} written by `chrysalis model train`",
            ) from None
        return cls.from_json(data, where=str(path))


def library_versions() -> dict[str, str]:
    """Versions of everything whose arithmetic decides the weights."""
    import diffusers
    import numpy
    import torch

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    out["numpy"] = numpy.__version__
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is in the lock
        out["transformers"] = "absent"
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:  # pragma: no cover - peft is in the lock
        out["peft"] = "absent"
    return out


def dataset_record(ds: Any) -> dict[str, Any]:
    """What a receipt records of an :class:`agent.datasets.Dataset`: root, item count, kind, mode, and every item's
    name and sha256 (so verify-training can name a changed item)."""
    return {
        "root": ds.root,
        "n": len(ds.items),
        "kind": ds.kind,
        "mode": str(ds.mode),
        "items": [[it.name, it.sha256] for it in ds.items],
    }


def machine() -> str:
    return f"{platform.system()}-{platform.machine()} ({sys.byteorder}-endian)"
