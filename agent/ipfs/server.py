"""The embedded IPFS node over HTTP: the read-only gateway and the Kubo RPC subset, each on its own listener.

Two apps on two listeners, as Kubo has: the path gateway (:mod:`agent.ipfs.gateway`), the only one that may listen
off-host, and the token-protected RPC (:mod:`agent.ipfs.kubo_rpc`), on loopback only.

* :class:`NodeServer` runs both (or the gateway alone, ``rpc=False``) with uvicorn on background threads (tests,
  the agent); it starts both or neither.
* :func:`serve_forever` runs them in the foreground (``chrysalis ipfs serve``); both ports are bound before
  anything starts, so a busy one is a clean error.

Guarantees: the RPC listener is refused (:class:`~agent.errors.ConfigError`) on anything but a loopback address,
and a node always has an RPC token (a random one when none is given).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from typing import Self

from agent.errors import BackendUnavailableError
from agent.http import ServerThread, SocketThread, listen_socket, run_foreground
from agent.ipfs.cid import CID
from agent.ipfs.gateway import allow_scripts, create_app
from agent.ipfs.kubo_rpc import (
    DEFAULT_MAX_CAR_LINKS,
    DEFAULT_MAX_PARTS,
    DEFAULT_MAX_REQUEST_BYTES,
    create_rpc_app,
)
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import check_loopback

__all__ = ["NodeServer", "serve_forever"]


class NodeServer(ServerThread):
    """The embedded IPFS node serving ``repo`` on background threads: the read-only gateway on ``host:port``
    (:attr:`url`) and, unless ``rpc=False``, the token-protected RPC on loopback ``rpc_host:rpc_port``
    (:attr:`rpc_url`, :attr:`multiaddr`, :attr:`token`; a random token when none is given).

    Example::

        with NodeServer(IpfsRepo(path)) as node:
            httpx.get(f"{node.url}/ipfs/{cid}")
            ipfshttpclient.Client(node.multiaddr, headers=node.auth_headers)

    Args:
        repo: the repo both listeners serve.
        host: the gateway's address.
        port: the gateway's port; 0 picks a free one.
        rpc: also serve the RPC API (False: the gateway alone).
        rpc_host: the RPC's address (loopback only).
        rpc_port: the RPC's port; 0 picks a free one.
        token: the RPC bearer token (None: a random one, in :attr:`token`).
        max_request_bytes: the largest ``add`` / ``dag/import`` body the RPC accepts.
        max_parts: the most multipart parts one RPC request may send.
        max_car_links: the most blocks plus links one ``dag/import`` may hold in memory.
        script_roots: directories whose pages may run their own scripts (:func:`create_app`); default none.

    Raises:
        ConfigError: ``rpc_host`` is not a loopback address.
    """

    def __init__(
        self,
        repo: IpfsRepo,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rpc: bool = True,
        rpc_host: str = "127.0.0.1",
        rpc_port: int = 0,
        token: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_parts: int = DEFAULT_MAX_PARTS,
        max_car_links: int = DEFAULT_MAX_CAR_LINKS,
        script_roots: Collection[CID | str] = (),
    ) -> None:
        self.repo = repo
        self.token = token or secrets.token_urlsafe(32)
        self.rpc_server: ServerThread | None = None
        if rpc:
            rpc_app = create_rpc_app(
                repo,
                token=self.token,
                max_request_bytes=max_request_bytes,
                max_parts=max_parts,
                max_car_links=max_car_links,
            )
            self.rpc_server = ServerThread(
                rpc_app, host=check_loopback(rpc_host, what="the RPC host"), port=rpc_port, name="ipfs-rpc"
            )
        self.gateway_app = create_app(repo, script_roots=script_roots)
        super().__init__(self.gateway_app, host=host, port=port, name="ipfs-gateway")

    @property
    def rpc_url(self) -> str:
        """The RPC listener's base URL (``http://127.0.0.1:<port>``)."""
        return self._rpc().url

    @property
    def multiaddr(self) -> str:
        """The RPC address as the multiaddr ipfshttpclient takes, e.g. ``/ip4/127.0.0.1/tcp/5001/http``."""
        server = self._rpc()
        proto = "ip6" if ":" in server.host else "ip4"
        return f"/{proto}/{server.host}/tcp/{server.port}/http"

    @property
    def gateway_multiaddr(self) -> str:
        """The gateway's address as a multiaddr (what ``origins`` announces), e.g. ``/ip4/127.0.0.1/tcp/8080/http``."""
        proto = "ip6" if ":" in self.host else "ip4"
        return f"/{proto}/{self.host}/tcp/{self.port}/http"

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header every RPC request must carry."""
        return {"Authorization": f"Bearer {self.token}"}

    def allow_scripts(self, root: CID | str) -> None:
        """Let the pages under directory ``root`` (the token viewer's site) run their own scripts from now on."""
        allow_scripts(self.gateway_app, root)

    def _rpc(self) -> ServerThread:
        if self.rpc_server is None:
            raise RuntimeError("this node serves the gateway only (rpc=False)")
        return self.rpc_server

    def start(self, *, timeout: float = 10.0) -> Self:
        if self.rpc_server is not None:
            self.rpc_server.start(timeout=timeout)
        try:
            super().start(timeout=timeout)
        except BaseException:
            if self.rpc_server is not None:
                self.rpc_server.stop()
            raise
        return self

    def stop(self, *, grace: float = 5.0) -> None:
        super().stop(grace=grace)
        if self.rpc_server is not None:
            self.rpc_server.stop(grace=grace)

    def __enter__(self) -> NodeServer:
        self.start()
        return self


def serve_forever(
    repo: IpfsRepo,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    rpc_host: str = "127.0.0.1",
    rpc_port: int = 5001,
    token: str,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    on_ready: Callable[[int, int], None] | None = None,
    script_roots: Collection[CID | str] = (),
) -> None:
    """Serve the gateway on ``host:port`` and the RPC on loopback ``rpc_host:rpc_port`` until Ctrl-C.

    Both ports are bound before anything starts, so a busy one is a clean error; ``on_ready(gateway_port,
    rpc_port)`` is called once both listen (port 0 picks a free one).

    Args:
        repo: the repo both listeners serve.
        host: the gateway's address.
        port: the gateway's port.
        rpc_host: the RPC's address (loopback only).
        rpc_port: the RPC's port.
        token: the RPC bearer token.
        max_request_bytes: the largest ``add`` / ``dag/import`` body the RPC accepts.
        on_ready: called with ``(gateway_port, rpc_port)`` once both listen.
        script_roots: directories whose pages may run their own scripts (:func:`create_app`); default none.

    Raises:
        ConfigError: ``rpc_host`` is not a loopback address.
        BackendUnavailableError: a port is in use or cannot be bound.
    """
    check_loopback(rpc_host)
    try:
        rpc_sock = listen_socket(rpc_host, rpc_port)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"the RPC API {exc.message}",
            hint="pick another port (--rpc-port or ipfs.rpc_port), or stop whatever holds this one "
            "(a Kubo daemon uses 5001)",
        ) from None
    try:
        gateway_sock = listen_socket(host, port)
    except BaseException:
        rpc_sock.close()
        raise
    rpc_app = create_rpc_app(repo, token=token, max_request_bytes=max_request_bytes)
    rpc = SocketThread(rpc_app, rpc_sock, name="ipfs-rpc")
    try:
        rpc.start()
        if on_ready is not None:
            on_ready(gateway_sock.getsockname()[1], rpc_sock.getsockname()[1])
        run_foreground(create_app(repo, script_roots=script_roots), gateway_sock)
    finally:
        rpc.stop()
