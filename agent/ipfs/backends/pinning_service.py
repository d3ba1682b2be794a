"""An IPFS Pinning Service API endpoint (ipfs/pinning-services-api-spec v1), through httpx.

``mode="origins"`` (the spec): ``POST /pins {cid, name, origins}`` and the service fetches the DAG from
``origins`` (our node's gateway / RPC address). Then ``GET /pins/{requestid}`` is polled until ``pinned``;
``failed`` raises :class:`PinFailedError` with the service's ``info.status_details``.

``mode="car"``, for providers that take uploads instead of fetching: ``POST /car`` with the DAG as a CARv1
body (``Content-Type: application/vnd.ipld.car``, ``?name=`` optional) answers ``202`` with a ``PinStatus``
like ``POST /pins``, and the same polling follows. (web3.storage's ``POST /car`` is the model; a provider
with another upload route needs a subclass overriding :meth:`PinningServiceBackend._upload_car`.)

Retries (429 + ``Retry-After``, 5xx back-off, unreachable host) happen in :class:`HttpClient`; this module
adds only the polling loop and its overall timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal
from urllib.parse import quote

from agent.errors import NotFoundError
from agent.ipfs.backends.base import PinningBackend, PinReceipt, Stopwatch, export_car_spool
from agent.ipfs.backends.retry import HttpClient, RetryPolicy
from agent.ipfs.cid import CID
from agent.ipfs.errors import (
    BackendRequestError,
    CIDMismatchError,
    InvalidCIDError,
    PinFailedError,
    PinTimeoutError,
)
from agent.ipfs.repo import IpfsRepo

PENDING = ("queued", "pinning")
ALL_STATUSES = ("queued", "pinning", "pinned", "failed")


class PinningServiceBackend(PinningBackend):
    """Pins through a Pinning Service API endpoint, blocking until the service reports ``pinned``.

    Args:
        endpoint: the API root, e.g. ``https://api.pinata.cloud/psa``.
        token: the bearer token (from the environment; see ``PinningServiceSettings``).
        name: the backend's name in receipts and errors.
        mode: ``"origins"`` (service fetches) or ``"car"`` (we upload a CAR).
        origins: addresses (multiaddrs or URLs) where the service can fetch our content.
        timeout: seconds a pin may take, polling included, before :class:`PinTimeoutError`.
        poll_interval: first wait between status checks; grows 1.5x up to ``max_poll_interval``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None,
        name: str = "pinning-service",
        mode: Literal["origins", "car"] = "origins",
        origins: Sequence[str] = (),
        timeout: float = 300.0,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        policy: RetryPolicy | None = None,
        token_env: str | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        self.mode = mode
        self.origins = list(origins)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        hint = f"set the service's token in ${token_env}" if token_env else "check the service's bearer token"
        self.http = HttpClient(
            self.endpoint,
            service=name,
            token=token,
            policy=policy or RetryPolicy(deadline=timeout),
            auth_hint=hint,
        )

    # -- the backend --

    def pin(self, cid: CID, *, source: IpfsRepo, name: str | None = None) -> PinReceipt:
        elapsed = Stopwatch()
        deadline = time.monotonic() + self.timeout
        status = self._existing(cid)
        if status is not None and status["status"] == "pinned":
            return PinReceipt(self.name, cid, status["requestid"], elapsed(), "already pinned")
        if status is None:
            if self.mode == "car":
                status = self._upload_car(cid, source, name)
            else:
                status = self._create(cid, name)
        status = self._wait(cid, status, deadline)
        return PinReceipt(self.name, cid, status["requestid"], elapsed(), f"pinned ({self.mode})")

    def is_pinned(self, cid: CID) -> bool:
        return bool(self._list(cid, ("pinned",)))

    def unpin(self, cid: CID) -> None:
        for status in self._list(cid, ALL_STATUSES):
            try:
                self.http.request("DELETE", _pin_path(status["requestid"]), ok=(200, 202, 204))
            except NotFoundError:
                pass  # removed meanwhile

    def close(self) -> None:
        self.http.close()

    # -- the API calls --

    def _create(self, cid: CID, name: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"cid": str(cid), "name": name or str(cid)}
        if self.origins:
            body["origins"] = self.origins
        return self._checked(cid, self.http.request("POST", "/pins", json=body).json())

    def _upload_car(self, cid: CID, source: IpfsRepo, name: str | None) -> dict[str, Any]:
        with export_car_spool(source, cid) as car:

            def body() -> Iterator[bytes]:
                car.seek(0)
                while chunk := car.read(256 * 1024):
                    yield chunk

            response = self.http.request(
                "POST",
                "/car",
                content=body,
                params={"name": name or str(cid)},
                headers={"Content-Type": "application/vnd.ipld.car"},
            )
        return self._checked(cid, response.json())

    def _list(self, cid: CID, statuses: Sequence[str]) -> list[dict[str, Any]]:
        """The service's PinStatus results for ``cid`` in ``statuses``, each checked (:meth:`_checked`): a
        result for another CID is an error, never a confirmation; one in a status we did not ask for is left out."""
        params = [("cid", str(cid)), ("limit", "1000"), *(("status", s) for s in statuses)]
        body = self.http.request("GET", "/pins", params=params).json()
        results = body.get("results", []) if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise BackendRequestError(
                f"{self.name}: malformed PinResults reply: {str(body)[:200]}", backend=self.name, status=None
            )
        checked = [self._checked(cid, status) for status in results]
        return [status for status in checked if status["status"] in statuses]

    def _existing(self, cid: CID) -> dict[str, Any] | None:
        """A pinned or pending request for ``cid`` (pinned first): a retried publish creates no duplicate."""
        results = self._list(cid, ("pinned", *PENDING))
        results.sort(key=lambda s: s.get("status") != "pinned")
        return results[0] if results else None

    def _wait(self, cid: CID, status: dict[str, Any], deadline: float) -> dict[str, Any]:
        interval = self.poll_interval
        while True:
            state = status.get("status")
            if state == "pinned":
                return status
            if state == "failed":
                reason = _failure_reason(status)
                raise PinFailedError(
                    f"{self.name} failed to pin {cid}: {reason}", backend=self.name, cid=cid, reason=reason
                )
            if state not in PENDING:
                raise BackendRequestError(
                    f"{self.name}: unknown pin status {state!r} for {cid}", backend=self.name, status=None
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PinTimeoutError(
                    f"{self.name} did not confirm {cid} within {self.timeout:g} s (last status: {state})",
                    backend=self.name,
                    cid=cid,
                    waited=self.timeout,
                )
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.max_poll_interval)
            status = self._checked(cid, self.http.request("GET", _pin_path(status["requestid"])).json())

    def _checked(self, cid: CID, status: dict[str, Any]) -> dict[str, Any]:
        """A PinStatus reply, checked for the fields we rely on and for the CID we asked for."""
        try:
            requestid, pin_cid = status["requestid"], status["pin"]["cid"]
            status["status"]
        except (KeyError, TypeError):
            raise BackendRequestError(
                f"{self.name}: malformed PinStatus reply: {str(status)[:200]}", backend=self.name, status=None
            ) from None
        if not requestid or not isinstance(requestid, str):
            raise BackendRequestError(
                f"{self.name}: PinStatus without requestid", backend=self.name, status=None
            )
        try:
            echoed = CID.parse(pin_cid)
        except InvalidCIDError as exc:
            raise BackendRequestError(
                f"{self.name}: PinStatus for {cid} names no valid CID ({exc.reason})",
                backend=self.name,
                status=None,
            ) from None
        if (echoed.codec, echoed.multihash) != (cid.codec, cid.multihash):  # v0/v1 spellings are the same pin
            raise CIDMismatchError(cid, echoed, self.name)
        return status


def _pin_path(requestid: str) -> str:
    """``/pins/<requestid>`` with the id percent-encoded: an id holding ``/``, ``?`` or ``..`` stays one segment."""
    return "/pins/" + quote(requestid, safe="")


def _failure_reason(status: dict[str, Any]) -> str:
    info = status.get("info") or {}
    if isinstance(info, dict) and info:
        return str(info.get("status_details") or info)
    return "no reason given by the service"
