"""The causal-LM lore writer: prompts, batched decoding and post-processing around one loaded model.

:class:`CausalLMLoreWriter` is the shared machinery of both lore families (:mod:`~agent.generate.lore.embedded`
and :mod:`~agent.generate.lore.transformers`); each family only loads its model and names it.

Guarantees: every request is validated before any work starts (:meth:`CausalLMLoreWriter.check_inputs`). Greedy
decoding by default; sampling is optional and seeded per request (then each request runs alone, so its text depends
only on its own seed). The ``GenerationConfig.to_dict()`` and the sha256 of the generated ids go with every output,
with what a receipt needs to replay it (:class:`WrittenLore`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from agent.domain import ModelRef
from agent.errors import ConfigError
from agent.generate import progress
from agent.generate.base import GeneratedLore, LoreRequest, LoreWriter, request_label
from agent.generate.lore.attention import GQA_ATTENTION, use_gqa_attention
from agent.generate.lore.clean import POSTPROCESS_VERSION, allowed_words_for, finish_lore
from agent.generate.lore.decode import (
    SharedPrefix,
    decode_batch,
    decoding_config,
    generate_ids,
    token_ids_sha256,
)
from agent.generate.lore.prompt import N_SENTENCES, build_messages, render_prompt
from agent.generate.runtime import current_runtime
from agent.generate.seed import check_seed


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


class CausalLMLoreWriter(LoreWriter):
    """Lore from any loaded causal LM + tokenizer (the embedded and transformers backends both use it).

    Args:
        model: A transformers causal LM, already on ``device`` in ``dtype``.
        tokenizer: Its tokenizer (left padding is set here).
        model_ref: The model's identity for receipts and metadata (its ``backend`` names the family that
            rebuilds it).
        device: Where the model runs.
        dtype: Its dtype.
        max_new_tokens: Token budget for the sentences.
        do_sample: Sample (seeded per request) instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        repetition_penalty: Penalty on repeated tokens.
        batch_size: Most prompts decoded together (sampling always runs one request at a time). A greedy batch
            computes the prompt tokens all its prompts share once (:class:`SharedPrefix`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_ref: ModelRef,
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
        self._model_ref = model_ref
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
    def model_ref(self) -> ModelRef:
        return self._model_ref

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
