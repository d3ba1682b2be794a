"""A fine-tune declares the palette families of its dataset only when asked (``palettes=``), never by inheritance,
and the embedded backend recolours its evolutions within them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigError
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import EmbeddedSpriteGenerator, decode_png, encode_png
from agent.generate.sprites.dataset import make_sprite, sprite_rng
from agent.generate.sprites.palette import to_neon, transfer_palette
from agent.training.sprites import FinetuneConfig, finetune_sprites

TINY = FinetuneConfig(steps=2, batch_size=4, holdout_every=0)


def test_the_manifest_declares_the_palettes_asked_for_and_a_child_does_not_inherit_them(
    dataset_dir: Path, tmp_path: Path
) -> None:
    neon = tmp_path / "neon"
    finetune_sprites(dataset_dir, neon, config=TINY, card=False, palettes="neon")
    assert json.loads((neon / "manifest.json").read_text())["palettes"] == "neon"
    gen = EmbeddedSpriteGenerator(neon, "cpu", num_inference_steps=4)
    assert gen.palettes == "neon" and gen.model_ref.extra["palettes"] == "neon"
    start = to_neon(make_sprite("gloomy", "air", sprite_rng(12, 0)), "gloomy")
    [out] = gen.generate(
        [ImageRequest({"mood": "radiant", "element": "air"}, 5, init_image=encode_png(start), strength=0.0)]
    )
    assert out.config["palette_transfer"]["palettes"] == "neon"
    assert np.array_equal(decode_png(out.png), transfer_palette(start, "gloomy", "radiant", "neon"))

    child = tmp_path / "child"
    finetune_sprites(dataset_dir, child, base=neon, config=TINY, card=False)
    assert "palettes" not in json.loads((child / "manifest.json").read_text())
    assert EmbeddedSpriteGenerator(child, "cpu").palettes is None


def test_an_unknown_family_is_refused_before_training(dataset_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pastel") as e:
        finetune_sprites(dataset_dir, tmp_path / "out", config=TINY, card=False, palettes="pastel")
    assert "neon" in (e.value.hint or "")
    assert not (tmp_path / "out").exists()
