"""Local accounts for holder actions (``chrysalis evolve --from ACCOUNT``).

``ACCOUNT`` is one of:

* ``N`` or ``dev:N``: the N-th development account of the test mnemonic that anvil and Ape's test provider both
  fund (``test test ... junk``, path ``m/44'/60'/0'/0/N``). Their keys are public, so they are refused on any
  chain but a local development chain (chain id 31337 or 1337).
* a path to a V3 keystore JSON file (eth-account / geth / Ape format);
* ``ape:ALIAS`` or ``ALIAS``: the Ape account ``$APE_DATA_FOLDER/accounts/ALIAS.json`` (``~/.ape``).

Keystore passwords come from ``--password-file`` or the env var (``CHRYSALIS_KEYSTORE_PASSWORD``), never from
the command line. Every account becomes a :class:`~agent.submit.signer.KeystoreSigner`, which never reveals
its key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from eth_account import Account

from agent.errors import ConfigError
from agent.submit.signer import PASSWORD_ENV, KeystoreSigner

#: The mnemonic anvil and Ape's test provider fund by default.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_HD_PATH = "m/44'/60'/0'/0"
#: Chain ids of local development chains (anvil / ape-foundry, and Ape's test provider or `anvil --chain-id 1337`).
DEV_CHAIN_IDS = frozenset({31337, 1337})
MNEMONIC_ENV = "CHRYSALIS_DEV_MNEMONIC"

_DEV = re.compile(r"^(?:dev:)?(\d{1,4})$")


def dev_key(index: int, mnemonic: str | None = None) -> bytes:
    """The private key of development account ``index`` (the mnemonic: ``$CHRYSALIS_DEV_MNEMONIC`` or anvil's)."""
    Account.enable_unaudited_hdwallet_features()
    phrase = mnemonic or os.environ.get(MNEMONIC_ENV) or DEV_MNEMONIC
    try:
        account = Account.from_mnemonic(phrase, account_path=f"{DEV_HD_PATH}/{index}")
    except Exception as exc:  # noqa: BLE001 - eth-account raises several types for a bad phrase
        raise ConfigError(
            f"cannot derive development account {index}: {type(exc).__name__}",
            hint=f"check {MNEMONIC_ENV} (a BIP-39 mnemonic), or unset it to use anvil's default",
        ) from None
    return bytes(account.key)


def dev_address(index: int, mnemonic: str | None = None) -> str:
    """Checksum address of development account ``index``."""
    return str(Account.from_key(dev_key(index, mnemonic)).address)


def load_account(
    spec: str,
    *,
    chain_id: int,
    password_file: Path | None = None,
    password_env: str = PASSWORD_ENV,
) -> KeystoreSigner:
    """The signer ``spec`` names (see the module docstring) for a transaction on ``chain_id``.

    Raises:
        ConfigError: the spec names nothing usable (an address, a missing file or alias, a wrong password,
            a development account on a public chain). The message says which and how to fix it.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("--from is empty", hint=_FORMS)
    if re.fullmatch(r"0x[0-9a-fA-F]{40}", spec):
        raise ConfigError(
            f"--from {spec} is an address, and an address cannot sign",
            hint="name the account's key instead: " + _FORMS,
        )
    dev = _DEV.match(spec)
    if dev is not None:
        index = int(dev.group(1))
        if chain_id not in DEV_CHAIN_IDS:
            raise ConfigError(
                f"development account {index} has a public key; refusing to use it on chain {chain_id}",
                hint="development accounts are for local chains (ids 31337, 1337); use a keystore or an Ape "
                "account on this chain",
            )
        return KeystoreSigner.from_private_key(dev_key(index), source=f"development account {index}")
    path = Path(spec).expanduser()
    if path.suffix == ".json" or os.sep in spec or path.is_file():
        if not path.is_file():
            raise ConfigError(f"keystore file {path} does not exist", hint=_FORMS)
        return KeystoreSigner.from_keystore(
            path,
            password_file=password_file,
            password_env=password_env,
            password_file_option="--password-file",
        )
    alias = spec.removeprefix("ape:")
    return KeystoreSigner.from_ape_account(
        alias, password_file=password_file, password_env=password_env, password_file_option="--password-file"
    )


_FORMS = (
    "--from takes a development account index (0, dev:3) on a local chain, a keystore file "
    "(path/to/key.json, password in $CHRYSALIS_KEYSTORE_PASSWORD or --password-file), or an Ape account "
    "alias (ape:alice)"
)
