"""``chrysalis deploy`` sets ERC-7572's ``contractURI``: the collection's metadata JSON pinned in the embedded IPFS
repo, as ``ipfs://<cid>``, read back from the chain and the repo on anvil."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from eth_utils import keccak
from web3 import Web3

from agent.deployment import Deployment
from agent.ipfs.cid import CID
from agent.ipfs.repo import IpfsRepo

pytestmark = pytest.mark.anvil

CONTRACT_URI_UPDATED = keccak(text="ContractURIUpdated()")
PNG = bytes.fromhex("89504e470d0a1a0a") + b"a collection image"


def _env(monkeypatch: pytest.MonkeyPatch, url: str, workdir: Path) -> Path:
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(workdir / "deployments" / "local.json"))
    monkeypatch.setenv("CHRYSALIS_IPFS__REPO", str(workdir / "ipfs"))
    return workdir / "deployments" / "local.json"


def test_deploy_pins_the_collection_metadata_and_sets_contract_uri(
    workdir: Path, anvil_url: str, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _env(monkeypatch, anvil_url, workdir)
    (workdir / "logo.png").write_bytes(PNG)
    result = chrysalis(
        "deploy", "--from", "0", "--name", "Moths", "--description", "Living moths.",
        "--image", "logo.png", "--external-link", "https://moths.example",
    )  # fmt: skip
    assert result.code == 0, result.text
    deployment = Deployment.load(record)
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    collection = w3.eth.contract(address=deployment.address(), abi=deployment.abi())
    uri = collection.functions.contractURI().call()
    assert uri.startswith("ipfs://bafkrei") and deployment.contract_uri == uri
    assert f"contractURI {uri}" in result.text

    # The URI resolves, in the repo the agent serves, to the JSON OpenSea reads; the image is pinned beside it.
    repo = IpfsRepo(workdir / "ipfs")
    cid = CID.parse(uri.removeprefix("ipfs://"))
    assert repo.is_pinned(cid)
    data = repo.block_get(cid)
    assert cid.digest == hashlib.sha256(data).digest()  # one raw block: the CID is the JSON's sha256
    document = json.loads(data)
    assert document == {
        "name": "Moths",
        "description": "Living moths.",
        "image": document["image"],
        "external_link": "https://moths.example",
    }
    image = CID.parse(document["image"].removeprefix("ipfs://"))
    assert repo.is_pinned(image) and b"".join(repo.cat(image)) == PNG

    # ContractURIUpdated was announced once, by the collection, in the deployment.
    logs = w3.eth.get_logs(
        {
            "address": deployment.address(),
            "fromBlock": deployment.deploy_block,
            "topics": ["0x" + CONTRACT_URI_UPDATED.hex()],
        }
    )
    assert len(logs) == 1 and bytes(logs[0]["data"]) == b""


def test_deploy_sets_a_given_contract_uri_as_is(
    workdir: Path, anvil_url: str, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _env(monkeypatch, anvil_url, workdir)
    result = chrysalis("deploy", "--from", "0", "--contract-uri", "https://moths.example/collection.json")
    assert result.code == 0, result.text
    deployment = Deployment.load(record)
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    collection = w3.eth.contract(address=deployment.address(), abi=deployment.abi())
    assert collection.functions.contractURI().call() == "https://moths.example/collection.json"
    assert IpfsRepo(workdir / "ipfs").pin_ls() == {}  # nothing pinned


def test_deploy_contract_metadata_errors_send_nothing(
    workdir: Path, anvil_url: str, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _env(monkeypatch, anvil_url, workdir)
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    nonce = w3.eth.get_transaction_count(w3.eth.accounts[0])
    result = chrysalis("deploy", "--from", "0", "--image", "missing.png")
    assert result.code == 1
    assert "error: cannot read the collection image missing.png" in result.text and "hint:" in result.text
    result = chrysalis("deploy", "--from", "0", "--external-link", "moths dot example")
    assert result.code == 1
    assert (
        "invalid deploy option(s): --external_link: Value error, 'moths dot example' is not a URI"
        in result.text
    )
    assert "Traceback" not in result.err
    assert not record.exists() and w3.eth.get_transaction_count(w3.eth.accounts[0]) == nonce
