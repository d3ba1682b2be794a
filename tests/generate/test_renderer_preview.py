"""The token viewer's "what would I become" preview (``renderer/preview.js``) in a real headless Chromium, served by
the project's own IPFS gateway, with a real anvil as the wallet's JSON-RPC node.

A portable stage-0 token is made by the portable generator from the default rules' traits, its metadata built by
the real metadata builder with a recorded snapshot (price, wallet), and pinned with the rules export (a raw block,
given to the page as ``&rules=<CID>``), the viewer site and the model. The page reads a funded anvil address's
balance and nonce over JSON-RPC, evaluates the rules in JS and renders the next stage: its traits, strength and
facts equal the Python rules engine's for the same features, and with the request's on-chain seed typed in, its
pixels equal what the agent's portable generator makes for that evolution.

The embedded gateway's policy for the site (``APP_CSP``) lets the page reach a typed https:// RPC or one on this
machine, so the RPC reads run through the real gateway; under a policy that allows its own origin only (a test
wrapper that narrows that header and changes nothing else) the page names the policy and the fix instead of failing
silently.

``weiToEth`` (ETH balance) is checked in Node.js against Python's ``float(Fraction(wei, 10**18))`` on edge values:
ties, one wei either side of them, 2**256 - 1, and random values where the naive ``Number(wei) / 1e18`` is wrong.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from agent.domain import InputSnapshot, OracleReading
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import EmbeddedSpriteGenerator
from agent.generate.portable.generator import PortableSpriteGenerator
from agent.generate.receipt import build_receipt, image_record
from agent.generate.seed import derive_seed
from agent.http import ServerThread
from agent.ipfs.gateway import APP_CSP, create_app
from agent.ipfs.repo import IpfsRepo
from agent.metadata import build_metadata
from agent.ops.renderer import publish_renderer
from agent.rules import load_rules
from agent.rules.rules_data import rules_json_bytes

ROOT = Path(__file__).resolve().parents[2]
STEPS = 25
TOKEN = 7
MINT = bytes(range(32))
EVOLVE = bytes(range(1, 33))
REQUEST_SEED = bytes(range(3, 35))  # the on-chain seed of the evolution request the preview reproduces
NARROW_CSP = APP_CSP.replace(
    "connect-src 'self' https: http://127.0.0.1:* http://localhost:*", "connect-src 'self'"
)
SNAPSHOT = {  # the stage-0 snapshot: no wallet.tokens_held (the page must ask for it)
    "price.change_pct": 3.5,
    "wallet.held_seconds": 90_000,
    "wallet.tx_count": 4,
    "wallet.balance_eth": 0.05,
}
WEI = 123_456_789_123_456_789_123  # the previewing wallet: 123.45... ETH, not a float of 1e18 multiples
NONCE = 150
TOKENS_HELD = 3


def _snapshot() -> InputSnapshot:
    block = 100
    return InputSnapshot(
        chain_id=31337,
        block_number=block,
        block_hash="0x" + f"{block:064x}",
        readings=tuple(OracleReading(name, value, "test", block, {}) for name, value in SNAPSHOT.items()),
    )


def _csp(app: Any, policy: str) -> Any:
    """``app`` (ASGI) with every ``APP_CSP`` header replaced by ``policy``: a gateway that lets the page fetch its
    own origin only."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def rewrite(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (
                        k,
                        policy.encode()
                        if k.lower() == b"content-security-policy" and v == APP_CSP.encode()
                        else v,
                    )
                    for k, v in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        return await app(scope, receive, rewrite)

    return wrapped


@pytest.fixture(scope="module")
def world(chromium, tmp_path_factory):
    """A portable stage-0 token, the rules export, the viewer and the model in a repo; two gateways serving it."""
    tmp = tmp_path_factory.mktemp("preview")
    repo = IpfsRepo(tmp / "ipfs", sync=False)
    engine = load_rules()
    snapshot = _snapshot()
    # the stage-0 traits (the first image's wallet held one token; the recorded snapshot leaves that out)
    outcome = engine.evaluate({**SNAPSHOT, "wallet.tokens_held": 1}, stage=0, token_id=TOKEN, previous=None)
    gen = PortableSpriteGenerator(cache_dir=tmp / "models", num_inference_steps=STEPS)
    try:
        request = ImageRequest(dict(outcome.conditioning), derive_seed(MINT, TOKEN))
        [image] = gen.generate([request])
        image_cid = str(repo.add(image.png).cid)
        receipt = build_receipt(
            onchain_seed=MINT, token_id=TOKEN, snapshot=snapshot, image=image_record(gen, request, image)
        )
        metadata = build_metadata(
            name=f"Chrysalis #{TOKEN}",
            lore="A test token.",
            image_cid=image_cid,
            traits=dict(outcome.traits),
            stage=0,
            parent=None,
            receipt=receipt.to_json(),
            models={"image": gen.model_ref},
            snapshot=snapshot,
        )
        token_cid = str(repo.add_raw_block(metadata.encode()))
        # stage 1, as the agent makes it from stage 0 (a new mood: the start is recoloured; the receipt records it)
        features1 = {**SNAPSHOT, "price.change_pct": 12.5, "wallet.tokens_held": 1}
        outcome1 = engine.evaluate(features1, stage=1, token_id=TOKEN, previous=dict(outcome.traits))
        request1 = ImageRequest(
            dict(outcome1.conditioning),
            derive_seed(EVOLVE, TOKEN),
            init_image=image.png,
            strength=outcome1.strength,
        )
        [image1] = gen.generate([request1])
        assert image1.config["palette_transfer"]["from"] == "radiant"
        image1_cid = str(repo.add(image1.png).cid)
        metadata1 = build_metadata(
            name=f"Chrysalis #{TOKEN}",
            lore="A test token, evolved.",
            image_cid=image1_cid,
            traits=dict(outcome1.traits),
            stage=1,
            parent=token_cid,
            receipt=build_receipt(
                onchain_seed=EVOLVE,
                token_id=TOKEN,
                snapshot=snapshot,
                image=image_record(gen, request1, image1, init_image_cid=image_cid),
            ).to_json(),
            models={"image": gen.model_ref},
            snapshot=snapshot,
        )
        evolved_cid = str(repo.add_raw_block(metadata1.encode()))
        # the same stage 0 under the torch scheme: the viewer cannot re-render it, the preview still gives traits
        torch_gen = EmbeddedSpriteGenerator(num_inference_steps=STEPS)
        [torch_image] = torch_gen.generate([request])
        torch_metadata = build_metadata(
            name=f"Chrysalis #{TOKEN}",
            lore="A torch-scheme token.",
            image_cid=str(repo.add(torch_image.png).cid),
            traits=dict(outcome.traits),
            stage=0,
            parent=None,
            receipt=build_receipt(
                onchain_seed=MINT,
                token_id=TOKEN,
                snapshot=snapshot,
                image=image_record(torch_gen, request, torch_image),
            ).to_json(),
            models={"image": torch_gen.model_ref},
            snapshot=snapshot,
        )
        torch_cid = str(repo.add_raw_block(torch_metadata.encode()))
        rules_cid = str(repo.add_raw_block(rules_json_bytes(engine)))
        release = publish_renderer(repo, gen.export_dir)
        app = create_app(repo, script_roots=[release.site_cid])
        with (
            ServerThread(
                _csp(app, NARROW_CSP), host="127.0.0.1", port=0, name="preview-narrow-gateway"
            ) as strict,
            ServerThread(app, host="127.0.0.1", port=0, name="preview-gateway") as wide,
        ):
            yield {
                "engine": engine,
                "gen": gen,
                "png": image.png,
                "traits": dict(outcome.traits),
                "token": token_cid,
                "torch": torch_cid,
                "evolved": {"token": evolved_cid, "png": image1.png, "traits": dict(outcome1.traits)},
                "rules": rules_cid,
                "release": release,
                "strict": strict.url,
                "wide": wide.url,
            }
    finally:
        gen.close()


@pytest.fixture(scope="module")
def wallet(anvil) -> str:
    """A fresh address on anvil with WEI wei and nonce NONCE."""
    import httpx

    address = "0x" + "5a" * 20
    for method, params in (
        ("anvil_setBalance", [address, hex(WEI)]),
        ("anvil_setNonce", [address, hex(NONCE)]),
    ):
        reply = httpx.post(
            anvil.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        ).json()
        assert "error" not in reply, reply
    return address


def _url(world, gateway: str, *, rules: bool = True, token: str | None = None) -> str:
    release = world["release"]
    query = f"?token={token or world['token']}&model={release.model_cid}" + (
        f"&rules={world['rules']}" if rules else ""
    )
    return f"{world[gateway]}/ipfs/{release.site_cid}/{query}"


def _open(browser, url: str, *, rules: bool = True, viewed: str = "done") -> Any:
    page = browser.new_page()
    page.goto(url)
    # selectors, not wait_for_function: the site's policy forbids eval, even Playwright's
    page.wait_for_selector('body:not([data-state="loading"])', timeout=120_000)
    assert page.get_attribute("body", "data-state") == viewed, page.evaluate("window.viewerError || null")
    if rules:
        page.wait_for_selector('#preview[data-rules="loaded"]', timeout=30_000)
    return page


def _run(page, **fields: str) -> tuple[str, Any]:
    """Fill the preview's fields (address, rpc, seed, rules, or a feature name), run it, wait for its end."""
    for name, value in fields.items():
        selector = (
            f"#preview-{name}" if "." not in name else f'#preview-features input[data-feature="{name}"]'
        )
        page.fill(selector, value)
    page.click("#preview-run")
    page.wait_for_selector('#preview[data-state="done"], #preview[data-state="error"]', timeout=120_000)
    state = page.get_attribute("#preview", "data-state")
    return state or "", page.evaluate("window.previewResult || window.previewError")


def _python(world, features: dict[str, Any]) -> Any:
    return world["engine"].evaluate(features, stage=1, token_id=TOKEN, previous=world["traits"])


def _check_outcome(result: dict[str, Any], expected: Any) -> None:
    assert result["traits"] == expected.traits
    assert result["conditioning"] == expected.conditioning
    assert result["strength"] == expected.strength
    assert result["facts"] == expected.facts
    assert result["changed"] == sorted(expected.changed)


def test_the_preview_reads_the_wallet_from_anvil_and_matches_the_agent(world, browser, wallet, anvil):
    page = _open(browser, _url(world, "wide"))
    try:
        assert page.is_visible("#preview") and "preview, not on-chain" in page.inner_text("#preview h2")
        # the snapshot's features are prefilled; tokens_held is not in it
        held = page.input_value('#preview-features input[data-feature="wallet.held_seconds"]')
        assert held == "90000"
        assert page.input_value('#preview-features input[data-feature="wallet.tokens_held"]') == ""
        state, result = _run(
            page,
            address=wallet,
            rpc=anvil.url,
            seed="0x" + REQUEST_SEED.hex(),
            # typed over the snapshot's 3.5: a new mood, so the start is recoloured as the agent does
            **{"wallet.tokens_held": str(TOKENS_HELD), "price.change_pct": "12.5"},
        )
        assert state == "done", result
        balance = float(Fraction(WEI, 10**18))
        assert result["wallet"]["wei"] == str(WEI) and result["wallet"]["nonce"] == str(NONCE)
        assert result["wallet"]["balance_eth"] == balance and result["wallet"]["chain_id"] == "31337"
        assert result["chain_note"] is None  # the RPC's chain is the snapshot's
        expected = _python(
            world,
            {
                "price.change_pct": 12.5,
                "wallet.held_seconds": 90_000,
                "wallet.balance_eth": balance,
                "wallet.tx_count": NONCE,
                "wallet.tokens_held": TOKENS_HELD,
            },
        )
        _check_outcome(result, expected)
        assert world["traits"]["mood"] == "radiant" and world["traits"]["element"] == "earth"
        assert expected.traits["element"] == "air" and expected.traits["mood"] == "fierce"
        assert result["strength"] == 0.85  # the element changed: the rules repaint more
        shown = page.inner_text("#preview-traits")
        assert "element: air (changes)" in shown and "form: larva (changes)" in shown
        # with the request's seed, the picture is what the agent's portable generator makes for this evolution
        assert result["rendered"] is True and result["seed_known"] is True
        assert result["seed"] == str(derive_seed(REQUEST_SEED, TOKEN))
        request = ImageRequest(
            dict(expected.conditioning),
            derive_seed(REQUEST_SEED, TOKEN),
            init_image=world["png"],
            strength=expected.strength,
        )
        [agent_image] = world["gen"].generate([request])
        assert result["pixels_sha256"] == agent_image.pixels_sha256
        assert result["palette_from"] == agent_image.config["palette_transfer"]["from"] == "radiant"
        assert "preview, not on-chain" in page.inner_text("#preview-caption")
        assert "what the agent would render" in page.inner_text("#preview-caption")
    finally:
        page.close()


def test_without_an_rpc_the_typed_values_give_the_same_traits_and_an_illustrative_picture(world, browser):
    page = _open(browser, _url(world, "strict"))  # no fetch leaves the gateway: the real policy is fine
    try:
        typed = {"wallet.balance_eth": "0.0999", "wallet.tx_count": "12", "wallet.tokens_held": "1"}
        state, result = _run(page, **typed, **{"price.change_pct": "-7.25"})
        assert state == "done", result
        expected = _python(
            world,
            {
                "price.change_pct": -7.25,
                "wallet.held_seconds": 90_000,
                "wallet.balance_eth": 0.0999,
                "wallet.tx_count": 12,
                "wallet.tokens_held": 1,
            },
        )
        _check_outcome(result, expected)
        assert (
            result["traits"]["mood"] == "gloomy" and result["facts"]["purse"] == "a keeper with a light purse"
        )
        assert result["wallet"] is None
        assert result["rendered"] is True and result["seed_known"] is False
        assert "illustrative seed" in page.inner_text("#preview-caption")
        assert "illustrative" in page.inner_text("#preview-notes")
        # the same inputs give the same illustrative picture (the seed is fixed per token version)
        again = _run(page)[1]
        assert again["pixels_sha256"] == result["pixels_sha256"]
    finally:
        page.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_input_is_named(world, browser, wallet, anvil):
    page = _open(browser, _url(world, "wide"))
    try:
        state, error = _run(page, address="0x1234", rpc=anvil.url)
        assert state == "error" and error["kind"] == "bad-address", error
        assert '"0x1234" is not a wallet address' in page.inner_text("#preview-status")
        assert "40 hex digits" in page.inner_text("#preview-status")

        dead = f"http://127.0.0.1:{_free_port()}"
        state, error = _run(page, address=wallet, rpc=dead)
        assert state == "error" and error["kind"] == "rpc-unreachable", error
        assert f"the JSON-RPC URL {dead}/ cannot be reached" in page.inner_text("#preview-status")
        assert "leave it empty and type the wallet's values" in error["hint"]

        state, error = _run(page, rpc=f"{world['wide']}/ipfs/{world['rules']}")  # answers, but not JSON-RPC
        assert state == "error" and error["kind"] == "rpc-error", error
        assert "eth_" in error["error"] and "not a JSON-RPC endpoint" in error["hint"]

        state, error = _run(page, rpc="ftp://example.org")
        assert state == "error" and error["kind"] == "bad-rpc-url", error

        state, error = _run(page, rpc="", address="", **{"wallet.tx_count": "many"})
        assert state == "error" and error["kind"] == "bad-feature", error
        assert 'wallet.tx_count = "many" is not a number' in page.inner_text("#preview-status")

        state, error = _run(page, **{"wallet.tx_count": "3", "wallet.tokens_held": ""})
        assert state == "error" and error["kind"] == "rules", error
        assert "wallet.tokens_held" in error["error"] and "is missing" in error["error"]

        state, error = _run(page, **{"wallet.tokens_held": "1"}, seed="0x12")
        assert state == "error" and error["kind"] == "bad-seed", error
    finally:
        page.close()
    # a gateway whose policy lets the page fetch its own origin only: named, with the fix
    page = _open(browser, _url(world, "strict"))
    try:
        state, error = _run(page, address=wallet, rpc=anvil.url, **{"wallet.tokens_held": "1"})
        assert state == "error" and error["kind"] == "rpc-blocked", error
        assert "Content-Security-Policy (connect-src 'self')" in error["error"]
        assert "type the wallet's values" in error["hint"]
    finally:
        page.close()
    # no rules: the preview says where to get them; the viewer itself still works
    page = _open(browser, _url(world, "strict", rules=False), rules=False)
    try:
        state, error = _run(page)
        assert state == "error" and error["kind"] == "no-rules", error
        assert "&rules=<CID>" in error["hint"] and "chrysalis rules export" in error["hint"]
        state, error = _run(page, rules=world["token"])  # a CID, but of the token's metadata
        assert state == "error" and error["kind"] == "rules", error
        assert "is not a chrysalis-rules/1 export" in error["error"]
    finally:
        page.close()


# -- the ETH balance, exactly as Python's float(Fraction(wei, 10**18)) -----------------------------------------------


def _wei_cases() -> list[int]:
    cases = [0, 1, 2, 10**18 - 1, 10**18, 10**18 + 1, 5 * 10**17, 2**53, 2**64 - 1, 2**255, 2**256 - 1]
    for k in (
        0,
        5,
        40,
    ):  # exact ties at different scales: (2**53 + odd) * 10**18 * 2**k, and one wei either side
        for odd in (1, 3, 2**52 - 1):
            tie = (2**53 + odd) * 10**18 * 2**k
            cases += [tie - 1, tie, tie + 1]
    for j in (0, 1, 12345):  # the smallest ties: (2**52 + j + 1/2) * 2**-17 ETH
        tie = (2**53 + 2 * j + 1) * 5**18
        cases += [tie - 1, tie, tie + 1]
    rng = random.Random(16)
    cases += [rng.randrange(10**15, 10**24) for _ in range(300)]
    cases += [rng.randrange(2**256) for _ in range(100)]
    return cases


def test_wei_to_eth_is_pythons_float_of_the_fraction():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: renderer/preview.js cannot be checked outside the browser")
    cases = _wei_cases()
    script = (
        "import { weiToEth } from './renderer/preview.js';"
        "const cases = JSON.parse(require_stdin());"
        "const view = new DataView(new ArrayBuffer(8));"
        "console.log(JSON.stringify(cases.map((w) => { view.setFloat64(0, weiToEth(BigInt(w)));"
        " return view.getBigUint64(0).toString(16).padStart(16, '0'); })));"
    ).replace("require_stdin()", "(await import('node:fs')).readFileSync(0, 'utf-8')")
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps([str(w) for w in cases]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    want = [struct.pack(">d", float(Fraction(w, 10**18))).hex() for w in cases]
    assert got == want
    naive_wrong = sum(float(w) / 1e18 != float(Fraction(w, 10**18)) for w in cases)
    assert naive_wrong > 50  # the cases catch the double rounding of Number(wei) / 1e18


def test_an_evolved_token_previews_its_next_stage_as_the_agent_would(world, browser):
    """From stage 1 (made by img2img with a palette transfer) to stage 2: the rules' stage and previous traits, the
    model's palette families from the stage-1 receipt, and the typed seed give the agent's pixels."""
    evolved = world["evolved"]
    page = _open(browser, _url(world, "strict", token=evolved["token"]))
    try:
        typed = {"price.change_pct": "-1", "wallet.tx_count": "12", "wallet.tokens_held": "1"}
        state, result = _run(page, seed="0x" + REQUEST_SEED.hex(), **typed)
        assert state == "done", result
        features = {
            "price.change_pct": -1,
            "wallet.held_seconds": 90_000,
            "wallet.balance_eth": 0.05,
            "wallet.tx_count": 12,
            "wallet.tokens_held": 1,
        }
        expected = world["engine"].evaluate(features, stage=2, token_id=TOKEN, previous=evolved["traits"])
        _check_outcome(result, expected)
        assert result["stage"] == 2 and result["traits"]["form"] == "chrysalis"
        assert result["traits"]["mood"] == "serene" and evolved["traits"]["mood"] == "fierce"
        request = ImageRequest(
            dict(expected.conditioning),
            derive_seed(REQUEST_SEED, TOKEN),
            init_image=evolved["png"],
            strength=expected.strength,
        )
        [agent_image] = world["gen"].generate([request])
        assert result["pixels_sha256"] == agent_image.pixels_sha256
        assert result["palette_from"] == agent_image.config["palette_transfer"]["from"] == "fierce"
    finally:
        page.close()


def test_a_token_the_viewer_cannot_render_still_previews_its_traits(world, browser):
    page = _open(browser, _url(world, "strict", token=world["torch"]), viewed="error")
    try:
        assert page.evaluate("window.viewerError.kind") == "unknown-scheme"
        assert "the image cannot be previewed" in page.inner_text("#preview-render-note")
        state, result = _run(page, **{"wallet.tokens_held": "2"})
        assert state == "done", result
        features = {**SNAPSHOT, "wallet.tokens_held": 2}
        _check_outcome(result, _python(world, features))
        assert result["rendered"] is False and page.is_hidden("#preview-figure")
        assert "traits only" in page.inner_text("#preview-status")
    finally:
        page.close()
