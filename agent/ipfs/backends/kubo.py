"""A Kubo node (or our embedded node) over the Kubo RPC API, through ipfshttpclient 0.7.0.

ipfshttpclient traps handled here:

* ``ipfshttpclient.connect()`` refuses every daemon newer than 0.8, so the client is constructed directly.
* ``add`` sends ``raw-leaves=false`` unless told otherwise, and ``add_bytes`` takes options only through
  ``opts``: every add passes ``cid-version``, ``raw-leaves`` and ``chunker`` explicitly, and the CID that
  comes back is compared with the one our own importer computes (:class:`CIDMismatchError` names both).

Pins push the DAG as a CAR through ``dag/import`` (exact blocks for files and directories alike, no
re-chunking), check the imported root, then confirm with ``pin/add``.

Every request carries ``Authorization: Bearer <token>`` when a token is given (``$CHRYSALIS_KUBO_API_TOKEN``
from the settings): what Kubo's ``API.Authorizations`` and the embedded node's RPC check. A 401/403 becomes
:class:`BackendAuthError` naming that variable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_exc

from agent.errors import BackendUnavailableError, ConfigError
from agent.ipfs.backends.base import DEFAULT_CHUNK_SIZE, PinningBackend, PinReceipt, Stopwatch, local_cid
from agent.ipfs.backends.retry import RetryPolicy
from agent.ipfs.cid import CID
from agent.ipfs.errors import BackendAuthError, BackendRequestError, CIDMismatchError, PinFailedError
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import KUBO_TOKEN_ENV
from agent.redact import redact_url

T = TypeVar("T")


def to_multiaddr(api: str) -> str:
    """``http://127.0.0.1:5001`` (or a multiaddr already) as the multiaddr ipfshttpclient wants."""
    if api.startswith("/"):
        return api
    parts = urlsplit(api if "://" in api else f"http://{api}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"cannot read Kubo API address {api!r}", hint="use /ip4/127.0.0.1/tcp/5001 or http://host:5001"
        )
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 5001)
    if host.replace(".", "").isdigit():
        proto = "ip4"
    elif ":" in host:
        proto = "ip6"
    else:
        proto = "dns"
    return f"/{proto}/{host}/tcp/{port}/{parts.scheme}"


def _status(exc: ipfs_exc.CommunicationError) -> int | None:
    response = getattr(exc.original, "response", None)
    return getattr(response, "status_code", None)


class KuboBackend(PinningBackend):
    """Pins (and adds) through a Kubo RPC endpoint: a real Kubo, or :class:`~agent.ipfs.server.NodeServer`."""

    def __init__(
        self,
        api: str,
        *,
        name: str = "kubo",
        policy: RetryPolicy | None = None,
        timeout: float = 120.0,
        token: str | None = None,
    ) -> None:
        self.name = name
        self.api = api
        self.shown_api = redact_url(api)  # for messages: a URL's user info, path and query hidden
        self.multiaddr = to_multiaddr(api)
        self.policy = policy or RetryPolicy()
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._client = ipfshttpclient.Client(
                self.multiaddr, timeout=timeout, session=True, headers=headers
            )
        except ipfs_exc.AddressError as exc:
            raise ConfigError(
                f"invalid Kubo API address {api!r}: {exc}", hint="e.g. /ip4/127.0.0.1/tcp/5001"
            ) from exc

    # -- the one place ipfshttpclient errors become ours --

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        def attempt() -> T:
            try:
                return operation()
            except (ipfs_exc.ErrorResponse, ipfs_exc.StatusError) as exc:
                if _status(exc) not in (401, 403):
                    raise
                raise BackendAuthError(
                    f"{self.name} ({self.shown_api}): {what} was refused ({_status(exc)}): {exc}",
                    backend=self.name,
                    url=self.shown_api,
                    hint=f"set ${KUBO_TOKEN_ENV} to the node's RPC token (Kubo: API.Authorizations; "
                    "the embedded node: its repo's rpc.token)",
                ) from exc

        def classified() -> T:
            try:
                return attempt()
            except ipfs_exc.ErrorResponse as exc:  # Kubo's JSON error reply
                raise BackendRequestError(
                    f"{self.name} ({self.shown_api}): {what} failed: {exc}",
                    backend=self.name,
                    status=_status(exc),
                ) from exc
            except ipfs_exc.StatusError as exc:
                status = _status(exc)
                if status is None or status >= 500 or status == 429:
                    raise BackendUnavailableError(
                        f"{self.name} ({self.shown_api}): {what} answered HTTP {status}",
                        hint="the node is failing",
                    ) from exc
                raise BackendRequestError(
                    f"{self.name} ({self.shown_api}): {what} answered HTTP {status}",
                    backend=self.name,
                    status=status,
                ) from exc
            except (ipfs_exc.ConnectionError, ipfs_exc.TimeoutError, ipfs_exc.ProtocolError) as exc:
                raise BackendUnavailableError(
                    f"{self.name}: cannot reach the Kubo RPC API at {self.shown_api} ({type(exc).__name__})",
                    hint="is the daemon running (`ipfs daemon`)? check ipfs.kubo_api in the settings",
                ) from exc

        return self.policy.run(classified, what=f"{self.name} {what}")

    # -- the backend --

    def version(self) -> dict[str, Any]:
        """The node's ``/api/v0/version`` reply."""
        return dict(self._call("version", self._client.version))

    def add(
        self,
        data: bytes | BinaryIO,
        *,
        cid_version: int = 1,
        raw_leaves: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> CID:
        payload = data if isinstance(data, bytes) else data.read()
        raw = raw_leaves if raw_leaves is not None else cid_version == 1  # Kubo's own default, made explicit
        expected = local_cid(payload, cid_version=cid_version, raw_leaves=raw, chunk_size=chunk_size)
        opts = {
            "cid-version": str(cid_version),
            "raw-leaves": "true" if raw else "false",
            "chunker": f"size-{chunk_size}",
            "pin": "true",
        }
        got = self._call("add", lambda: self._client.add_bytes(payload, opts=opts))
        actual = CID.parse(str(got))
        if actual != expected:
            raise CIDMismatchError(expected, actual, self.name)
        return actual

    def pin(self, cid: CID, *, source: IpfsRepo, name: str | None = None) -> PinReceipt:
        elapsed = Stopwatch()
        if self.is_pinned(cid):
            return PinReceipt(self.name, cid, elapsed_s=elapsed(), detail="already pinned")
        with tempfile.NamedTemporaryFile(suffix=".car") as car:
            source.export_car(cid, car)  # type: ignore[arg-type]

            def push() -> Any:
                car.seek(0)
                return self._client.dag.imprt(car, opts={"pin-roots": "true"})

            reply = self._call("dag/import", push)
        root = CID.parse(reply["Root"]["Cid"]["/"])
        if root != cid:
            raise CIDMismatchError(cid, root, self.name)
        pin_error = reply["Root"].get("PinErrorMsg")
        if pin_error:
            raise PinFailedError(
                f"{self.name} could not pin {cid}: {pin_error}", backend=self.name, cid=cid, reason=pin_error
            )
        pinned = self._call("pin/add", lambda: self._client.pin.add(str(cid), opts={"recursive": "true"}))
        if not any(CID.parse(p) == cid for p in pinned["Pins"]):
            raise PinFailedError(
                f"{self.name}: pin/add did not confirm {cid} (answered {list(pinned['Pins'])})",
                backend=self.name,
                cid=cid,
                reason="not confirmed by pin/add",
            )
        return PinReceipt(self.name, cid, elapsed_s=elapsed(), detail="dag/import + pin/add")

    def is_pinned(self, cid: CID) -> bool:
        try:
            reply = self._call("pin/ls", lambda: self._client.pin.ls(str(cid), type="recursive"))
        except BackendRequestError as exc:
            if "not pinned" in str(exc):
                return False
            raise
        return any(CID.parse(key) == cid for key in reply["Keys"])

    def unpin(self, cid: CID) -> None:
        try:
            self._call("pin/rm", lambda: self._client.pin.rm(str(cid)))
        except BackendRequestError as exc:
            if "not pinned" not in str(exc):
                raise

    def close(self) -> None:
        self._client.close()
