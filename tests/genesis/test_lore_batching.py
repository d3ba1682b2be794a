"""Batched lore as genesis runs it: a shared prompt prefix, finished rows leaving the batch between phases, and
grouped-query attention without K/V copies. Each must give every row the tokens it gets decoded alone (what a
receipt's canonical replay does), with a tiny random Llama (2 query heads, 1 K/V head) built from a config."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from agent.generate.base import LoreRequest
from agent.generate.lore import (
    FIRST_PHASE_TOKENS,
    GQA_ATTENTION,
    MIN_SHARED_PREFIX,
    SharedPrefix,
    TransformersLoreWriter,
    allowed_words_for,
    decode_batch,
    decode_phases,
)
from agent.generate.lore.decode import _with_budget
from agent.genesis.assign import assign
from agent.genesis.traits import load_table

BUDGET = 48


@pytest.fixture(scope="module")
def writer(tiny_lm):
    return TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=12, batch_size=16)


@pytest.fixture(scope="module")
def requests() -> list[LoreRequest]:
    table = load_table()
    a = assign(table, 40, "lore-batching")
    return [
        LoreRequest(table.name, 0, dict(a.items[i]), dict(table.lore_facts), a.item_seed(i))
        for i in range(10)
    ]


def test_phases_spend_exactly_the_budget() -> None:
    assert decode_phases(64) == [FIRST_PHASE_TOKENS, 8, 8, 8, 8]
    assert decode_phases(45) == [FIRST_PHASE_TOKENS, 8, 5]
    assert decode_phases(20) == [20]
    for budget in range(1, 200):
        assert sum(decode_phases(budget)) == budget and min(decode_phases(budget)) >= 1


def test_a_batch_gives_each_row_its_own_tokens_and_records_how(writer, requests) -> None:
    batched = writer.write(requests)
    alone = [writer.write([r])[0] for r in requests]
    assert [b.token_ids_sha256 for b in batched] == [a.token_ids_sha256 for a in alone]
    assert len({a.token_ids_sha256 for a in alone}) > 1  # the prompts steer the model
    runtime = batched[0].details["runtime"]
    # the system rules and the one-shot example are computed once; each row brings its own creature
    assert runtime["batch_size"] == 10 and runtime["prefix_tokens"] >= MIN_SHARED_PREFIX
    assert runtime["attention"] == GQA_ATTENTION and runtime["threads"] == torch.get_num_threads()
    assert "prefix_tokens" not in alone[0].details["runtime"]  # decoded alone: the whole prompt, as replayed
    ids = writer.tokenizer([writer.prompt_for(r) for r in requests], add_special_tokens=False)["input_ids"]
    assert runtime["prefix_tokens"] == SharedPrefix.common_length(ids)


def test_grouped_query_attention_gives_sdpas_exact_logits(writer, requests) -> None:
    model = writer.model
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    enc = writer.tokenizer(
        [writer.prompt_for(r) for r in requests[:4]],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    assert (enc["attention_mask"] == 0).any()  # padded, so transformers' sdpa would copy K/V heads
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        try:
            reference = model(**enc).logits
        finally:
            model.set_attn_implementation(GQA_ATTENTION)
        assert torch.equal(model(**enc).logits, reference)


def test_finished_rows_leave_the_batch_and_the_rest_go_on(writer, requests) -> None:
    """With an end-of-text token the random model emits now and then, rows stop at different phases."""
    model, tok = writer.model, writer.tokenizer
    prompts = [writer.prompt_for(r) for r in requests]
    allowed = [allowed_words_for(r) for r in requests]
    free = _with_budget(writer.generation_config, BUDGET)
    free.eos_token_id = None
    ids, _ = decode_batch(model, tok, prompts, free, allowed=allowed, device=writer.device)
    counts = Counter(t for row in ids for t in row)
    gc = _with_budget(writer.generation_config, BUDGET)
    stop_lengths: list[int] = []
    for token, _n in counts.most_common(20):  # an EOS that ends some rows early and lets others run long
        gc.eos_token_id = [token]
        batched, shared = decode_batch(
            model,
            tok,
            prompts,
            gc,
            allowed=allowed,
            device=writer.device,
            shared_prefix=SharedPrefix(model, writer.device),
        )
        stop_lengths = [len(row) for row in batched]
        if min(stop_lengths) < FIRST_PHASE_TOKENS and max(stop_lengths) > FIRST_PHASE_TOKENS:
            break
    assert min(stop_lengths) < FIRST_PHASE_TOKENS < max(stop_lengths), stop_lengths
    assert shared >= MIN_SHARED_PREFIX
    alone = [
        decode_batch(model, tok, [p], gc, allowed=[a], device=writer.device)[0][0]
        for p, a in zip(prompts, allowed, strict=False)
    ]
    assert batched == alone
    assert all(row[-1] == gc.eos_token_id[0] or len(row) == BUDGET for row in batched)
