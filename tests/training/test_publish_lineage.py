"""A fine-tuned model published with ``chrysalis model publish``: the on-chain record (weights digest ->
``ipfs://<dir CID>``) leads to the manifest, whose ``training_receipt_sha256`` binds the receipt, which names the
dataset root. From the weights digest a token's receipt records, the training data's commitment is two hops away:
record -> manifest (and the receipt beside it) -> dataset root."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.ipfs.repo import IpfsRepo
from agent.training.sprites import FinetuneConfig, finetune_sprites, lineage
from tests.ops.conftest import configured, devchain, module_devchain, workdir  # noqa: F401  (fixtures)
from tests.support.devchain import CollectionChain

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


def test_the_chain_record_reaches_the_dataset_root_in_two_hops(
    configured: CollectionChain,  # noqa: F811
    workdir: Path,  # noqa: F811
    dataset_dir: Path,
    chrysalis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHRYSALIS_IPFS__REPO", str(workdir / "ipfs"))
    monkeypatch.setenv("CHRYSALIS_MODELS__CACHE_DIR", str(workdir / "models"))
    model = workdir / "model"
    config = FinetuneConfig(steps=2, batch_size=4, holdout_every=4)
    finetune_sprites(dataset_dir, model, config=config, card=False)
    local = lineage(model)

    result = chrysalis("model", "publish", str(model), "--json")
    assert result.code == 0, result.text
    published = json.loads(result.out)
    cid = published["cid"]
    assert published["weights_sha256"] == local["weights_sha256"]

    # hop 0: the token's receipt names the weights digest; the registry maps it to the model directory
    lc = configured.collection.functions
    model_id = lc.modelIdOf(bytes.fromhex(local["weights_sha256"])).call()
    digest, uri, _at = lc.modelRecord(model_id).call()
    assert bytes(digest).hex() == local["weights_sha256"] and uri == f"ipfs://{cid}"

    # hop 1: the directory's manifest binds the training receipt by its sha256
    repo = IpfsRepo(workdir / "ipfs")
    manifest = json.loads(b"".join(repo.cat(repo.resolve(f"{cid}/manifest.json"))))
    receipt_bytes = b"".join(repo.cat(repo.resolve(f"{cid}/{manifest['training_receipt']}")))
    assert hashlib.sha256(receipt_bytes).hexdigest() == manifest["training_receipt_sha256"]

    # hop 2: the receipt names the dataset root (and the manifest repeats it)
    receipt = json.loads(receipt_bytes)
    assert receipt["dataset"]["root"] == manifest["dataset_root"] == local["trained_on"]["dataset_root"]
    assert receipt["weights_sha256"] == local["weights_sha256"]

    # anyone fetching the published directory gets the same lineage
    result = chrysalis("model", "fetch", "--model", str(model_id), "--json")
    assert result.code == 0, result.text
    fetched = lineage(Path(json.loads(result.out)["path"]))
    assert fetched["trained_on"] == local["trained_on"]
