"""The portable image runtime in a real headless Chromium (Debian's ``chromium``, driven by playwright; no browser
download): ``renderer/bench.html`` served from 127.0.0.1 renders the same bytes as the Node runtime
(:class:`WasmSpriteRuntime`) for fresh and img2img requests, and refuses a tampered ``unet.onnx`` with the digest
error shown on the page."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigError
from agent.generate.image.embedded import SHIPPED_DIR
from agent.generate.portable.browser import (
    ChromiumSpriteRuntime,
    StaticSite,
    assemble_site,
    find_chromium,
    request_json,
)
from agent.generate.portable.onnx_export import CONSTANTS_NAME, ONNX_NAME, export_sprite_model
from agent.generate.portable.wasm_runtime import ORT_WEB_VERSION, WasmSpriteRuntime

STEPS = 25
FRESH = [(2**63 + 5, 2), (41, 13)]  # a seed above 2**32 and a small one
EVOLVE = [(2**63 + 12, 6, 0.6), (48, 1, 0.45)]  # (seed, next class, strength), from FRESH's images in turn


@pytest.fixture(scope="module")
def chromium_available() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make setup`")
    try:
        find_chromium()
    except ConfigError as exc:
        pytest.skip(f"{exc.message}: {exc.hint}")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-export")
    export_sprite_model(SHIPPED_DIR, out)
    return out


def test_chromium_renders_the_same_bytes_as_node(chromium_available, export_dir):
    with WasmSpriteRuntime(export_dir) as node:
        node_fresh = [node.render(seed, label, STEPS) for seed, label in FRESH]
        node_evo = [
            node.render(seed, label, STEPS, init=start, strength=strength)
            for (seed, label, strength), start in zip(EVOLVE, node_fresh, strict=True)
        ]
    with ChromiumSpriteRuntime(export_dir) as page:
        assert page.info["ort_version"] == ORT_WEB_VERSION
        assert page.status_text.startswith("ready: onnxruntime-web")
        fresh = page.render_all([request_json(seed, label, STEPS) for seed, label in FRESH])
        # each evolution starts from the browser's own fresh image, so the whole chain runs in the page
        evo = page.render_all(
            [
                request_json(seed, label, STEPS, init=start.pixels, strength=strength)
                for (seed, label, strength), start in zip(EVOLVE, fresh, strict=True)
            ]
        )
        with pytest.raises(ConfigError, match=r"class label 99 is outside \[0, 16\)"):
            page.render_all([{**request_json(1, 0, STEPS), "label": 99}])
        # the same request given in the URL fragment, rendered on load into #result
        assert page.page is not None
        tab = page.page.context.new_page()
        encoded = base64.urlsafe_b64encode(json.dumps([request_json(*FRESH[0], STEPS)]).encode()).decode()
        tab.goto(f"{page.url}#requests={encoded}")
        tab.wait_for_selector('body[data-state="done"]', timeout=60_000)
        (reply,) = json.loads(tab.inner_text("#result"))
        tab.close()
    assert base64.b64decode(reply["pixels"]) == node_fresh[0].tobytes()
    got = [r.pixels for r in fresh + evo]
    want = node_fresh + node_evo
    assert len({px.tobytes() for px in want}) == 4, "different requests gave the same image"
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        diff = int(np.count_nonzero(a != b))
        assert a.tobytes() == b.tobytes(), f"image {i}: {diff} uint8 values differ between Chromium and Node"
    assert all(r.render_s > 0 for r in fresh + evo)


def test_a_tampered_model_is_refused_with_the_digest_error(chromium_available, export_dir, tmp_path):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    site = assemble_site(export_dir, tmp_path / "site")
    onnx = bytearray((site / "model" / ONNX_NAME).read_bytes())
    onnx[-1] ^= 0x01  # one bit of the last weight
    (site / "model" / ONNX_NAME).write_bytes(bytes(onnx))
    got = hashlib.sha256(onnx).hexdigest()
    want = json.loads((site / "model" / CONSTANTS_NAME).read_text())["files"][ONNX_NAME]
    expected = f"unet.onnx has sha256 {got}, but scheduler.json says {want}"

    # what a person sees: the page names the file, both digests and the fix
    with StaticSite(site) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/bench.html")
            page.wait_for_selector('body[data-state="error"]', timeout=60_000)
            status = page.inner_text("#status")
            assert expected in status and "export_sprite_model" in status, status
            with pytest.raises(PlaywrightError, match="unet.onnx has sha256"):
                page.evaluate("window.renderAll([])")
        finally:
            browser.close()

    # and the Python driver turns it into a ConfigError with the page's message and hint
    bad = tmp_path / "tampered-export"
    bad.mkdir()
    shutil.copyfile(export_dir / CONSTANTS_NAME, bad / CONSTANTS_NAME)
    (bad / ONNX_NAME).write_bytes(bytes(onnx))
    with pytest.raises(ConfigError) as caught:
        ChromiumSpriteRuntime(bad)
    assert expected in caught.value.message, caught.value.message
    assert caught.value.hint and "export_sprite_model" in caught.value.hint
