"""Lore decoding: batched, greedy by default, with a shared-prefix key/value cache and decoding phases.

Guarantees:

- A row's generated ids never include padding, and decoding stops at EOS or as soon as the row holds
  :data:`~agent.generate.lore.prompt.N_SENTENCES` clean sentences (:class:`StopAfterSentences`).
- The prompt tokens every prompt of a batch shares are computed once (:class:`SharedPrefix`); how many is decided
  by the batch's composition alone, so a resumed genesis recomputes it exactly.
- Finished rows leave the batch between phases (:func:`decode_phases`), so a long token budget costs only the rows
  that use it.
- :func:`token_ids_sha256` is the hash every output and receipt records (int64 little-endian, prompt excluded).

``transformers`` is imported where it is used: importing this module loads no language-model library.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

from agent.generate.lore.clean import clean_sentences
from agent.generate.lore.prompt import N_SENTENCES


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
