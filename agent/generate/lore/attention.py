"""A transformers attention implementation: ``sdpa`` with grouped-query K/V heads passed to SDPA as they are.

Guarantee: same kernel, same bits: the logits are identical to ``sdpa``'s (tests/genesis/test_lore_batching.py
checks it). :func:`use_gqa_attention` registers it with transformers and switches a model to it only on the CPU
and only for plain ``sdpa`` models with grouped-query attention; receipts name it (``runtime.attention``).
"""

from __future__ import annotations

from typing import Any

import torch

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
    are identical to ``sdpa``'s (tests/genesis/test_lore_batching.py checks it).
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
