"""What every trainer returns: :class:`TrainResult` (the shared design of issue 15).

A result is a plain record of a finished run. ``losses`` hold one float32 value per step (as Python floats, so
they survive JSON exactly); ``data_order_sha256`` is :func:`data_order_sha256` of the per-step lists of dataset item
indices; ``weights`` maps every file the trainer wrote into its output directory to its sha256. Everything but
``train_seconds`` is decided by the inputs: the same dataset, base model, hyperparameters and seed in the canonical
configuration (CPU, float32, one torch thread) give the same result, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrainResult:
    """A finished training run (see the module docstring)."""

    trainer: str
    hyperparameters: dict[str, Any]
    seed: int
    steps: int
    losses: tuple[float, ...]
    data_order_sha256: str
    weights: dict[str, str]
    train_seconds: float


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes every digest in :mod:`agent.training` is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def data_order_sha256(order: Sequence[Sequence[int]]) -> str:
    """sha256 of the canonical JSON of the per-step index lists (``[[3, 17, ...], [9, ...], ...]``)."""
    return hashlib.sha256(canonical_json([[int(i) for i in step] for step in order])).hexdigest()


def loss_curve_sha256(losses: Sequence[float]) -> str:
    """sha256 of the losses as float32 little-endian bytes."""
    return hashlib.sha256(np.asarray(losses, dtype="<f4").tobytes()).hexdigest()
