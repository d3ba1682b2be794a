"""The provenance panel's model lineage: a token made with a fine-tuned model published with
``chrysalis model publish`` (registry record -> ``ipfs://`` directory -> manifest -> training receipt -> dataset
root, read from the chain and the embedded repo only); the shipped model (no training receipt); and a published
directory whose receipt was changed after training (the failure badge, with the reason, not an error page).

Real parts: two 1-step fine-tunes of the shipped sprite model on a small dataset, pinned into the world's repo and
registered on its chain by :func:`agent.ops.models.publish_model`, and tokens 9 and 10 evolved by the real agent
with them."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agent.errors import IntegrityError, NotFoundError
from agent.ops.models import publish_model
from agent.studio.service import Studio
from agent.training.receipt import RECEIPT_NAME, TrainingReceipt
from agent.training.sprites import FinetuneConfig, finetune_sprites, lineage, lineage_from_directory
from tests.studio.world import World
from tests.training.conftest import write_dataset

TINY = FinetuneConfig(steps=1, batch_size=4, holdout_every=4)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _evolve_with(world: World, model: Path, token_id: int) -> None:
    """Token ``token_id`` (holder 1) evolved by the real agent with the image model in ``model``."""
    settings = world.settings
    with world.lock:
        world.chain.request(token_id, 1)
        with world.agent(
            models=settings.models.model_copy(update={"image_model": str(model)}),
            studio=settings.studio.model_copy(update={"review": False}),
        ) as agent:
            agent.run_until_idle(timeout_s=120)


@pytest.fixture(scope="module")
def published(world: World, studio: Studio, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lineage")
    dataset = write_dataset(root / "dataset")
    good, tampered = root / "good", root / "tampered"
    finetune_sprites(dataset, good, config=TINY, seed=0, card=False)
    finetune_sprites(dataset, tampered, config=TINY, seed=1, card=False)
    # after training, someone claims another dataset in the receipt (the manifest still records the original)
    data = json.loads((tampered / RECEIPT_NAME).read_bytes())
    data["dataset"]["root"] = "ab" * 32
    TrainingReceipt.from_json(data).write(tampered / RECEIPT_NAME)
    out: dict[str, Any] = {"good": lineage(good), "dataset": dataset}
    for name, directory, token_id in (("good", good, 9), ("tampered", tampered, 10)):
        done = publish_model(world.settings, str(directory))
        assert done.registration is not None
        out[f"{name}_uri"] = done.pinned.uri
        out[f"{name}_weights"] = done.pinned.model.weights_sha256
        _evolve_with(world, directory, token_id)
    studio.index.sync()  # the studio's index catches up with the new versions (its poller does so when serving)
    return out


def test_a_token_made_with_a_published_fine_tune_shows_its_dataset_root(
    client: TestClient, published: dict[str, Any]
) -> None:
    good = published["good"]
    root = good["trained_on"]["dataset_root"]
    html = client.get("/tokens/9").text
    # the token's receipt names the fine-tuned weights, and the chain's record names the published directory
    assert f'<code class="wrap">{good["weights_sha256"]}</code>' in html
    assert "Model lineage" in html and 'data-lineage="trained"' in html
    assert published["good_uri"] in html  # the registry record's manifest URI
    assert "lineage checks" in html and "lineage does not check" not in html
    assert f'title="{root}"' in html and root[:10] in html  # the dataset root (short, the whole in its title)
    assert f'on dataset <code title="{root}">' in html and "(16 items, public)" in html
    assert "fine-tuned from chrysalis/sprites-32@1" in html
    assert good["training_receipt"]["sha256"][:10] in html


def test_the_shipped_model_has_no_training_receipt(client: TestClient) -> None:
    html = client.get("/tokens/1").text
    assert 'data-lineage="untrained"' in html
    assert "not fine-tuned here (no training receipt)" in html


def test_a_receipt_changed_after_training_shows_the_failure_badge(
    client: TestClient, published: dict[str, Any]
) -> None:
    page = client.get("/tokens/10")
    assert page.status_code == 200
    html = page.text
    assert 'data-lineage="bad"' in html and "lineage does not check" in html
    assert f"{RECEIPT_NAME} of {published['tampered_uri']} has sha256" in html  # the reason names the file
    assert "ab" * 32 not in html  # the claimed dataset is never shown as the lineage


def test_the_lineage_is_read_from_the_repo_and_cached_per_directory(
    studio: Studio, published: dict[str, Any]
) -> None:
    first = studio.lineages.of(published["good_weights"], published["good_uri"])
    assert first["state"] == "trained"
    assert first["trained_on"] == published["good"]["trained_on"]
    assert studio.lineages.of(published["good_weights"], published["good_uri"]) is first
    # a record naming a directory this node does not hold: unknown (and not cached), never an error
    missing = "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    got = studio.lineages.of(published["good_weights"], missing)
    assert got["state"] == "unknown" and "cannot be read from this node" in got["reason"]
    assert studio.lineages.of("00" * 32, None)["state"] == "unknown"


def test_lineage_from_directory_shares_the_checks_of_lineage(
    published: dict[str, Any], tmp_path: Path
) -> None:
    good = published["good"]
    directory = tmp_path / "model"
    # the same directory on disk and as a mapping give the same lineage
    model = published["dataset"].parent / "good"
    shutil.copytree(model, directory)
    files: Mapping[str, bytes] = _files(directory)
    assert lineage_from_directory(files) == lineage(directory) == good
    assert lineage_from_directory(files, weights_sha256="0x" + good["weights_sha256"]) == good
    with pytest.raises(IntegrityError, match="is the manifest of weights"):
        lineage_from_directory(files, weights_sha256="00" * 32)
    # a changed receipt fails both, with the same check
    receipt = bytearray(files[RECEIPT_NAME])
    receipt[-2:-1] = b" "
    (directory / RECEIPT_NAME).write_bytes(bytes(receipt))
    with pytest.raises(IntegrityError, match="has sha256"):
        lineage(directory)
    with pytest.raises(IntegrityError, match=hashlib.sha256(bytes(receipt)).hexdigest()):
        lineage_from_directory(_files(directory))
    with pytest.raises(NotFoundError, match="names training receipt"):
        lineage_from_directory({"manifest.json": files["manifest.json"]})
    with pytest.raises(NotFoundError, match="has no manifest.json"):
        lineage_from_directory({})
    with pytest.raises(IntegrityError, match="is not JSON"):
        lineage_from_directory({"manifest.json": b"{"})
