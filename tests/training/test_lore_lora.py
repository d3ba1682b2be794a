"""Lore LoRA on a tiny random Llama: trains on the lore tokens only, is deterministic, resumes bit-exactly, and the
merged model loads back through the production lore backend and writes lore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.generate.base import LoreRequest
from agent.generate.lore import TransformersLoreWriter
from agent.training.lore_lora import IGNORE, encode_pairs, train_lore_lora, training_prompt

pytest.importorskip("peft", reason="LoRA training needs peft (pip install peft==0.21.2)")

PAIRS = [
    ({"mood": "serene", "element": "water"}, "It drifts through the warm shallows. Each ripple is softer."),
    ({"mood": "fierce", "element": "fire"}, "The storm rages on. Its shadows dance across the land."),
    ({"mood": "gloomy", "element": "earth"}, "It waits under the stones. The rain remembers it."),
    ({"mood": "radiant", "element": "air"}, "It rides the bright wind. The clouds part for it."),
    ({"mood": "serene", "element": "fire"}, "It warms the patient hands. Each ember hums."),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from agent.datasets import load_dataset

    root = tmp_path_factory.mktemp("lore") / "ds"
    root.mkdir()
    lines = [json.dumps({"traits": t, "lore": lore}) for t, lore in PAIRS]
    (root / "lore.jsonl").write_text("\n".join(lines) + "\n")
    return load_dataset(root)


def _train(dataset, base, out, **kw):
    args = dict(rank=4, alpha=8, lr=5e-2, steps=4, batch_size=2, seed=3, checkpoint_every=2, max_length=512)
    args.update(kw)
    return train_lore_lora(dataset, base, out, device="cpu", **args)


@pytest.fixture(scope="module")
def trained(dataset, tiny_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("lore-lora")
    seen: list[int] = []
    return out, _train(dataset, tiny_lm, out, progress=lambda s, t, loss: seen.append(s)), seen


def test_the_loss_covers_the_lore_tokens_only(dataset, tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    (ids, labels), *_ = encode_pairs(tok, list(dataset.items), 512)
    prompt = tok(training_prompt(tok, dataset.items[0].traits), add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE] * len(prompt)
    assert labels[len(prompt) :] == ids[len(prompt) :] and ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(ids[len(prompt) : -1]) == dataset.items[0].lore
    # the same prompt the production writer renders
    writer_prompt = TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=8).prompt_for(
        LoreRequest("Any", 2, dataset.items[0].traits, {}, 1)
    )
    assert writer_prompt == training_prompt(tok, dataset.items[0].traits)


def test_trains_and_the_merged_model_writes_lore_in_production(trained, tiny_lm):
    out, result, seen = trained
    assert result.trainer == "lore-lora" and result.steps == 4 and seen == [1, 2, 3, 4]
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]
    assert "model.safetensors" in result.weights and "tokenizer.json" in result.weights
    assert not any(name.startswith(".checkpoint") for name in result.weights)
    writer = TransformersLoreWriter(str(out), device="cpu", max_new_tokens=12)
    base = TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=12)
    req = [LoreRequest("Ember", 1, {"mood": "fierce", "element": "fire"}, {}, 5)]
    tuned, plain = writer.write(req)[0], base.write(req)[0]
    assert tuned.text.startswith("Ember · stage 1 · ")
    assert writer.model_ref.weights_sha256 == result.weights["model.safetensors"]
    assert tuned.token_ids_sha256 != plain.token_ids_sha256


def test_same_seed_same_bytes_and_resume_matches(trained, dataset, tiny_lm, tmp_path):
    _, first, _ = trained
    assert _train(dataset, tiny_lm, tmp_path / "again").weights == first.weights

    class Stop(Exception):
        pass

    def stop_at_3(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        _train(dataset, tiny_lm, tmp_path / "resumed", progress=stop_at_3)
    resumed = _train(dataset, tiny_lm, tmp_path / "resumed")
    assert resumed.weights == first.weights and resumed.losses == first.losses
    assert resumed.data_order_sha256 == first.data_order_sha256
    assert _train(dataset, tiny_lm, tmp_path / "other", seed=4).weights != first.weights


def test_wrong_inputs_are_config_errors(dataset, tiny_lm, tiny_sd_like, tmp_path):
    with pytest.raises(ConfigError, match="max_length"):
        _train(dataset, tiny_lm, tmp_path / "x", max_length=8)
    with pytest.raises(ConfigError, match="not under max_length=40"):
        _train(dataset, tiny_lm, tmp_path / "x", max_length=40)
    with pytest.raises(ConfigError, match="no config.json"):
        _train(dataset, tiny_sd_like, tmp_path / "x")
    _train(dataset, tiny_lm, tmp_path / "x", steps=1)
    with pytest.raises(ConfigError, match="checkpoint of another run"):
        _train(dataset, tiny_lm, tmp_path / "x", rank=2)


def test_an_image_dataset_is_refused(tiny_lm, tmp_path):
    class Images:
        kind = "image"
        path = Path("somewhere")
        items = ()

    with pytest.raises(ConfigError, match="needs a lore dataset"):
        _train(Images(), tiny_lm, tmp_path / "x")


@pytest.fixture
def tiny_sd_like(tmp_path) -> Path:
    d = tmp_path / "not-an-lm"
    d.mkdir()
    return d
