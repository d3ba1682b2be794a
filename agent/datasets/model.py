"""Datasets you can commit to: a folder of images with their labels, or of lore, checked item by item.

A dataset is a folder ``DIR``:

- **Image dataset**: ``DIR/labels.jsonl``, one JSON object per line, ``{"file": "images/0001.png", "traits":
  {"mood": "serene", "element": "fire"}}`` (class-conditional) or ``{"file": "images/0001.png", "caption": "a red
  fox, flat colours"}`` (text-conditioned); every line of one file uses the same kind of label.
- **Lore dataset**: ``DIR/lore.jsonl``, lines ``{"traits": {...}, "lore": "Two sentences of lore."}``.

:func:`load_dataset` checks everything and collects every problem before it raises one :class:`DatasetError`
naming each bad file (and line) and its fix:

- labels: one JSON object per line (blank lines are skipped; line numbers count them); ``file`` a relative POSIX
  path inside ``DIR`` (no ``..``, not absolute, no ``./`` or ``\\``, no symlink leading out of ``DIR``), each
  listed once; every image file under ``DIR`` (``.png .jpg .jpeg .webp .gif .bmp``, hidden folders aside) listed;
  traits: exactly the known trait names, each with a known value (default: the shipped sprite model's ``mood``
  and ``element``, :mod:`agent.generate.sprites.conditioning`; ``--traits FILE`` for another model); a caption:
  non-empty text of at most 1,000 characters; lore: non-empty text of at most 2,000 characters.
- images: decodable by Pillow; mode ``RGB``, ``RGBA`` or ``P`` (palette), read as RGB (alpha dropped); all the
  same size, between 8 and 4096 pixels a side, and ``resolution x resolution`` when a resolution is asked for.

Order: :attr:`Dataset.items` are image items sorted by name (Python string order, i.e. by code point) and lore
items in line order; that order is the data order (indices 0..n-1) trainers follow and the Merkle tree's leaf
order (:mod:`agent.datasets.merkle`). Same folder -> same items, same digests, same root, on every machine: only
file bytes and the labels' values enter them (not timestamps, not file-system order).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from agent.datasets.merkle import leaf_hash, merkle_root
from agent.domain import canonical_json, sha256_hex
from agent.errors import PermanentError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

LABELS_FILE = "labels.jsonl"
LORE_FILE = "lore.jsonl"
MANIFEST_FILE = "chrysalis-dataset.json"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
ACCEPTED_MODES = ("RGB", "RGBA", "P")
MIN_SIZE, MAX_SIZE = 8, 4096
MAX_CAPTION = 1000
MAX_LORE = 2000
MAX_LISTED = 20
"""Problems spelt out in one :class:`DatasetError`; the rest are counted."""

Kind = Literal["image", "lore"]


class DatasetError(PermanentError, ValueError):
    """A dataset folder (or a traits file) that cannot be used as it is; ``problems`` lists each bad file/line."""

    def __init__(self, message: str, *, hint: str | None = None, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message, hint=hint)


def _fail(path: Path, problems: Sequence[str]) -> DatasetError:
    shown = [f"  - {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        shown.append(f"  ... and {len(problems) - MAX_LISTED} more")
    s = "" if len(problems) == 1 else "s"
    return DatasetError(
        f"dataset {path} has {len(problems)} problem{s}:\n" + "\n".join(shown),
        hint="fix each file or line named above (each says how), then add the dataset again",
        problems=problems,
    )


@dataclass(frozen=True)
class Item:
    """One item of a dataset (see the module docstring for ``name`` and ``sha256``)."""

    index: int
    name: str
    sha256: str
    traits: dict[str, str] | None = None
    caption: str | None = None
    lore: str | None = None

    @property
    def label(self) -> dict[str, Any]:
        """What the commitment records as the item's label: ``{"traits": ...}`` or ``{"caption": ...}``."""
        if self.caption is not None:
            return {"caption": self.caption}
        return {"traits": dict(self.traits or {})}

    @property
    def leaf_fields(self) -> dict[str, Any]:
        """The fields its Merkle leaf hashes: ``{"name", "sha256", "label"}``."""
        return {"name": self.name, "sha256": self.sha256, "label": self.label}

    def load_rgb(self, dataset: Dataset) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB, its bytes checked against :attr:`sha256`.

        Raises:
            DatasetError: a lore item, or the file changed since the dataset was loaded.
        """
        import io

        import numpy as np
        from PIL import Image

        if dataset.kind != "image":
            raise DatasetError(f"{self.name} is a lore item, not an image", hint="read item.lore instead")
        data = (dataset.path / self.name).read_bytes()
        if sha256_hex(data) != self.sha256:
            raise DatasetError(
                f"{dataset.path / self.name} changed since the dataset was loaded (sha256 {sha256_hex(data)}, "
                f"committed {self.sha256})",
                hint="load the dataset again (its root changes with the file) or restore the file",
            )
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Dataset:
    """A checked dataset folder.

    Attributes:
        path: the folder. kind: ``image`` or ``lore``. items: in data order. root: the commitment (64 hex; salted
            with ``salts`` in private mode). salts: one per item (private mode) or None (public).
        resolution: (width, height) of every image (None for lore). conditioning: ``traits`` or ``caption``.
    """

    path: Path
    kind: Kind
    items: tuple[Item, ...]
    root: str
    salts: tuple[bytes, ...] | None = None
    resolution: tuple[int, int] | None = None
    conditioning: Literal["traits", "caption"] = "traits"
    trait_values: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def mode(self) -> Literal["public", "private"]:
        return "public" if self.salts is None else "private"

    @property
    def labels_file(self) -> str:
        return LORE_FILE if self.kind == "lore" else LABELS_FILE

    def counts(self) -> dict[str, int]:
        """Items per label value (``{"element=fire": 64, "mood=serene": 64, ...}``, sorted); captioned images are
        counted as ``{"caption": n}``."""
        counter: Counter[str] = Counter()
        for item in self.items:
            if item.traits is None:
                counter["caption"] += 1
            else:
                counter.update(f"{k}={v}" for k, v in item.traits.items())
        return dict(sorted(counter.items()))

    def leaves(self) -> list[bytes]:
        salts = self.salts or (b"",) * len(self.items)
        return [leaf_hash(item.leaf_fields, salt) for item, salt in zip(self.items, salts, strict=True)]

    def item(self, name: str) -> Item:
        """The item called ``name``.

        Raises:
            DatasetError: no such item.
        """
        for item in self.items:
            if item.name == name:
                return item
        raise DatasetError(
            f"dataset {self.root[:12]}... has no item {name!r}",
            hint=f"name an item as the dataset lists it, e.g. {self.items[0].name!r}",
        )


# -- trait vocabularies ------------------------------------------------------------------------------------------


def default_traits() -> dict[str, tuple[str, ...]]:
    """The shipped sprite model's traits: ``mood`` and ``element`` (both required)."""
    from agent.generate.sprites.conditioning import TRAITS

    return {k: tuple(v) for k, v in TRAITS.items()}


def load_traits_file(path: Path) -> dict[str, tuple[str, ...]]:
    """A ``--traits`` file: JSON or TOML (by suffix ``.toml``), a mapping trait name -> list of allowed values.

    Raises:
        DatasetError: unreadable, not a mapping of non-empty lists of distinct strings.
    """
    hint = 'write a mapping of trait name -> allowed values, e.g. {"mood": ["calm", "angry"], "element": ["fire"]}'
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read traits file {path}: {exc}", hint=hint) from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise DatasetError(f"traits file {path} is not {kind}: {exc}", hint=hint) from None
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"traits file {path} is not a non-empty mapping", hint=hint)
    out: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
            or len(set(values)) != len(values)
        ):
            raise DatasetError(
                f"traits file {path}: trait {name!r} must list distinct non-empty strings, got {values!r}",
                hint=hint,
            )
        out[str(name)] = tuple(values)
    return out


# -- loading -------------------------------------------------------------------------------------------------------


def load_dataset(
    path: Path,
    *,
    traits: Mapping[str, Sequence[str]] | None = None,
    resolution: int | None = None,
    salts: Sequence[bytes] | None = None,
) -> Dataset:
    """Check the dataset folder ``path`` and compute its commitment.

    Args:
        path: the folder (with ``labels.jsonl`` or ``lore.jsonl``).
        traits: trait name -> allowed values (default: :func:`default_traits`); every name is required.
        resolution: images must be ``resolution x resolution``.
        salts: private mode: one salt per item (in item order); the root is then the salted root.

    Raises:
        DatasetError: every problem found, each naming the file (and line) and the fix.
    """
    path = Path(path)
    vocab = {k: tuple(v) for k, v in (traits if traits is not None else default_traits()).items()}
    if not path.is_dir():
        raise DatasetError(
            f"{path} is not a folder" if path.exists() else f"dataset folder {path} does not exist",
            hint=f"name a folder holding {LABELS_FILE} (images) or {LORE_FILE} (lore)",
        )
    has_labels, has_lore = (path / LABELS_FILE).is_file(), (path / LORE_FILE).is_file()
    if has_labels and has_lore:
        raise DatasetError(
            f"{path} holds both {LABELS_FILE} and {LORE_FILE}",
            hint="put an image dataset and a lore dataset in separate folders",
        )
    if not (has_labels or has_lore):
        raise DatasetError(
            f"{path} has no {LABELS_FILE} or {LORE_FILE}",
            hint=f'write {LABELS_FILE}: one line per image, {{"file": "images/0001.png", "traits": {{...}}}} or '
            f'{{"file": ..., "caption": "..."}}; or {LORE_FILE}: {{"traits": {{...}}, "lore": "..."}} per line',
        )
    if resolution is not None and not MIN_SIZE <= resolution <= MAX_SIZE:
        raise DatasetError(
            f"resolution {resolution} is out of range",
            hint=f"use {MIN_SIZE}..{MAX_SIZE} pixels, or leave it out",
        )
    problems: list[str] = []
    if has_lore:
        items = _lore_items(path, vocab, problems)
        size = None
        conditioning: Literal["traits", "caption"] = "traits"
    else:
        items, size, conditioning = _image_items(path, vocab, resolution, problems)
    if not problems and not items:
        problems.append(
            f"{path / (LORE_FILE if has_lore else LABELS_FILE)}: the dataset is empty (no items); "
            "add at least one line"
        )
    if problems:
        raise _fail(path, problems)
    if salts is not None:
        if len(salts) != len(items):
            raise DatasetError(
                f"{len(salts)} salts for {len(items)} items of {path}",
                hint="give one salt per item, in item order (or none, for a public dataset)",
            )
        salts = tuple(bytes(s) for s in salts)
    leaves = [leaf_hash(i.leaf_fields, s) for i, s in zip(items, salts or (b"",) * len(items), strict=True)]
    return Dataset(
        path=path,
        kind="lore" if has_lore else "image",
        items=tuple(items),
        root=merkle_root(leaves),
        salts=None if salts is None else tuple(salts),
        resolution=size,
        conditioning=conditioning,
        trait_values=vocab,
    )


def _json_lines(file: Path, problems: list[str]) -> Iterable[tuple[int, Any]]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{file}:{number}: not JSON ({exc.msg}); write one JSON object per line")


def _check_traits(where: str, value: Any, vocab: Mapping[str, Sequence[str]], problems: list[str]) -> bool:
    names = ", ".join(vocab)
    if not isinstance(value, dict):
        problems.append(f'{where}: "traits" must be an object of {names}, got {json.dumps(value)}')
        return False
    ok = True
    for name, allowed in vocab.items():
        if name not in value:
            problems.append(f"{where}: trait {name!r} is missing; give it one of: {', '.join(allowed)}")
            ok = False
        elif value[name] not in allowed:
            problems.append(
                f"{where}: unknown {name} {json.dumps(value[name])}; use one of: {', '.join(allowed)} "
                "(or pass --traits FILE listing this model's values)"
            )
            ok = False
    for name in sorted(set(value) - set(vocab)):
        problems.append(
            f"{where}: unknown trait {name!r}; the model knows {names} (remove it, or pass --traits FILE)"
        )
        ok = False
    return ok


def _lore_items(root: Path, vocab: Mapping[str, Sequence[str]], problems: list[str]) -> list[Item]:
    file = root / LORE_FILE
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, obj in _json_lines(file, problems):
        where = f"{file}:{number}"
        if not isinstance(obj, dict) or set(obj) != {"traits", "lore"}:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            problems.append(f'{where}: each line must be {{"traits": {{...}}, "lore": "..."}}, got {got}')
            continue
        ok = _check_traits(where, obj["traits"], vocab, problems)
        lore = obj["lore"]
        if not isinstance(lore, str) or not lore.strip():
            problems.append(f'{where}: "lore" must be non-empty text')
            ok = False
        elif len(lore) > MAX_LORE:
            problems.append(f"{where}: lore is {len(lore):,} characters; shorten it to at most {MAX_LORE:,}")
            ok = False
        if not ok:
            continue
        digest = sha256_hex(canonical_json({"lore": lore, "traits": obj["traits"]}))
        if digest in seen:
            problems.append(f"{where}: the same traits and lore as line {seen[digest]}; remove one of them")
            continue
        seen[digest] = number
        items.append(Item(len(items), f"{LORE_FILE}#{number}", digest, traits=dict(obj["traits"]), lore=lore))
    return items


def _bad_name(name: Any) -> str | None:
    """Why ``name`` is not a usable relative POSIX path (None: it is)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty relative path such as images/0001.png"
    if "\\" in name or "\0" in name:
        return "must use / between folders (no backslashes)"
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "is an absolute path; give it relative to the dataset folder"
    parts = name.split("/")
    if ".." in parts:
        return "leaves the dataset folder (..); keep every image inside it"
    if any(p in ("", ".") for p in parts):
        return "is not a plain relative path (no ./, // or trailing /); write it as images/0001.png"
    return None


def _image_items(
    root: Path, vocab: Mapping[str, Sequence[str]], resolution: int | None, problems: list[str]
) -> tuple[list[Item], tuple[int, int] | None, Literal["traits", "caption"]]:
    file = root / LABELS_FILE
    real_root = root.resolve()
    listed: dict[str, tuple[int, dict[str, Any]]] = {}
    kinds: dict[str, int] = {}
    for number, obj in _json_lines(file, problems):
        where = f"{file}:{number}"
        if (
            not isinstance(obj, dict)
            or "file" not in obj
            or len(set(obj) & {"traits", "caption"}) != 1
            or (set(obj) - {"file", "traits", "caption"})
        ):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            problems.append(
                f'{where}: each line must be {{"file": ..., "traits": {{...}}}} or {{"file": ..., "caption": '
                f'"..."}}, got {got}'
            )
            continue
        name = obj["file"]
        why = _bad_name(name)
        if why is not None:
            problems.append(f"{where}: file {json.dumps(name)} {why}")
            continue
        if name in listed:
            problems.append(
                f"{where}: {name} is listed twice (also on line {listed[name][0]}); keep one line"
            )
            continue
        target = root / name
        if not str(target.resolve()).startswith(str(real_root) + os.sep):
            problems.append(
                f"{where}: {name} is a link that leads out of the dataset folder; copy the image in"
            )
            continue
        if not target.is_file():
            problems.append(f"{where}: {name} does not exist in {root}; add the image or remove the line")
            continue
        kind = "traits" if "traits" in obj else "caption"
        kinds.setdefault(kind, number)
        if kind == "traits":
            if not _check_traits(where, obj["traits"], vocab, problems):
                continue
        else:
            caption = obj["caption"]
            if not isinstance(caption, str) or not caption.strip():
                problems.append(f'{where}: "caption" must be non-empty text')
                continue
            if len(caption) > MAX_CAPTION:
                problems.append(
                    f"{where}: caption is {len(caption):,} characters; shorten it to at most {MAX_CAPTION:,}"
                )
                continue
        listed[name] = (number, obj)
    if len(kinds) > 1:
        problems.append(
            f"{file}: lines mix traits (first on line {kinds['traits']}) and captions (first on line "
            f"{kinds['caption']}); a dataset is either class-conditional or text-conditioned"
        )
    for unlisted in _unlisted_images(root, set(listed)):
        problems.append(
            f"{root / unlisted}: not listed in {LABELS_FILE}; add a line for it or remove the file"
        )

    sizes: dict[tuple[int, int], str] = {}
    items: list[Item] = []
    for name in sorted(listed):
        number, obj = listed[name]
        checked = _check_image(root / name, f"{file}:{number}", resolution, problems)
        if checked is None:
            continue
        digest, size = checked
        sizes.setdefault(size, name)
        items.append(
            Item(
                0,
                name,
                digest,
                traits=dict(obj["traits"]) if "traits" in obj else None,
                caption=obj.get("caption"),
            )
        )
    if len(sizes) > 1 and resolution is None:
        (first, first_name), *others = sizes.items()
        for size, name in others:
            problems.append(
                f"{root / name}: {size[0]}x{size[1]} pixels, but {first_name} is {first[0]}x{first[1]}; every "
                f"image must have the same size (resize them, or pass --resolution N to say which is meant)"
            )
    items = [Item(i, it.name, it.sha256, it.traits, it.caption) for i, it in enumerate(items)]
    size_out = next(iter(sizes)) if len(sizes) == 1 else None
    return items, size_out, "caption" if "caption" in kinds else "traits"


def _unlisted_images(root: Path, listed: set[str]) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if Path(f).suffix.lower() in IMAGE_SUFFIXES:
                rel = (Path(folder) / f).relative_to(root).as_posix()
                if rel not in listed:
                    found.append(rel)
    return sorted(found)


def _check_image(
    path: Path, where: str, resolution: int | None, problems: list[str]
) -> tuple[str, tuple[int, int]] | None:
    """sha256 and size of a good image, else None (with the problem recorded)."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                size, mode = im.size, im.mode
                if not (MIN_SIZE <= min(size) and max(size) <= MAX_SIZE):
                    problems.append(
                        f"{path}: {size[0]}x{size[1]} pixels; images must be {MIN_SIZE}..{MAX_SIZE} pixels a side"
                    )
                    return None
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:  # fmt: skip
        problems.append(f"{path}: not a readable image ({exc}); re-export it as PNG (listed at {where})")
        return None
    if mode not in ACCEPTED_MODES:
        problems.append(
            f"{path}: image mode {mode}; accepted modes are RGB, RGBA and P (palette), read as RGB: convert it "
            "to RGB"
        )
        return None
    if resolution is not None and size != (resolution, resolution):
        problems.append(
            f"{path}: {size[0]}x{size[1]} pixels, not {resolution}x{resolution} (--resolution); resize it"
        )
        return None
    return sha256_hex(data), size
