"""The portable image scheme (``models.image_runtime = "portable"``, and what ``"auto"``, the default, picks for the
agent's evolutions; receipts ``chrysalis-portable/1``): the embedded sprite model exported to ONNX into the model
cache and rendered by onnxruntime-web's WASM build in Node.js with ``chrysalis-noise/1`` noise, recorded so that
``verify`` replays it through the same runtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.generate import factory
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import EmbeddedSpriteGenerator, decode_png, file_sha256
from agent.generate.portable.generator import (
    PORTABLE_SCHEME,
    PortableSpriteGenerator,
    cached_export,
    export_cache_dir,
)
from agent.generate.portable.wasm_runtime import ORT_WEB_VERSION
from agent.generate.receipt import InferenceReceipt, build_receipt, image_record
from agent.generate.seed import derive_seed
from agent.generate.verify import EXIT_MATCH, EXIT_MISMATCH, EXIT_NOT_REPRODUCIBLE, main, verify
from agent.settings import ModelSettings

STEPS = 25
ONCHAIN = bytes(range(32))
FRESH = ImageRequest({"mood": "serene", "element": "fire"}, derive_seed(ONCHAIN, 1))
OTHERS = [
    ImageRequest({"mood": "gloomy", "element": "water"}, derive_seed(ONCHAIN, 2)),
    ImageRequest({"mood": "radiant", "element": "earth"}, derive_seed(ONCHAIN, 3)),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def settings(cache_dir) -> ModelSettings:
    return ModelSettings(image_runtime="portable", image_steps=STEPS, cache_dir=cache_dir, device="cpu")


@pytest.fixture(scope="module")
def gen(settings):
    factory.clear_cache()
    generator = factory.load_image_generator(settings)
    yield generator
    factory.clear_cache()
    generator.close()


@pytest.fixture(scope="module")
def fresh(gen):
    [img] = gen.generate([FRESH])
    return img


@pytest.fixture(scope="module")
def evolution(gen, fresh):
    """An evolution into another mood: img2img from the fresh image, recoloured by palette transfer first."""
    req = ImageRequest({"mood": "fierce", "element": "fire"}, FRESH.seed, init_image=fresh.png, strength=0.6)
    [img] = gen.generate([req])
    return req, img


def _receipt(gen, req, img, token_id: int = 1) -> InferenceReceipt:
    return build_receipt(
        onchain_seed=ONCHAIN, token_id=token_id, image=image_record(gen, req, img, init_image_cid=None)
    )


def test_the_factory_builds_it_from_settings_and_caches_the_export(gen, cache_dir):
    assert isinstance(gen, PortableSpriteGenerator)
    weights = gen.model.manifest["weights_sha256"]
    assert gen.export_dir == export_cache_dir(cache_dir, weights)
    record = json.loads((gen.export_dir / "export.json").read_text())
    assert record["files"]["unet.onnx"] == file_sha256(gen.export_dir / "unet.onnx")
    assert record["source_files"] == gen.model.manifest["files"]
    assert not [p for p in gen.export_dir.parent.iterdir() if p.name.startswith(".tmp-")]


def test_two_generators_two_node_processes_give_identical_pngs(gen, fresh, cache_dir):
    onnx = gen.export_dir / "unet.onnx"
    stamp = onnx.stat().st_mtime_ns
    other = PortableSpriteGenerator(cache_dir=cache_dir, num_inference_steps=STEPS)
    try:
        assert other.runtime._proc is not gen.runtime._proc  # a second Node process
        assert other.export_dir == gen.export_dir and onnx.stat().st_mtime_ns == stamp  # the cache was reused
        [again] = other.generate([FRESH])
    finally:
        other.close()
    assert again.png == fresh.png and again.pixels_sha256 == fresh.pixels_sha256
    assert again.config == fresh.config


def test_a_damaged_cached_export_is_made_again(gen, tmp_path):
    directory, record = cached_export(gen.model.model_dir, gen.model.manifest, tmp_path)
    (directory / "unet.onnx").write_bytes(b"not a model")
    again, record2 = cached_export(gen.model.model_dir, gen.model.manifest, tmp_path)
    assert again == directory and record2["files"] == record["files"]
    assert file_sha256(directory / "unet.onnx") == record["files"]["unet.onnx"]


def test_an_image_is_the_same_alone_or_among_others(gen, fresh, evolution):
    req, evolved = evolution
    out = gen.generate([OTHERS[0], FRESH, req, OTHERS[1]])
    assert out[1].png == fresh.png and out[2].png == evolved.png
    assert len({o.pixels_sha256 for o in out}) == 4


def test_the_receipt_records_the_scheme_and_everything_a_replay_needs(gen, fresh, evolution):
    cfg = _receipt(gen, FRESH, fresh).image.config
    assert cfg["generator"] == PORTABLE_SCHEME and cfg["pipeline"] == "chrysalis.PortableSpriteGenerator"
    assert cfg["noise"] == "chrysalis-noise/1" and cfg["sampler"] == "chrysalis-ddim-f32/1"
    for name in ("unet.onnx", "scheduler.json"):
        assert cfg["onnx"][name] == file_sha256(gen.export_dir / name)
    wasm = Path(os.environ.get("CHRYSALIS_NODE_MODULES") or "node_modules") / "onnxruntime-web" / "dist"
    want_wasm = hashlib.sha256((wasm / "ort-wasm-simd-threaded.wasm").read_bytes()).hexdigest()
    assert cfg["onnxruntime_web"] == {"version": ORT_WEB_VERSION, "wasm_sha256": want_wasm, "threads": 1}
    assert cfg["num_inference_steps"] == STEPS == cfg["denoise_steps"] and cfg["guidance_scale"] == 1.0
    assert cfg["mode"] == "fresh" and cfg["strength"] == 1.0 and cfg["seed"] == FRESH.seed
    assert cfg["class_label"] == gen.check_inputs([FRESH])[0].label
    assert cfg["palette_transfer"] is None and cfg["init_image_sha256"] is None
    req, evolved = evolution
    r = _receipt(gen, req, evolved)
    cfg = r.image.config
    assert cfg["mode"] == "img2img" and cfg["strength"] == 0.6 and cfg["denoise_steps"] == round(STEPS * 0.6)
    assert cfg["init_image_sha256"] == hashlib.sha256(req.init_image).hexdigest()
    assert cfg["palette_transfer"]["from"] == "serene"  # recoloured from the fresh image's mood
    assert cfg["init_pixels_sha256"] == fresh.pixels_sha256
    assert r.canonical and r.image.runtime["versions"]["node"].startswith("v")
    assert "node_version" not in cfg and "device" not in cfg
    assert r.image.model.extra["runtime"] == PORTABLE_SCHEME and "device" not in r.image.model.extra


def test_verify_replays_a_fresh_image_and_an_evolution(gen, fresh, evolution, cache_dir):
    result = verify(_receipt(gen, FRESH, fresh), cache_dir=cache_dir)
    assert result.match and result.exit_code == EXIT_MATCH, result.note
    assert "image.output.pixels_sha256" in result.checked and "image.config.onnx" in result.checked
    req, evolved = evolution
    result = verify(
        _receipt(gen, req, evolved), init_image_loader=lambda sha, cid: fresh.png, cache_dir=cache_dir
    )
    assert result.match, result.note
    assert "image.config.palette_transfer" in result.checked


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("config", "onnxruntime_web", "wasm_sha256"), "0" * 64, "image.config.onnxruntime_web"),
        (("config", "onnx", "unet.onnx"), "0" * 64, "image.config.onnx"),
        (("config", "noise"), "chrysalis-noise/0", "image.config.noise"),
        (("output", "pixels_sha256"), "0" * 64, "image.output.pixels_sha256"),
    ],
)
def test_verify_names_an_edited_field(gen, fresh, cache_dir, path, value, field):
    data = _receipt(gen, FRESH, fresh).to_json()
    node = data["image"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = verify(data, cache_dir=cache_dir)
    assert not result.match and result.exit_code == EXIT_MISMATCH
    assert [m.field for m in result.mismatches] == [field], result.note


def test_an_edited_class_changes_the_replayed_pixels(gen, fresh, cache_dir):
    data = _receipt(gen, FRESH, fresh).to_json()
    data["image"]["request"]["traits"] = {"mood": "gloomy", "element": "fire"}
    fields = {m.field for m in verify(data, cache_dir=cache_dir).mismatches}
    assert {"image.output.pixels_sha256", "image.config.class_label", "image.config.traits"} <= fields


def test_without_node_verify_says_it_cannot_reproduce_here(
    gen, fresh, cache_dir, tmp_path, monkeypatch, capsys
):
    path = _receipt(gen, FRESH, fresh).save(tmp_path / "receipt.json")
    monkeypatch.setenv("CHRYSALIS_NODE", str(tmp_path / "no-such-node"))
    result = verify(path, cache_dir=cache_dir)
    assert not result.match and not result.reproducible and result.exit_code == EXIT_NOT_REPRODUCIBLE
    assert "CANNOT REPRODUCE HERE" in result.note and "no-such-node" in result.note
    assert "image.output.pixels_sha256" not in result.checked and "seed.derived_seed" in result.checked
    assert main([str(path), "--cache-dir", str(cache_dir)]) == EXIT_NOT_REPRODUCIBLE
    assert "CANNOT REPRODUCE HERE" in capsys.readouterr().out
    monkeypatch.setenv("CHRYSALIS_NODE_MODULES", str(tmp_path))
    monkeypatch.delenv("CHRYSALIS_NODE")
    assert "onnxruntime-web is not installed" in verify(path, cache_dir=cache_dir).note


def test_diffusers_with_the_portable_runtime_is_refused_with_a_hint(tmp_path):
    s = ModelSettings(image_backend="diffusers", image_model=str(tmp_path), image_runtime="portable")
    with pytest.raises(
        ConfigError, match="image_runtime = 'portable' needs image_backend = 'embedded'"
    ) as err:
        factory._build_image(s)
    assert "image_runtime = 'auto'" in (err.value.hint or "")


def test_auto_is_the_default_portable_for_evolutions_torch_for_a_genesis_and_diffusers(fresh_factory, fresh):
    from agent.genesis.run import genesis_models

    s = ModelSettings(device="cpu", image_steps=STEPS)
    assert s.image_runtime == "auto" and s.image_runtime_for() == "portable"
    assert ModelSettings(image_backend="diffusers", image_model="x").image_runtime_for() == "torch"
    assert genesis_models(s, 8).image_runtime == "torch"  # a genesis keeps the batched torch runtime
    assert genesis_models(s.model_copy(update={"image_runtime": "portable"}), 8).image_runtime == "portable"
    auto_gen = fresh_factory.load_image_generator(s)
    assert type(auto_gen) is PortableSpriteGenerator
    torch_gen = fresh_factory.load_image_generator(s.model_copy(update={"image_runtime": "torch"}))
    assert type(torch_gen) is EmbeddedSpriteGenerator
    [img] = torch_gen.generate([FRESH])
    assert img.config["generator"].startswith("torch.Generator") and "onnx" not in img.config
    assert decode_png(img.png).shape == decode_png(fresh.png).shape == (32, 32, 3)
