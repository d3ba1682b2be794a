"""A model's lineage as the token page's provenance panel shows it, read from public sources only.

From the weights digest a token's inference receipt records, the chain's model registry gives the record's manifest
URI; when that is ``ipfs://<directory CID>``, the directory is read from the embedded IPFS repo
(:meth:`agent.ipfs.fetch.Fetcher.tree`: only ``manifest.json`` and the training receipt it names are read, every
block checked against its CID) and :func:`agent.training.sprites.lineage_from_directory` checks the chain: the
receipt's bytes hash to the manifest's ``training_receipt_sha256`` and both name the record's weights. The
shipped sprite model (registered under a non-IPFS name) is read from its packaged directory. A failing check is a
``bad`` lineage with the reason, never an error page.

Outcomes (``state``): ``trained`` (fine-tuned: base model, dataset root, item count, mode, receipt sha256),
``untrained`` (no training receipt), ``bad`` (a check failed; ``reason``), ``unknown`` (nothing to read:
no record, a non-IPFS URI, or a directory the repo does not hold; ``reason``). A directory's lineage is a function
of its bytes, so ``trained``, ``untrained`` and ``bad`` are cached per CID; ``unknown`` is not (the directory may
be pinned later).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import ChrysalisError
from agent.generate.published import is_ipfs_uri, parse_model_uri
from agent.ipfs.fetch import make_fetcher
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo


class Lineages:
    """Model lineages over the studio's repo, cached per directory CID (thread-safe)."""

    def __init__(self, repo: IpfsRepo, *, limits: DagLimits | None = None) -> None:
        self.repo = repo
        self.limits = limits
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def of(self, weights_sha256: str, manifest_uri: str | None) -> dict[str, Any]:
        """The lineage of the weights ``weights_sha256`` (hex) whose registry record names ``manifest_uri``
        (None: no record)."""
        digest = weights_sha256.lower().removeprefix("0x")
        if manifest_uri and is_ipfs_uri(manifest_uri):
            try:
                cid = parse_model_uri(manifest_uri)
            except ChrysalisError as exc:
                return {"state": "bad", "reason": exc.message}
            key = (cid, digest)
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            out = self._from_ipfs(cid, digest)
            if out["state"] != "unknown":
                with self._lock:
                    self._cache[key] = out
            return out
        shipped = _shipped_directory(digest)
        if shipped is not None:
            return _lineage({"manifest.json": (shipped / "manifest.json").read_bytes()}, digest, shipped.name)
        if manifest_uri is None:
            return {"state": "unknown", "reason": "these weights are not in the collection's model registry"}
        return {
            "state": "unknown",
            "reason": f"the registry names {manifest_uri or '(no URI)'}, not an ipfs:// model directory",
        }

    def _from_ipfs(self, cid: str, digest: str) -> dict[str, Any]:
        try:
            files = make_fetcher(repo=self.repo, limits=self.limits).tree(cid)
        except ChrysalisError as exc:
            return {
                "state": "unknown",
                "reason": f"ipfs://{cid} cannot be read from this node: {exc.message}",
            }
        return _lineage(files, digest, f"ipfs://{cid}")


def _lineage(files: Mapping[str, bytes], digest: str, where: str) -> dict[str, Any]:
    from agent.training.sprites import lineage_from_directory

    try:
        found = lineage_from_directory(files, weights_sha256=digest, where=where)
    except ChrysalisError as exc:
        return {"state": "bad", "reason": exc.message}
    if found["trained_on"] is None:
        return {"state": "untrained", **found}
    return {"state": "trained", **found}


def _shipped_directory(digest: str) -> Path | None:
    """The packaged model directory whose manifest names the weights ``digest``, if any."""
    try:
        from agent.generate import shipped
    except ImportError:  # pragma: no cover
        return None
    for manifest_path in sorted(Path(shipped.__file__).resolve().parent.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("weights_sha256") == digest:
            return manifest_path.parent
    return None
