"""Who may change anything in the studio: logins (session cookie), a bearer token, and CSRF protection.

* Read-only pages are public. Every action that changes something (review decisions, regeneration, refresh
  requests) needs a curator: a login (``POST /login``; a signed session cookie) or ``Authorization: Bearer
  <token>`` (scripts, CI).
* Every form carries a CSRF token tied to the session; a POST whose token is missing or wrong is refused with 403
  whoever sends it. Requests with a valid bearer token are exempt (a browser never adds that header by itself).
* Passwords: the admin's from ``studio.password_env`` / ``studio.password_file`` (at least 12 characters, hashed
  with scrypt when read; or already a ``scrypt$...`` hash); more curators in ``studio.curators_file`` as
  ``name:scrypt$...`` lines (``chrysalis review curator NAME`` writes one; the file is read again when it changes).
  Secrets are never read from the TOML file. Every login check costs one scrypt, whether the name exists or not.
* Sessions: a login stores the name, a session id and a fingerprint of the account's password hash in the signed
  cookie. Every request checks them: logging out revokes the session id (:class:`RevokedSessions`), and removing
  an account or changing its password ends its sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.fsutil import write_private
from agent.settings import StudioSettings

log = logging.getLogger("chrysalis.studio")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 12
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
        raise ConfigError(
            "the password is empty", hint=f"choose a password of at least {MIN_PASSWORD} characters"
        )
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
    """The logins and the API token the studio accepts, read from env vars and files (the curators file again
    whenever it changes, so that removing a curator ends their sessions without a restart).

    Args:
        settings: The studio's settings (which env vars and files hold the secrets).
        admin_password: The admin password itself, for this process only (the demo's session password): it wins
            over ``password_env`` and ``password_file``.
    """

    def __init__(self, settings: StudioSettings, *, admin_password: str | None = None) -> None:
        self.admin_user = settings.admin_user
        self.token_user = settings.token_user
        self.session_secret = _secret(
            settings.session_secret_env, settings.session_secret_file, "session secret"
        ) or secrets.token_urlsafe(32)
        self._admin_hash = _admin_hash(
            admin_password or _secret(settings.password_env, settings.password_file, "password"),
            settings.password_env,
            self.session_secret,
        )
        self._token = _secret(settings.token_env, settings.token_file, "API token")
        self._curators_path = Path(settings.curators_file) if settings.curators_file is not None else None
        self._curators: dict[str, str] = {}
        self._curators_stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if self._curators_path is not None:
            self._curators = read_curators(self._curators_path)  # a bad file stops the start
            self._curators_stamp = _stamp(self._curators_path)
        self._dummy = hash_password(secrets.token_urlsafe(16))  # what unknown names are checked against

    @property
    def can_log_in(self) -> bool:
        return self._admin_hash is not None or bool(self.curators())

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def curators(self) -> dict[str, str]:
        """``name -> scrypt hash`` from the curators file, read again when it changed (unreadable: none)."""
        path = self._curators_path
        if path is None:
            return {}
        with self._lock:
            stamp = _stamp(path)
            if stamp != self._curators_stamp:
                try:
                    self._curators = read_curators(path)
                except ConfigError as exc:  # fail closed: nobody from the file, the admin still works
                    log.warning("studio: curators file unusable, no curator can log in: %s", exc.message)
                    self._curators = {}
                self._curators_stamp = stamp
            return self._curators

    def _hash_of(self, name: str) -> str | None:
        if name == self.admin_user and self._admin_hash is not None:
            return self._admin_hash
        return self.curators().get(name)

    def login(self, name: str, password: str) -> Curator | None:
        """The curator ``name`` if ``password`` is theirs: one scrypt, for known and unknown names alike (slow:
        call it off the event loop)."""
        name = name.strip()
        encoded = self._hash_of(name)
        ok = check_password(password, encoded if encoded is not None else self._dummy)
        return Curator(name, "session") if ok and encoded is not None else None

    def fingerprint(self, name: str) -> str | None:
        """A keyed digest of ``name``'s password hash (None: no such account): a session stores it at login,
        and it no longer matches once the account is removed or its password changes."""
        encoded = self._hash_of(name)
        if encoded is None:
            return None
        mac = hmac.new(self.session_secret.encode(), f"{name}\0{encoded}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def session_ok(self, name: str, fingerprint: str) -> bool:
        """Whether a session of ``name`` made with ``fingerprint`` still stands (constant-time comparison)."""
        want = self.fingerprint(name)
        return want is not None and hmac.compare_digest(want.encode(), str(fingerprint).encode())

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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _admin_hash(secret: str | None, env: str, session_secret: str) -> str | None:
    """The admin password as an scrypt hash: a ``scrypt$...`` value is taken as it is; a plain one (at least
    :data:`MIN_PASSWORD` characters) is hashed now, with a salt derived from the session secret so that the
    hash, and with it the admin's sessions, survive a restart when the session secret does."""
    if secret is None:
        return None
    if secret.startswith("scrypt$"):
        if not _well_formed(secret):
            raise ConfigError(
                f"the studio's admin password ({env}) looks like an scrypt hash but is not one",
                hint="use `scrypt$N$r$p$<salt>$<hash>` as `chrysalis review curator` writes it, or a plain password",
            )
        return secret
    if len(secret) < MIN_PASSWORD:
        raise ConfigError(
            f"the studio's admin password ({env} / studio.password_file) is shorter than {MIN_PASSWORD} characters",
            hint=f"choose one of at least {MIN_PASSWORD} characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(16))'`)",
        )
    salt = hashlib.sha256(b"chrysalis-studio-admin\0" + session_secret.encode()).digest()[:16]
    return hash_password(secret, salt=salt)


def _well_formed(encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        base64.urlsafe_b64decode(salt)
        return (
            scheme == "scrypt"
            and int(n) > 1
            and int(r) > 0
            and int(p) > 0
            and bool(base64.urlsafe_b64decode(digest))
        )
    except (ValueError, TypeError):
        return False


class RevokedSessions:
    """Session ids that logged out, until their cookies would have expired anyway.

    Kept in memory and, when ``path`` is given, in that JSON file (mode 600), so that a logged-out cookie stays
    dead across restarts when the session secret is persistent.
    """

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                self._until = {str(k): float(v) for k, v in dict(data).items()}
            except (OSError, ValueError, TypeError) as exc:
                log.warning("studio: ignoring unreadable %s: %s", path, exc)

    def revoke(self, sid: str, until: float) -> None:
        now = self.clock()
        with self._lock:
            self._until = {k: v for k, v in self._until.items() if v > now}
            self._until[sid] = until
            snapshot = dict(self._until)
        if self.path is not None:
            try:
                write_private(self.path, json.dumps(snapshot))
            except OSError as exc:  # still revoked in memory
                log.warning("studio: cannot record a logout in %s: %s", self.path, exc.strerror)

    def revoked(self, sid: str) -> bool:
        with self._lock:
            return sid in self._until


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
    if len(password) < MIN_PASSWORD:
        raise ConfigError(
            f"the password is shorter than {MIN_PASSWORD} characters",
            hint=f"choose one of at least {MIN_PASSWORD}",
        )
    lines = []
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.partition(":")[0].strip() != name]
    lines.append(f"{name}:{hash_password(password)}")
    write_private(path, "\n".join(lines) + "\n")


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
