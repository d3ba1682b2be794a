"""Lore prompts, post-processing of nasty model output, decoding configs and the converted-model cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.generate.base import LoreRequest
from agent.generate.lore import (
    EXAMPLE_ASSISTANT,
    N_SENTENCES,
    POSTPROCESS_VERSION,
    build_messages,
    check_cache,
    clean_sentences,
    decoding_config,
    ensure_converted,
    finish_lore,
    lore_header,
    render_prompt,
    token_ids_sha256,
    user_message,
)

REQ = LoreRequest(
    name="Ember #7",
    stage=2,
    traits={"mood": "fierce", "element": "fire"},
    facts={"season": "a cold season", "holding": "held for a long time"},
    seed=5,
)
ALLOWED = ["fierce", "fire"]


def kept(raw: str) -> list[str]:
    return list(clean_sentences(raw, allowed_words=ALLOWED).sentences)


def test_clean_output_is_kept_as_two_sentences():
    raw = (
        "Its flames curl against the frost. It waits for the thaw with quiet fury. A third one follows here."
    )
    assert kept(raw) == ["Its flames curl against the frost.", "It waits for the thaw with quiet fury."]


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        # list markers and markdown are stripped, the sentences survive
        (
            "1. **Its flames curl against the frost.**\n2. It waits for the thaw with quiet fury.",
            ["Its flames curl against the frost.", "It waits for the thaw with quiet fury."],
        ),
        (
            "- Its flames curl against the frost.\n* It waits for the thaw with quiet fury.",
            ["Its flames curl against the frost.", "It waits for the thaw with quiet fury."],
        ),
        # quotes and a label / intro line go away
        (
            'Here are two sentences:\n"Its flames curl against the frost." '
            "\u201cIt waits for the thaw with quiet fury.\u201d",
            ["Its flames curl against the frost.", "It waits for the thaw with quiet fury."],
        ),
        (
            "Lore: Its flames curl against the frost. It waits for the thaw with quiet fury.",
            ["Its flames curl against the frost.", "It waits for the thaw with quiet fury."],
        ),
        # special tokens from a sloppy decode
        (
            "Its flames curl against the frost.<|im_end|>\n<|im_start|>It waits for the thaw with quiet fury.",
            ["Its flames curl against the frost.", "It waits for the thaw with quiet fury."],
        ),
        # an unfinished last sentence is dropped
        (
            "Its flames curl against the frost. It waits for the thaw with",
            ["Its flames curl against the frost."],
        ),
        # invented names and numbers are dropped; trait words may be capitalised
        (
            (
                "Meet the creature named Blaze. The wind carries Zephyr over the hills. It glows 3 times brighter. "
                "Its Fire curls against the frost."
            ),
            ["Its Fire curls against the frost."],
        ),
        # meta talk, repeats and too-short bits
        (
            "As an AI I cannot feel. Its flames curl against the frost. Its flames curl against the frost. Yes.",
            ["Its flames curl against the frost."],
        ),
        ("", []),
        ("...", []),
        ("\u2022 \u2022 \u2022", []),
    ],
)
def test_nasty_outputs(raw, want):
    assert kept(raw) == want


def test_dropped_sentences_are_recorded_with_reasons():
    cleaned = clean_sentences(
        "It glows 3 times brighter. It waits for Zephyr in the cave. Half a", allowed_words=ALLOWED
    )
    reasons = dict(cleaned.dropped)
    assert reasons["It glows 3 times brighter."] == "number"
    assert reasons["It waits for Zephyr in the cave."] == "invented name"
    assert ("Half a", "unfinished") in cleaned.dropped


def test_finish_lore_puts_hard_facts_in_template_text_and_fills_from_the_template():
    text, details = finish_lore(REQ, "Its flames curl against the frost.")
    header, body = text.split("\n\n")
    assert header == lore_header(REQ) == "Ember #7 · stage 2 · element fire, mood fierce"
    assert body.startswith("Its flames curl against the frost. ")
    assert details["fallback_sentences"] == 1 and details["postprocess"] == POSTPROCESS_VERSION
    text, details = finish_lore(REQ, "1. 2. 3.")
    assert details["fallback_sentences"] == N_SENTENCES
    assert "fierce" in text and "fire" in text and text.count(".") >= 2


def test_prompt_has_system_rules_one_shot_example_and_facts_but_not_the_name():
    messages = build_messages(REQ)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == EXAMPLE_ASSISTANT
    assert messages[3]["content"] == user_message(REQ.traits, REQ.facts)
    assert "fierce, fire" in messages[3]["content"] and "a cold season" in messages[3]["content"]
    assert all("Ember" not in m["content"] for m in messages)

    class NoTemplate:
        chat_template = None

    plain = render_prompt(NoTemplate(), messages)
    assert plain.endswith("Assistant:") and "System: You write lore" in plain


def test_decoding_config_is_greedy_by_default_and_records_sampling_settings():
    greedy = decoding_config(max_new_tokens=32, eos_token_id=[2], pad_token_id=2).to_dict()
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 32 and greedy["temperature"] is None
    sampled = decoding_config(do_sample=True, temperature=0.8, top_p=0.95).to_dict()
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.8 and sampled["top_p"] == 0.95


def test_token_ids_hash_is_int64_little_endian():
    import hashlib
    import struct

    assert token_ids_sha256([1, 2, 300]) == hashlib.sha256(struct.pack("<3q", 1, 2, 300)).hexdigest()


def test_check_inputs_say_how_to_fix(tiny_lm):
    from agent.generate.lore import TransformersLoreWriter

    writer = TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=8)
    bad = [
        (LoreRequest("", 0, {"mood": "serene"}, {}, 1), "name"),
        (LoreRequest("A", -1, {"mood": "serene"}, {}, 1), "stage"),
        (LoreRequest("A", 0, {}, {}, 1), "traits"),
        (LoreRequest("A", 0, {"mood": "serene"}, {"price": 3}, 1), "facts"),  # type: ignore[dict-item]
        (LoreRequest("A", 0, {"mood": "serene"}, {}, 2**64), "seed"),
    ]
    for req, word in bad:
        with pytest.raises(ConfigError, match=word) as e:
            writer.write([req])
        assert isinstance(e.value, ValueError) and e.value.hint


# --- the converted-model cache (with a fake converter; the real one runs in test_lore_embedded) ---------------


def _fake_convert(calls: list[Path]):
    def convert(gguf: Path, dest: Path) -> None:
        calls.append(dest)
        dest.mkdir(parents=True)
        (dest / "model.safetensors").write_bytes(b"weights" * 100)
        (dest / "config.json").write_text("{}")

    return convert


def test_cache_is_keyed_by_gguf_sha256_written_atomically_and_reused(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf-bytes")
    calls: list[Path] = []
    d1, status1 = ensure_converted(gguf, tmp_path / "cache", convert=_fake_convert(calls))
    d2, status2 = ensure_converted(gguf, tmp_path / "cache", convert=_fake_convert(calls))
    assert (status1, status2) == ("converted", "cache") and d1 == d2 and len(calls) == 1
    import hashlib

    assert d1.name == "gguf-" + hashlib.sha256(b"gguf-bytes").hexdigest()
    assert calls[0] != d1 and calls[0].name.startswith(".tmp-")  # written aside, then renamed into place
    assert [p.name for p in d1.parent.iterdir()] == [d1.name]
    manifest = json.loads((d1 / "chrysalis-cache.json").read_text())
    assert manifest["files"]["model.safetensors"]["size"] == 700


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, damage):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf-bytes")
    calls: list[Path] = []
    d, _ = ensure_converted(gguf, tmp_path / "cache", convert=_fake_convert(calls))
    weights = d / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(b"weights")
    elif damage == "flip":
        weights.write_bytes(b"Weights" + b"weights" * 99)
    elif damage == "delete":
        weights.unlink()
    else:
        (d / "chrysalis-cache.json").write_text("{not json")
    assert check_cache(d, d.name.removeprefix("gguf-")) is not None
    d2, status = ensure_converted(gguf, tmp_path / "cache", convert=_fake_convert(calls))
    assert status == "rebuilt" and d2 == d and len(calls) == 2
    assert weights.read_bytes() == b"weights" * 100
    assert [p.name for p in d.parent.iterdir()] == [d.name]  # no temporary or corrupt leftovers


def test_failed_conversion_leaves_no_cache(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf-bytes")

    def broken(g: Path, dest: Path) -> None:
        dest.mkdir()
        (dest / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        ensure_converted(gguf, tmp_path / "cache", convert=broken)
    assert list((tmp_path / "cache" / "lore").iterdir()) == []
