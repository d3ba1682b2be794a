"""Fixtures for the fine-tune tests: a small image dataset folder (real PNGs drawn by the procedural sprite
generator, recoloured into the example set's neon palettes as the "new style"), the tiny fine-tune configuration
the tests train with, and a helper that runs ``chrysalis`` in a separate process (for the SIGKILL and
second-process tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.generate.sprites.conditioning import ELEMENTS, MOODS, class_index
from agent.generate.sprites.dataset import make_sprite, sprite_rng
from agent.generate.sprites.palette import to_neon
from tests.support.cli import invoke_cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--steps", "6", "--batch-size", "4", "--checkpoint-every", "2", "--holdout-every", "4", "--no-card"]
"""A fine-tune small enough for a test: 6 steps of batch 4, a checkpoint every 2 steps, no model card."""


def write_dataset(folder: Path, per_class: int = 1) -> Path:
    """``per_class`` neon sprites per (mood, element), as ``images/<class>-<i>.png`` + ``labels.jsonl``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for mood in MOODS:
        for element in ELEMENTS:
            label = class_index(mood, element)
            for i in range(per_class):
                name = f"images/{label:02d}-{i}.png"
                img = to_neon(make_sprite(mood, element, sprite_rng(label, i, seed=7)), mood)
                Image.fromarray(img).save(folder / name)
                lines.append(json.dumps({"file": name, "traits": {"mood": mood, "element": element}}))
    (folder / "labels.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("neon"))


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRYSALIS_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    return env


def chrysalis_process(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``chrysalis ARGS`` in a new process (stdout and stderr piped, as text)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from agent.cli import main; main()", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_chrysalis(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = chrysalis_process(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def chrysalis(capsys: pytest.CaptureFixture[str]) -> Any:
    """``chrysalis(*args)``: run the CLI in-process as ``chrysalis`` would, returning a :class:`CliResult`."""
    return lambda *args: invoke_cli(capsys, *args)


@pytest.fixture(scope="module")
def trained(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fine-tune, trained by ``chrysalis model train`` in its own process."""
    cwd = tmp_path_factory.mktemp("trained")
    done = run_chrysalis("model", "train", "--dataset", str(dataset_dir), "--out", "model", *TINY, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return cwd / "model"
