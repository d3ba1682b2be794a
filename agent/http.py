"""Serving an ASGI app with uvicorn: on a background thread (tests, the agent, the studio) or in the foreground.

Guarantees:

* The listening socket is bound before anything starts (:func:`listen_socket`), so a busy or unbindable port is a
  :class:`~agent.errors.BackendUnavailableError` with a hint, never uvicorn's raw ``[Errno 98]`` from a thread.
* :meth:`ServerThread.start` returns only once uvicorn accepts connections (or raises); ``port=0`` picks a free
  port, which :attr:`ServerThread.port` then holds.
* :meth:`ServerThread.stop` waits for in-flight requests (up to ``grace`` seconds, then forces the exit) and closes
  the socket; it may be called more than once.

A leaf of the agent: it imports nothing of the agent's but :mod:`agent.errors`.
"""

from __future__ import annotations

import socket
import threading
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from agent.errors import BackendUnavailableError

__all__ = ["ServerThread", "SocketThread", "listen_socket", "run_foreground"]


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (``port=0``: any free one), for uvicorn's ``sockets=``.

    Binding before uvicorn starts turns a busy port into a clean error instead of uvicorn's raw ``[Errno 98]``.

    Args:
        host: the address to bind (an IPv6 address when it contains ``:``).
        port: the TCP port; 0 picks a free one.

    Raises:
        BackendUnavailableError: the address is in use or cannot be bound (the hint says what to do).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so (else +40 ms a reply)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise BackendUnavailableError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another port (--port), or stop whatever holds this one",
        ) from None
    return sock


def run_foreground(app: ASGIApp, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` (from :func:`listen_socket`) in the foreground until Ctrl-C / SIGTERM.

    Args:
        app: the ASGI app.
        sock: a listening socket; closed when serving ends.
    """
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class ServerThread:
    """Runs an ASGI app with uvicorn on a background thread, bound before :meth:`start` returns.

    ``port=0`` picks a free port (read it from :attr:`port`). Use as a context manager, or call
    :meth:`start` and :meth:`stop`; stopping waits for in-flight requests (up to ``grace`` seconds).

    Args:
        app: the ASGI app.
        host: the address to listen on.
        port: the TCP port; 0 picks a free one.
        name: names the thread and the errors (``"<name> server on <url> failed to start"``).
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, name: str = "http") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The base URL, ``http://<host>:<port>`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> Self:
        """Bind, start uvicorn on a daemon thread, and wait until it accepts connections.

        Args:
            timeout: seconds to wait for uvicorn to start.

        Raises:
            BackendUnavailableError: the port cannot be bound, or the server failed or did not start in time.
        """
        sock = listen_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                sock.close()
                raise BackendUnavailableError(f"the {self.name} server on {self.url} failed to start")
            if waited >= timeout:
                self.stop()
                raise BackendUnavailableError(
                    f"the {self.name} server on {self.url} did not start in {timeout} s"
                )
            deadline.wait(0.01)
            waited += 0.01
        self._socket = sock
        return self

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop serving: let in-flight requests finish (up to ``grace`` s), then force the exit; idempotent.

        Args:
            grace: seconds to wait for the server thread, once gracefully and once forced.
        """
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(grace)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(grace)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SocketThread:
    """uvicorn on a background thread over a socket that is already listening, beside a foreground server.

    Signals stay with the main thread's server (uvicorn only captures them on the main thread), so stop this one
    when the foreground server returns.

    Args:
        app: the ASGI app.
        sock: a listening socket (from :func:`listen_socket`); closed by :meth:`stop`.
        name: the thread's name.
    """

    def __init__(self, app: ASGIApp, sock: socket.socket, *, name: str = "http") -> None:
        config = uvicorn.Config(app, log_level="info", lifespan="off", timeout_graceful_shutdown=2)
        self._sock = sock
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=name, daemon=True
        )

    def start(self) -> None:
        """Start serving on the background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the server to exit, wait for it (up to 5 s) and close the socket."""
        self._server.should_exit = True
        self._thread.join(5)
        self._sock.close()
