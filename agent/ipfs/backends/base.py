"""The boundary every place that keeps our content implements: :class:`PinningBackend`.

A backend *pins* a DAG that already exists in a local :class:`~agent.ipfs.repo.IpfsRepo` (the ``source``),
fetching or receiving it as it must, and returns a :class:`PinReceipt` only once the pin is confirmed.
Backends that can also store raw content (the embedded repo, Kubo) implement :meth:`PinningBackend.add`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile
from typing import BinaryIO

from agent.ipfs.cid import CID
from agent.ipfs.errors import BackendCapabilityError
from agent.ipfs.repo import IpfsRepo

DEFAULT_CHUNK_SIZE = 262144


@dataclass(frozen=True)
class PinReceipt:
    """Proof that one backend holds ``cid`` pinned.

    Attributes:
        backend: the backend's name.
        cid: the pinned root.
        request_id: the service's id for the pin, where it has one (Pinning Service API ``requestid``).
        elapsed_s: seconds from the request to the confirmation.
        detail: a short human note (e.g. "already pinned").
    """

    backend: str
    cid: CID
    request_id: str | None = None
    elapsed_s: float = 0.0
    detail: str = ""


class PinningBackend(ABC):
    """A place that keeps our content pinned: the embedded repo, a Kubo node, a pinning service.

    Implementations are thread-compatible (one call at a time per instance) and close their connections in
    :meth:`close`; use them as context managers.
    """

    name: str

    @abstractmethod
    def pin(self, cid: CID, *, source: IpfsRepo, name: str | None = None) -> PinReceipt:
        """Pin the DAG under ``cid`` (complete in ``source``); return once the backend confirms it.

        Idempotent: pinning a CID the backend already holds returns a receipt without new work.

        Raises:
            PinFailedError: the backend reported the pin as failed (with its reason).
            PinTimeoutError: no confirmation within the backend's timeout.
            BackendUnavailableError: the backend could not be reached (retryable).
            CIDMismatchError: the backend computed a different CID for the same content.
        """

    @abstractmethod
    def is_pinned(self, cid: CID) -> bool:
        """Whether the backend currently holds a confirmed pin for ``cid``."""

    @abstractmethod
    def unpin(self, cid: CID) -> None:
        """Remove our pins for ``cid``; a CID that is not pinned is not an error."""

    def add(
        self,
        data: bytes | BinaryIO,
        *,
        cid_version: int = 1,
        raw_leaves: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> CID:
        """Store and pin ``data`` as a UnixFS file; returns its CID, checked against our own importer.

        Raises:
            BackendCapabilityError: the backend cannot receive content directly (use :meth:`pin`).
        """
        raise BackendCapabilityError(
            f"backend {self.name!r} cannot store content directly",
            hint="add the content to the embedded repo and publish its CID with pin()",
        )

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to release)
        """Release connections; the backend is unusable afterwards."""

    def __enter__(self) -> PinningBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def local_cid(
    data: bytes,
    *,
    cid_version: int = 1,
    raw_leaves: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> CID:
    """The CID Kubo must return for ``data`` with these options, computed by our importer in memory."""
    return (
        IpfsRepo(None)
        .add(data, cid_version=cid_version, raw_leaves=raw_leaves, chunk_size=chunk_size, pin=False)
        .cid
    )


def export_car_spool(source: IpfsRepo, cid: CID) -> SpooledTemporaryFile[bytes]:
    """The DAG under ``cid`` as a CAR in a spooled temporary file, positioned at its start."""
    spool: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    try:
        source.export_car(cid, spool)  # type: ignore[arg-type]
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


class Stopwatch:
    """Seconds since construction (for :attr:`PinReceipt.elapsed_s`)."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self._start, 3)
