"""A dataset's root: stable across runs and processes, changed by any changed, added or removed image; public mode
pins it to the embedded repo (fetched back, the root recomputes), private mode salts it and proves single items."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.datasets import load_dataset
from agent.datasets.model import MANIFEST_FILE
from agent.datasets.publish import fetch_dataset, pin_dataset, recompute_root
from agent.errors import IntegrityError
from agent.ipfs.repo import IpfsRepo
from tests.datasets.conftest import add_line, sprite_png, write_dataset


def test_root_is_stable_across_runs_and_in_another_process(folder: Path) -> None:
    first = load_dataset(folder)
    assert load_dataset(folder).root == first.root and len(first.root) == 64
    assert [i.name for i in first.items] == sorted(i.name for i in first.items)
    assert [i.index for i in first.items] == list(range(6))
    code = f"import pathlib, agent.datasets as d; print(d.load_dataset(pathlib.Path({str(folder)!r})).root)"
    repo_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root, env=env
    )
    assert other.stdout.strip() == first.root
    assert first.counts() == {"element=air": 1, "element=earth": 1, "element=fire": 2, "element=water": 2,
                              "mood=fierce": 1, "mood=gloomy": 1, "mood=radiant": 2, "mood=serene": 2}  # fmt: skip


def test_a_changed_added_or_removed_image_or_label_changes_the_root(folder: Path) -> None:
    roots = {load_dataset(folder).root}
    (folder / "images/0003.png").write_bytes(sprite_png(9))  # changed pixels
    roots.add(load_dataset(folder).root)
    (folder / "images/0100.png").write_bytes(sprite_png(1))  # added
    add_line(folder, {"file": "images/0100.png", "traits": {"mood": "serene", "element": "air"}})
    roots.add(load_dataset(folder).root)
    (folder / "images/0004.png").unlink()  # removed
    lines = [line for line in (folder / "labels.jsonl").read_text().splitlines() if "0004" not in line]
    (folder / "labels.jsonl").write_text("\n".join(lines) + "\n")
    roots.add(load_dataset(folder).root)
    relabelled = [line.replace('"fire"', '"air"', 1) if "0000" in line else line for line in lines]
    (folder / "labels.jsonl").write_text("\n".join(relabelled) + "\n")
    roots.add(load_dataset(folder).root)
    assert len(roots) == 5


def test_images_read_back_as_rgb_whatever_the_accepted_mode(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "ds", n=3)
    (folder / "images/0001.png").write_bytes(sprite_png(1, mode="RGBA"))
    (folder / "images/0002.png").write_bytes(sprite_png(2, mode="P"))
    ds = load_dataset(folder, resolution=32)
    for item in ds.items:
        img = item.load_rgb(ds)
        assert img.shape == (32, 32, 3) and img.dtype.name == "uint8"


def test_public_pin_fetched_back_recomputes_the_root(folder: Path, tmp_path: Path) -> None:
    ds = load_dataset(folder)
    repo = IpfsRepo(tmp_path / "ipfs", sync=False)
    cid = pin_dataset(repo, ds)
    assert pin_dataset(repo, ds) == cid and repo.is_pinned(cid)
    files = fetch_dataset(IpfsRepo(tmp_path / "ipfs", sync=False), cid)
    assert sorted(files) == sorted(["labels.jsonl", MANIFEST_FILE, *(i.name for i in ds.items)])
    manifest = json.loads(files[MANIFEST_FILE])
    assert recompute_root(manifest, files) == ds.root == manifest["root"]
    tampered = {**files, "images/0002.png": sprite_png(11)}
    with pytest.raises(IntegrityError, match="images/0002.png has sha256"):
        recompute_root(manifest, tampered)
    forged = {**manifest, "root": "ab" * 32}
    with pytest.raises(IntegrityError, match="the manifest says"):
        recompute_root(forged, files)
    relabelled = {**files, "labels.jsonl": files["labels.jsonl"].replace(b'"fire"', b'"air"', 1)}
    with pytest.raises(IntegrityError, match="labels.jsonl labels"):
        recompute_root(manifest, relabelled)


def test_add_public_is_idempotent_and_shows_its_record(chrysalis, folder: Path, data_dir: Path) -> None:
    first = chrysalis("dataset", "add", str(folder), "--json")
    assert first.code == 0, first.text
    again = chrysalis("dataset", "add", str(folder), "--json")
    a, b = json.loads(first.out), json.loads(again.out)
    assert a == b and a["mode"] == "public" and a["n"] == 6 and a["cid"].startswith("bafy")
    assert a["root"] == load_dataset(folder).root
    shown = chrysalis("dataset", "show", a["root"][:10])
    assert (
        shown.code == 0 and a["root"] in shown.text and a["cid"] in shown.text and "mood=serene" in shown.text
    )
    text = chrysalis("dataset", "add", str(folder))
    assert text.code == 0 and f"root {a['root']}" in text.text and "element=fire │ 2" in text.text
    listed = chrysalis("dataset", "list", "--json")
    assert [r["root"] for r in json.loads(listed.out)] == [a["root"]]
    missing = chrysalis("dataset", "show", "deadbeef")
    assert missing.code == 1 and "error: no dataset deadbeef" in missing.text and "hint:" in missing.text


def test_private_add_salts_reuses_its_salts_and_proves_items(
    chrysalis, folder: Path, data_dir: Path, tmp_path
):
    public_root = load_dataset(folder).root
    first = json.loads(chrysalis("dataset", "add", str(folder), "--private", "--json").out)
    root = first["root"]
    assert (
        first["mode"] == "private" and first["cid"] is None and root != public_root and "salts" not in first
    )
    record = data_dir / "datasets" / f"{root}.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and len(json.loads(record.read_text())["salts"]) == 6
    assert not (data_dir / "ipfs").exists()  # nothing published
    assert json.loads(chrysalis("dataset", "add", str(folder), "--private", "--json").out)["root"] == root

    proof_file = tmp_path / "proof.json"
    made = chrysalis("dataset", "prove", "images/0002.png", "--dataset", root, "--out", str(proof_file))
    assert made.code == 0, made.text
    proof = json.loads(proof_file.read_text())
    assert proof["root"] == root and proof["index"] == 2 and proof["n"] == 6 and len(proof["salt"]) == 64
    ok = chrysalis("dataset", "check-proof", str(proof_file), "--file", str(folder / "images/0002.png"))
    assert ok.code == 0 and "valid" in ok.text, ok.text
    wrong_file = chrysalis(
        "dataset", "check-proof", str(proof_file), "--file", str(folder / "images/0001.png")
    )
    assert wrong_file.code == 1 and "invalid" in wrong_file.text
    for change in (
        lambda p: p["item"].__setitem__("name", "images/0001.png"),  # a wrong item
        lambda p: p.__setitem__("salt", "00" * 32),  # a wrong salt
        lambda p: p["proof"]["path"][0].__setitem__("sibling", "11" * 32),  # a wrong sibling
    ):
        bad = json.loads(proof_file.read_text())
        change(bad)
        proof_file.write_text(json.dumps(bad))
        result = chrysalis("dataset", "check-proof", str(proof_file))
        assert result.code == 1 and "invalid:" in result.text and "Traceback" not in result.text
    proof_file.write_text("{not json")
    junk = chrysalis("dataset", "check-proof", str(proof_file))
    assert junk.code == 3 and "error: cannot read proof" in junk.text and "hint:" in junk.text
    proof_file.write_text("{}")
    assert chrysalis("dataset", "check-proof", str(proof_file)).code == 3

    nope = chrysalis("dataset", "prove", "images/0009.png", "--dataset", root)
    assert nope.code == 1 and "has no item 'images/0009.png'" in nope.text and "did you mean" in nope.text

    (folder / "images/0005.png").write_bytes(sprite_png(13))  # one item changes: a new root, other salts kept
    changed = json.loads(chrysalis("dataset", "add", str(folder), "--private", "--json").out)
    salts = {
        r: json.loads((data_dir / "datasets" / f"{r}.json").read_text())["salts"]
        for r in (root, changed["root"])
    }
    assert changed["root"] != root and salts[root][:5] == salts[changed["root"]][:5]
    assert salts[root][5] != salts[changed["root"]][5]
