"""The committed example datasets: they load, their roots are pinned here (drift is caught), the neon images
score as neon, and the script that wrote them writes the same bytes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from agent.datasets import load_dataset
from agent.generate.sprites.conditioning import class_traits
from agent.generate.sprites.dataset import make_dataset
from agent.generate.sprites.quality import neon_adherence

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "finetune"
NEON_ROOT = "248e10574c5463fd6f8983dc29df7b78c7dc1537b990caaefbc073acdeaf1228"
LORE_ROOT = "5fb511d6ff3eb827fa87f1800bb2da57b13a9c3aa58f80ddca9fca262d77ff43"
NEON_CID = "bafybeigvwpme2ypmtilv5x7s6pkzc5d6o672ipjyuluh5fbteywnzvfcam"
LORE_CID = "bafybeie2kkrr5vpnmncfgej2zlr2dadu5ewaetjsvbpqroj46r27nua7iy"


def _script():  # type: ignore[no-untyped-def]
    path = EXAMPLES.parents[1] / "scripts" / "make_example_datasets.py"
    spec = importlib.util.spec_from_file_location("make_example_datasets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_neon_set_loads_with_its_pinned_root_and_is_neon() -> None:
    ds = load_dataset(EXAMPLES / "neon", resolution=32)
    assert ds.root == NEON_ROOT and len(ds.items) == 256
    assert set(ds.counts().values()) == {64}
    total = sum((EXAMPLES / "neon" / i.name).stat().st_size for i in ds.items)
    assert total < 400_000
    scores = [neon_adherence(ds.items[k].load_rgb(ds), ds.items[k].traits["mood"]) for k in range(0, 256, 17)]
    assert min(scores) == 1.0
    shipped, labels = make_dataset(1, seed=0)  # what the shipped model learnt: no neon colour but the eyes'
    moods = [class_traits(int(y))["mood"] for y in labels]
    assert max(neon_adherence(img, m) for img, m in zip(shipped, moods, strict=True)) < 0.15


def test_the_lore_set_loads_with_its_pinned_root() -> None:
    ds = load_dataset(EXAMPLES / "lore")
    assert ds.root == LORE_ROOT and ds.kind == "lore" and len(ds.items) == 100
    assert set(ds.counts()) == {f"element={e}" for e in ("fire", "water", "earth", "air")} | {
        f"mood={m}" for m in ("serene", "radiant", "fierce", "gloomy")
    }
    lores = [item.lore or "" for item in ds.items]
    assert len(set(lores)) == 100 and all(text.count(". ") == 1 and text.endswith(".") for text in lores)


def test_the_public_cids_are_pinned(chrysalis) -> None:
    for folder, root, cid in (("neon", NEON_ROOT, NEON_CID), ("lore", LORE_ROOT, LORE_CID)):
        out = json.loads(chrysalis("dataset", "add", str(EXAMPLES / folder), "--json").out)
        assert (out["root"], out["cid"]) == (root, cid)


def test_the_script_writes_the_same_bytes() -> None:
    script = _script()
    files = script.neon_files()
    again = script.neon_files()
    assert all(files[n] == again[n] for n in list(files)[:8])
    assert files["labels.jsonl"] == (EXAMPLES / "neon" / "labels.jsonl").read_bytes()
    for name in ("images/serene-fire-00.png", "images/gloomy-air-15.png", "images/fierce-water-07.png"):
        assert files[name] == (EXAMPLES / "neon" / name).read_bytes()
    assert script.lore_lines() == (EXAMPLES / "lore" / "lore.jsonl").read_bytes()
