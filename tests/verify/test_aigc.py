"""ERC-7007 on a collection the real agent evolved: ``chrysalis aigc record`` records token versions
(``addAigcData`` from the agent key), the collection's ``verify`` then holds, and ``chrysalis verify`` says so.

Tokens 3 and 5 (evolved once by the agent, left as it made them) are recorded here; nothing else in tests/verify
records, so every other token's report says "not recorded".
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from web3 import Web3

from agent.erc7007 import (
    AIGC_DATA_TOPIC,
    AigcTriple,
    aigc_triple_for_metadata,
    decode_aigc_data_log,
    erc7007_verify,
)
from agent.ipfs.repo import IpfsRepo
from tests.studio.world import World
from tests.support.agent_settings import write_keystore
from tests.support.cli import CliResult, invoke_cli
from tests.verify.conftest import current_cid, public_args

RECORDED = (3, 5)


def operator_env(world: World, monkeypatch: pytest.MonkeyPatch, **override: str) -> None:
    """The agent's settings as the operator's environment (the record, the key, the database, the repo)."""
    s = world.settings
    env = {
        "CHRYSALIS_DATA_DIR": str(s.data_dir),
        "CHRYSALIS_CHAIN__RPC_URL": s.chain.rpc_url,
        "CHRYSALIS_CHAIN__DEPLOYMENT": str(s.chain.deployment),
        "CHRYSALIS_DATABASE__URL": s.database.url,
        "CHRYSALIS_IPFS__REPO": str(s.ipfs_repo),
        "CHRYSALIS_SIGNER__KEYSTORE": str(s.signer.keystore),
        "CHRYSALIS_SIGNER__PASSWORD_FILE": str(s.signer.password_file),
        "CHRYSALIS_SUBMIT__POLL_INTERVAL_S": "0.1",
        **override,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def erc7007_of(r: CliResult) -> dict[str, str]:
    return next(c for c in json.loads(r.out)["checks"] if c["name"] == "erc7007")


def triple_of(world: World, repo: IpfsRepo, token_id: int) -> AigcTriple:
    return aigc_triple_for_metadata(repo.block_get(current_cid(world, token_id)))


def test_record_makes_verify_true_and_the_report_says_so_and_a_second_run_sends_nothing(
    world: World,
    repo: IpfsRepo,
    gateway: str,
    empty: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w3 = world.chain.w3
    address = Web3.to_checksum_address(world.chain.deployment.address())
    triples = {t: triple_of(world, repo, t) for t in RECORDED}
    # before: the on-chain verify is false, and the report says "not recorded" without changing the verdict
    assert not any(erc7007_verify(w3, address, t) for t in triples.values())
    r = invoke_cli(capsys, "verify", "3", "--json", *public_args(world, gateway))
    assert r.code == 0 and json.loads(r.out)["verdict"] == "match", r.text
    check = erc7007_of(r)
    assert check["status"] == "skipped" and "not recorded on-chain" in check["detail"], check
    assert "chrysalis aigc record" in check["detail"]

    operator_env(world, monkeypatch)
    start = w3.eth.block_number + 1
    with world.lock:
        r = invoke_cli(capsys, "aigc", "record", "--tokens", "3,5,13")
    assert r.code == 0, r.text
    for token in RECORDED:
        assert f"token {token} stage {triples[token].stage} (" in r.out and "recorded in tx 0x" in r.out
    assert "token 13: no metadata yet" in r.out
    assert "2 versions recorded (gas " in r.text and "0 already recorded, 1 without metadata yet" in r.text

    # one AigcData event per token, with the triple's data
    logs = w3.eth.get_logs({"address": address, "topics": [AIGC_DATA_TOPIC], "fromBlock": start})
    decoded = sorted(decode_aigc_data_log(dict(log)) for log in logs)
    assert decoded == sorted((t.token_id, t.prompt_hash(), t.aigc_data, t.proof) for t in triples.values())
    assert all(erc7007_verify(w3, address, t) for t in triples.values())

    r = invoke_cli(capsys, "verify", "3", "--json", *public_args(world, gateway))
    assert r.code == 0, r.text
    check = erc7007_of(r)
    assert check["status"] == "ok" and "recorded and verified on-chain" in check["detail"], check
    assert "erc7007" in json.loads(r.out)["checked"]
    r = invoke_cli(capsys, "verify", "5", *public_args(world, gateway))
    assert r.code == 0 and "ok erc7007 recorded and verified on-chain" in r.text, r.text

    # idempotent: nothing is sent the second time
    block = w3.eth.block_number
    with world.lock:
        r = invoke_cli(capsys, "aigc", "record", "--tokens", "3,5", "--json")
    assert r.code == 0, r.text
    report = json.loads(r.out)
    assert (report["recorded"], report["already_recorded"], report["gas_used"]) == (0, 2, 0)
    assert [t["status"] for t in report["tokens"]] == ["already recorded"] * 2
    assert w3.eth.block_number == block


def test_an_earlier_stage_and_an_unrecorded_token_do_not_change_the_exit_code(
    world: World, gateway: str, empty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = invoke_cli(capsys, "verify", "1", "--stage", "1", "--json", *public_args(world, gateway))
    assert r.code == 0, r.text
    assert erc7007_of(r)["status"] == "skipped" and "earlier version" in erc7007_of(r)["detail"]


def test_a_key_without_agent_role_is_refused_with_a_hint(
    world: World,
    empty: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keystore, password = write_keystore(tmp_path / "stranger-key", secrets.token_bytes(32))
    operator_env(
        world,
        monkeypatch,
        CHRYSALIS_SIGNER__KEYSTORE=str(keystore),
        CHRYSALIS_SIGNER__PASSWORD_FILE=str(password),
    )
    block = world.chain.w3.eth.block_number
    r = invoke_cli(capsys, "aigc", "record", "--tokens", "2")
    assert r.code == 1, r.text
    assert "does not hold AGENT_ROLE on the collection" in r.text
    assert "hint: point signer.keystore at the agent's key" in r.text
    assert "Traceback" not in r.text
    assert world.chain.w3.eth.block_number == block


@pytest.mark.parametrize(
    ("tokens", "expect"),
    [
        ("99", "token 99"),  # never minted
        ("3-1", "the range 3-1 runs backwards"),
    ],
)
def test_bad_token_selections_are_refused(
    world: World,
    empty: Path,
    tokens: str,
    expect: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator_env(world, monkeypatch)
    r = invoke_cli(capsys, "aigc", "record", "--tokens", tokens)
    assert r.code != 0 and expect in r.text and "hint:" in r.text, r.text
