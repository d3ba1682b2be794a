"""Small dataset folders built from the procedural sprites, and the CLI with a data dir of its own."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agent.generate.sprites.dataset import make_sprite, sprite_rng
from tests.support.cli import CliResult, invoke_cli

CLASSES = [("serene", "fire"), ("radiant", "water"), ("fierce", "earth"), ("gloomy", "air")]


def sprite_png(k: int, size: int = 32, mode: str = "RGB") -> bytes:
    """Sprite ``k`` (class k % 4) as PNG bytes, resized (nearest) to ``size`` and converted to ``mode``."""
    mood, element = CLASSES[k % 4]
    img = Image.fromarray(make_sprite(mood, element, sprite_rng(k % 4, k, seed=7)))
    if size != 32:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(folder: Path, n: int = 6, *, size: int = 32) -> Path:
    """``n`` labelled sprites in ``folder/images`` with ``labels.jsonl``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n):
        name = f"images/{k:04d}.png"
        (folder / name).write_bytes(sprite_png(k, size))
        mood, element = CLASSES[k % 4]
        lines.append(json.dumps({"file": name, "traits": {"mood": mood, "element": element}}))
    (folder / "labels.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def add_line(folder: Path, obj: dict[str, Any]) -> None:
    with open(folder / "labels.jsonl", "a") as fh:
        fh.write(json.dumps(obj) + "\n")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own with ``data_dir`` (records, the embedded IPFS repo) under it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    monkeypatch.setenv("CHRYSALIS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CHRYSALIS_IPFS__REPO", raising=False)
    return tmp_path / "data"


@pytest.fixture
def chrysalis(capsys: pytest.CaptureFixture[str], data_dir: Path) -> Callable[..., CliResult]:
    return lambda *args: invoke_cli(capsys, *args)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


def rgb(n: int = 1) -> np.ndarray:
    return np.zeros((n, 32, 32, 3), np.uint8)
