"""The embedded backend: pins in an in-process :class:`IpfsRepo`; no server involved."""

from __future__ import annotations

from typing import BinaryIO

from agent.ipfs.backends.base import (
    DEFAULT_CHUNK_SIZE,
    PinningBackend,
    PinReceipt,
    Stopwatch,
    export_car_spool,
)
from agent.ipfs.cid import CID
from agent.ipfs.errors import CIDMismatchError
from agent.ipfs.repo import IpfsRepo


class EmbeddedBackend(PinningBackend):
    """Pins in ``repo``. When ``source`` is another repo, the DAG is copied over as a CAR first."""

    def __init__(self, repo: IpfsRepo, *, name: str = "embedded") -> None:
        self.repo = repo
        self.name = name

    def add(
        self,
        data: bytes | BinaryIO,
        *,
        cid_version: int = 1,
        raw_leaves: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> CID:
        return self.repo.add(data, cid_version=cid_version, raw_leaves=raw_leaves, chunk_size=chunk_size).cid

    def pin(self, cid: CID, *, source: IpfsRepo, name: str | None = None) -> PinReceipt:
        elapsed = Stopwatch()
        if self.repo.is_pinned(cid):
            return PinReceipt(self.name, cid, elapsed_s=elapsed(), detail="already pinned")
        if source is not self.repo:
            with export_car_spool(source, cid) as car:
                roots = self.repo.import_car(car, pin=False)  # type: ignore[arg-type]
            if cid not in roots:
                raise CIDMismatchError(cid, roots[0] if roots else None, self.name)
        self.repo.pin_add(cid)
        return PinReceipt(self.name, cid, elapsed_s=elapsed(), detail="pinned in the embedded repo")

    def is_pinned(self, cid: CID) -> bool:
        return self.repo.is_pinned(cid)

    def unpin(self, cid: CID) -> None:
        if self.repo.is_pinned(cid):
            self.repo.pin_rm(cid)
