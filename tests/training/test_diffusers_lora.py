"""LoRA on tiny random pipelines, the UNet recipe (StableDiffusionPipeline) and the transformer recipe
(StableDiffusion3Pipeline): trains, saves, loads back into the production image backend, is deterministic and
resumes bit-exactly; other transformer families are refused before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.errors import ConfigError
from agent.generate.base import ImageRequest
from agent.generate.image.diffusers import DiffusersImageGenerator
from agent.training.diffusers_lora import LORA_WEIGHTS, step_indices, train_diffusers_lora
from tests.generate.conftest import _clip_tokenizer, build_tiny_sd, build_tiny_sd3, t5_tokenizer

pytest.importorskip("peft", reason="LoRA training needs peft (pip install peft==0.21.2)")

CAPTIONS = ["a red fox, flat colours", "a blue bird", "a green frog, flat colours", "a yellow cat"]
COLOURS = [(220, 40, 30), (30, 60, 220), (40, 200, 60), (230, 210, 40)]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


def _write_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (caption, colour) in enumerate(zip(CAPTIONS, COLOURS, strict=True)):
        px = np.zeros((40, 48, 3), np.uint8)  # not square: the trainer resizes and centre-crops
        px[:] = colour
        px[10:30, 12:36] = 255 - np.array(colour, np.uint8)
        Image.fromarray(px).save(root / "images" / f"{i:04d}.png")
        lines.append(json.dumps({"file": f"images/{i:04d}.png", "caption": caption}))
    (root / "labels.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from agent.datasets import load_dataset

    return load_dataset(_write_dataset(tmp_path_factory.mktemp("captions") / "ds"))


def _train(dataset, base, out, **kw):
    args = dict(rank=4, alpha=4, lr=5e-2, steps=4, batch_size=2, resolution=32, seed=7, checkpoint_every=2)
    args.update(kw)
    return train_diffusers_lora(dataset, base, out, device="cpu", **args)


@pytest.fixture(scope="module")
def trained(dataset, tiny_sd, tmp_path_factory):
    seen: list[tuple[int, int, float]] = []
    out = tmp_path_factory.mktemp("lora-a")
    result = _train(dataset, tiny_sd, out, progress=lambda s, t, loss: seen.append((s, t, loss)))
    return out, result, seen


def test_trains_saves_and_reports_a_result(trained, dataset):
    out, result, seen = trained
    assert result.trainer == "diffusers-lora" and result.steps == 4 and result.seed == 7
    assert len(result.losses) == 4 and all(isinstance(x, float) and x > 0 for x in result.losses)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4] and {t for _, t, _ in seen} == {4}
    assert list(result.weights) == [LORA_WEIGHTS] and (out / LORA_WEIGHTS).is_file()
    assert (
        result.hyperparameters["rank"] == 4
        and result.hyperparameters["pipeline"] == "StableDiffusionPipeline"
    )
    assert len(result.data_order_sha256) == 64
    # two epochs of 4 items in batches of 2: every item twice
    order = [i for s in range(4) for i in step_indices(4, 2, 7, s)]
    assert sorted(order) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_the_lora_loads_into_the_production_backend_and_changes_the_image(trained, tiny_sd):
    out, result, _ = trained
    req = [ImageRequest(traits={}, seed=3, prompt="a red fox, flat colours")]
    plain = DiffusersImageGenerator(str(tiny_sd), num_inference_steps=2, device="cpu", width=32, height=32)
    tuned = DiffusersImageGenerator(
        str(tiny_sd), lora=str(out), num_inference_steps=2, device="cpu", width=32, height=32
    )
    a, b = plain.generate(req)[0], tuned.generate(req)[0]
    assert b.config["lora"]["sha256"] == result.weights[LORA_WEIGHTS]
    assert a.pixels_sha256 != b.pixels_sha256


def test_same_seed_same_weights_other_seed_other_weights(trained, dataset, tiny_sd, tmp_path):
    _, first, _ = trained
    again = _train(dataset, tiny_sd, tmp_path / "again")
    assert again.weights == first.weights and again.losses == first.losses
    assert again.data_order_sha256 == first.data_order_sha256
    other = _train(dataset, tiny_sd, tmp_path / "other", seed=8)
    assert other.weights != first.weights and other.data_order_sha256 != first.data_order_sha256


def test_an_interrupted_run_resumes_to_the_same_weights(trained, dataset, tiny_sd, tmp_path):
    _, first, _ = trained
    out = tmp_path / "resumed"

    class Stop(Exception):
        pass

    def stop_at_3(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        _train(dataset, tiny_sd, out, progress=stop_at_3)
    assert not (out / LORA_WEIGHTS).exists() and (out / ".checkpoint" / "training-state").is_file()
    resumed = _train(dataset, tiny_sd, out)
    assert resumed.weights == first.weights and resumed.losses == first.losses
    assert resumed.data_order_sha256 == first.data_order_sha256


def test_a_finished_run_continues_to_more_steps_like_a_longer_run(dataset, tiny_sd, tmp_path):
    _train(dataset, tiny_sd, tmp_path / "short", steps=2)
    continued = _train(dataset, tiny_sd, tmp_path / "short", steps=3)
    straight = _train(dataset, tiny_sd, tmp_path / "straight", steps=3)
    assert continued.weights == straight.weights and continued.steps == 3


def test_a_checkpoint_of_other_arguments_is_refused(trained, dataset, tiny_sd):
    out, _, _ = trained
    with pytest.raises(ConfigError, match="checkpoint of another run") as e:
        _train(dataset, tiny_sd, out, rank=8)
    assert "delete" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 0}, "steps=0"),
        ({"resolution": 30}, "multiple of 8"),
        ({"lr": 2.0}, "learning rate"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_bad_arguments_are_config_errors(dataset, tiny_sd, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        _train(dataset, tiny_sd, tmp_path / "x", **kw)


def test_a_non_pipeline_base_is_refused(dataset, tmp_path):
    (tmp_path / "base").mkdir()
    with pytest.raises(ConfigError, match="not a diffusers pipeline"):
        _train(dataset, tmp_path / "base", tmp_path / "x")


def test_a_class_conditional_item_trains_on_the_production_prompt(tmp_path):
    from agent.datasets import load_dataset
    from agent.generate.image.diffusers import prompt_from_traits
    from agent.training.diffusers_lora import item_prompt

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "0.png")
    traits = {"mood": "serene", "element": "fire"}
    (root / "labels.jsonl").write_text(json.dumps({"file": "images/0.png", "traits": traits}) + "\n")
    (item,) = load_dataset(root).items
    assert (
        item_prompt(item)
        == prompt_from_traits(traits)
        == "a serene fire creature, digital art, centered, full body, plain background"
    )


# --- the transformer recipe (Stable Diffusion 3) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory) -> Path:
    return build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3") / "pipeline")


@pytest.fixture(scope="module")
def trained_sd3(dataset, tiny_sd3, tmp_path_factory):
    seen: list[tuple[int, int, float]] = []
    out = tmp_path_factory.mktemp("sd3-lora-a")
    result = _train(dataset, tiny_sd3, out, progress=lambda s, t, loss: seen.append((s, t, loss)))
    return out, result, seen


def test_sd3_trains_the_transformer_with_the_flow_matching_recipe(trained_sd3):
    from safetensors import safe_open

    out, result, seen = trained_sd3
    assert (
        result.trainer == "diffusers-lora" and result.steps == 4 and [s for s, _, _ in seen] == [1, 2, 3, 4]
    )
    assert len(result.losses) == 4 and all(x > 0 for x in result.losses)
    hyper = result.hyperparameters
    assert hyper["pipeline"] == "StableDiffusion3Pipeline" and hyper["prediction_type"] == "flow_matching"
    assert hyper["weighting_scheme"] == "none" and hyper["target"] == "noise - latents"
    assert (hyper["vae_shift_factor"], hyper["vae_scaling_factor"]) == (0.0609, 1.5035)
    assert "weight_decay=0.0001" in hyper["optimizer"]  # the SD3 recipe's default, not the UNet recipe's 1e-2
    with safe_open(str(out / LORA_WEIGHTS), "pt") as f:
        keys = sorted(f.keys())
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("transformer.transformer_blocks.") for k in keys)
    assert {k.split(".attn.")[1].rsplit(".lora_", 1)[0] for k in keys} == {"to_q", "to_k", "to_v", "to_out.0"}
    assert meta["transformer.r"] == 4 and meta["transformer.target_modules"] == [
        "to_k",
        "to_out.0",
        "to_q",
        "to_v",
    ]


def test_the_sd3_lora_loads_into_the_production_backend_and_changes_the_image(trained_sd3, tiny_sd3):
    out, result, _ = trained_sd3
    req = [ImageRequest(traits={}, seed=3, prompt="a red fox, flat colours")]
    kw = dict(num_inference_steps=2, device="cpu", width=32, height=32)
    plain = DiffusersImageGenerator(str(tiny_sd3), **kw)
    tuned = DiffusersImageGenerator(str(tiny_sd3), lora=str(out), **kw)
    a, b = plain.generate(req)[0], tuned.generate(req)[0]
    assert b.config["pipeline"] == "StableDiffusion3Pipeline" and (b.width, b.height) == (32, 32)
    assert b.config["lora"]["sha256"] == result.weights[LORA_WEIGHTS]
    assert a.pixels_sha256 != b.pixels_sha256
    assert tuned.generate(req)[0].pixels_sha256 == b.pixels_sha256


def test_sd3_same_seed_same_bytes_and_a_stopped_run_resumes_to_them(trained_sd3, dataset, tiny_sd3, tmp_path):
    _, first, _ = trained_sd3
    again = _train(dataset, tiny_sd3, tmp_path / "again")
    assert again.weights == first.weights and again.losses == first.losses
    assert again.data_order_sha256 == first.data_order_sha256
    other = _train(dataset, tiny_sd3, tmp_path / "other", seed=8)
    assert other.weights != first.weights

    class Stop(Exception):
        pass

    def stop_at_3(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise Stop

    out = tmp_path / "resumed"
    with pytest.raises(Stop):
        _train(dataset, tiny_sd3, out, progress=stop_at_3)
    assert not (out / LORA_WEIGHTS).exists() and (out / ".checkpoint" / "training-state").is_file()
    resumed = _train(dataset, tiny_sd3, out)
    assert resumed.weights == first.weights and resumed.losses == first.losses


def test_a_unet_checkpoint_is_not_resumed_on_an_sd3_base(trained, dataset, tiny_sd3):
    out, _, _ = trained
    with pytest.raises(ConfigError, match="checkpoint of another run"):
        _train(dataset, tiny_sd3, out)


def _build_tiny_flux(directory: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.generate.conftest import tiny_t5_encoder

    tokenizer, tokenizer_2 = _clip_tokenizer(directory.parent / "flux-tok"), t5_tokenizer()
    torch.manual_seed(0)
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKL(
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ),
        text_encoder=CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=1,
                vocab_size=len(tokenizer) + 2,
            )
        ),
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5_encoder(len(tokenizer_2)),
        tokenizer_2=tokenizer_2,
        transformer=FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        ),
    ).save_pretrained(directory)
    return directory


def test_another_transformer_family_is_refused_before_training(dataset, tmp_path):
    base = _build_tiny_flux(tmp_path / "flux")
    with pytest.raises(ConfigError, match="FluxTransformer2DModel.*Stable Diffusion 3 recipe") as e:
        _train(dataset, base, tmp_path / "x")
    assert "3.x" in (e.value.hint or "") and not (tmp_path / "x").exists()
