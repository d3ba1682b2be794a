"""The provenance panel's LoRA entry: a version whose image the production backend drew with a LoRA shows the
LoRA as a model of its own (its file's sha256, its registry record and its lineage to the training data's
commitment, labelled as a LoRA on the base model), read from the receipt anchored on-chain; an unregistered LoRA
says so; versions without a LoRA show no LoRA entry, and a malformed LoRA entry in a receipt is not looked up.

Real parts: a tiny random Stable Diffusion pipeline, two 1-step LoRAs trained on it by
:func:`agent.training.adapters.finetune_adapter` (what ``chrysalis model train --base <pipeline>`` runs), one
published and registered by :func:`agent.ops.models.publish_model`, and two tokens minted for this module evolved
once each by the real agent with the diffusers backend: one with the unregistered LoRA, one with the registered
one (the world's tokens keep the stages the other studio tests count on)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agent.generate.runtime import file_sha256, weight_files, weights_digest
from agent.ops.models import publish_model
from agent.studio.service import Studio
from agent.training.adapters import AdapterConfig, finetune_adapter
from agent.training.diffusers_lora import LORA_WEIGHTS
from agent.training.sprites import lineage
from tests.studio.world import World

pytest.importorskip("peft", reason="LoRA training needs peft (pip install peft==0.21.2)")

TINY = AdapterConfig(steps=1, batch_size=2, resolution=32, holdout_every=2)


def _evolve_with_lora(world: World, pipeline: Path, lora: Path) -> int:
    """A token minted now by holder 1, evolved by the real agent drawing with the diffusers pipeline ``pipeline``
    and ``lora``; its id."""
    settings = world.settings
    models = settings.models.model_copy(
        update={
            "image_backend": "diffusers",
            "image_model": str(pipeline),
            "image_lora": str(lora),
            "image_steps": 2,
            "image_width": 32,
            "image_height": 32,
            "device": "cpu",
        }
    )
    with world.lock:
        chain = world.chain
        chain.mint(chain.holders[1], 1)
        token = int(chain.collection.functions.totalMinted().call())
        chain.request(token, 1)
        with world.agent(models=models, studio=settings.studio.model_copy(update={"review": False})) as agent:
            agent.run_until_idle(timeout_s=180)
    return token


@pytest.fixture(scope="module")
def drawn(world: World, studio: Studio, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.generate.conftest import build_tiny_sd
    from tests.training.test_diffusers_lora import _write_dataset

    root = tmp_path_factory.mktemp("lora-lineage")
    pipeline = build_tiny_sd(root / "pipeline")
    dataset = _write_dataset(root / "captions")
    good, loose = root / "good-lora", root / "loose-lora"
    finetune_adapter(dataset, good, base=str(pipeline), config=TINY, seed=0, card=False)
    finetune_adapter(dataset, loose, base=str(pipeline), config=TINY, seed=1, card=False)
    done = publish_model(world.settings, str(good))
    assert done.registration is not None
    loose_token = _evolve_with_lora(world, pipeline, loose)  # a LoRA nobody registered
    good_token = _evolve_with_lora(world, pipeline, good)  # the published one
    studio.index.sync()
    return {
        "good_token": good_token,
        "loose_token": loose_token,
        "good": lineage(good),
        "good_sha": file_sha256(good / LORA_WEIGHTS),
        "good_uri": done.pinned.uri,
        "loose_sha": file_sha256(loose / LORA_WEIGHTS),
        "base_sha": weights_digest(weight_files(pipeline)),
    }


def _stages(html: str) -> dict[int, str]:
    """Each timeline entry's HTML by stage."""
    out = {}
    for chunk in html.split('<li class="stage-entry" id="stage-')[1:]:
        stage, _, rest = chunk.partition('"')
        out[int(stage)] = rest
    return out


def _lora_section(stage_html: str) -> str:
    assert stage_html.count('<section class="model lora">') == 1
    return stage_html.split('<section class="model lora">')[1].split("</section>")[0]


def test_a_version_drawn_with_a_published_lora_shows_its_lineage(
    client: TestClient, studio: Studio, drawn: dict[str, Any]
) -> None:
    good, sha = drawn["good"], drawn["good_sha"]
    assert good["weights_sha256"] == sha  # one weight file: the registry's digest is the LoRA file's sha256
    token = drawn["good_token"]
    stages = _stages(client.get(f"/tokens/{token}").text)
    view = studio.catalog.token(token).timeline[-1]
    assert (
        view.image_lora is not None and view.image_lora["sha256"] == sha and view.provenance_matches is True
    )
    section = _lora_section(stages[view.stage])
    assert "<h3>image LoRA</h3>" in section
    assert f'<code class="wrap">{sha}</code>' in section  # its weights sha256
    assert f'On base model</dt><dd><code class="wrap" title="{drawn["base_sha"]}">' in section
    record = studio.index.model_record(sha)
    assert record is not None and record.manifest_uri == drawn["good_uri"]
    assert f"model #{record.model_id}, registered" in section and drawn["good_uri"] in section
    # its lineage: the published directory's training receipt, to the dataset's commitment
    root = good["trained_on"]["dataset_root"]
    assert 'data-lineage="trained"' in section and "lineage checks" in section
    assert f'on dataset <code title="{root}">' in section and "(4 items, public)" in section
    assert good["training_receipt"]["sha256"][:10] in section
    assert good["base_model"]["weights_sha256"] == drawn["base_sha"]
    assert "the image model's weights" in section and "another base" not in section
    # the base pipeline is still the version's image model, in its own entry
    assert f'<code class="wrap">{drawn["base_sha"]}</code>' in stages[view.stage].split(section)[0]


def test_an_unregistered_lora_says_so_and_shows_no_lineage(
    client: TestClient, studio: Studio, drawn: dict[str, Any]
) -> None:
    token = drawn["loose_token"]
    first = studio.catalog.token(token).timeline[-1]
    assert first.image_lora is not None and first.image_lora["sha256"] == drawn["loose_sha"]
    section = _lora_section(_stages(client.get(f"/tokens/{token}").text)[first.stage])
    assert f'<code class="wrap">{drawn["loose_sha"]}</code>' in section
    assert "not in this collection's registry" in section
    assert "Model lineage" not in section  # nothing to read for weights the registry does not hold


def test_versions_without_a_lora_show_no_lora_entry(client: TestClient, studio: Studio) -> None:
    html = client.get("/tokens/1").text
    assert "image model" in html and '<section class="model lora">' not in html and "image LoRA" not in html
    assert all(v.image_lora is None for v in studio.catalog.token(1).timeline)


def test_a_malformed_lora_entry_is_not_looked_up(studio: Studio, drawn: dict[str, Any]) -> None:
    view = studio.catalog.token(drawn["good_token"]).timeline[-1]
    receipt: dict[str, Any] = dict(view.metadata.receipt)
    for bad in ("../../etc", "0x" + drawn["good_sha"], drawn["good_sha"].upper(), None, 5):
        image = {**receipt["image"], "config": {**receipt["image"]["config"], "lora": {"sha256": bad}}}
        md = dataclasses.replace(view.metadata, receipt={**receipt, "image": image})
        assert dataclasses.replace(view, metadata=md).image_lora is None, bad
