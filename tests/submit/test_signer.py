"""The agent key: loaded from a V3 keystore or an Ape account file, and never revealed."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import secrets
from pathlib import Path

import pytest
from eth_account import Account

from agent.errors import ConfigError
from agent.settings import SignerSettings
from agent.submit.signer import PASSWORD_ENV, KeystoreSigner, signing_backend

PASSWORD = "correct horse battery staple"


def _keystore(key: bytes, password: str = PASSWORD) -> dict:
    # A cheap scrypt work factor keeps the test quick; the format is what `ape accounts generate` writes.
    return Account.encrypt(key, password, kdf="scrypt", iterations=2**10)


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def keystore(tmp_path: Path, key: bytes) -> Path:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(_keystore(key)))
    return path


def _leaks(text: str, key: bytes) -> bool:
    return key.hex() in text.lower()


def test_v3_keystore_with_password_from_env(
    keystore: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    signer = KeystoreSigner.from_keystore(keystore)
    assert signer.address == Account.from_key(key).address
    assert signer.source == str(keystore)


def test_password_file_with_trailing_newline(tmp_path: Path, keystore: Path, key: bytes) -> None:
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    signer = KeystoreSigner.from_settings(SignerSettings(keystore=keystore, password_file=pw))
    assert signer.address == Account.from_key(key).address


def test_ape_account_file(tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts = tmp_path / "ape" / "accounts"
    accounts.mkdir(parents=True)
    (accounts / "chrysalis-agent.json").write_text(json.dumps(_keystore(key)))
    monkeypatch.setenv("APE_DATA_FOLDER", str(tmp_path / "ape"))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    signer = KeystoreSigner.from_settings(SignerSettings(ape_account="chrysalis-agent"))
    assert signer.address == Account.from_key(key).address


def test_signing_uses_coincurve_and_recovers_the_address(keystore: Path) -> None:
    assert signing_backend() == "CoinCurveECCBackend"
    signer = KeystoreSigner.from_keystore(keystore, password=PASSWORD)
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": 0,
        "to": signer.address,
        "value": 1,
        "data": b"",
        "gas": 21_000,
        "maxFeePerGas": 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    signed = signer.sign_transaction(tx)
    assert Account.recover_transaction(signed.raw) == signer.address
    assert signed.hash.startswith("0x") and len(signed.hash) == 66


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("wrong-password", "wrong password"),
        ("missing", "does not exist"),
        ("not-json", "malformed"),
        ("no-crypto", "malformed"),
        ("no-password", "no password"),
    ],
)
def test_bad_keystores_are_config_errors_naming_the_file_and_fix(
    tmp_path: Path, keystore: Path, key: bytes, setup: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    path, password = keystore, PASSWORD
    if setup == "wrong-password":
        password = "hunter2"
    elif setup == "missing":
        path = tmp_path / "nope.json"
    elif setup == "not-json":
        path.write_text("{not json")
    elif setup == "no-crypto":
        path.write_text(json.dumps({"version": 3, "address": "00" * 20}))
    with pytest.raises(ConfigError) as info:
        KeystoreSigner.from_keystore(path, password=None if setup == "no-password" else password)
    text = str(info.value)
    assert expected in text
    assert str(path) in text
    assert "hint:" in text  # the fix
    assert not _leaks(text, key) and PASSWORD not in text and "hunter2" not in text


def test_wrong_password_names_the_env_var(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not it")
    with pytest.raises(ConfigError, match=PASSWORD_ENV):
        KeystoreSigner.from_keystore(keystore)


def test_missing_ape_alias(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ape accounts generate ghost"):
        KeystoreSigner.from_ape_account("ghost", ape_data_folder=tmp_path, password="x")


def test_no_key_configured() -> None:
    with pytest.raises(ConfigError, match="signer.keystore"):
        KeystoreSigner.from_settings(SignerSettings())


def test_the_key_never_leaks(keystore: Path, key: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    signer = KeystoreSigner.from_keystore(keystore, password=PASSWORD)
    for text in (
        repr(signer),
        str(signer),
        f"{signer}",
        repr(
            signer.sign_transaction(
                {
                    "type": 2,
                    "chainId": 1,
                    "nonce": 0,
                    "to": signer.address,
                    "value": 0,
                    "data": b"",
                    "gas": 21_000,
                    "maxFeePerGas": 1,
                    "maxPriorityFeePerGas": 1,
                }
            )
        ),
    ):
        assert not _leaks(text, key), text
    # A signing failure names the problem, not the key (and does not chain the signer's frames).
    with pytest.raises(ConfigError) as info:
        signer.sign_transaction({"to": "not an address", "gas": -1})
    assert not _leaks(str(info.value), key) and info.value.__cause__ is None
    for record in caplog.records:
        assert not _leaks(record.getMessage(), key)
    assert not _leaks(caplog.text, key)
    # No accidental copies.
    for attempt in (lambda: pickle.dumps(signer), lambda: copy.copy(signer), lambda: copy.deepcopy(signer)):
        with pytest.raises(TypeError):
            attempt()
    with pytest.raises(AttributeError):
        signer.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(signer, "__dict__")
    with pytest.raises(TypeError):
        KeystoreSigner(key)


def test_keystore_and_password_file_readable_by_others_are_warned_about(
    tmp_path: Path, keystore: Path, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """I7: both are still used (container secrets are mounted 0444), but the WARNING names the file and the fix."""
    pw = tmp_path / "password"
    pw.write_text(PASSWORD)
    keystore.chmod(0o640)
    pw.chmod(0o604)
    with caplog.at_level(logging.WARNING, logger="agent.submit.signer"):
        signer = KeystoreSigner.from_settings(SignerSettings(keystore=keystore, password_file=pw))
    assert signer.address == Account.from_key(key).address
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "chmod" in r.getMessage()
    ]
    assert warnings == [
        f"the keystore {keystore} can be read by group (mode 640): chmod 600 {keystore}",
        f"the keystore password file {pw} can be read by other users (mode 604): chmod 600 {pw}",
    ]
    caplog.clear()
    keystore.chmod(0o600)
    pw.chmod(0o400)
    with caplog.at_level(logging.WARNING, logger="agent.submit.signer"):
        KeystoreSigner.from_settings(SignerSettings(keystore=keystore, password_file=pw))
    assert not [r for r in caplog.records if "chmod" in r.getMessage()]


def test_an_empty_password_that_does_not_decrypt_is_no_password_not_a_wrong_one(
    tmp_path: Path, keystore: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pw = tmp_path / "empty"
    pw.write_text("\n")
    with pytest.raises(ConfigError, match=r"no password given \(password file .* is empty\)") as err:
        KeystoreSigner.from_keystore(keystore, password_file=pw)
    assert "signer.password_file" in (err.value.hint or "")
    monkeypatch.setenv(PASSWORD_ENV, "")
    with pytest.raises(ConfigError, match=r"no password given \(\$CHRYSALIS_KEYSTORE_PASSWORD is empty\)"):
        KeystoreSigner.from_keystore(keystore)
    empty = tmp_path / "empty-pw.json"  # a keystore whose password really is empty still opens
    empty.write_text(json.dumps(_keystore(secrets.token_bytes(32), password="")))
    assert KeystoreSigner.from_keystore(empty).address
