"""Production lore: any causal LM from a local directory (a tiny random Llama saved like a user's checkpoint)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from agent.errors import ConfigError, NotFoundError
from agent.generate.base import LoreRequest
from agent.generate.lore import TransformersLoreWriter, token_ids_sha256
from agent.settings import ModelSettings

REQS = [
    LoreRequest("Ember", 1, {"mood": "fierce", "element": "fire"}, {"season": "a cold season"}, 11),
    LoreRequest("Mist", 2, {"mood": "serene", "element": "air"}, {}, 12),
    LoreRequest(
        "Clod",
        0,
        {"mood": "gloomy", "element": "earth"},
        {"weather": "a long storm", "x": "a quiet market"},
        13,
    ),
]


@pytest.fixture(scope="module")
def writer(tiny_lm):
    return TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=12, batch_size=8)


def test_batched_generation_keeps_order_and_records_config(writer, tiny_lm):
    out = writer.write(REQS)
    assert len(out) == 3
    for req, lore in zip(REQS, out, strict=False):
        assert lore.text.startswith(f"{req.name} · stage {req.stage} · ")
        assert lore.prompt.endswith("<|im_start|>assistant\n") and req.traits["mood"] in lore.prompt
        assert lore.generation_config["do_sample"] is False and lore.generation_config["max_new_tokens"] == 12
        assert lore.token_ids_sha256 == token_ids_sha256(lore.details["token_ids"])
        assert lore.details["runtime"]["batch_size"] == 3
        # a random model writes no usable sentence: both come from the template, and that is recorded
        assert lore.details["fallback_sentences"] == 2 and "Its story is still being written." in lore.text
    info = writer.model_ref
    assert (
        info.kind == "lore"
        and info.model_id == str(tiny_lm)
        and info.extra["architecture"] == "LlamaForCausalLM"
    )
    assert info.weights_sha256 == hashlib.sha256((tiny_lm / "model.safetensors").read_bytes()).hexdigest()
    json.dumps(out[0].generation_config)


def test_batched_equals_per_item(writer):
    """Left padding + attention mask: a request's tokens do not depend on the batch it ran in."""
    batched = writer.write(REQS)
    alone = [writer.write([r])[0] for r in REQS]
    assert [b.token_ids_sha256 for b in batched] == [a.token_ids_sha256 for a in alone]
    assert [a.details["runtime"]["batch_size"] for a in alone] == [1, 1, 1]
    assert len({a.token_ids_sha256 for a in alone}) == 3  # the prompts really do steer the model


def test_seeded_sampling_depends_only_on_the_seed(tiny_lm):
    w = TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=10, do_sample=True, temperature=1.5)
    a = w.write([REQS[0], REQS[1]])
    b = w.write([REQS[1]])
    c = w.write([LoreRequest(**{**REQS[0].__dict__, "seed": 99})])
    assert a[1].token_ids_sha256 == b[0].token_ids_sha256
    assert a[0].token_ids_sha256 != c[0].token_ids_sha256
    assert a[0].generation_config["do_sample"] is True and a[0].details["sampling_seed"] == 11


def test_factory_loads_once_per_settings(tiny_lm, fresh_factory):
    s = ModelSettings(
        lore_backend="transformers", lore_model=str(tiny_lm), device="cpu", lore_max_new_tokens=8
    )
    w = fresh_factory.load_lore_writer(s)
    assert fresh_factory.load_lore_writer(s) is w
    assert fresh_factory.load_lore_writer(s.model_copy(update={"lore_max_new_tokens": 9})) is not w


def test_wrong_path_names_the_path(tmp_path):
    with pytest.raises(NotFoundError, match=str(tmp_path / "nope")):
        TransformersLoreWriter(str(tmp_path / "nope"), device="cpu")


def test_hub_id_offline_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    with pytest.raises(NotFoundError, match="not in the local Hugging Face cache") as e:
        TransformersLoreWriter("some-org/some-llm", device="cpu")
    assert time.monotonic() - start < 10
    assert "models.lore_model" in e.value.hint


def test_a_pipeline_or_encoder_is_not_a_causal_lm(tiny_sd_dir, tmp_path):
    with pytest.raises(ConfigError, match="diffusers StableDiffusionPipeline"):
        TransformersLoreWriter(str(tiny_sd_dir), device="cpu")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ConfigError, match="BertModel, not a causal LM"):
        TransformersLoreWriter(str(tmp_path / "bert"), device="cpu")
