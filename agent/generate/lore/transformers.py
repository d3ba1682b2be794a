"""The transformers lore family: any causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``) for production.

The model is a local ``save_pretrained`` directory or a hub id resolved from the local cache (with
``HF_HUB_OFFLINE=1`` a missing one fails at once, naming the fix). Prompting, batched decoding and
post-processing are the shared writer's (:class:`agent.generate.lore.writer.CausalLMLoreWriter`).

Guarantee: a directory that does not hold a causal LM is refused before anything loads (:func:`check_causal_lm_dir`),
and the model's ``weights_sha256`` follows :func:`agent.generate.runtime.weights_digest`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.domain import ModelRef
from agent.errors import ConfigError
from agent.generate.lore.writer import CausalLMLoreWriter
from agent.generate.runtime import (
    dtype_name,
    resolve_device,
    resolve_dtype,
    resolve_model_source,
    weight_files,
    weights_digest,
)


def check_causal_lm_dir(path: Path) -> str:
    """The architecture named in ``path/config.json``; ConfigError if the directory is not a causal LM."""
    hint = "point models.lore_model at a causal LM saved with save_pretrained (e.g. a Llama/SmolLM/Qwen dir)"
    if (path / "model_index.json").is_file():
        name = json.loads((path / "model_index.json").read_text()).get("_class_name", "pipeline")
        raise ConfigError(f"{path} holds a diffusers {name}, not a causal language model", hint=hint)
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"{path} has no config.json, so it is not a transformers model", hint=hint)
    archs = json.loads(config.read_text()).get("architectures") or []
    bad = [a for a in archs if not a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))]
    if archs and len(bad) == len(archs):
        raise ConfigError(
            f"{path} holds a {', '.join(archs)}, not a causal LM; expected an *ForCausalLM architecture",
            hint=hint,
        )
    return ", ".join(archs) or "unknown"


class TransformersLoreWriter(CausalLMLoreWriter):
    """Lore from any causal LM on disk or in the local hub cache.

    Args:
        model: Local directory or hub id.
        model_id: What receipts call the model (default: ``model``); e.g. ``ipfs://<CID>`` for a published model
            loaded from the model cache.
        device: ``auto``/``cpu``/``cuda``/``mps``.
        dtype: ``auto`` (fp16 on GPU, fp32 on CPU) or explicit.
        **decoding: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``repetition_penalty``,
            ``batch_size`` (see :class:`~agent.generate.lore.writer.CausalLMLoreWriter`).
    """

    def __init__(
        self,
        model: str,
        *,
        model_id: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        **decoding: Any,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        path = resolve_model_source(model, what="lore model", setting="models.lore_model")
        arch = check_causal_lm_dir(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=dt, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"could not load a causal LM ({arch}) from {path}: {e}",
                hint="check that the directory holds the model *and* its tokenizer files",
            ) from e
        # PreTrainedModel.to is wrapped with functools.wraps, which typeshed types as the unbound nn.Module.to
        lm = lm.to(dev).eval().requires_grad_(False)  # type: ignore[arg-type]
        self.source = model_id or model
        self.path = path
        self.files = weight_files(path)
        ref = ModelRef(
            model_id=self.source,
            weights_sha256=weights_digest(self.files),
            kind="lore",
            backend="transformers",
            extra={
                "backend": "transformers",
                "architecture": arch,
                "path": str(path),
                "files": dict(self.files),
                "digest_rule": "one weight file: its sha256; several: sha256 of canonical JSON {relpath: sha256}",
                "device": str(dev),
                "dtype": dtype_name(dt),
            },
        )
        super().__init__(lm, tokenizer, ref, device=dev, dtype=dt, **decoding)
