"""The token viewer (``renderer/index.html``) in a real headless Chromium, served by the project's own IPFS gateway:
a portable token (a fresh image, then an evolution into another mood, with palette transfer) made by the portable
generator, its metadata built by the real metadata builder and pinned into an IpfsRepo, the viewer site and the
model export pinned by ``publish_renderer``. The page re-renders the evolution from its receipt and the parent's
image and says "bit-identical"; it refuses a torch-scheme receipt and a missing token by name."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agent.domain import InputSnapshot, OracleReading
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import EmbeddedSpriteGenerator
from agent.generate.portable.generator import PORTABLE_SCHEME, PortableSpriteGenerator
from agent.generate.receipt import build_receipt, image_record
from agent.generate.seed import derive_seed
from agent.http import ServerThread
from agent.ipfs.gateway import APP_CSP, GATEWAY_CSP, create_app
from agent.ipfs.repo import IpfsRepo
from agent.metadata import build_metadata
from agent.ops.renderer import publish_renderer
from tests.support.cli import invoke_cli

STEPS = 25
TOKEN = 7
MINT = bytes(range(32))
EVOLVE = bytes(range(1, 33))


def _snapshot(block: int) -> InputSnapshot:
    return InputSnapshot(
        chain_id=31337,
        block_number=block,
        block_hash="0x" + f"{block:064x}",
        readings=(OracleReading("wallet.held_seconds", 90_000, "erc721.Transfer:0xabc", block, {}),),
    )


def _publish(repo: IpfsRepo, gen: Any, req: ImageRequest, img: Any, onchain: bytes, stage: int, parent):
    """Pin one version as the pipeline does: the PNG, then the metadata as one raw block. Returns the CIDs."""
    image_cid = str(repo.add(img.png).cid)
    receipt = build_receipt(
        onchain_seed=onchain,
        token_id=TOKEN,
        snapshot=_snapshot(100 + stage),
        image=image_record(gen, req, img, init_image_cid=parent[1] if parent else None),
    )
    metadata = build_metadata(
        name=f"Chrysalis #{TOKEN}",
        lore="A test token.",
        image_cid=image_cid,
        traits=dict(req.traits),
        stage=stage,
        parent=parent[0] if parent else None,
        receipt=receipt.to_json(),
        models={"image": gen.model_ref},
        snapshot=_snapshot(100 + stage),
    )
    return str(repo.add_raw_block(metadata.encode())), image_cid, receipt


@pytest.fixture(scope="module")
def world(chromium, tmp_path_factory):
    """The repo with a portable token (two stages), a torch-scheme token, the viewer and the model, served."""
    tmp = tmp_path_factory.mktemp("viewer")
    repo = IpfsRepo(tmp / "ipfs", sync=False)
    gen = PortableSpriteGenerator(cache_dir=tmp / "models", num_inference_steps=STEPS)
    try:
        first = ImageRequest({"mood": "serene", "element": "fire"}, derive_seed(MINT, TOKEN))
        [fresh] = gen.generate([first])
        stage0 = _publish(repo, gen, first, fresh, MINT, 0, None)
        start = b"".join(repo.cat(stage0[1]))  # the previous stage's PNG as the pipeline reads it back
        second = ImageRequest(
            {"mood": "fierce", "element": "fire"}, derive_seed(EVOLVE, TOKEN), init_image=start, strength=0.6
        )
        [evolved] = gen.generate([second])
        stage1 = _publish(repo, gen, second, evolved, EVOLVE, 1, stage0[:2])
        release = publish_renderer(repo, gen.export_dir)
        export_dir = gen.export_dir
    finally:
        gen.close()
    torch_gen = EmbeddedSpriteGenerator(num_inference_steps=STEPS)
    [torch_img] = torch_gen.generate([first])
    torch_token = _publish(repo, torch_gen, first, torch_img, MINT, 0, None)
    app = create_app(repo, script_roots=[release.site_cid])
    with ServerThread(app, host="127.0.0.1", port=0, name="test-gateway") as gateway:
        yield {
            "url": gateway.url,
            "repo": repo,
            "app": app,
            "export_dir": export_dir,
            "release": release,
            "stage0": stage0,
            "stage1": stage1,
            "torch": torch_token,
        }


def _open(browser, url: str) -> tuple[Any, str]:
    page = browser.new_page()
    page.goto(url)
    # a selector, not wait_for_function: the gateway's policy for the site forbids eval, even Playwright's
    page.wait_for_selector('body:not([data-state="loading"])', timeout=120_000)
    return page, page.get_attribute("body", "data-state") or ""


def _viewer_url(world, token: str | None) -> str:
    release = world["release"]
    query = f"?model={release.model_cid}" + (f"&token={token}" if token else "")
    return f"{world['url']}/ipfs/{release.site_cid}/{query}"


def test_the_evolution_re_renders_bit_identical_with_its_timeline(world, browser):
    metadata_cid, _, receipt = world["stage1"]
    config = receipt.image.config
    assert config["generator"] == PORTABLE_SCHEME and config["mode"] == "img2img"
    assert config["palette_transfer"]["from"] == "serene"  # the start was recoloured: the page must redo it
    assert config["seed"] >= 2**53  # a seed a JS number cannot hold: the page must read it exactly
    # the animation_url form, through the gateway
    url = world["release"].animation_url(metadata_cid).replace("ipfs://", f"{world['url']}/ipfs/")
    page, state = _open(browser, url)
    try:
        error = page.evaluate("window.viewerError || null")
        assert state == "done", error
        result = page.evaluate("window.viewerResult")
        assert result["badge"] == "bit-identical" and result["bit_identical"] is True
        assert page.inner_text("#badge") == "bit-identical"
        assert [c["what"] for c in result["checks"] if not c["ok"]] == []
        assert [e["stage"] for e in result["timeline"]] == [0, 1]
        assert [e["cid"] for e in result["timeline"]] == [world["stage0"][0], metadata_cid]
        items = page.locator("#timeline li")
        assert items.count() == 2 and "stage 0" in items.nth(0).inner_text()
        assert "mood: fierce" in items.nth(1).inner_text()
    finally:
        page.close()


def test_the_fresh_stage_renders_too_and_the_policy_is_the_sites_only(world, browser):
    page, state = _open(browser, _viewer_url(world, world["stage0"][0]))
    try:
        assert state == "done", page.evaluate("window.viewerError || null")
        assert page.evaluate("window.viewerResult.badge") == "bit-identical"
    finally:
        page.close()
    site = world["release"].site_cid
    assert httpx.get(f"{world['url']}/ipfs/{site}/").headers["content-security-policy"] == APP_CSP
    assert (
        httpx.get(f"{world['url']}/ipfs/{site}/viewer.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    other = httpx.get(f"{world['url']}/ipfs/{world['stage0'][1]}")
    assert other.headers["content-security-policy"] == GATEWAY_CSP


def test_a_torch_receipt_is_refused_as_an_unknown_scheme(world, browser):
    page, state = _open(browser, _viewer_url(world, world["torch"][0]))
    try:
        assert state == "error"
        error = page.evaluate("window.viewerError")
        assert error["kind"] == "unknown-scheme", error
        status = page.inner_text("#status")
        assert (
            "unknown receipt scheme" in status
            and "torch.Generator" in status
            and "chrysalis verify" in status
        )
        assert page.locator("#timeline li").count() == 1  # the timeline is still shown
    finally:
        page.close()


def test_a_missing_token_parameter_is_named(world, browser):
    page, state = _open(browser, _viewer_url(world, None))
    try:
        assert state == "error"
        assert page.evaluate("window.viewerError.kind") == "missing-token"
        assert "no token given" in page.inner_text("#status")
        assert "?token=<metadata CID>" in page.inner_text("#status")
    finally:
        page.close()


def _tampering(app: Any, path: str) -> Any:
    """``app`` (ASGI), except that the body of ``path`` comes back with its last byte flipped: a lying gateway."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != path:
            return await app(scope, receive, send)

        async def altered(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                body = bytearray(message["body"])
                body[-1] ^= 0x01
                message = {**message, "body": bytes(body)}
            await send(message)

        return await app(scope, receive, altered)

    return wrapped


def test_wrong_bytes_and_another_collections_metadata_are_named(world, browser):
    metadata_cid, image_cid, _ = world["stage1"]
    lying = _tampering(world["app"], f"/ipfs/{image_cid}")
    with ServerThread(lying, host="127.0.0.1", port=0, name="lying-gateway") as gateway:
        page, state = _open(browser, _viewer_url({**world, "url": gateway.url}, metadata_cid))
        try:
            assert state == "error"
            error = page.evaluate("window.viewerError")
            assert error["kind"] == "wrong-bytes", error
            assert f"wrong bytes for the published image {image_cid}" in page.inner_text("#status")
        finally:
            page.close()
    foreign = world["repo"].add_raw_block(
        b'{"name":"Other #1","image":"ipfs://x","properties":{"schema":"x/1"}}'
    )
    page, state = _open(browser, _viewer_url(world, str(foreign)))
    try:
        assert state == "error" and page.evaluate("window.viewerError.kind") == "not-chrysalis"
        assert "belongs to another collection" in page.inner_text("#status")
    finally:
        page.close()


def test_the_cli_pins_the_same_cids_and_prints_the_url(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHRYSALIS_DATA_DIR", str(tmp_path / "data"))
    release = world["release"]
    result = invoke_cli(
        capsys, "renderer", "publish", "--export", str(world["export_dir"]), "--repo", str(tmp_path / "r")
    )
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"site   {release.site_cid}",
        f"model  {release.model_cid}",
        f"url    ipfs://{release.site_cid}/?token=<metadata CID>&model={release.model_cid}",
    ]
    pins = IpfsRepo(tmp_path / "r").pin_ls()
    assert release.site_cid in pins and release.model_cid in pins
    missing = invoke_cli(
        capsys, "renderer", "publish", "--export", str(tmp_path), "--repo", str(tmp_path / "r")
    )
    assert missing.code != 0 and "missing unet.onnx" in missing.err
