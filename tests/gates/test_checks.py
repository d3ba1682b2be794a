"""The checks themselves: perceptual hash, the multi-index near-duplicate index (and its table), lore checks."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.errors import ConfigError
from agent.gates import GateReport, GateResult, Gates
from agent.gates.index import HashIndex, SqlHashStore
from agent.gates.lore import check_blocklist, check_leakage, check_length, check_repetition
from agent.gates.metrics import (
    SpriteThresholds,
    gate_palettes,
    knows_palettes,
    load_entry_point,
    shipped_weights_sha256,
    sprite_metrics,
)
from agent.gates.phash import dhash, hamming
from agent.generate.base import ImageRequest
from agent.generate.factory import load_image_generator
from agent.generate.image.embedded import decode_png, encode_png
from agent.generate.lore.prompt import EXAMPLE_ASSISTANT
from agent.generate.sprites.conditioning import MOODS
from agent.generate.sprites.dataset import make_sprite, palette_colors, sprite_rng
from agent.generate.sprites.palette import to_neon
from agent.settings import GatesSettings, ModelSettings
from agent.store import Database


def _sprite(seed: int, mood: str = "serene") -> np.ndarray:
    """A symmetric blob in the mood's palette on a plain background."""
    rng = np.random.default_rng(seed)
    pal = palette_colors(mood)
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = pal[0]
    half = rng.integers(0, len(pal), size=(6, 3)).repeat(4, 0).repeat(4, 1)  # coarse parts, as sprites have
    left = pal[half]
    img[4:28, 4:16] = left
    img[4:28, 16:28] = left[:, ::-1]
    return img


def _resized(png: bytes, size: int = 300) -> bytes:
    """A re-encoded, rescaled copy (bilinear), as a re-upload would make."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(
        buf, "PNG"
    )
    return buf.getvalue()


def _touched(img: np.ndarray) -> bytes:
    """The sprite with a 2x2 block inverted."""
    img = img.copy()
    img[10:12, 10:12] = 255 - img[10:12, 10:12]
    return encode_png(img)


@pytest.fixture(scope="module")
def sprites() -> list[bytes]:
    """Real sprites of the shipped model (few steps: cheap, still creatures)."""
    generator = load_image_generator(ModelSettings(image_steps=10, threads=1))
    requests = [ImageRequest({"mood": m, "element": "fire"}, seed=s) for s, m in enumerate(MOODS)]
    return [g.png for g in generator.generate(requests)]


def test_dhash_is_stable_under_reencoding_and_far_between_different_images(sprites: list[bytes]) -> None:
    a = sprites[0]
    assert dhash(a) == dhash(bytes(a))
    t = GatesSettings().duplicate_distance
    assert hamming(dhash(a), dhash(_resized(a))) <= t
    assert hamming(dhash(a), dhash(_touched(decode_png(a)))) <= t
    assert min(hamming(dhash(x), dhash(y)) for i, x in enumerate(sprites) for y in sprites[i + 1 :]) > t
    with pytest.raises(ConfigError, match="cannot be decoded"):
        dhash(b"not an image")


@pytest.mark.parametrize("threshold", [0, 3, 4, 6])
def test_the_index_finds_exactly_what_brute_force_finds(threshold: int) -> None:
    rng = random.Random(threshold)
    index = HashIndex(threshold)
    stored = {}
    for token in range(2000):
        value = rng.getrandbits(64)
        stored[token] = value
        index.add(token, 1, f"cid{token}", value)
    queries = [rng.getrandbits(64) for _ in range(50)]
    for _ in range(30):  # planted near duplicates at every distance up to threshold + 1
        base = stored[rng.randrange(2000)]
        for d in range(threshold + 2):
            bits = rng.sample(range(64), d)
            queries.append(base ^ sum(1 << b for b in bits))
    for q in queries:
        expected = sorted(t for t, v in stored.items() if hamming(q, v) <= threshold)
        assert sorted(m.token_id for m in index.near(q)) == expected


def test_the_index_replaces_a_key_and_skips_the_token_itself(tmp_path: Path) -> None:
    index = HashIndex(3)
    index.add(7, 1, "a", 0xFFFF)
    index.add(7, 2, "b", 0xFFFE)
    assert index.near(0xFFFF, exclude_token=7) == []
    assert [m.stage for m in index.near(0xFFFF)] == [1, 2]
    index.add(7, 1, "c", 1 << 63)  # stage 1 rerolled: the old hash is gone
    assert [m.image_cid for m in index.near(0xFFFF)] == ["b"]
    assert len(index) == 2


def test_hashes_persist_per_collection(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        store = SqlHashStore(db, "0xABC")
        store.put([(1, 1, "cid1", 2**64 - 1), (2, 1, "cid2", 5)])
        store.put([(2, 1, "cid2b", 6)])
        SqlHashStore(db, "0xother").put([(9, 1, "x", 5)])
        loaded = SqlHashStore(db, "0xabc").load(HashIndex(3))
        assert len(loaded) == 2
        assert [(m.token_id, m.image_cid, m.distance) for m in loaded.near(6)] == [(2, "cid2b", 0)]
        assert loaded.near(2**64 - 1)[0].token_id == 1
    finally:
        db.close()


GOOD = "It hums beside the quiet river at dusk. The reeds lean toward its warm light."


def test_lore_checks_catch_bad_lore_and_pass_good_lore() -> None:
    assert all(r.passed for r in (check_length(GOOD, 20, 300), check_blocklist(GOOD, ["gore"]),
                                  check_repetition(GOOD), check_leakage(GOOD)))  # fmt: skip
    assert not check_length("Too short.", 20, 300).passed
    assert not check_length(GOOD * 10, 20, 300).passed
    blocked = check_blocklist("It loves GORE and blood.", ["gore", "blood", "ore"])
    assert not blocked.passed and blocked.value == ["gore", "blood"]  # whole words only: not "ore"
    rep = check_repetition("It waits. it  waits! Then it sleeps.")
    assert not rep.passed and rep.value == ["it waits"]
    for leaked in (
        "<|im_start|>assistant It waits.",
        "Creature: calm, water. It waits.",
        "It waits. " + EXAMPLE_ASSISTANT.split(". ")[1],  # the one-shot example copied
        "It waits. Do not name the creature.",
    ):
        result = check_leakage(leaked)
        assert not result.passed and result.reason.startswith("contains prompt or template text"), leaked


def test_sprite_metrics_pass_clean_sprites_and_fail_noise() -> None:
    t = SpriteThresholds(min_symmetry=0.85, min_palette=0.6)
    good = sprite_metrics(encode_png(_sprite(3, "fierce")), {"mood": "fierce"}, t)
    assert [r.name for r in good] == ["symmetry", "palette"] and all(r.passed for r in good)
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    bad = sprite_metrics(encode_png(noise), {"mood": "fierce"}, t)
    assert not any(r.passed for r in bad)


def test_the_palette_gate_judges_the_shipped_models_palettes_only() -> None:
    """A fine-tune trained on its own palettes (the neon example) would fail every shipped mood palette: its
    sprites get the symmetry gate only, and the shipped model (or unknown weights) still gets both."""
    neon = to_neon(_sprite(3, "fierce"), "fierce")
    gates = Gates(GatesSettings())
    shipped = shipped_weights_sha256()
    for weights, names in [
        (shipped, ["symmetry", "palette"]),
        (None, ["symmetry", "palette"]),
        ("ab" * 32, ["symmetry"]),
    ]:
        results = gates.check(
            png=encode_png(neon), lore=None, traits={"mood": "fierce"}, backend="embedded", token_id=1,
            weights_sha256=weights,
        )  # fmt: skip
        assert [r.name for r in results if r.name != "near_duplicate"] == names
    fine_tuned = gates.check(
        png=encode_png(neon), lore=None, traits={"mood": "fierce"}, backend="embedded", token_id=2,
        weights_sha256="ab" * 32,
    )  # fmt: skip
    assert all(r.passed for r in fine_tuned if r.name != "near_duplicate")
    assert not knows_palettes("ab" * 32) and knows_palettes(shipped)


def test_a_model_that_declares_its_palettes_is_gated_in_them() -> None:
    """A fine-tune whose manifest declares ``palettes`` (e.g. neon) gets the palette gate in that family: its own
    style passes, the shipped style (and noise) fails, and the message names the family."""
    gates = Gates(GatesSettings())
    plain = make_sprite("fierce", "fire", sprite_rng(8, 0))  # a procedural sprite in the shipped palettes
    neon = to_neon(plain, "fierce")

    def palette(img: np.ndarray, token_id: int, declared: str | None) -> GateResult:
        results = gates.check(
            png=encode_png(img), lore=None, traits={"mood": "fierce"}, backend="embedded", token_id=token_id,
            weights_sha256="ab" * 32, palettes=declared,
        )  # fmt: skip
        return next(r for r in results if r.name == "palette")

    own = palette(neon, 1, "neon")
    assert own.passed and own.value == 1.0 and "fierce (neon palettes)" in own.reason
    assert not palette(plain, 2, "neon").passed
    assert palette(plain, 3, "shipped").passed
    assert gate_palettes("ab" * 32) is None and gate_palettes(None) == "shipped"
    assert gate_palettes("ab" * 32, "neon") == "neon"


def always_fails(png: bytes, traits: object, backend: object) -> list[GateResult]:
    return [GateResult("sharpness", False, 0.1, 0.5, "too blurry")]


def test_plugins_load_from_entry_points_and_bad_ones_are_clear_errors() -> None:
    gates = Gates(GatesSettings(metrics=["tests.gates.test_checks:always_fails"]))
    results = gates.check(png=encode_png(_sprite(4)), lore=GOOD, traits={}, backend="diffusers", token_id=1)
    assert [r.name for r in results] == [
        "near_duplicate", "sharpness", "lore_length", "lore_blocklist", "lore_repetition", "lore_leakage",
    ]  # fmt: skip
    report = GateReport(tuple(results))
    assert not report.passed and report.reasons == ("sharpness: too blurry",)
    assert GateReport.from_json(report.to_json()) == report
    for spec, msg in [("nocolon", "not module:function"), ("no.such.module:f", "cannot import"),
                      ("tests.gates.test_checks:nothing", "no callable")]:  # fmt: skip
        with pytest.raises(ConfigError, match=msg) as err:
            load_entry_point(spec)
        assert err.value.hint


def test_near_duplicates_within_a_run_are_caught_but_a_tokens_own_stages_are_not(
    sprites: list[bytes],
) -> None:
    gates = Gates(GatesSettings())
    png = sprites[1]
    assert gates.duplicate(png, token_id=1).passed
    gates.accept(1, 1, "cid-1", png)
    assert gates.duplicate(png, token_id=1).passed  # its own earlier stage
    planted = gates.duplicate(_resized(png), token_id=2)
    assert not planted.passed and "token 1 stage 1 (cid-1)" in planted.reason
