"""Generated assets on disk, for the demo and the studio: ``<data_dir>/assets/<token>/<stage>.<kind>``.

``<stage>.png`` (the image), ``<stage>.receipt.json`` (the inference receipt's canonical JSON) and
``<stage>.json`` (the metadata, byte for byte what was pinned). The IPFS repo and the job store are the
record; these files are copies for browsing, written atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class AssetStore:
    """Writes a token's assets under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, token_id: int, stage: int, kind: str) -> Path:
        """``kind``: ``png``, ``json`` (metadata) or ``receipt.json``."""
        return self.root / str(token_id) / f"{stage}.{kind}"

    def write(self, token_id: int, stage: int, kind: str, data: bytes) -> Path:
        path = self.path(token_id, stage, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
