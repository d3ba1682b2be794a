"""Local records of added datasets: ``<data_dir>/datasets/<root>.json``.

A record holds ``kind``, ``mode`` (``public``/``private``), ``root``, ``cid`` (public mode: the pinned UnixFS
directory; else null), ``n``, ``resolution``, ``counts``, ``source`` (the folder's absolute path when it was added)
and ``items`` (``name``, ``sha256``, ``label`` in data order). It is canonical JSON (sorted keys) plus a newline, so
adding the same dataset again rewrites the same bytes.

Private mode: the record also holds ``salts`` (hex, one per item). **The salts are secret**: anyone holding them can
test guesses of undisclosed items against the root. The file is written with mode 0600 and never published;
:func:`agent.datasets.cli` ``prove`` discloses one item's salt at a time.

Salt reuse: adding a private dataset again reuses the salt of every item whose ``(name, sha256)`` was recorded for
the same folder (same absolute path) before, so an unchanged folder keeps its root; a new or changed item gets a
fresh salt.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.datasets.merkle import leaf_hash, merkle_proof, merkle_root, new_salt, verify_proof
from agent.datasets.model import Dataset, DatasetError, load_dataset
from agent.domain import canonical_json, sha256_hex
from agent.errors import IntegrityError, NotFoundError
from agent.fsutil import write_private

if TYPE_CHECKING:  # pragma: no cover
    from agent.ipfs.repo import IpfsRepo

RECORD_VERSION = 1
PROOF_FORMAT = "chrysalis-dataset-proof/v1"


def records_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "datasets"


def record_of(dataset: Dataset, *, cid: str | None = None) -> dict[str, Any]:
    """The record of ``dataset`` (see the module docstring)."""
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "kind": dataset.kind,
        "mode": dataset.mode,
        "root": dataset.root,
        "cid": cid,
        "n": len(dataset.items),
        "resolution": list(dataset.resolution) if dataset.resolution else None,
        "conditioning": dataset.conditioning,
        "counts": dataset.counts(),
        "source": str(dataset.path.resolve()),
        "items": [item.leaf_fields for item in dataset.items],
    }
    if dataset.salts is not None:
        record["salts"] = [s.hex() for s in dataset.salts]
    return record


def save_record(data_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``<data_dir>/datasets/<root>.json`` (0600 when it holds salts); returns the path."""
    path = records_dir(data_dir) / f"{record['root']}.json"
    text = canonical_json(record).decode() + "\n"
    if "salts" in record:
        write_private(path, text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(
            f"dataset record {path} is unreadable: {exc}",
            hint="remove it and add the dataset again (chrysalis dataset add DIR)",
        ) from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise DatasetError(
            f"dataset record {path} is not a version {RECORD_VERSION} record",
            hint="remove it and add the dataset again (chrysalis dataset add DIR)",
        )
    return record


def list_records(data_dir: Path) -> list[dict[str, Any]]:
    """Every record, by root."""
    folder = records_dir(data_dir)
    if not folder.is_dir():
        return []
    return [_read(p) for p in sorted(folder.glob("*.json"))]


def load_record(data_dir: Path, root: str) -> dict[str, Any]:
    """The record of ``root`` (a full root, or a prefix of at least 8 hex digits naming one record).

    Raises:
        NotFoundError: none, or a prefix naming several.
    """
    root = root.strip().lower().removeprefix("0x")
    folder = records_dir(data_dir)
    exact = folder / f"{root}.json"
    if len(root) == 64 and exact.is_file():
        return _read(exact)
    matches = sorted(folder.glob(f"{root}*.json")) if len(root) >= 8 and folder.is_dir() else []
    if len(matches) == 1:
        return _read(matches[0])
    if len(matches) > 1:
        raise NotFoundError(
            f"{root} names {len(matches)} datasets",
            hint="give more digits of the root (chrysalis dataset list shows them)",
        )
    raise NotFoundError(
        f"no dataset {root} in {folder}",
        hint="add it first (chrysalis dataset add DIR), or see `chrysalis dataset list`; a root prefix needs at "
        "least 8 hex digits",
    )


def previous_salts(data_dir: Path, source: Path) -> dict[tuple[str, str], bytes]:
    """``(name, sha256) -> salt`` of every private record made from the folder ``source`` (when several records hold
    an item, the first by root wins, so the choice is the same every time)."""
    where = str(Path(source).resolve())
    salts: dict[tuple[str, str], bytes] = {}
    for record in list_records(data_dir):
        if record.get("mode") != "private" or record.get("source") != where:
            continue
        for item, salt in zip(record["items"], record.get("salts", []), strict=False):
            salts.setdefault((item["name"], item["sha256"]), bytes.fromhex(salt))
    return salts


# -- the commands' work ----------------------------------------------------------------------------------------


def add_dataset(
    path: Path,
    *,
    data_dir: Path,
    repo: IpfsRepo | None = None,
    private: bool = False,
    traits: Mapping[str, Sequence[str]] | None = None,
    resolution: int | None = None,
) -> tuple[Dataset, dict[str, Any], Path]:
    """Check the folder ``path``, commit to it and record it: ``(dataset, record, record path)``.

    Public mode pins it into ``repo`` (required) and records the directory CID; private mode salts every leaf
    (reusing the salts recorded for the same folder and item, see the module docstring) and publishes nothing.

    Raises:
        DatasetError: the folder's problems (see :func:`agent.datasets.model.load_dataset`).
    """
    dataset = load_dataset(path, traits=traits, resolution=resolution)
    cid = None
    if private:
        known = previous_salts(data_dir, path)
        salts = [known.get((i.name, i.sha256)) or new_salt() for i in dataset.items]
        dataset = load_dataset(path, traits=traits, resolution=resolution, salts=salts)
    else:
        if repo is None:
            raise ValueError("public mode pins the dataset: pass the IPFS repo")
        from agent.datasets.publish import pin_dataset

        cid = str(pin_dataset(repo, dataset))
    record = record_of(dataset, cid=cid)
    return dataset, record, save_record(data_dir, record)


def prove_item(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The disclosure of item ``name`` of the recorded dataset: ``{"root", "n", "index", "item": {"name",
    "sha256", "label"}, "salt" (hex; empty for a public dataset), "proof": {"n", "index", "path"}}``.

    Raises:
        NotFoundError: no such item.
    """
    items = record["items"]
    names = [item["name"] for item in items]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        raise NotFoundError(
            f"dataset {record['root']} has no item {name!r}",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"name an item as the dataset lists it (e.g. {names[0]!r}; chrysalis dataset show ROOT lists them)",
        )
    index = names.index(name)
    salts = [bytes.fromhex(s) for s in record.get("salts", [])] or [b""] * len(items)
    leaves = [leaf_hash(item, salt) for item, salt in zip(items, salts, strict=True)]
    if merkle_root(leaves) != record["root"]:
        raise IntegrityError(
            f"the record of dataset {record['root']} does not give its root",
            hint="the record was edited: add the dataset again (chrysalis dataset add DIR)",
        )
    return {
        "format": PROOF_FORMAT,
        "root": record["root"],
        "n": len(items),
        "index": index,
        "item": dict(items[index]),
        "salt": salts[index].hex(),
        "proof": merkle_proof(leaves, index),
    }


def check_proof(doc: Any, file_bytes: bytes | None = None) -> tuple[bool, str]:
    """Whether the disclosure ``doc`` (from :func:`prove_item`) is valid, and why not.

    With ``file_bytes`` it also checks that those bytes are the item's (their sha256 is the committed one).

    Raises:
        DatasetError: ``doc`` is not a disclosure at all (missing fields, wrong types).
    """
    hint = "give the JSON file `chrysalis dataset prove ITEM --dataset ROOT --out FILE` wrote"
    if not isinstance(doc, dict) or not {"root", "n", "index", "item", "salt", "proof"} <= set(doc):
        raise DatasetError(
            "not a dataset inclusion proof (it needs root, n, index, item, salt and proof)", hint=hint
        )
    item, proof = doc["item"], doc["proof"]
    if not isinstance(item, dict) or not isinstance(proof, dict) or not isinstance(doc["salt"], str):
        raise DatasetError(
            "malformed inclusion proof: item and proof must be objects, salt hex text", hint=hint
        )
    try:
        salt = bytes.fromhex(doc["salt"])
    except ValueError:
        raise DatasetError(f"malformed inclusion proof: salt {doc['salt']!r} is not hex", hint=hint) from None
    if proof.get("n") != doc["n"] or proof.get("index") != doc["index"]:
        return False, "the proof's n and index are not the ones the disclosure states"
    if not verify_proof(doc["root"], item, salt, proof):
        return False, f"item {item.get('name')!r} is not at index {doc['index']} of root {doc['root']}"
    if file_bytes is not None and sha256_hex(file_bytes) != item.get("sha256"):
        return (
            False,
            f"the file's sha256 is {sha256_hex(file_bytes)}, the committed item's {item.get('sha256')}",
        )
    return True, f"item {item['name']!r} is item {doc['index']} of {doc['n']} of dataset {doc['root']}"
