"""The portable canonical image runtime: the exported sprite model in onnxruntime-web's WASM build under Node.js
(``renderer/node_render.mjs`` over ``renderer/sampler.js``), driven by :class:`WasmSpriteRuntime`, against itself
and against its numpy twin over native ONNX Runtime on the same ``chrysalis-noise/1`` noise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BackendUnavailableError, ConfigError, NotFoundError
from agent.generate.image.embedded import SHIPPED_DIR
from agent.generate.portable.onnx_export import export_sprite_model
from agent.generate.portable.onnx_sampler import pixel_agreement
from agent.generate.portable.wasm_runtime import ORT_WEB_VERSION, NumpySpriteRuntime, WasmSpriteRuntime

STEPS = 25
# Seeds on both sides of 2**32 and at the top of the range (the key's two words), each with its own class.
FRESH = [(0, 0), (7, 5), (2**32 + 3, 10), (2**64 - 1, 15), (123_456_789, 3), (2**40 + 11, 12)]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wasm-export")
    export_sprite_model(SHIPPED_DIR, out)
    return out


@pytest.fixture(scope="module")
def wasm(export_dir):
    with WasmSpriteRuntime(export_dir) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def native(export_dir) -> NumpySpriteRuntime:
    """The numpy scheduler over native ONNX Runtime."""
    return NumpySpriteRuntime(export_dir)


@pytest.fixture(scope="module")
def twin(export_dir, wasm) -> NumpySpriteRuntime:
    """The numpy scheduler over the WASM UNet (every pass sent to the Node process)."""
    return NumpySpriteRuntime(export_dir, wasm_unet=wasm)


@pytest.fixture(scope="module")
def fresh(wasm) -> list[np.ndarray]:
    return [wasm.render(seed, label, STEPS) for seed, label in FRESH]


def test_node_runtime_is_deterministic_across_calls_and_processes(wasm, export_dir, fresh):
    assert wasm.ort_version == ORT_WEB_VERSION and wasm.node_version.startswith("v")
    assert len(wasm.wasm_sha256) == 64
    for px in fresh:
        assert px.dtype == np.uint8 and px.shape == (32, 32, 3)
    assert len({px.tobytes() for px in fresh}) == len(fresh), (
        "different seeds and classes gave the same image"
    )
    again = wasm.render(*FRESH[2], STEPS)
    assert again.tobytes() == fresh[2].tobytes()
    with WasmSpriteRuntime(export_dir) as second:
        assert second.wasm_sha256 == wasm.wasm_sha256
        assert second.render(*FRESH[3], STEPS).tobytes() == fresh[3].tobytes()
        guided = second.render(99, 4, 10, guidance=2.0)
    assert wasm.render(99, 4, 10, guidance=2.0).tobytes() == guided.tobytes()
    assert wasm.last_timing["load_s"] == 0 and wasm.last_timing["render_s"] > 0


def _agreement(a: list[np.ndarray], b: list[np.ndarray], what: str) -> dict[str, float]:
    report = pixel_agreement(np.stack(a), np.stack(b))
    print(f"\nWASM vs native onnxruntime, {what}: {report}")
    # Measured on this machine: bit-identical for fresh and img2img (the same noise, the same float32 scheduler,
    # and WASM and native UNet bits equal here); one uint8 value off by 1 in 4 guided images. Native kernels may
    # differ on another CPU, so the bound is the stated tolerance, not bit-identity.
    assert report["pixels_identical"] >= 0.95 and report["max_abs_diff"] <= 1, report
    return report


def test_wasm_agrees_with_the_numpy_twin_fresh_and_img2img(wasm, native, fresh):
    _agreement(fresh, [native.render(seed, label, STEPS) for seed, label in FRESH], f"fresh, {STEPS} steps")
    evolve = [
        ((seed + 1) % 2**64, (label + 6) % 16, px) for (seed, label), px in zip(FRESH, fresh, strict=True)
    ]
    a = [wasm.render(seed, label, STEPS, init=px, strength=0.6) for seed, label, px in evolve]
    b = [native.render(seed, label, STEPS, init=px, strength=0.6) for seed, label, px in evolve]
    _agreement(a, b, "img2img, strength 0.6")
    # the start matters: each evolution differs from its start and from a fresh image of the same seed and class
    seed, label, start = evolve[0]
    assert a[0].tobytes() != start.tobytes()
    assert a[0].tobytes() != wasm.render(seed, label, STEPS).tobytes()


def _same_run(wasm, twin, *args, **kwargs) -> int:
    """The JS and numpy loops over the same WASM UNet: the same float32 state before every pass, the same pixels."""
    px_js, states_js = wasm.render_traced(*args, **kwargs)
    px_np, states_np = twin.render_traced(*args, **kwargs)
    assert states_js.shape == states_np.shape and states_js.dtype == states_np.dtype == np.float32
    assert states_js.tobytes() == states_np.tobytes()
    assert px_js.tobytes() == px_np.tobytes()
    return len(states_js)


def test_the_js_scheduler_is_the_numpy_scheduler_bit_for_bit(wasm, twin, fresh):
    # Same noise, same UNet (the WASM one): only the loops differ (JS float32 with Math.fround after every operation
    # vs numpy float32), so an operation rounded differently shows up in the states: fresh, img2img and guidance.
    assert _same_run(wasm, twin, *FRESH[3], STEPS) == STEPS
    assert _same_run(wasm, twin, 9, 7, STEPS, init=fresh[4], strength=0.6) == 15  # round(25 * 0.6)
    assert _same_run(wasm, twin, 11, 2, 8, guidance=3.0) == 8
    assert _same_run(wasm, twin, 12, 2, 10, init=fresh[0], strength=0.0) == 0


def test_unet_passes_agree_with_native_onnxruntime(wasm, native):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    labels = np.array([3, 16], dtype=np.int64)
    a, b = wasm.unet(x, 501, labels), native.sampler.unet(x, 501, labels)
    assert a.dtype == np.float32 and a.shape == (2, 3, 32, 32)
    ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
    print(
        f"\nUNet pass, WASM vs native: {(ulps == 0).mean():.4f} of values bit-identical, max {ulps.max()} ulp"
    )
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="does not match 1 class labels"):
        wasm.unet(x, 501, labels[:1])


def test_strength_zero_returns_the_start_exactly(wasm, fresh):
    # x = x0 = u / 127.5 - 1 in float32, and the pixel conversion maps it back to u for every uint8 value
    ramp = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3).astype(np.uint8)
    for start in (fresh[0], ramp):
        assert wasm.render(5, 1, STEPS, init=start, strength=0.0).tobytes() == start.tobytes()


def test_bad_requests_are_clear_errors(wasm):
    with pytest.raises(ConfigError, match=r"class label 16 is outside \[0, 16\)") as e:
        wasm.render(1, 16, STEPS)
    assert "class_label" in e.value.hint
    with pytest.raises(ConfigError, match="unsigned 64-bit") as e:
        wasm.render(2**64, 0, STEPS)
    with pytest.raises(ConfigError, match="init and strength go together"):
        wasm.render(1, 0, STEPS, init=np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"not uint8 \(32, 32, 3\)"):
        wasm.render(1, 0, STEPS, init=np.zeros((16, 16, 3), np.uint8), strength=0.5)
    with pytest.raises(ConfigError, match="strength 1.5 is outside"):
        wasm.render(1, 0, STEPS, init=np.zeros((32, 32, 3), np.uint8), strength=1.5)
    with pytest.raises(ConfigError, match="steps=0"):
        wasm.render(1, 0, 0)
    # the process survived every refusal
    assert wasm.render(1, 0, 2).shape == (32, 32, 3)


def test_missing_pieces_name_the_fix(export_dir, tmp_path, monkeypatch):
    with pytest.raises(NotFoundError, match="no exported sprite model") as e:
        WasmSpriteRuntime(tmp_path / "nowhere")
    assert "export_sprite_model" in e.value.hint
    monkeypatch.setenv("CHRYSALIS_NODE", str(tmp_path / "no-node"))
    with pytest.raises(ConfigError, match="Node.js is needed") as e:
        WasmSpriteRuntime(export_dir)
    assert "CHRYSALIS_NODE" in e.value.hint
    monkeypatch.delenv("CHRYSALIS_NODE")
    monkeypatch.setenv("CHRYSALIS_NODE_MODULES", str(tmp_path))
    with pytest.raises(ConfigError, match="onnxruntime-web is not installed") as e:
        WasmSpriteRuntime(export_dir)
    assert "make setup" in e.value.hint


def test_a_dead_node_process_is_reported_and_replaced(export_dir):
    with WasmSpriteRuntime(export_dir) as runtime:
        first = runtime.render(3, 2, 2)
        assert runtime._proc is not None
        runtime._proc.kill()
        with pytest.raises(BackendUnavailableError, match="Node renderer exited") as e:
            runtime.render(3, 2, 2)
        assert e.value.hint
        assert runtime.render(3, 2, 2).tobytes() == first.tobytes()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node on PATH")
def test_the_renderer_reports_a_missing_onnxruntime_web(tmp_path, monkeypatch, export_dir):
    # the Node side's own check (for a node_modules that passes the Python check but cannot be imported)
    fake = tmp_path / "onnxruntime-web"
    (fake / "dist").mkdir(parents=True)
    (fake / "package.json").write_text(json.dumps({"version": ORT_WEB_VERSION}))
    (fake / "dist" / "ort.wasm.min.mjs").write_text("throw new Error('broken install');\n")
    (fake / "dist" / "ort-wasm-simd-threaded.wasm").write_bytes(b"")
    monkeypatch.setenv("CHRYSALIS_NODE_MODULES", str(tmp_path))
    with pytest.raises(ConfigError, match="cannot load onnxruntime-web: broken install") as e:
        WasmSpriteRuntime(export_dir)
    assert "make setup" in e.value.hint
