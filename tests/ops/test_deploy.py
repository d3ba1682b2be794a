"""``chrysalis deploy`` / ``chrysalis mint`` on anvil (A-M1): a newcomer's collection without Ape or the checkout's
scripts; the record they write is the one the agent and the holder commands read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web3 import Web3

from agent.deployment import COLLECTION, PRICE_FEED, Deployment
from agent.devnet import start_anvil
from agent.ops.accounts import dev_address

pytestmark = pytest.mark.anvil

AGENT = dev_address(9)


def _env(monkeypatch: pytest.MonkeyPatch, url: str, record: Path) -> None:
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(record))


def test_deploy_writes_the_record_the_agent_reads_and_mint_mints(
    workdir: Path, anvil_url: str, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = workdir / "deployments" / "local.json"
    _env(monkeypatch, anvil_url, record)
    result = chrysalis("deploy", "--from", "0", "--agent", AGENT, "--model-digest", "11" * 32)
    assert result.code == 0, result.text
    assert "record written to deployments/local.json (chain 31337" in result.text
    deployment = Deployment.load(record)
    assert deployment.chain_id == 31337 and deployment.agent == AGENT
    assert set(deployment.contracts) == {COLLECTION, PRICE_FEED}  # a local chain gets the dev price feed
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    collection = w3.eth.contract(address=deployment.address(), abi=deployment.abi())
    assert collection.functions.hasRole(collection.functions.AGENT_ROLE().call(), AGENT).call()
    assert collection.functions.hasRole(collection.functions.REFRESHER_ROLE().call(), AGENT).call()
    assert collection.functions.activeModel().call() == 1
    block = w3.eth.get_block(deployment.deploy_block)
    assert deployment.deploy_block_hash == "0x" + bytes(block["hash"]).hex()

    result = chrysalis("mint", "3", "--from", "1")
    assert result.code == 0, result.text
    assert f"minted token(s) 1-3 to {dev_address(1)}, paid 0.003 ETH" in result.text
    assert collection.functions.ownerOf(3).call() == dev_address(1)

    result = chrysalis("mint", "2", "--from", "0", "--to", dev_address(2), "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out)["tokens"] == [4, 5]
    assert collection.functions.ownerOf(5).call() == dev_address(2)

    # the holder commands work on it as they are
    result = chrysalis("evolve", "1", "--from", "1")
    assert result.code == 0, result.text

    # errors: one line and a hint each, nothing overwritten, nothing sent
    result = chrysalis("mint", "1", "--from", "1", "--to", dev_address(2))
    assert result.code == 1 and "error: airdrop would revert (nothing was sent)" in result.text
    assert "AccessControlUnauthorizedAccount" in result.text and "hint:" in result.text
    result = chrysalis("deploy", "--from", "0")
    assert result.code == 1
    assert "error: deployment record deployments/local.json exists already (chain 31337)" in result.text
    assert "hint: the agent may be using it: move it away first, or write elsewhere with --out" in result.text
    assert Deployment.load(record).address() == deployment.address()
    assert "Traceback" not in result.err


def test_ape_local_chain_id_1337_is_recorded_as_such(
    workdir: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_anvil("--chain-id", "1337") as node:
        record = workdir / "ape-local.json"
        _env(monkeypatch, node.url, record)
        result = chrysalis("deploy", "--out", str(record), "--no-price-feed")
        assert result.code == 0, result.text
        assert "(chain 1337" in result.text
        assert f"CHRYSALIS_CHAIN__DEPLOYMENT={record}" not in result.text  # it is the configured record
        deployment = Deployment.load(record)
        assert deployment.chain_id == 1337 and set(deployment.contracts) == {COLLECTION}
        assert deployment.agent == dev_address(0)  # default: the deployer


def test_deploy_errors_are_one_line_with_a_hint(
    workdir: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.devnet import free_port

    result = chrysalis("deploy", "--rpc-url", f"http://127.0.0.1:{free_port()}")
    assert result.code == 1
    assert "error: cannot reach a JSON-RPC node at http://127.0.0.1:" in result.text
    assert "hint: start one (a local chain: `anvil`, chain id 31337)" in result.text
    result = chrysalis("deploy", "--rpc-url", "ftp://x")
    assert result.code == 1 and "is not an http:// or https:// URL" in result.text
    result = chrysalis("deploy", "--artifacts", str(workdir / "none.json"))
    assert result.code == 1 and "error: no compiled contracts at" in result.text and "hint:" in result.text
    result = chrysalis("deploy", "--royalty-bps", "1")
    assert result.code == 2  # not an option: the usage error
    result = chrysalis("deploy", "--mint-price", "-1", "--rpc-url", "http://127.0.0.1:1")
    assert result.code == 1 and "invalid deploy option(s): --mint_price" in result.text
