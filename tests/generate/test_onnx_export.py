"""The shipped sprite model exported to ONNX, and the numpy DDIM loop over ONNX Runtime against the torch generator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from agent.errors import ConfigError, NotFoundError
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import (
    SHIPPED_DIR,
    EmbeddedSpriteGenerator,
    ModelDigestError,
    decode_png,
    file_sha256,
    load_sprite_model,
)
from agent.generate.portable.onnx_export import (
    CONSTANTS_FORMAT,
    CONSTANTS_NAME,
    ONNX_NAME,
    export_sprite_model,
    f32_table,
)
from agent.generate.portable.onnx_sampler import OnnxSpriteSampler, pixel_agreement, torch_noise
from agent.generate.sprites.conditioning import MOODS, class_traits

STEPS = 10
NEXT_MOOD = {m: MOODS[(i + 1) % len(MOODS)] for i, m in enumerate(MOODS)}
REQUESTS = [ImageRequest(traits=class_traits(c), seed=4_000 + c) for c in (0, 5, 10, 15)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx")
    return out, export_sprite_model(SHIPPED_DIR, out)


@pytest.fixture(scope="module")
def sampler(exported) -> OnnxSpriteSampler:
    return OnnxSpriteSampler(exported[0])


@pytest.fixture(scope="module")
def gen() -> EmbeddedSpriteGenerator:
    return EmbeddedSpriteGenerator(device="cpu", num_inference_steps=STEPS)


def _onnx_images(sampler: OnnxSpriteSampler, gen: EmbeddedSpriteGenerator, reqs) -> np.ndarray:
    """The ONNX sampler on the torch generator's own prepared inputs (labels, recoloured starts) and noise."""
    return np.stack(
        [
            sampler.sample(
                torch_noise(p.seed),
                p.label,
                num_inference_steps=gen.num_inference_steps,
                guidance_scale=gen.guidance_scale,
                init=p.init,
                strength=None if p.init is None else p.strength,
            )
            for p in gen.check_inputs(reqs)
        ]
    )


def test_export_writes_an_onnx_model_and_the_ddim_constants(exported):
    import onnx

    out, facts = exported
    assert facts[ONNX_NAME] == file_sha256(out / ONNX_NAME) and facts[CONSTANTS_NAME] == file_sha256(
        out / CONSTANTS_NAME
    )
    model = onnx.load(str(out / ONNX_NAME))
    onnx.checker.check_model(model)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["sample", "timestep", "class_labels"]
    assert (
        inputs["sample"].elem_type == onnx.TensorProto.FLOAT
        and inputs["class_labels"].elem_type == onnx.TensorProto.INT64
    )
    assert inputs["sample"].shape.dim[0].dim_param == "batch" == inputs["class_labels"].shape.dim[0].dim_param
    assert [d.dim_value for d in inputs["sample"].shape.dim[1:]] == [3, 32, 32]
    assert len(inputs["timestep"].shape.dim) == 0 and inputs["timestep"].elem_type == onnx.TensorProto.INT64

    c = json.loads((out / CONSTANTS_NAME).read_text())
    manifest = load_sprite_model(SHIPPED_DIR, "cpu").manifest
    assert c["format"] == CONSTANTS_FORMAT and c["files"] == {ONNX_NAME: facts[ONNX_NAME]}
    assert c["model_id"] == manifest["model_id"] and c["weights_sha256"] == manifest["weights_sha256"]
    assert (c["prediction_type"], c["timestep_spacing"], c["steps_offset"]) == ("v_prediction", "leading", 0)
    sched = DDIMScheduler.from_config(json.loads((SHIPPED_DIR / "scheduler_config.json").read_text()))
    # the decimals in the JSON give back the scheduler's float32 values bit for bit
    assert f32_table(c, "alphas_cumprod").tobytes() == sched.alphas_cumprod.numpy().tobytes()
    assert c["final_alpha_cumprod"] == 1.0 and c["sqrt_one_minus_final_alpha_cumprod"] == 0.0


def test_export_is_byte_identical_in_another_process(exported, tmp_path):
    code = (
        "import sys, json; from agent.generate.portable.onnx_export import export_sprite_model; "
        "from agent.generate.image.embedded import SHIPPED_DIR; "
        "print(json.dumps(export_sprite_model(SHIPPED_DIR, sys.argv[1])))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    again = json.loads(run.stdout.strip().splitlines()[-1])
    assert again[ONNX_NAME] == exported[1][ONNX_NAME] and again[CONSTANTS_NAME] == exported[1][CONSTANTS_NAME]
    assert (tmp_path / ONNX_NAME).read_bytes() == (exported[0] / ONNX_NAME).read_bytes()


def test_onnx_forward_pass_matches_torch_within_1e_5(sampler):
    unet = load_sprite_model(SHIPPED_DIR, "cpu").unet
    x = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 7, 16])  # 16: the null class guidance uses
    for t in (999, 480, 1):
        with torch.no_grad():
            want = unet(x, torch.tensor(t), class_labels=labels).sample.numpy()
        got = sampler.unet(x.numpy(), t, labels.numpy())  # batch 3 through a graph traced at batch 1
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
        alone = sampler.unet(x[:1].numpy(), t, labels[:1].numpy())
        assert np.abs(alone - want[:1]).max() <= 1e-5


@pytest.mark.parametrize("n", [10, 25, 50])
def test_ddim_arithmetic_is_bit_identical_to_the_torch_scheduler(sampler, n):
    """Timesteps, img2img noising and every DDIM step, on the same model output, give torch's float32 bits."""
    sched = DDIMScheduler.from_config(load_sprite_model(SHIPPED_DIR, "cpu").scheduler_config)
    sched.set_timesteps(n)
    assert sched.timesteps.numpy().tolist() == sampler.timesteps(n).tolist()
    rng = np.random.default_rng(n)
    for t in sched.timesteps.tolist():
        x, out = rng.standard_normal((2, 1, 3, 32, 32), dtype=np.float32)
        want = sched.step(torch.from_numpy(out), torch.tensor(t), torch.from_numpy(x), eta=0.0).prev_sample
        assert sampler._step(out, t, t - 1000 // n, x).tobytes() == want.numpy().tobytes()
        noised = sched.add_noise(torch.from_numpy(x), torch.from_numpy(out), torch.tensor([t]))
        assert sampler._add_noise(x, out, t).tobytes() == noised.numpy().tobytes()


def test_sampler_agrees_with_the_torch_generator_fresh_and_img2img(sampler, gen):
    fresh = gen.generate(REQUESTS)
    ag = pixel_agreement(np.stack([decode_png(g.png) for g in fresh]), _onnx_images(sampler, gen, REQUESTS))
    assert ag["pixels_identical"] >= 0.95 and ag["max_abs_diff"] <= 1, ag

    evolve = [
        ImageRequest(
            traits={**r.traits, "mood": NEXT_MOOD[r.traits["mood"]]},
            seed=r.seed + 7,
            init_image=f.png,
            strength=s,
        )
        for r, f, s in zip(REQUESTS, fresh, (0.6, 0.3, 1.0, 0.04), strict=True)  # 0.04: no step runs
    ]
    assert [p.init is not None for p in gen.check_inputs(evolve)] == [True] * 4
    evolved = np.stack([decode_png(g.png) for g in gen.generate(evolve)])
    ag = pixel_agreement(evolved, _onnx_images(sampler, gen, evolve))
    assert ag["pixels_identical"] >= 0.95 and ag["max_abs_diff"] <= 1, ag

    guided = EmbeddedSpriteGenerator(device="cpu", num_inference_steps=STEPS, guidance_scale=2.0)
    ag = pixel_agreement(
        np.stack([decode_png(g.png) for g in guided.generate(REQUESTS[:2])]),
        _onnx_images(sampler, guided, REQUESTS[:2]),
    )
    assert ag["pixels_identical"] >= 0.95 and ag["max_abs_diff"] <= 1, ag


def test_sampler_is_deterministic_across_calls_and_sessions(exported, sampler):
    noise = torch_noise(99)
    a = sampler.sample(noise, 3, num_inference_steps=STEPS)
    b = OnnxSpriteSampler(exported[0]).sample(noise.copy(), 3, num_inference_steps=STEPS)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3) and a.tobytes() == b.tobytes()
    assert a.tobytes() != sampler.sample(torch_noise(100), 3, num_inference_steps=STEPS).tobytes()


def test_a_bad_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="no sprite model") as e:
        export_sprite_model(tmp_path / "missing", tmp_path / "out")
    assert e.value.hint and "model_dir" in e.value.hint

    tampered = tmp_path / "tampered"
    shutil.copytree(SHIPPED_DIR, tampered)
    (tampered / "config.json").write_text((tampered / "config.json").read_text() + " ")
    with pytest.raises(ModelDigestError, match="config.json"):
        export_sprite_model(tampered, tmp_path / "out")

    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        export_sprite_model(SHIPPED_DIR, tmp_path / "file")


def test_a_bad_export_directory_or_input_is_a_clear_error(exported, sampler, tmp_path):
    with pytest.raises(NotFoundError, match="missing unet.onnx") as e:
        OnnxSpriteSampler(tmp_path)
    assert "export_sprite_model" in (e.value.hint or "")

    shutil.copy(exported[0] / ONNX_NAME, tmp_path / ONNX_NAME)
    c = json.loads((exported[0] / CONSTANTS_NAME).read_text())
    c["tables"]["sqrt_alphas_cumprod"][500] *= 1.0000001
    (tmp_path / CONSTANTS_NAME).write_text(json.dumps(c))
    with pytest.raises(ConfigError, match="sqrt_alphas_cumprod do not match"):
        OnnxSpriteSampler(tmp_path)

    with pytest.raises(ConfigError, match="not float32"):
        sampler.sample(torch_noise(1).astype(np.float64), 0)
    with pytest.raises(ConfigError, match="init and strength go together"):
        sampler.sample(torch_noise(1), 0, strength=0.5)
    with pytest.raises(ConfigError, match="outside"):
        sampler.sample(torch_noise(1), 16)
