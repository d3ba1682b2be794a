"""``chrysalis agent add-key`` on anvil: a new encrypted keystore whose address the admin grants AGENT_ROLE and
REFRESHER_ROLE (mined, then read back from the chain), funded on request, and an agent built on the printed
settings starts (it refuses a key without AGENT_ROLE). Refusals say why and send nothing: a taken keystore path,
an admin key that is not the admin; a key that holds the roles already is said so (exit 0)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from agent.app import build_agent
from agent.ops.accounts import dev_address, dev_key
from agent.settings import load_settings
from bench.latency import NullImageGenerator, NullLoreWriter
from tests.ops.conftest import ADMIN, HOLDER
from tests.support.devchain import CollectionChain

pytestmark = pytest.mark.anvil


def _roles(chain: CollectionChain, address: str) -> dict[str, bool]:
    f = chain.collection.functions
    return {
        "AGENT_ROLE": f.hasRole(f.AGENT_ROLE().call(), address).call(),
        "REFRESHER_ROLE": f.hasRole(f.REFRESHER_ROLE().call(), address).call(),
    }


def _env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line.startswith("CHRYSALIS_SIGNER__"))


def test_add_key_makes_a_keystore_grants_its_roles_funds_it_and_an_agent_starts_with_it(
    configured: CollectionChain, workdir: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = configured
    result = chrysalis(
        "agent", "add-key", "--admin", str(ADMIN), "--fund", "0.25", "--out", "keys/second.json"
    )
    assert result.code == 0, result.text
    keystore = workdir / "keys" / "second.json"
    password_file = workdir / "keys" / "second.password"
    for path in (keystore, password_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    address = Account.from_key(
        Account.decrypt(json.loads(keystore.read_text()), password_file.read_text())
    ).address
    assert f"made a new agent key {address}" in result.text
    assert "granted AGENT_ROLE" in result.text and "granted REFRESHER_ROLE" in result.text
    assert _roles(chain, address) == {"AGENT_ROLE": True, "REFRESHER_ROLE": True}
    assert chain.w3.eth.get_balance(address) == 25 * 10**16
    assert f'keystore = "{keystore}"' in result.out  # the [signer] table, as TOML
    env = _env_lines(result.out)
    assert env == {
        "CHRYSALIS_SIGNER__KEYSTORE": str(keystore),
        "CHRYSALIS_SIGNER__PASSWORD_FILE": str(password_file),
    }

    # an agent on the printed settings starts: build_agent refuses a key without AGENT_ROLE
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(data_dir=workdir / "second-agent")
    with build_agent(settings, image=NullImageGenerator(), lore=NullLoreWriter()) as agent:
        assert agent.status().worker_id

    # the same key again: it holds the roles, said so, nothing sent
    nonce = chain.w3.eth.get_transaction_count(dev_address(ADMIN))
    result = chrysalis("agent", "add-key", "--admin", str(ADMIN), "--keystore", str(keystore), "--fund", "1")
    assert result.code == 0, result.text
    assert "--fund was not sent either" in result.text
    assert f"{address} holds AGENT_ROLE and REFRESHER_ROLE" in result.text and "nothing sent" in result.text
    assert chain.w3.eth.get_transaction_count(dev_address(ADMIN)) == nonce


def test_add_key_grants_an_address_with_the_admin_key_from_the_settings(
    configured: CollectionChain, workdir: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = configured
    admin_keystore = workdir / "admin.json"
    admin_keystore.write_text(json.dumps(Account.encrypt(dev_key(ADMIN), "admin-pw", iterations=2)))
    monkeypatch.setenv("CHRYSALIS_SIGNER__KEYSTORE", str(admin_keystore))
    monkeypatch.setenv("CHRYSALIS_KEYSTORE_PASSWORD", "admin-pw")
    target = dev_address(5)
    assert _roles(chain, target) == {"AGENT_ROLE": False, "REFRESHER_ROLE": False}
    result = chrysalis("agent", "add-key", "--address", target, "--json")
    assert result.code == 0, result.text
    report = json.loads(result.out)
    assert report["address"] == target and report["admin"] == dev_address(ADMIN)
    assert set(report["granted"]) == {"AGENT_ROLE", "REFRESHER_ROLE"} and report["keystore"] is None
    assert _roles(chain, target) == {"AGENT_ROLE": True, "REFRESHER_ROLE": True}
    assert not (workdir / ".chrysalis").exists()  # no keystore made for an address


def test_add_key_refusals_send_nothing(configured: CollectionChain, workdir: Path, chrysalis) -> None:
    chain = configured
    nonces = {k: chain.w3.eth.get_transaction_count(dev_address(k)) for k in (ADMIN, HOLDER)}
    taken = workdir / "taken.json"
    taken.write_text("{}")
    result = chrysalis("agent", "add-key", "--admin", str(ADMIN), "--out", str(taken))
    assert result.code == 1
    assert f"error: the keystore {taken} exists already; nothing was made or sent" in result.text
    assert "hint: choose another path with --out" in result.text and "Traceback" not in result.text
    assert taken.read_text() == "{}"

    # a holder's key is not the admin: refused before any keystore is written
    result = chrysalis("agent", "add-key", "--admin", str(HOLDER), "--out", "keys/never.json")
    assert result.code == 1
    assert f"error: {dev_address(HOLDER)} is not an admin of {chain.collection.address}" in result.text
    assert "hint: sign with the collection's admin" in result.text
    assert not (workdir / "keys").exists()

    # no admin key at all
    result = chrysalis("agent", "add-key", "--address", dev_address(6))
    assert result.code == 1 and "error: no admin key" in result.text and "--admin-keystore" in result.text

    result = chrysalis(
        "agent", "add-key", "--admin", str(ADMIN), "--address", dev_address(6), "--fund", "lots"
    )
    assert result.code == 1 and "error: --fund 'lots' is not an amount of ETH" in result.text

    assert {k: chain.w3.eth.get_transaction_count(dev_address(k)) for k in (ADMIN, HOLDER)} == nonces
    assert not (workdir / ".chrysalis").exists()
