"""``chrysalis agent add-key``: one more key that may fulfil requests, for one more agent on the same database.

Several agents share one database and one collection, each with its own key (every key has its own nonces, so
agents never race on one). Adding one takes three steps that are easy to get half right by hand: make an encrypted
keystore, have the collection's admin ``grantRole(AGENT_ROLE, address)`` (and ``REFRESHER_ROLE`` when the ABI has
it, or scheduled refreshes are refused), and give the new address gas. :func:`add_agent_key` does them in that
order, checking first what would make them fail (the keystore path taken, the admin key not the admin, the roles
held already), and returns the settings lines the new agent needs.

The new keystore is written before anything is sent, so a grant that fails never loses the key: the command can be
run again on it (``--keystore``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from agent.errors import ChrysalisError, ConfigError, PermanentError
from agent.fsutil import write_private
from agent.ops.models import ADMIN_ROLE
from agent.settings import Settings
from agent.submit.signer import KeystoreSigner, Signer

KEYS_DIR = Path(".chrysalis/keys")
"""Where ``chrysalis agent add-key`` writes a new keystore when given no ``--out``."""

ROLES = ("AGENT_ROLE", "REFRESHER_ROLE")
"""The roles an agent needs, looked up by name in the collection's ABI (a role missing there is skipped, except
``AGENT_ROLE``)."""

_WEI_PER_ETH = Decimal(10**18)


@dataclass
class AddedKey:
    """What :func:`add_agent_key` did.

    Attributes:
        address: The agent's address. keystore: Its keystore (None: only an address was given).
        admin: The admin address that granted the roles (None: nothing was granted).
        password_file: The file holding a new keystore's password (None: not made here).
        granted: Role name -> transaction hash of its grant (empty: every role was held already).
        already: Roles it held before.
        funded_wei: Wei sent to it from the admin (0: none). fund_tx: That transaction.
        created: Whether the keystore was made here.
    """

    address: str
    collection: str
    chain_id: int
    admin: str | None = None
    keystore: Path | None = None
    password_file: Path | None = None
    created: bool = False
    granted: dict[str, str] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    funded_wei: int = 0
    fund_tx: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        """Every role was held already, and nothing was sent."""
        return not self.granted and not self.fund_tx

    def settings_env(self) -> list[str]:
        """``CHRYSALIS_SIGNER__...=...`` lines for the new agent (its other settings are the first agent's)."""
        if self.keystore is None:
            return []
        lines = [f"CHRYSALIS_SIGNER__KEYSTORE={self.keystore}"]
        if self.password_file is not None:
            lines.append(f"CHRYSALIS_SIGNER__PASSWORD_FILE={self.password_file}")
        return lines

    def settings_toml(self) -> str:
        """The ``[signer]`` table for the new agent's chrysalis.toml."""
        from agent.ops.config_template import toml_value

        if self.keystore is None:
            return '[signer]\nkeystore = "<the V3 keystore of ' + self.address + '>"\n'
        lines = ["[signer]", f"keystore = {toml_value(str(self.keystore))}"]
        if self.password_file is not None:
            lines.append(f"password_file = {toml_value(str(self.password_file))}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "collection": self.collection,
            "chain_id": self.chain_id,
            "admin": self.admin,
            "keystore": None if self.keystore is None else str(self.keystore),
            "password_file": None if self.password_file is None else str(self.password_file),
            "created": self.created,
            "granted": self.granted,
            "already": self.already,
            "funded_wei": self.funded_wei,
            "fund_tx": self.fund_tx,
            "settings_env": self.settings_env(),
            "settings_toml": self.settings_toml(),
        }


def parse_eth(text: str) -> int:
    """Wei in ``text`` ETH (``0.5``, ``1``, ``1e-3``). Raises ConfigError for anything not a positive amount."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    wei = amount * _WEI_PER_ETH
    if not amount.is_finite() or wei <= 0 or wei != wei.to_integral_value():
        raise ConfigError(
            f"--fund {text!r} is not an amount of ETH",
            hint="give a positive number of ETH with at most 18 decimals, e.g. --fund 0.5",
        )
    return int(wei)


def add_agent_key(
    settings: Settings,
    *,
    out: Path | None = None,
    keystore: Path | None = None,
    address: str | None = None,
    password_file: Path | None = None,
    admin: str | None = None,
    admin_password_file: Path | None = None,
    fund_wei: int = 0,
) -> AddedKey:
    """Make (or take) an agent key and have the admin grant it the agent's roles; see the module docstring.

    Args:
        settings: Where the collection is (``chain``), and the admin key when ``admin`` is None (``signer``).
        out: Where a new keystore goes (default ``.chrysalis/keys/agent-<address>.json``); refused if it exists.
        keystore: An existing V3 keystore to grant instead (its address is read without decrypting, when the file
            names it).
        address: An address to grant instead (its key is kept elsewhere).
        password_file: A new keystore's password (default: a random one written to ``<out>.password``, 0600);
            with ``keystore``, used only when the file names no address.
        admin: The admin's account (``0``, ``dev:2`` on a local chain, a keystore file, ``ape:alias``; default:
            the ``[signer]`` key).
        admin_password_file: That keystore's password (default: ``$CHRYSALIS_KEYSTORE_PASSWORD``).
        fund_wei: Wei the admin sends the new address for gas (0: none).

    Raises:
        ConfigError: two sources named, the keystore (or password) path exists, the admin key lacks the admin role,
            or the ABI has no ``AGENT_ROLE``. NotFoundError / BackendUnavailableError: no deployment record, or the
            node cannot be reached. HolderActionRevertedError: a grant reverted.
    """
    from agent.ops.accounts import load_account
    from agent.pipeline.holder import Collection

    if keystore is not None and address is not None:
        raise ConfigError(
            "--keystore and --address both name the agent's key",
            hint="give one of them (or neither, for a new key)",
        )
    if out is not None and (keystore is not None or address is not None):
        raise ConfigError(
            "--out names a new keystore, but --keystore/--address name an existing key",
            hint="drop --out to grant the existing key, or drop --keystore/--address to make a new one",
        )
    new_key: bytes | None = None
    if keystore is not None:
        agent_address = _keystore_address(keystore, password_file, settings.signer.password_env)
    elif address is not None:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", address.strip()):
            raise ConfigError(f"--address {address!r} is not an address", hint="give 0x and 40 hex digits")
        agent_address = Web3.to_checksum_address(address.strip())
    else:
        new_key = bytes(Account.create().key)
        agent_address = str(Account.from_key(new_key).address)
        out = out if out is not None else KEYS_DIR / f"agent-{agent_address[2:10].lower()}.json"
        _refuse_existing(out, "keystore", "--out")
        if password_file is not None:
            _password_from(password_file)  # readable and not empty, before anything is made
        else:
            _refuse_existing(out.with_suffix(".password"), "password file", "--password-file")

    collection = Collection.connect(settings)
    roles = _role_ids(collection)
    done = AddedKey(
        address=agent_address,
        collection=collection.address,
        chain_id=collection.chain_id,
        keystore=keystore.expanduser().resolve() if keystore is not None else None,
    )
    missing = {}
    for name, role in roles.items():
        if collection.view("hasRole", role, agent_address):
            done.already.append(name)
        else:
            missing[name] = role
    if not missing:
        return done  # nothing sent, no admin key needed: the key is an agent already

    admin_signer = _admin(settings, collection.chain_id, admin, admin_password_file, load_account)
    if not collection.view("hasRole", ADMIN_ROLE, admin_signer.address):
        raise ConfigError(
            f"{admin_signer.address} is not an admin of {collection.address}: it cannot grant AGENT_ROLE",
            hint="sign with the collection's admin (the deployer unless the role was handed over): "
            "--admin-keystore ADMIN_KEYSTORE, or signer.keystore pointing at the admin's key",
        )
    done.admin = admin_signer.address

    if new_key is not None and out is not None:
        password, password_path = _new_password(out, password_file)
        keyfile = Account.encrypt(new_key, password)
        del new_key
        write_private(out, json.dumps(keyfile))
        done.keystore, done.password_file, done.created = out.resolve(), password_path.resolve(), True

    try:
        sender = _sender(collection, admin_signer)
        for name, role in missing.items():
            done.granted[name] = _send(collection, sender, "grantRole", role, agent_address)
        if fund_wei:
            from agent.submit.sender import TxRequest

            confirmation = sender.wait(sender.send(TxRequest(to=agent_address, value=fund_wei, label="fund")))
            done.funded_wei, done.fund_tx = fund_wei, str(confirmation.tx_hash)
    except ChrysalisError as exc:
        if done.created:
            again = (
                f"the new key is saved in {done.keystore}: grant it with "
                f"`chrysalis agent add-key --keystore {done.keystore}`"
            )
            exc.hint = f"{exc.hint}; {again}" if exc.hint else again
        raise
    if not collection.view("hasRole", roles["AGENT_ROLE"], agent_address):
        raise PermanentError(
            f"grantRole was mined but {agent_address} does not hold AGENT_ROLE on {collection.address}",
            hint="is the deployment record current? check the node",
        )
    return done


# -- helpers ---------------------------------------------------------------------------------------------------


def _refuse_existing(path: Path, what: str, option: str) -> None:
    if path.exists():
        raise ConfigError(
            f"the {what} {path} exists already; nothing was made or sent",
            hint=f"choose another path with {option}, or grant the key it holds: "
            f"`chrysalis agent add-key --keystore {path if what == 'keystore' else path.with_suffix('.json')}`",
        )


def _password_from(path: Path) -> str:
    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the password file {path}: {exc.strerror or type(exc).__name__}",
            hint="point --password-file at a readable file holding the new keystore's password, or leave it out "
            "for a random one",
        ) from None
    text = text[:-1] if text.endswith("\n") else text
    if not text:
        raise ConfigError(f"the password file {path} is empty", hint="put a password in it, or leave it out")
    return text


def _new_password(out: Path, password_file: Path | None) -> tuple[str, Path]:
    """The new keystore's password and the file holding it (a random one, written 0600, when none is given)."""
    if password_file is not None:
        return _password_from(password_file), password_file.expanduser()
    path = out.with_suffix(".password")
    password = secrets.token_urlsafe(24)
    write_private(path, password)
    return password, path


def _keystore_address(path: Path, password_file: Path | None, password_env: str) -> str:
    """An existing keystore's address: its ``address`` field, else its key decrypted."""
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(
            f"keystore file {path} does not exist", hint="point --keystore at a V3 keystore JSON"
        )
    try:
        declared = json.loads(path.read_text()).get("address")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and Web3.is_address("0x" + declared.removeprefix("0x")):
        return str(Web3.to_checksum_address("0x" + declared.removeprefix("0x")))
    signer = KeystoreSigner.from_keystore(
        path, password_file=password_file, password_env=password_env, password_file_option="--password-file"
    )
    return signer.address


def _admin(
    settings: Settings, chain_id: int, spec: str | None, password_file: Path | None, load_account: Any
) -> Signer:
    if spec is not None:
        signer: Signer = load_account(
            spec, chain_id=chain_id, password_file=password_file, password_env=settings.signer.password_env
        )
        return signer
    if settings.signer.keystore is None and not settings.signer.ape_account:
        raise ConfigError(
            "no admin key: --admin-keystore is not given and no signer is configured",
            hint="pass --admin-keystore ADMIN_KEYSTORE (or a development account index on a local chain), or set "
            "signer.keystore to the admin's key",
        )
    return KeystoreSigner.from_settings(settings.signer)


def _view_exists(abi: list[dict[str, Any]], name: str) -> bool:
    return any(e.get("type") == "function" and e.get("name") == name and not e.get("inputs") for e in abi)


def _role_ids(collection: Any) -> dict[str, bytes]:
    """Role name -> id of the roles in :data:`ROLES` that the collection's ABI has (``AGENT_ROLE`` required)."""
    roles = {name: bytes(collection.view(name)) for name in ROLES if _view_exists(collection.abi, name)}
    if "AGENT_ROLE" not in roles:
        raise ConfigError(
            f"the ABI of {collection.address} has no AGENT_ROLE",
            hint="point chain.deployment at the record of a LivingCollection deployment",
        )
    return roles


def _sender(collection: Any, signer: Signer) -> Any:
    from agent.submit.sender import Web3TxSender

    return Web3TxSender(collection.rpc, signer, collection.submit, decoder=collection.rpc.decoder)


def _send(collection: Any, sender: Any, method: str, *args: Any) -> str:
    """Send ``method(*args)`` to the collection and wait for its receipt; a revert is one clear error."""
    from agent.pipeline.holder import HolderActionRevertedError
    from agent.submit.errors import RevertError, TransactionRevertedError
    from agent.submit.sender import TxRequest

    data = bytes.fromhex(collection.contract.encode_abi(method, args=list(args))[2:])
    try:
        done = sender.wait(sender.send(TxRequest(to=collection.address, data=data, label=method)))
    except (TransactionRevertedError, RevertError) as exc:
        raise HolderActionRevertedError(
            method, exc.error, tx_hash=getattr(exc, "tx_hash", None), detail=exc.hint or ""
        ) from None
    return str(done.tx_hash)
