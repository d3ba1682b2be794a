"""Signing transactions with the agent's key, loaded from an encrypted keystore.

The key comes from an eth-account V3 keystore JSON or an Ape account file (Ape stores the same V3 JSON under
``~/.ape/accounts/<alias>.json``), decrypted with a password from the environment
(``CHRYSALIS_KEYSTORE_PASSWORD``) or a file. The decrypted key lives only inside a signing closure: it is
never logged, printed, put in an exception message, a repr, or pickled.

Signing goes through eth-keys, which uses coincurve (libsecp256k1, ~1 ms per signature) when it is installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from agent.errors import ConfigError
from agent.settings import SignerSettings

log = logging.getLogger(__name__)

PASSWORD_ENV = "CHRYSALIS_KEYSTORE_PASSWORD"


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction, ready for ``eth_sendRawTransaction``."""

    raw: bytes
    hash: str

    def __repr__(self) -> str:
        return f"SignedTx(hash={self.hash}, {len(self.raw)} bytes)"


class Signer(ABC):
    """Signs transactions for one account."""

    __slots__ = ()

    @property
    @abstractmethod
    def address(self) -> str:
        """Checksum address of the account."""

    @abstractmethod
    def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTx:
        """Sign an EIP-1559 transaction dict (``to, data, value, gas, nonce, chainId, maxFeePerGas, ...``)."""


def signing_backend() -> str:
    """Name of the eth-keys ECC backend in use (``CoinCurveECCBackend`` when coincurve is installed)."""
    from eth_keys.backends import get_backend

    return type(get_backend()).__name__


class KeystoreSigner(Signer):
    """A :class:`Signer` holding a key decrypted from a keystore; see the module docstring."""

    __slots__ = ("_address", "_sign", "_source")
    _address: str
    _sign: Callable[[Mapping[str, Any]], Any]
    _source: str

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("use KeystoreSigner.from_keystore(), .from_ape_account() or .from_settings()")

    @classmethod
    def _create(cls, sign: Callable[[Mapping[str, Any]], Any], address: str, source: str) -> KeystoreSigner:
        self = object.__new__(cls)
        object.__setattr__(self, "_sign", sign)
        object.__setattr__(self, "_address", address)
        object.__setattr__(self, "_source", source)
        backend = signing_backend()
        if backend != "CoinCurveECCBackend":
            log.warning(
                "signing with eth-keys' %s backend; install coincurve for ~8x faster signing", backend
            )
        log.info("agent account %s loaded from %s", address, source)
        return self

    # -- constructors -------------------------------------------------------------------------------------

    @classmethod
    def from_keystore(
        cls,
        path: str | os.PathLike[str],
        *,
        password: str | None = None,
        password_file: str | os.PathLike[str] | None = None,
        password_env: str = PASSWORD_ENV,
        password_file_option: str = "signer.password_file",
    ) -> KeystoreSigner:
        """Decrypt a V3 keystore JSON file.

        The password is, in order: ``password``, the contents of ``password_file`` (one trailing newline
        stripped), the env var ``password_env``. A keystore or password file that other users can read is
        logged as a WARNING (it is still used: container secrets are often mounted 0444).

        Args:
            password_file_option: How the user names the password file in hints (``--password-file`` on the
                command line, ``signer.password_file`` for the agent).

        Raises:
            ConfigError: the file is missing or malformed, no password is given (or it is empty and does not
                decrypt), or the password is wrong. The message names the file and the fix, never the key or
                the password.
        """
        path = Path(path).expanduser()
        secret, origin = _password(path, password, password_file, password_env, password_file_option)
        keyfile = _read_keyfile(path)
        warn_if_readable_by_others(path, "keystore")
        if password_file is not None and password is None:
            warn_if_readable_by_others(Path(password_file).expanduser(), "keystore password file")
        try:
            key = Account.decrypt(keyfile, secret)
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                where = f"${password_env} or {password_file_option}"
                if secret == "":
                    raise ConfigError(
                        f"cannot decrypt keystore {path}: no password given ({origin} is empty)",
                        hint=f"put the keystore's password in {where}",
                    ) from None
                raise ConfigError(
                    f"cannot decrypt keystore {path}: wrong password (from {origin})",
                    hint=f"set {where} to the password the keystore was made with",
                ) from None
            raise _malformed(path, type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a malformed file
            raise _malformed(path, type(exc).__name__) from None
        account = Account.from_key(key)
        del key
        declared = keyfile.get("address")
        if isinstance(declared, str) and declared.lower().removeprefix("0x") != account.address.lower()[2:]:
            raise ConfigError(
                f"keystore {path} declares address 0x{declared.removeprefix('0x')} but holds the key of "
                f"{account.address}",
                hint="the file was edited or mixed up; re-export the account's keystore",
            )
        return cls._create(account.sign_transaction, account.address, str(path))

    @classmethod
    def from_ape_account(
        cls,
        alias: str,
        *,
        ape_data_folder: str | os.PathLike[str] | None = None,
        password: str | None = None,
        password_file: str | os.PathLike[str] | None = None,
        password_env: str = PASSWORD_ENV,
        password_file_option: str = "signer.password_file",
    ) -> KeystoreSigner:
        """Decrypt the Ape account ``alias``: ``$APE_DATA_FOLDER/accounts/<alias>.json`` (``~/.ape``)."""
        folder = Path(
            ape_data_folder or os.environ.get("APE_DATA_FOLDER") or Path.home() / ".ape"
        ).expanduser()
        path = folder / "accounts" / f"{alias}.json"
        if not path.is_file():
            raise ConfigError(
                f"no Ape account {alias!r} (looked for {path})",
                hint=f"create it with `ape accounts generate {alias}` or `ape accounts import {alias}`, "
                "or set APE_DATA_FOLDER",
            )
        return cls.from_keystore(
            path,
            password=password,
            password_file=password_file,
            password_env=password_env,
            password_file_option=password_file_option,
        )

    @classmethod
    def from_settings(cls, settings: SignerSettings) -> KeystoreSigner:
        """From the ``[signer]`` settings: ``keystore`` or ``ape_account``, and where the password is."""
        if settings.keystore is not None:
            return cls.from_keystore(
                settings.keystore, password_file=settings.password_file, password_env=settings.password_env
            )
        if settings.ape_account:
            return cls.from_ape_account(
                settings.ape_account, password_file=settings.password_file, password_env=settings.password_env
            )
        raise ConfigError(
            "no agent key configured",
            hint="set signer.keystore (a V3 keystore JSON) or signer.ape_account (an Ape account alias)",
        )

    @classmethod
    def from_private_key(cls, key: bytes | str, *, source: str = "memory") -> KeystoreSigner:
        """Wrap a raw key (benchmarks and tests; the service loads a keystore)."""
        account = Account.from_key(key)
        return cls._create(account.sign_transaction, account.address, source)

    # -- Signer -------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._address

    @property
    def source(self) -> str:
        """Where the key came from (a path, or ``memory``)."""
        return self._source

    def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTx:
        try:
            signed = self._sign(dict(tx))
        except Exception as exc:  # noqa: BLE001 - never chain: the signer's frames hold the key
            raise ConfigError(
                f"cannot sign transaction for {self._address}: {type(exc).__name__}: {_safe(str(exc))}",
                hint="check the transaction fields (to, gas, nonce, chainId, fees)",
            ) from None
        return SignedTx(raw=bytes(signed.raw_transaction), hash="0x" + bytes(signed.hash).hex())

    # -- never reveal ---------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"KeystoreSigner(address={self._address}, source={self._source})"

    __str__ = __repr__

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("KeystoreSigner is immutable")

    def __reduce__(self) -> Any:
        raise TypeError("a KeystoreSigner holds a decrypted key and cannot be pickled or copied")

    def __copy__(self) -> Any:
        raise TypeError("a KeystoreSigner holds a decrypted key and cannot be pickled or copied")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("a KeystoreSigner holds a decrypted key and cannot be pickled or copied")


def _safe(text: str, limit: int = 200) -> str:
    """An error text cut short, with any 32-byte hex run masked (defence in depth)."""
    return re.sub(r"(0x)?[0-9a-fA-F]{64}", "<redacted>", text)[:limit]


def _password(
    path: Path,
    password: str | None,
    password_file: str | os.PathLike[str] | None,
    password_env: str,
    password_file_option: str = "signer.password_file",
) -> tuple[str, str]:
    """The password and where it came from (for messages: never the password itself)."""
    if password is not None:
        return password, "the password given"
    if password_file is not None:
        pfile = Path(password_file).expanduser()
        try:
            text = pfile.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the password file {pfile} for keystore {path}: "
                f"{exc.strerror or type(exc).__name__}",
                hint=f"point {password_file_option} at a readable file holding the keystore password",
            ) from None
        return (text[:-1] if text.endswith("\n") else text), f"password file {pfile}"
    value = os.environ.get(password_env)
    if value is None:
        raise ConfigError(
            f"no password for keystore {path}: ${password_env} is not set",
            hint=f"set the env var {password_env}, or pass {password_file_option} (a file holding the password)",
        )
    return value, f"${password_env}"


def warn_if_readable_by_others(path: Path, what: str) -> bool:
    """Log a WARNING when group or other users may read ``path`` (POSIX modes only); return whether it did.

    Not refused: the keystore is encrypted, and container platforms mount secrets group/world-readable by
    default (Docker 0444, Kubernetes 0644). The RPC token file that Chrysalis writes itself is refused instead
    (:mod:`agent.ipfs.rpc_auth`).
    """
    if os.name != "posix":
        return False
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not mode & 0o077:
        return False
    who = " and ".join(w for w, bits in (("group", 0o070), ("other users", 0o007)) if mode & bits)
    log.warning(
        "the %s %s can be read by %s (mode %03o): chmod 600 %s", what, path, who, mode & 0o777, path,
        extra={"path": str(path), "mode": f"{mode & 0o777:03o}"},
    )  # fmt: skip
    return True


def _read_keyfile(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"keystore file {path} does not exist",
            hint="point signer.keystore at a V3 keystore JSON (e.g. from `ape accounts generate` or "
            "eth_account.Account.encrypt), or use signer.ape_account",
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(path, f"not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict) or "crypto" not in {k.lower() for k in data}:
        raise _malformed(path, "no 'crypto' section")
    return data


def _malformed(path: Path, detail: str) -> ConfigError:
    return ConfigError(
        f"keystore {path} is malformed ({detail})",
        hint="it must be a V3 keystore JSON (version 3, with a 'crypto' section); re-export the account",
    )
