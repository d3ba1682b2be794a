"""Evolutions recolour within the palette families the model draws in: the shipped ones for the shipped model,
the declared ones for a fine-tune whose manifest names them (``"palettes": "neon"``), none for a fine-tune that
declares none. The receipt's config records the family, and verify replays such evolutions bit for bit."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigError
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import (
    MANIFEST_NAME,
    SHIPPED_DIR,
    EmbeddedSpriteGenerator,
    decode_png,
    encode_png,
    model_palettes,
    pixels_sha256,
)
from agent.generate.receipt import build_receipt, image_record
from agent.generate.runtime import torch_threads
from agent.generate.seed import derive_seed
from agent.generate.sprites import quality
from agent.generate.sprites.conditioning import MOODS
from agent.generate.sprites.dataset import make_sprite, sprite_rng
from agent.generate.sprites.palette import PALETTE_FAMILIES, to_neon, transfer_palette
from agent.generate.verify import verify
from agent.settings import ModelSettings

NEW = {"mood": "fierce", "element": "fire"}


def model_copy(root: Path, name: str, **manifest: object) -> Path:
    """The shipped model's files in ``root/name``, its manifest updated with ``manifest`` (a ``base_model`` makes
    it a fine-tune)."""
    out = shutil.copytree(SHIPPED_DIR, root / name)
    data = json.loads((out / MANIFEST_NAME).read_text())
    data.update(manifest)
    (out / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")
    return out


FINE_TUNE = {
    "model_id": "chrysalis/sprites-32+neon@test",
    "base_model": {"model_id": "chrysalis/sprites-32@1", "weights_sha256": "00" * 32, "cid": None},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "undeclared": model_copy(root, "undeclared", **FINE_TUNE),
        "neon": model_copy(root, "neon", **FINE_TUNE, palettes="neon"),
    }


@pytest.fixture(scope="module")
def neon_start() -> bytes:
    """A serene neon sprite (what the neon fine-tune draws), as the previous stage's PNG."""
    return encode_png(to_neon(make_sprite("serene", "fire", sprite_rng(0, 3, seed=7)), "serene"))


def evolve(gen: EmbeddedSpriteGenerator, start: bytes, strength: float) -> tuple[np.ndarray, dict]:
    with torch_threads(1):
        [out] = gen.generate([ImageRequest(NEW, 99, init_image=start, strength=strength)])
    return decode_png(out.png), out.config


def test_the_family_comes_from_the_manifest(models):
    shipped = json.loads((SHIPPED_DIR / MANIFEST_NAME).read_text())
    assert model_palettes(shipped) == "shipped"  # not a fine-tune: the procedural sprites' palettes
    assert model_palettes({**shipped, **FINE_TUNE}) is None
    assert model_palettes({**shipped, **FINE_TUNE, "palettes": "neon"}) == "neon"
    assert EmbeddedSpriteGenerator(models["neon"], "cpu").model_ref.extra["palettes"] == "neon"
    assert "palettes" not in EmbeddedSpriteGenerator(models["undeclared"], "cpu").model_ref.extra
    assert "palettes" not in EmbeddedSpriteGenerator(None, "cpu").model_ref.extra


def test_an_unknown_declared_family_is_refused_with_the_known_ones(tmp_path):
    bad = model_copy(tmp_path, "bad", **FINE_TUNE, palettes="pastel")
    with pytest.raises(ConfigError, match="pastel") as e:
        EmbeddedSpriteGenerator(bad, "cpu")
    assert "neon" in (e.value.hint or "") and "manifest.json" in (e.value.hint or "")


def test_a_fine_tune_that_declares_no_family_is_not_pulled_into_the_shipped_palettes(models, neon_start):
    start = decode_png(neon_start)
    gen = EmbeddedSpriteGenerator(models["undeclared"], "cpu", num_inference_steps=8)
    got, config = evolve(gen, neon_start, 0.0)  # strength 0: the output is the (possibly recoloured) start
    assert config["palette_transfer"] == {
        "from": None,
        "start_pixels_sha256": pixels_sha256(start),
        "palettes": None,
    }
    assert np.array_equal(got, start)
    assert quality.neon_adherence(got, "serene") == 1.0
    # what the shipped-palette transfer would have started from: the neon sprite in shipped colours
    shipped = transfer_palette(start, quality.predicted_mood(start), "fierce")
    assert not np.array_equal(shipped, start) and quality.neon_adherence(shipped, "serene") < 0.5
    _, config = evolve(gen, neon_start, 0.5)
    assert config["palette_transfer"]["start_pixels_sha256"] == config["init_pixels_sha256"]


def test_a_declared_neon_fine_tune_recolours_within_the_neon_family(models, neon_start):
    start = decode_png(neon_start)
    assert quality.predicted_mood(start, "neon") == "serene"
    gen = EmbeddedSpriteGenerator(models["neon"], "cpu", num_inference_steps=8)
    got, config = evolve(gen, neon_start, 0.0)
    assert np.array_equal(got, transfer_palette(start, "serene", "fierce", "neon"))
    assert config["palette_transfer"] == {
        "from": "serene",
        "start_pixels_sha256": pixels_sha256(got),
        "palettes": "neon",
    }
    assert quality.neon_adherence(got, "fierce") == 1.0  # exact on the procedural sprite's colours
    assert quality.predicted_mood(got, "neon") == "fierce"
    assert max(quality.palette_adherence(got, m) for m in MOODS) < 0.1  # no shipped colours but the eyes


def test_the_shipped_model_keeps_the_shipped_transfer_and_its_receipt_form():
    start = make_sprite("serene", "fire", sprite_rng(0, 3, seed=7))
    gen = EmbeddedSpriteGenerator(None, "cpu", num_inference_steps=8)
    got, config = evolve(gen, encode_png(start), 0.0)
    assert np.array_equal(got, transfer_palette(start, "serene", "fierce"))
    assert config["palette_transfer"] == {"from": "serene", "start_pixels_sha256": pixels_sha256(got)}
    assert set(PALETTE_FAMILIES) >= {"shipped", "neon"}


def test_a_token_drawn_in_shipped_colours_evolves_into_the_declared_family(models):
    """A token minted by the shipped model (shipped colours) and evolved by a neon fine-tune lands in neon."""
    start = make_sprite("serene", "fire", sprite_rng(0, 3, seed=7))
    assert quality.predicted_palette(start, "neon") == ("shipped", "serene")
    gen = EmbeddedSpriteGenerator(models["neon"], "cpu", num_inference_steps=8)
    got, config = evolve(gen, encode_png(start), 0.0)
    assert np.array_equal(got, to_neon(transfer_palette(start, "serene", "fierce"), "fierce"))
    assert config["palette_transfer"] == {
        "from": "serene",
        "from_palettes": "shipped",
        "start_pixels_sha256": pixels_sha256(got),
        "palettes": "neon",
    }
    assert quality.neon_adherence(got, "fierce") == 1.0
    # and the way back: a neon token evolving under the shipped model is recoloured into the shipped family
    neon = to_neon(start, "serene")
    assert quality.predicted_palette(neon) == ("neon", "serene")
    back, config = evolve(EmbeddedSpriteGenerator(None, "cpu", num_inference_steps=8), encode_png(neon), 0.0)
    assert np.array_equal(back, transfer_palette(start, "serene", "fierce"))
    assert config["palette_transfer"]["from_palettes"] == "neon"


@pytest.mark.parametrize("which", ["undeclared", "neon"])
def test_verify_replays_a_fine_tune_evolution_bit_for_bit(models, neon_start, which, fresh_factory, tmp_path):
    settings = ModelSettings(
        image_backend="embedded", image_model=str(models[which]), image_steps=8, device="cpu"
    )
    gen = fresh_factory.load_image_generator(settings)
    seed = derive_seed(bytes(32), 7)
    req = ImageRequest(NEW, seed, init_image=neon_start, strength=0.5)
    with torch_threads(1):
        [evolved] = gen.generate([req])
    r = build_receipt(
        onchain_seed=bytes(32), token_id=7, image=image_record(gen, req, evolved, init_image_cid="x")
    )
    assert r.image.config["palette_transfer"]["palettes"] == (None if which == "undeclared" else "neon")
    fresh_factory.clear_cache()
    result = verify(r, init_image_loader=lambda sha, cid: neon_start, image_model=str(models[which]))
    assert result.match, result.note
    assert "image.output.pixels_sha256" in result.checked and "image.config.palette_transfer" in str(
        result.checked
    )
    # the same weights declaring another family replay differently, and the receipt says where
    other = model_copy(tmp_path, "other", **FINE_TUNE, **({} if which == "neon" else {"palettes": "neon"}))
    bad = verify(r, init_image_loader=lambda sha, cid: neon_start, image_model=str(other))
    fields = {m.field for m in bad.mismatches}
    assert not bad.match and "image.output.pixels_sha256" in fields
    assert any(f.startswith("image.config.palette_transfer") for f in fields), fields
    assert hashlib.sha256(evolved.png).hexdigest() == r.image.output["png_sha256"]
