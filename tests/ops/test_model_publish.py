"""``chrysalis model publish`` / ``model fetch`` on anvil: the shipped model's whole directory pinned in the embedded
repo and registered on-chain (``registerModel(weights sha256, "ipfs://<dir CID>")``, read back with
``modelRecord``); publishing again changes nothing; the same digest under another URI is refused; anyone fetches
the exact weights from what the chain's record names, through the repo or a gateway alone, every digest checked;
``chrysalis deploy --publish-model`` registers the model the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web3 import Web3

from agent.deployment import Deployment
from agent.generate.image.embedded import SHIPPED_DIR
from agent.generate.published import PUBLICATION_MANIFEST
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.ops.accounts import dev_address
from tests.support.devchain import CollectionChain

pytestmark = pytest.mark.anvil

DIGEST = json.loads((SHIPPED_DIR / "manifest.json").read_text())["weights_sha256"]
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture
def ipfs(configured: CollectionChain, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded repo and the model cache of this working directory."""
    monkeypatch.setenv("CHRYSALIS_IPFS__REPO", str(workdir / "ipfs"))
    monkeypatch.setenv("CHRYSALIS_MODELS__CACHE_DIR", str(workdir / "models"))
    return workdir / "ipfs"


def _record(chain: CollectionChain, model_id: int) -> tuple[str, str]:
    digest, uri, registered_at = chain.collection.functions.modelRecord(model_id).call()
    assert registered_at > 0
    return bytes(digest).hex(), uri


def test_publish_pins_the_whole_directory_registers_it_and_is_idempotent(
    ipfs: Path, configured: CollectionChain, chrysalis
) -> None:
    lc = configured.collection.functions
    before = lc.modelCount().call()
    result = chrysalis("model", "publish", "--json")
    assert result.code == 0, result.text
    out = json.loads(result.out)
    cid = out["cid"]
    assert out["uri"] == f"ipfs://{cid}" and out["weights_sha256"] == DIGEST
    assert out["model_id"] == "chrysalis/sprites-32@1" and out["pins"] == ["embedded"]
    registry = out["registry"]
    assert registry["status"] == "registered" and registry["model_id"] == before + 1 and registry["tx_hash"]
    assert registry["collection"] == configured.collection.address

    # read back from the chain: the digest and the ipfs:// URI of the pinned directory
    assert lc.modelCount().call() == before + 1
    assert _record(configured, before + 1) == (DIGEST, f"ipfs://{cid}")
    assert lc.modelIdOf(bytes.fromhex(DIGEST)).call() == before + 1

    # every file of the model directory is in the repo, pinned, under that CID
    repo = IpfsRepo(ipfs)
    assert repo.is_pinned(cid)
    names = {e.name for e in repo.ls(cid)}
    shipped = {p.name for p in SHIPPED_DIR.iterdir() if p.is_file() and p.name != "__init__.py"}
    assert names == shipped | {PUBLICATION_MANIFEST}
    assert b"".join(repo.cat(repo.resolve(f"{cid}/{WEIGHTS}"))) == (SHIPPED_DIR / WEIGHTS).read_bytes()

    # again: reported, nothing sent
    nonce = configured.w3.eth.get_transaction_count(dev_address(0))
    result = chrysalis("model", "publish")
    assert result.code == 0, result.text
    assert f"already registered as model {before + 1}" in result.text and "nothing to do" in result.text
    assert "pinned 9 files" in result.text and f"ipfs://{cid}" in result.text
    assert configured.w3.eth.get_transaction_count(dev_address(0)) == nonce
    assert lc.modelCount().call() == before + 1

    # --activate makes it the active model (once)
    result = chrysalis("model", "publish", "--activate", "--json")
    assert result.code == 0, result.text
    registry = json.loads(result.out)["registry"]
    assert registry["status"] == "already registered" and registry["activated"] and registry["active"]
    assert lc.activeModel().call() == before + 1


def test_the_same_weights_under_another_uri_are_refused_with_a_hint(
    ipfs: Path, configured: CollectionChain, chrysalis
) -> None:
    lc = configured.collection.functions
    configured.transact(lc.registerModel(bytes.fromhex(DIGEST), "ipfs://bafybeisomethingelse"))
    count = lc.modelCount().call()
    result = chrysalis("model", "publish")
    assert result.code == 1
    assert f"error: weights 0x{DIGEST} are registered already as model {count}" in result.text
    assert "with URI ipfs://bafybeisomethingelse, not ipfs://bafy" in result.text
    assert "hint: a model record is immutable" in result.text and "--no-register" in result.text
    assert "Traceback" not in result.err
    assert lc.modelCount().call() == count

    # pinning alone still works
    result = chrysalis("model", "publish", "--no-register", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out)["registry"] is None


def test_only_the_admin_registers(ipfs: Path, configured: CollectionChain, chrysalis) -> None:
    result = chrysalis("model", "publish", "--from", "1")
    assert result.code == 1
    assert f"error: {dev_address(1)} is not an admin of {configured.collection.address}" in result.text
    assert "hint: send from the collection's admin" in result.text
    assert configured.collection.functions.modelIdOf(bytes.fromhex(DIGEST)).call() == 0


def test_anyone_fetches_the_exact_weights_the_chain_points_to(
    ipfs: Path, configured: CollectionChain, chrysalis, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = chrysalis("model", "publish", "--json")
    assert result.code == 0, result.text
    published = json.loads(result.out)
    model_id, cid = published["registry"]["model_id"], published["cid"]

    # the operator's machine: from the embedded repo, the URI and digest read from modelRecord(id)
    result = chrysalis("model", "fetch", "--model", str(model_id), "--json")
    assert result.code == 0, result.text
    fetched = json.loads(result.out)
    assert (
        fetched["cid"] == cid and fetched["weights_sha256"] == DIGEST and fetched["registry_id"] == model_id
    )
    path = Path(fetched["path"])
    assert path == workdir / "models" / "ipfs" / cid
    assert (path / WEIGHTS).read_bytes() == (SHIPPED_DIR / WEIGHTS).read_bytes()

    # a stranger: no repo, only the chain's record and a gateway (every block checked against its CID)
    stranger = workdir / "stranger"
    stranger.mkdir()
    monkeypatch.chdir(stranger)
    monkeypatch.setenv("CHRYSALIS_IPFS__REPO", str(stranger / "no-repo-here"))
    monkeypatch.setenv("CHRYSALIS_MODELS__CACHE_DIR", str(stranger / "models"))
    with NodeServer(IpfsRepo(ipfs), rpc=False) as node:
        result = chrysalis("model", "fetch", "--model", str(model_id), "--gateway", node.url)
    assert result.code == 0, result.text
    assert f"loaded into {stranger / 'models' / 'ipfs' / cid}" in result.text
    assert f"every file matches model {model_id}'s record" in result.text
    assert f'models.image_model = "ipfs://{cid}"' in result.text
    assert not (stranger / "no-repo-here").exists()
    assert (stranger / "models" / "ipfs" / cid / WEIGHTS).read_bytes() == (SHIPPED_DIR / WEIGHTS).read_bytes()

    # the configured image model can be the published one, loaded from the cache
    monkeypatch.setenv("CHRYSALIS_MODELS__IMAGE_MODEL", f"ipfs://{cid}")
    result = chrysalis("model", "info", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out)["models"][0]["weights_sha256"] == DIGEST

    # a record that names no IPFS directory, or no such model: clear errors
    result = chrysalis("model", "fetch", "--model", "1")  # TEST_DEPLOY registered "ipfs://model"
    assert result.code == 1 and "error: 'ipfs://model' does not name a published model" in result.text
    assert "hint:" in result.text
    result = chrysalis("model", "fetch", "--model", "99")
    assert result.code == 1 and "has no model 99" in result.text


def test_deploy_publish_model_registers_the_model_with_its_ipfs_uri(
    workdir: Path, anvil_url: str, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = workdir / "deployments" / "local.json"
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", anvil_url)
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(record))
    monkeypatch.setenv("CHRYSALIS_IPFS__REPO", str(workdir / "ipfs"))
    result = chrysalis("deploy", "--from", "0", "--publish-model")
    assert result.code == 0, result.text
    deployment = Deployment.load(record)
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    lc = w3.eth.contract(address=deployment.address(), abi=deployment.abi()).functions
    assert lc.activeModel().call() == 1
    digest, uri, _at = lc.modelRecord(1).call()
    assert bytes(digest).hex() == DIGEST and uri.startswith("ipfs://bafy")
    assert IpfsRepo(workdir / "ipfs").is_pinned(uri.removeprefix("ipfs://"))
    # publishing it afterwards finds the record the deployment made
    result = chrysalis("model", "publish")
    assert result.code == 0, result.text
    assert "already registered as model 1" in result.text

    result = chrysalis(
        "deploy", "--publish-model", "--model-digest", "11" * 32, "--out", str(workdir / "x.json")
    )
    assert (
        result.code == 1 and "--publish-model and --model-digest both name the initial model" in result.text
    )
