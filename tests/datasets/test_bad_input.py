"""Every bad dataset is refused through the CLI with one error naming each bad file (and line) and its fix, exit 1,
never a traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.datasets import DatasetError, load_dataset
from tests.datasets.conftest import add_line, sprite_png, write_dataset


def _empty(folder: Path) -> None:
    for png in (folder / "images").iterdir():
        png.unlink()
    (folder / "labels.jsonl").write_text("\n")


def _unknown_value(folder: Path) -> None:
    (folder / "images/0100.png").write_bytes(sprite_png(0))
    add_line(folder, {"file": "images/0100.png", "traits": {"mood": "sleepy", "element": "fire"}})


def _missing_trait(folder: Path) -> None:
    (folder / "images/0100.png").write_bytes(sprite_png(0))
    add_line(folder, {"file": "images/0100.png", "traits": {"mood": "serene"}})


def _corrupt(folder: Path) -> None:
    (folder / "images/0002.png").write_bytes(sprite_png(2)[:60])


def _mismatched(folder: Path) -> None:
    (folder / "images/0003.png").write_bytes(sprite_png(3, size=16))


def _outside(folder: Path) -> None:
    (folder.parent / "stray.png").write_bytes(sprite_png(0))
    add_line(folder, {"file": "../stray.png", "traits": {"mood": "serene", "element": "fire"}})


def _symlink_out(folder: Path) -> None:
    (folder.parent / "stray.png").write_bytes(sprite_png(0))
    os.symlink(folder.parent / "stray.png", folder / "images/link.png")
    add_line(folder, {"file": "images/link.png", "traits": {"mood": "serene", "element": "fire"}})


def _duplicate(folder: Path) -> None:
    add_line(folder, {"file": "images/0001.png", "traits": {"mood": "serene", "element": "fire"}})


def _unlisted(folder: Path) -> None:
    (folder / "images/extra.png").write_bytes(sprite_png(0))


def _grey(folder: Path) -> None:
    (folder / "images/0001.png").write_bytes(sprite_png(1, mode="L"))


def _not_json(folder: Path) -> None:
    with open(folder / "labels.jsonl", "a") as fh:
        fh.write("{file: nope}\n")


def _mixed(folder: Path) -> None:
    (folder / "images/0100.png").write_bytes(sprite_png(0))
    add_line(folder, {"file": "images/0100.png", "caption": "a small blue flame"})


CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "empty": (_empty, ["labels.jsonl: the dataset is empty (no items); add at least one line"]),
    "unknown trait value": (_unknown_value, ['labels.jsonl:7: unknown mood "sleepy"; use one of: serene, radiant',
                                             "--traits FILE"]),
    "missing trait": (_missing_trait, ["labels.jsonl:7: trait 'element' is missing; give it one of: fire"]),
    "corrupt png": (_corrupt, ["images/0002.png: not a readable image", "re-export it as PNG"]),
    "mismatched resolution": (_mismatched, ["images/0003.png: 16x16 pixels, but images/0000.png is 32x32",
                                            "every image must have the same size"]),
    "file outside dir": (_outside, ['labels.jsonl:7: file "../stray.png" leaves the dataset folder (..)']),
    "symlink out": (_symlink_out, ["labels.jsonl:7: images/link.png is a link that leads out of the dataset folder"]),
    "duplicate listing": (_duplicate, ["labels.jsonl:7: images/0001.png is listed twice (also on line 2)"]),
    "unlisted image": (_unlisted, ["images/extra.png: not listed in labels.jsonl; add a line for it or remove"]),
    "grey image": (_grey, ["images/0001.png: image mode L; accepted modes are RGB, RGBA and P"]),
    "not json": (_not_json, ["labels.jsonl:7: not JSON"]),
    "mixed labels": (_mixed, ["lines mix traits (first on line 1) and captions (first on line 7)"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_is_named_with_its_fix(case: str, chrysalis, folder: Path) -> None:
    breaks, expected = CASES[case]
    breaks(folder)
    result = chrysalis("dataset", "add", str(folder))
    assert result.code == 1, result.text
    assert result.text.startswith("error: dataset ") and "hint: fix each file or line" in result.text
    for phrase in expected:
        assert phrase in result.text, result.text
    assert "Traceback" not in result.text


def test_every_problem_is_listed_up_to_twenty(folder: Path) -> None:
    for k in range(25):
        (folder / f"images/x{k:02d}.png").write_bytes(b"junk")
    (folder / "images/0001.png").write_bytes(b"junk")
    with pytest.raises(DatasetError) as caught:
        load_dataset(folder)
    assert len(caught.value.problems) == 26
    assert "has 26 problems" in caught.value.message and "... and 6 more" in caught.value.message


def test_resolution_option_and_traits_file(chrysalis, tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "ds", n=2)
    wrong = chrysalis("dataset", "add", str(folder), "--resolution", "64")
    assert wrong.code == 1 and "32x32 pixels, not 64x64 (--resolution); resize it" in wrong.text
    traits = tmp_path / "traits.toml"
    traits.write_text('mood = ["serene", "radiant"]\n')
    strict = chrysalis("dataset", "add", str(folder), "--traits", str(traits))
    assert strict.code == 1 and "unknown trait 'element'; the model knows mood" in strict.text
    traits.write_text('mood = ["serene", "radiant"]\nelement = ["fire", "water"]\n')
    assert chrysalis("dataset", "add", str(folder), "--traits", str(traits), "--resolution", "32").code == 0
    traits.write_text("mood = 3\n")
    bad = chrysalis("dataset", "add", str(folder), "--traits", str(traits))
    assert bad.code == 1 and "trait 'mood' must list distinct non-empty strings" in bad.text


def test_missing_folder_and_labels(chrysalis, tmp_path: Path) -> None:
    gone = chrysalis("dataset", "add", str(tmp_path / "nope"))
    assert gone.code == 1 and "does not exist" in gone.text and "hint:" in gone.text
    (tmp_path / "bare").mkdir()
    bare = chrysalis("dataset", "add", str(tmp_path / "bare"))
    assert bare.code == 1 and "has no labels.jsonl or lore.jsonl" in bare.text


def test_captions_and_lore_checks(tmp_path: Path) -> None:
    folder = tmp_path / "captioned"
    (folder / "img").mkdir(parents=True)
    (folder / "img/a.png").write_bytes(sprite_png(0))
    (folder / "img/b.png").write_bytes(sprite_png(1))
    lines = [{"file": "img/a.png", "caption": "a calm flame"}, {"file": "img/b.png", "caption": " "}]
    (folder / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(DatasetError, match='labels.jsonl:2: "caption" must be non-empty text'):
        load_dataset(folder)
    lines[1]["caption"] = "a sea sprite"
    (folder / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = load_dataset(folder)
    assert (
        ds.conditioning == "caption"
        and ds.counts() == {"caption": 2}
        and ds.items[0].label == {"caption": "a calm flame"}
    )

    lore = tmp_path / "lore"
    lore.mkdir()
    good = {"traits": {"mood": "serene", "element": "fire"}, "lore": "We sail. We rest."}
    rows = [
        good,
        good,
        {**good, "lore": "x" * 2001},
        {"traits": {"mood": "serene", "element": "ice"}, "lore": "y"},
    ]
    (lore / "lore.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(lore)
    text = caught.value.message
    assert "lore.jsonl:2: the same traits and lore as line 1" in text
    assert "lore.jsonl:3: lore is 2,001 characters; shorten it to at most 2,000" in text
    assert 'lore.jsonl:4: unknown element "ice"' in text
