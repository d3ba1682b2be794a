"""Who may change anything in the studio: logins (session cookie), a bearer token, and CSRF protection.

* Read-only pages are public. Every action that changes something (review decisions, regeneration, refresh
  requests) needs a curator: a login (``POST /login``; a signed session cookie) or ``Authorization: Bearer
  <token>`` (scripts, CI).
* Every form carries a CSRF token tied to the session; a POST whose token is missing or wrong is refused with 403
  whoever sends it. Requests with a valid bearer token are exempt (a browser never adds that header by itself).
* Passwords: the admin's from ``studio.password_env`` / ``studio.password_file``; more curators in
  ``studio.curators_file`` as ``name:scrypt$...`` lines (``chrysalis review curator NAME`` writes one). Secrets are
  never read from the TOML file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.settings import StudioSettings

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Curator:
    """Someone allowed to change things; ``via`` is ``session`` or ``token``."""

    name: str
    via: str


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt b64>$<hash b64>`` of ``password`` (for the curators file)."""
    if not password:
        raise ConfigError("the password is empty", hint="choose a password of at least 8 characters")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches an encoded hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        want = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _secret(env: str, path: Path | None, what: str) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    if path is not None:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the studio's {what} file {path}: {exc.strerror}",
                hint=f"create it, or set {env} instead",
            ) from None
        if not text:
            raise ConfigError(f"the studio's {what} file {path} is empty", hint=f"write the {what} into it")
        return text
    return None


class Credentials:
    """The logins and the API token the studio accepts, read once from env vars and files."""

    def __init__(self, settings: StudioSettings) -> None:
        self.admin_user = settings.admin_user
        self.token_user = settings.token_user
        self._admin_password = _secret(settings.password_env, settings.password_file, "password")
        self._token = _secret(settings.token_env, settings.token_file, "API token")
        self._curators: dict[str, str] = {}
        if settings.curators_file is not None:
            self._curators = read_curators(Path(settings.curators_file))
        self.session_secret = _secret(
            settings.session_secret_env, settings.session_secret_file, "session secret"
        ) or secrets.token_urlsafe(32)

    @property
    def can_log_in(self) -> bool:
        return self._admin_password is not None or bool(self._curators)

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def login(self, name: str, password: str) -> Curator | None:
        """The curator ``name`` if ``password`` is theirs."""
        name = name.strip()
        if name == self.admin_user and self._admin_password is not None:
            ok = hmac.compare_digest(
                hashlib.sha256(password.encode()).digest(),
                hashlib.sha256(self._admin_password.encode()).digest(),
            )
            return Curator(name, "session") if ok else None
        encoded = self._curators.get(name)
        if encoded is not None and check_password(password, encoded):
            return Curator(name, "session")
        if encoded is None:  # spend the same time on unknown names
            check_password(password, hash_password("x", salt=b"0" * 16))
        return None

    def bearer(self, header: str | None) -> Curator | None:
        """The token's curator if ``Authorization: Bearer <token>`` carries the API token."""
        if not header or self._token is None:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        if hmac.compare_digest(value.strip().encode(), self._token.encode()):
            return Curator(self.token_user, "token")
        return None


def read_curators(path: Path) -> dict[str, str]:
    """``name -> scrypt hash`` from a curators file (blank lines and ``#`` comments allowed)."""
    if not path.is_file():
        raise ConfigError(
            f"studio.curators_file {path} does not exist", hint="add one with `chrysalis review curator NAME`"
        )
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not name.strip() or not encoded.startswith("scrypt$"):
            raise ConfigError(
                f"{path} line {n} is not `name:scrypt$...`",
                hint="write the lines with `chrysalis review curator NAME`",
            )
        out[name.strip()] = encoded.strip()
    return out


def add_curator(path: Path, name: str, password: str) -> None:
    """Add or replace ``name`` in the curators file (created with mode 600)."""
    name = name.strip()
    if not name or ":" in name or len(name) > 200:
        raise ConfigError(f"curator name {name!r} is not usable", hint="use 1..200 characters without ':'")
    if len(password) < 8:
        raise ConfigError("the password is shorter than 8 characters", hint="choose a longer one")
    lines = []
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.partition(":")[0].strip() != name]
    lines.append(f"{name}:{hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token (created on first use)."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def csrf_ok(session: dict[str, Any], sent: str | None) -> bool:
    want = session.get("csrf")
    return bool(want and sent) and hmac.compare_digest(str(want).encode(), str(sent).encode())
