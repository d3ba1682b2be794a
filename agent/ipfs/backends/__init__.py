"""Where published content is kept: one :class:`PinningBackend` interface, one implementation per file.

* :class:`EmbeddedBackend`: the in-process repo.
* :class:`KuboBackend`: a Kubo node over its RPC API (ipfshttpclient).
* :class:`PinningServiceBackend`: an IPFS Pinning Service API endpoint (httpx).
* :class:`Replicator`: publish only when ``IpfsSettings.replication`` backends confirm.
"""

from agent.ipfs.backends.base import PinningBackend, PinReceipt
from agent.ipfs.backends.embedded import EmbeddedBackend
from agent.ipfs.backends.kubo import KuboBackend
from agent.ipfs.backends.pinning_service import PinningServiceBackend
from agent.ipfs.backends.replicated import BackendOutcome, Replicator, backends_from_settings
from agent.ipfs.backends.retry import HttpClient, RetryPolicy

__all__ = [
    "BackendOutcome",
    "EmbeddedBackend",
    "HttpClient",
    "KuboBackend",
    "PinReceipt",
    "PinningBackend",
    "PinningServiceBackend",
    "Replicator",
    "RetryPolicy",
    "backends_from_settings",
]
