"""Replication: an asset counts as published only once ``required`` backends confirm its pin.

The agent calls :meth:`Replicator.publish` before it submits anything on-chain; fewer confirmations raise
:class:`ReplicationError` listing every backend's outcome, and nothing is reported as published. Pins that
did succeed are kept (a retried publish finds them and does no new work).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent.errors import ChrysalisError, ConfigError
from agent.ipfs.backends.base import PinningBackend, PinReceipt
from agent.ipfs.backends.embedded import EmbeddedBackend
from agent.ipfs.backends.kubo import KuboBackend
from agent.ipfs.backends.pinning_service import PinningServiceBackend
from agent.ipfs.cid import CID
from agent.ipfs.errors import ReplicationError
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import KUBO_TOKEN_ENV
from agent.settings import IpfsSettings


@dataclass(frozen=True)
class BackendOutcome:
    """What one backend did with one publish: a receipt, or the error it raised."""

    backend: str
    receipt: PinReceipt | None = None
    error: BaseException | None = None

    @property
    def confirmed(self) -> bool:
        return self.receipt is not None

    def describe(self) -> str:
        if self.receipt is not None:
            return (
                f"{self.backend}: pinned ({self.receipt.detail or 'confirmed'}, {self.receipt.elapsed_s:g} s)"
            )
        message = self.error.message if isinstance(self.error, ChrysalisError) else str(self.error)
        return f"{self.backend}: {type(self.error).__name__}: {message.splitlines()[0] if message else ''}"


class Replicator:
    """Pins through several backends at once and counts confirmations.

    Args:
        backends: where to pin; each runs on its own thread during :meth:`publish`.
        required: confirmations needed (``IpfsSettings.replication``).
        source: the local repo holding the DAGs to publish.
    """

    def __init__(self, backends: Sequence[PinningBackend], *, required: int, source: IpfsRepo) -> None:
        if not backends:
            raise ConfigError("no IPFS backends configured", hint="the embedded backend is always available")
        if not 1 <= required <= len(backends):
            names = ", ".join(b.name for b in backends)
            raise ConfigError(
                f"ipfs.replication is {required} but {len(backends)} backend(s) are configured ({names})",
                hint="add pinning services / kubo_api, or lower ipfs.replication",
            )
        self.backends = list(backends)
        self.required = required
        self.source = source

    @classmethod
    def from_settings(
        cls, settings: IpfsSettings, repo: IpfsRepo, *, origins: Sequence[str] | None = None
    ) -> Replicator:
        """The backends :func:`backends_from_settings` builds, requiring ``settings.replication``."""
        return cls(
            backends_from_settings(settings, repo, origins=origins),
            required=settings.replication,
            source=repo,
        )

    def pin_everywhere(self, cid: CID, *, name: str | None = None) -> list[BackendOutcome]:
        """Ask every backend to pin ``cid`` concurrently; one outcome per backend, in backend order."""

        def one(backend: PinningBackend) -> BackendOutcome:
            try:
                return BackendOutcome(backend.name, receipt=backend.pin(cid, source=self.source, name=name))
            except Exception as exc:  # every failure is reported, none hides the others
                return BackendOutcome(backend.name, error=exc)

        with ThreadPoolExecutor(max_workers=len(self.backends), thread_name_prefix="pin") as pool:
            return list(pool.map(one, self.backends))

    def publish(self, cid: CID, *, name: str | None = None) -> list[PinReceipt]:
        """Pin ``cid`` everywhere; return the receipts once at least ``required`` backends confirm.

        Raises:
            ReplicationError: fewer than ``required`` confirmations; ``outcomes`` lists every backend's.
        """
        outcomes = self.pin_everywhere(cid, name=name)
        receipts = [o.receipt for o in outcomes if o.receipt is not None]
        if len(receipts) < self.required:
            lines = "\n  ".join(o.describe() for o in outcomes)
            raise ReplicationError(
                f"{cid} is not published: {len(receipts)} of {len(outcomes)} backends confirmed the pin, "
                f"{self.required} required:\n  {lines}",
                cid=cid,
                required=self.required,
                outcomes=outcomes,
                hint="fix or wait for the failing backends and publish again; confirmed pins are kept",
            )
        return receipts

    def is_published(self, cid: CID) -> bool:
        """Whether ``required`` backends hold ``cid`` pinned right now (unreachable ones count as no)."""
        confirmed = 0
        for backend in self.backends:
            try:
                confirmed += backend.is_pinned(cid)
            except ChrysalisError:
                continue
        return confirmed >= self.required

    def close(self) -> None:
        for backend in self.backends:
            backend.close()

    def __enter__(self) -> Replicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_origins(settings: IpfsSettings) -> list[str]:
    """Where pinning services fetch from: ``settings.origins``, else the embedded node's read-only gateway."""
    if settings.origins:
        return list(settings.origins)
    host, port = settings.gateway_host, settings.gateway_port
    return [f"/ip4/{host}/tcp/{port}/http", f"http://{host}:{port}"]


def backends_from_settings(
    settings: IpfsSettings, repo: IpfsRepo, *, origins: Sequence[str] | None = None
) -> list[PinningBackend]:
    """The embedded repo, then Kubo (if ``kubo_api``), then each configured pinning service."""
    backends: list[PinningBackend] = [EmbeddedBackend(repo)]
    if settings.kubo_api:
        backends.append(KuboBackend(settings.kubo_api, token=os.environ.get(KUBO_TOKEN_ENV) or None))
    for service in settings.pinning_services:
        backends.append(
            PinningServiceBackend(
                service.endpoint,
                token=service.bearer_token(),
                token_env=service.token_env_var(),
                name=service.name,
                mode=service.mode,
                origins=origins if origins is not None else default_origins(settings),
                timeout=settings.pin_timeout_s,
            )
        )
    return backends
