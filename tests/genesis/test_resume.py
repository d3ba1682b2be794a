"""A genesis killed with SIGKILL mid-run and run again finishes the same collection (same provenance hash)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.genesis.ledger import LEDGER_NAME
from agent.genesis.run import run_genesis
from agent.genesis.traits import EXAMPLE_TABLE, load_table
from agent.settings import GatesSettings
from tests.genesis.conftest import model_env

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32
BATCH = 4
STEPS = 10  # slow enough per batch (about a tenth of a second or more) that the kill lands mid-run

# ~60 s on 2 busy cores; its own deadlines (300 s for progress, 600 s for the rerun) outlast the suite's default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def chrysalis(out: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from agent.cli import main; main()",
            "genesis",
            "--size",
            str(SIZE),
            "--seed",
            "kill-me",
            "--out",
            str(out),
            "--batch-size",
            str(BATCH),
            "--sheet",
            "0",
            "--no-progress",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def done_items(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM items WHERE done = 1").fetchone()[0])
    except sqlite3.OperationalError:  # created but not yet migrated
        return 0


def test_kill_then_rerun_gives_the_same_collection(tmp_path: Path, models) -> None:
    steps = models.model_copy(update={"image_steps": STEPS})
    env = {**os.environ, **model_env(steps), "PYTHONPATH": str(ROOT)}
    out = tmp_path / "killed"
    proc = chrysalis(out, env, tmp_path)
    db = out / LEDGER_NAME
    deadline = time.monotonic() + 300
    while done_items(db) < 2 * BATCH:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
        assert time.monotonic() < deadline, "the genesis made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished_at_kill = done_items(db)
    assert 2 * BATCH <= finished_at_kill < SIZE, "the kill must land mid-run"
    assert finished_at_kill % BATCH == 0  # whole batches only
    assert not (out / "provenance.json").exists()

    rerun = chrysalis(out, env, tmp_path)
    output, _ = rerun.communicate(timeout=600)
    text = output.decode()
    assert rerun.returncode == 0, text
    assert f"generated {SIZE - finished_at_kill}, already done {finished_at_kill}" in text

    reference = run_genesis(
        load_table(EXAMPLE_TABLE),
        SIZE,
        "kill-me",
        tmp_path / "straight",
        models=steps,
        batch_size=BATCH,
        sheet_size=0,
        progress=False,
        gates=GatesSettings(),  # the CLI's default [gates]: they decide which items are rerolled
    )
    assert f"provenance hash {reference.provenance_sha256}" in " ".join(text.split())
    resumed = (out / "provenance.json").read_text()
    assert resumed == (tmp_path / "straight" / "provenance.json").read_text()
    for item in range(SIZE):
        assert (out / "images" / f"{item}.png").read_bytes() == (
            tmp_path / "straight" / "images" / f"{item}.png"
        ).read_bytes()
