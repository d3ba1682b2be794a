"""Public mode: a dataset as one UnixFS directory in the embedded IPFS repo, which anyone can fetch and check.

The directory holds the labels file (``labels.jsonl`` or ``lore.jsonl``, its bytes as in the folder), every listed
image under its relative path (sub-folders as UnixFS directories), and ``chrysalis-dataset.json``, the manifest:
canonical JSON (:func:`agent.domain.canonical_json`) of ``{"format": "chrysalis-dataset/v1", "leaf_rule":
"chrysalis/dataset-leaf/v1", "kind", "root", "n", "counts", "items": [{"name", "sha256", "label"}, ...]}``.
Entries are added in sorted order with CIDv1 and raw leaves (``ipfs add -r --cid-version=1`` gives the same
directory CID), so the same folder always pins to the same CID and pinning again is free.

:func:`recompute_root` is what a third party runs on the fetched bytes: it recomputes every item's digest from the
files (images) or from the labels file (lore), checks the labels file says what the manifest says, and rebuilds the
root with :mod:`agent.datasets.merkle` alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.datasets.merkle import LEAF_RULE, leaf_hash, merkle_root
from agent.datasets.model import LABELS_FILE, LORE_FILE, MANIFEST_FILE, Dataset
from agent.domain import canonical_json, sha256_hex
from agent.errors import IntegrityError
from agent.ipfs.cid import CID, RAW
from agent.ipfs.repo import AddResult, IpfsRepo

MANIFEST_FORMAT = "chrysalis-dataset/v1"


def manifest_of(dataset: Dataset) -> dict[str, Any]:
    """The public manifest of ``dataset`` (see the module docstring)."""
    if dataset.salts is not None:
        raise ValueError("a private dataset has no public manifest")
    return {
        "format": MANIFEST_FORMAT,
        "leaf_rule": LEAF_RULE,
        "kind": dataset.kind,
        "root": dataset.root,
        "n": len(dataset.items),
        "counts": dataset.counts(),
        "items": [item.leaf_fields for item in dataset.items],
    }


def pin_dataset(repo: IpfsRepo, dataset: Dataset) -> CID:
    """Add the dataset's labels file, images and manifest to ``repo`` as one UnixFS directory, pinned recursively.

    Raises:
        IntegrityError: a file changed since the dataset was checked (naming it).
        ValueError: a private dataset (nothing of it is published).
    """
    manifest = canonical_json(manifest_of(dataset))
    tree: dict[str, Any] = {MANIFEST_FILE: manifest, dataset.labels_file: None}
    if dataset.kind == "image":
        for item in dataset.items:
            *parents, name = item.name.split("/")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = item

    def add_file(name: str, child: Any) -> AddResult:
        if isinstance(child, bytes):
            return repo.add(child, pin=False)
        relative = dataset.labels_file if child is None else child.name
        data = (dataset.path / relative).read_bytes()
        if child is not None and sha256_hex(data) != child.sha256:
            raise IntegrityError(
                f"{dataset.path / relative} changed while the dataset was being pinned (sha256 {sha256_hex(data)}, "
                f"checked {child.sha256})",
                hint="add the dataset again once nothing is writing to its folder",
            )
        return repo.add(data, pin=False)

    def build(node: Mapping[str, Any], *, top: bool) -> CID:
        entries: dict[str, CID | AddResult] = {}
        for name, child in sorted(node.items()):
            entries[name] = build(child, top=False) if isinstance(child, dict) else add_file(name, child)
        return repo.add_directory(entries, pin=top)

    pinned = build(tree, top=True)
    if dataset.kind == "lore":  # the lore items' digests come from the labels file: check it did not change
        fetched = fetch_dataset(repo, pinned)
        recompute_root(json.loads(fetched[MANIFEST_FILE]), fetched)
    return pinned


def fetch_dataset(repo: IpfsRepo, cid: CID | str) -> dict[str, bytes]:
    """Every file of the pinned dataset directory ``cid``: relative path -> bytes (every block checked)."""
    files: dict[str, bytes] = {}

    def walk(directory: CID, prefix: str) -> None:
        for entry in repo.iter_ls(directory):
            path = f"{prefix}{entry.name}"
            if entry.cid.codec != RAW and repo.stat(entry.cid).kind == "directory":
                walk(entry.cid, path + "/")
            else:
                files[path] = b"".join(repo.cat(entry.cid))

    walk(CID.parse(str(cid)), "")
    return files


def recompute_root(manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> str:
    """The root of a public dataset recomputed from its manifest and its files (the fetched directory).

    Checks every image's sha256 (or every lore line's digest) against the manifest, that the labels file gives the
    manifest's labels, and that the recomputed root is the manifest's.

    Raises:
        IntegrityError: any of them differs (naming what).
    """
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("leaf_rule") != LEAF_RULE:
        raise IntegrityError(
            f"not a {MANIFEST_FORMAT} manifest (format {manifest.get('format')!r}, leaf rule "
            f"{manifest.get('leaf_rule')!r})",
            hint="recompute it with the tool of that version",
        )
    items = list(manifest["items"])
    kind = manifest.get("kind")
    labels_name = LORE_FILE if kind == "lore" else LABELS_FILE
    if labels_name not in files:
        raise IntegrityError(f"the dataset directory has no {labels_name}", hint="fetch the whole directory")
    lines = [json.loads(line) for line in files[labels_name].decode("utf-8").splitlines() if line.strip()]
    if len(lines) != len(items):
        raise IntegrityError(
            f"{labels_name} has {len(lines)} entries, the manifest {len(items)} items",
            hint="the directory does not belong to this manifest",
        )
    if kind == "lore":
        derived = {
            sha256_hex(canonical_json({"lore": obj["lore"], "traits": obj["traits"]})): {
                "traits": obj["traits"]
            }
            for obj in lines
        }
        for item in items:
            if derived.get(item["sha256"]) != item["label"]:
                raise IntegrityError(
                    f"lore item {item['name']} (sha256 {item['sha256']}) is not in {labels_name}",
                    hint="the lore file was changed after the dataset was committed",
                )
    else:
        labels = {obj["file"]: {k: v for k, v in obj.items() if k != "file"} for obj in lines}
        for item in items:
            data = files.get(item["name"])
            if data is None:
                raise IntegrityError(
                    f"{item['name']} is missing from the dataset directory", hint="fetch it all"
                )
            if sha256_hex(data) != item["sha256"]:
                raise IntegrityError(
                    f"{item['name']} has sha256 {sha256_hex(data)}, the manifest says {item['sha256']}",
                    hint="the file was changed after the dataset was committed",
                )
            if labels.get(item["name"]) != item["label"]:
                raise IntegrityError(
                    f"{labels_name} labels {item['name']} {labels.get(item['name'])}, the manifest "
                    f"{item['label']}",
                    hint="the labels were changed after the dataset was committed",
                )
    root = merkle_root([leaf_hash(item) for item in items])
    if root != manifest.get("root") or len(items) != manifest.get("n"):
        raise IntegrityError(
            f"the items give root {root}, the manifest says {manifest.get('root')}",
            hint="the manifest was altered: do not trust this dataset",
        )
    return root
