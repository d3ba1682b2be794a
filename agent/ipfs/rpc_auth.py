"""Who may use the embedded node's Kubo RPC (``/api/v0``): loopback listeners and a bearer token.

The RPC can add, pin, unpin and import: it is a write API, so it never shares a listener with the gateway.
It listens on a loopback address only (:func:`check_loopback` refuses anything else) and every request must
carry ``Authorization: Bearer <token>``, the header Kubo's ``API.Authorizations`` (``AuthSecret:
"bearer:<token>"``) checks. The token comes from ``$CHRYSALIS_IPFS_RPC_TOKEN``, else from ``rpc.token`` in
the repo directory, which :func:`rpc_token` creates (random, mode 0600) the first time. It is never read from
the TOML file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from agent.errors import ConfigError
from agent.net import is_loopback

RPC_TOKEN_ENV = "CHRYSALIS_IPFS_RPC_TOKEN"
"""Env var holding the embedded node's RPC token (overrides the token file)."""

KUBO_TOKEN_ENV = "CHRYSALIS_KUBO_API_TOKEN"
"""Env var holding the bearer token sent to ``ipfs.kubo_api`` (a Kubo with ``API.Authorizations``, or our node)."""

TOKEN_FILE = "rpc.token"
"""The token's file inside the repo directory."""

_MIN_TOKEN = 16


def check_loopback(host: str, *, what: str = "ipfs.rpc_host") -> str:
    """``host`` if it is a loopback address, else a :class:`ConfigError` saying why the RPC stays local."""
    if not is_loopback(host):
        raise ConfigError(
            f"{what} is {host!r}, but the node's RPC API (add, pin/rm, dag/import) listens on loopback only",
            hint="use 127.0.0.1 or ::1; pinning services fetch from the read-only gateway "
            '(ipfs.gateway_host), or better use mode = "car"',
        )
    return host


def token_path(repo: Path) -> Path:
    """Where the RPC token of the repo at ``repo`` is kept."""
    return Path(repo) / TOKEN_FILE


def rpc_token(repo: Path | None, *, create: bool = True) -> str:
    """The embedded node's RPC token: ``$CHRYSALIS_IPFS_RPC_TOKEN``, else ``<repo>/rpc.token``.

    With ``create``, a missing file is written with a fresh random token, readable by its owner only (0600).

    Raises:
        ConfigError: the env var or the file holds a token that is too short, the file is readable by others,
            or (without ``create``) there is no token at all.
    """
    value = os.environ.get(RPC_TOKEN_ENV, "").strip()
    if value:
        if len(value) < _MIN_TOKEN:
            raise ConfigError(
                f"${RPC_TOKEN_ENV} is {len(value)} characters long; the RPC token needs at least {_MIN_TOKEN}",
                hint="set it to a random value, e.g. $(python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                "or unset it to use the token file",
            )
        return value
    if repo is None:
        raise ConfigError(
            "the node's RPC token has no home: the repo is in memory",
            hint=f"set ${RPC_TOKEN_ENV}",
        )
    path = token_path(repo)
    try:
        return _read_token(path)
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"no RPC token: {path} does not exist and ${RPC_TOKEN_ENV} is not set",
                hint="start the node once (`chrysalis ipfs serve`) to create the token file, or set "
                f"${RPC_TOKEN_ENV}",
            ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile: use theirs
        return _read_token(path)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"the RPC token file {path} is readable by other users (mode {mode & 0o777:o})",
            hint=f"chmod 600 {path} (and consider replacing the token: delete the file and restart the node)",
        )
    token = path.read_text().strip()
    if len(token) < _MIN_TOKEN:
        raise ConfigError(
            f"the RPC token file {path} holds {len(token)} characters; a token needs at least {_MIN_TOKEN}",
            hint=f"delete {path} and start the node again to create a new token",
        )
    return token
