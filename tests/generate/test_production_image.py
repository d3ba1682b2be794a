"""Production image pipelines: a tiny random Stable Diffusion saved like a user's checkpoint and loaded back."""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from agent.errors import ConfigError, NotFoundError
from agent.generate.base import ImageRequest
from agent.generate.image.diffusers import DiffusersImageGenerator, prompt_from_traits
from agent.settings import ModelSettings

TRAITS = {"mood": "serene", "element": "fire"}


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return DiffusersImageGenerator(str(tiny_sd_dir), num_inference_steps=4, device="cpu", batch_size=4)


def pixels(img) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(img.png)).convert("RGB"))


def test_text2img_from_a_saved_pipeline_records_everything_needed_to_replay(sd, tiny_sd_dir):
    [img] = sd.generate([ImageRequest(TRAITS, seed=7)])
    assert (img.width, img.height) == (64, 64)
    px = pixels(img)
    assert px.shape == (64, 64, 3)
    assert img.pixels_sha256 == hashlib.sha256(px.tobytes()).hexdigest()
    c = img.config
    assert c["pipeline"] == "StableDiffusionPipeline" and c["mode"] == "fresh"
    assert c["prompt"] == prompt_from_traits(TRAITS) and "serene fire creature" in c["prompt"]
    assert (
        c["scheduler"]["class"] == "DDIMScheduler"
        and c["scheduler"]["config"]["beta_schedule"] == "scaled_linear"
    )
    assert (c["num_inference_steps"], c["guidance_scale"], c["seed"]) == (4, 7.5, 7)
    assert (c["device"], c["dtype"], c["batch_size"]) == ("cpu", "float32", 1)
    json.dumps(c)  # JSON-safe
    info = sd.model_ref
    assert info.kind == "image" and info.model_id == str(tiny_sd_dir)
    assert set(info.extra["files"]) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    assert len(info.weights_sha256) == 64


def test_same_seed_same_bits_other_seed_other_image(sd):
    a, b, c = sd.generate([ImageRequest(TRAITS, 7), ImageRequest(TRAITS, 7), ImageRequest(TRAITS, 8)])
    assert a.pixels_sha256 == b.pixels_sha256 != c.pixels_sha256


def test_each_image_of_a_call_is_the_image_made_alone_bit_for_bit(sd):
    """CPU kernels give a batch row other bits than a batch-1 call (and by its place in the batch), which a receipt
    could not replay; so on the CPU each request of a call is computed alone, at the canonical batch size 1."""
    reqs = [
        ImageRequest(TRAITS, 1),
        ImageRequest({"mood": "fierce", "element": "air"}, 2),
        ImageRequest(TRAITS, 3),
    ]
    batched = sd.generate(reqs)
    assert [i.config["batch_size"] for i in batched] == [1, 1, 1]
    for req, b in zip(reqs, batched, strict=True):
        [alone] = sd.generate([req])
        assert alone.pixels_sha256 == b.pixels_sha256 and alone.png == b.png


def test_a_call_runs_with_the_generators_thread_count_and_restores_the_callers(sd, tiny_sd_dir):
    import torch

    [canonical] = sd.generate([ImageRequest(TRAITS, 7)])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what an earlier caller (or test) left behind must not matter
        [img] = sd.generate([ImageRequest(TRAITS, 7)])
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert img.config["torch_threads"] == 1 and img.pixels_sha256 == canonical.pixels_sha256
    two = DiffusersImageGenerator(str(tiny_sd_dir), num_inference_steps=4, device="cpu", threads=2)
    [other] = two.generate([ImageRequest(TRAITS, 7)])
    assert other.config["torch_threads"] == 2 and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads"):
        DiffusersImageGenerator(str(tiny_sd_dir), device="cpu", threads=0)


def test_img2img_evolves_the_previous_image(sd):
    [base] = sd.generate([ImageRequest(TRAITS, 7)])
    reqs = [
        ImageRequest({"mood": "fierce", "element": "fire"}, 9, init_image=base.png, strength=0.5),
        ImageRequest({"mood": "fierce", "element": "fire"}, 9, init_image=base.png, strength=0.5),
    ]
    evolved, again = sd.generate(reqs)
    c = evolved.config
    assert (
        c["pipeline"] == "StableDiffusionImg2ImgPipeline" and c["mode"] == "img2img" and c["strength"] == 0.5
    )
    assert c["init_image_sha256"] == hashlib.sha256(base.png).hexdigest()
    assert evolved.pixels_sha256 == again.pixels_sha256 != base.pixels_sha256


def test_lora_changes_the_output_and_is_recorded(tiny_sd_dir, tiny_lora_file, sd):
    lora = DiffusersImageGenerator(
        str(tiny_sd_dir), lora=str(tiny_lora_file), num_inference_steps=4, device="cpu"
    )
    [plain] = sd.generate([ImageRequest(TRAITS, 7)])
    [styled] = lora.generate([ImageRequest(TRAITS, 7)])
    assert styled.pixels_sha256 != plain.pixels_sha256
    rec = styled.config["lora"]
    assert rec["sha256"] == hashlib.sha256(tiny_lora_file.read_bytes()).hexdigest() and rec["scale"] == 1.0
    assert lora.model_ref.extra["lora"]["file"] == "pytorch_lora_weights.safetensors"
    # a directory holding the weight file works too, and scale 0 switches the LoRA off
    off = DiffusersImageGenerator(
        str(tiny_sd_dir), lora=str(tiny_lora_file.parent), lora_scale=0.0, num_inference_steps=4, device="cpu"
    )
    [none] = off.generate([ImageRequest(TRAITS, 7)])
    assert np.abs(pixels(none).astype(int) - pixels(plain)).max() <= 1


def test_scheduler_and_steps_come_from_settings(tiny_sd_dir, fresh_factory):
    s = ModelSettings(
        image_backend="diffusers",
        image_model=str(tiny_sd_dir),
        image_scheduler="EulerDiscreteScheduler",
        image_steps=3,
        image_guidance=2.0,
        device="cpu",
    )
    gen = fresh_factory.load_image_generator(s)
    assert fresh_factory.load_image_generator(s) is gen  # loaded once, reused
    [img] = gen.generate([ImageRequest(TRAITS, 1)])
    c = img.config
    assert c["scheduler"]["class"] == "EulerDiscreteScheduler"
    assert (c["num_inference_steps"], c["guidance_scale"]) == (3, 2.0)


def test_incompatible_scheduler_names_the_compatible_ones(tiny_sd_dir):
    with pytest.raises(ConfigError, match="DDIMScheduler") as e:
        DiffusersImageGenerator(str(tiny_sd_dir), scheduler="NoSuchScheduler", device="cpu")
    assert "not compatible with StableDiffusionPipeline" in str(e.value)


def test_check_inputs_reject_bad_requests_with_fixes(sd):
    cases = [
        (ImageRequest({}, 1), "no prompt and no traits"),
        (ImageRequest(TRAITS, -1), "seed"),
        (ImageRequest(TRAITS, 1, init_image=b"GIF89a", strength=0.5), "not PNG"),
        (ImageRequest(TRAITS, 1, init_image=b"\x89PNG\r\n\x1a\n", strength=1.5), "strength"),
        (ImageRequest(TRAITS, 1, init_image=b"\x89PNG\r\n\x1a\n", strength=0.1), "no denoising step"),
    ]
    for req, msg in cases:
        with pytest.raises(ConfigError, match=msg) as e:
            sd.generate([req])
        assert isinstance(e.value, ValueError) and e.value.hint


# --- missing and incompatible models -------------------------------------------------------------------------


def test_wrong_path_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(NotFoundError, match=str(missing)):
        DiffusersImageGenerator(str(missing), device="cpu")


def test_hub_id_offline_fails_at_once_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    with pytest.raises(NotFoundError, match="HF_HUB_OFFLINE") as e:
        DiffusersImageGenerator("some-org/some-diffusion-model", device="cpu")
    assert time.monotonic() - start < 10  # no network retries (those take ~50 s)
    assert "hf download some-org/some-diffusion-model" in e.value.hint


def test_incompatible_pipeline_names_its_class_and_what_was_expected(tmp_path, tiny_lm):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(4, 8),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        norm_num_groups=2,
        layers_per_block=1,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(ConfigError, match="DDPMPipeline") as e:
        DiffusersImageGenerator(str(tmp_path / "ddpm"), device="cpu")
    assert "text-to-image" in str(e.value) and "StableDiffusionPipeline" in str(e.value)
    with pytest.raises(ConfigError, match="LlamaForCausalLM"):
        DiffusersImageGenerator(str(tiny_lm), device="cpu")


def test_memory_options_are_validated(tiny_sd_dir):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        DiffusersImageGenerator(str(tiny_sd_dir), cpu_offload="model", device="cpu")
    with pytest.raises(ConfigError, match="float16 on the CPU"):
        DiffusersImageGenerator(str(tiny_sd_dir), dtype="float16", device="cpu")
    sliced = DiffusersImageGenerator(
        str(tiny_sd_dir), attention_slicing=True, num_inference_steps=2, device="cpu"
    )
    [img] = sliced.generate([ImageRequest(TRAITS, 1)])
    assert img.config["attention_slicing"] is True


def test_factory_needs_a_model_for_the_diffusers_backend(fresh_factory):
    with pytest.raises(ConfigError, match="no image_model"):
        fresh_factory.load_image_generator(ModelSettings(image_backend="diffusers"))


def test_model_info_cli_lists_models_digests_and_devices(tiny_sd_dir, tiny_lm, monkeypatch, fresh_factory):
    from typer.testing import CliRunner

    from agent.cli import app

    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    for key, value in {
        "IMAGE_BACKEND": "diffusers",
        "IMAGE_MODEL": str(tiny_sd_dir),
        "LORE_BACKEND": "transformers",
        "LORE_MODEL": str(tiny_lm),
        "DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(f"CHRYSALIS_MODELS__{key}", value)
    result = CliRunner().invoke(app, ["model", "info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    kinds = {m["kind"]: m for m in data["models"]}
    assert kinds["image"]["model_id"] == str(tiny_sd_dir) and len(kinds["image"]["weights_sha256"]) == 64
    assert (
        kinds["lore"]["extra"]["architecture"] == "LlamaForCausalLM"
        and kinds["lore"]["extra"]["device"] == "cpu"
    )
    assert data["versions"]["torch"] and data["versions"]["diffusers"]
