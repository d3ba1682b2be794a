"""The genesis progress bar moves within a batch (per image, per lore chunk), not once per 64-item batch, and no
worker process is started that would get no batch (ux.md "Genesis progress")."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from rich.progress import Progress

from agent.genesis import run as genesis_generate
from agent.genesis.run import run_genesis
from agent.settings import ModelSettings


def test_one_batch_moves_the_bar_per_item_and_starts_no_worker_process(
    tmp_path: Path, models: ModelSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.genesis.conftest import small_table

    advances: list[float] = []

    class Recording(Progress):
        def update(self, task_id: Any, **kwargs: Any) -> None:
            if kwargs.get("advance"):
                advances.append(float(kwargs["advance"]))
            super().update(task_id, **kwargs)

    monkeypatch.setattr(genesis_generate, "Progress", Recording)
    size = 6
    result = run_genesis(
        small_table(), size, "seed-p", tmp_path / "g", models=models, batch_size=8, workers=2, sheet_size=0
    )
    assert result.generated == size
    # one batch: made here (with a worker's thread count), no pool of processes for one batch
    assert result.timings.workers == 1 and result.timings.threads == 1
    assert multiprocessing.active_children() == []
    # half an item per image, then the lore, then what is left when the batch is recorded: several moves
    assert advances[:size] == [0.5] * size
    assert len(advances) > size and sum(advances) == pytest.approx(size)
