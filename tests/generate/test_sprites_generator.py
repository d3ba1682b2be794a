"""The shipped embedded sprite model, through the ImageGenerator interface."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from agent.errors import ConfigError
from agent.generate.base import GeneratedImage, ImageRequest
from agent.generate.image.embedded import (
    MANIFEST_NAME,
    SHIPPED_DIR,
    WEIGHTS_NAME,
    EmbeddedSpriteGenerator,
    decode_png,
    encode_png,
    file_sha256,
    pixels_sha256,
)
from agent.generate.sprites import quality
from agent.generate.sprites.palette import transfer_palette

TOKENS = [
    ({"mood": "serene", "element": "fire"}, 11),
    ({"mood": "radiant", "element": "water"}, 12),
    ({"mood": "fierce", "element": "earth"}, 13),
    ({"mood": "gloomy", "element": "air"}, 14),
    ({"mood": "serene", "element": "earth"}, 15),
    ({"mood": "radiant", "element": "air"}, 16),
    ({"mood": "fierce", "element": "fire"}, 17),
    ({"mood": "gloomy", "element": "water"}, 18),
]
NEXT_MOOD = {"serene": "radiant", "radiant": "fierce", "fierce": "gloomy", "gloomy": "serene"}


def native(img: GeneratedImage) -> np.ndarray:
    return decode_png(img.png)


@pytest.fixture(scope="module")
def gen() -> EmbeddedSpriteGenerator:
    return EmbeddedSpriteGenerator(device="cpu")


@pytest.fixture(scope="module")
def fresh(gen) -> list[GeneratedImage]:
    return gen.generate([ImageRequest(traits=t, seed=s) for t, s in TOKENS])


def test_shipped_model_loads_offline_and_matches_its_manifest(gen):
    manifest = json.loads((SHIPPED_DIR / MANIFEST_NAME).read_text())
    digest = file_sha256(SHIPPED_DIR / WEIGHTS_NAME)
    assert manifest["weights_sha256"] == digest == gen.model_ref.weights_sha256
    assert gen.model_ref.kind == "image" and gen.model_ref.model_id == manifest["model_id"]
    for name, sha in manifest["files"].items():
        assert file_sha256(SHIPPED_DIR / name) == sha
    assert (SHIPPED_DIR / "MODEL_CARD.md").is_file() and (SHIPPED_DIR / "samples.png").is_file()


def test_generates_512_pngs_whose_native_pixels_match_the_hash(fresh):
    for img, (traits, seed) in zip(fresh, TOKENS, strict=False):
        with Image.open(io.BytesIO(img.png)) as im:
            assert im.format == "PNG" and im.size == (512, 512) and im.mode == "RGB"
        assert (img.width, img.height) == (32, 32)
        assert pixels_sha256(native(img)) == img.pixels_sha256
        assert encode_png(native(img)) == img.png
        c = img.config
        assert c["seed"] == seed and c["traits"] == traits and c["mode"] == "fresh"
        for key in (
            "model_id",
            "weights_sha256",
            "scheduler",
            "num_inference_steps",
            "strength",
            "class_label",
            "init_image_sha256",
            "dtype",
            "device",
            "batch_size",
            "guidance_scale",
            "torch_threads",
        ):
            assert key in c
        # on the CPU each image of a call goes through the UNet alone: the canonical batch size, 1
        assert c["scheduler"]["class"] == "DDIMScheduler" and c["batch_size"] == 1 and c["torch_threads"] == 1
        json.dumps(c)  # storable with the job


def test_same_seed_same_pixels_and_different_seed_different(gen, fresh):
    traits, seed = TOKENS[0]
    [a] = gen.generate([ImageRequest(traits=traits, seed=seed)])
    [b] = gen.generate([ImageRequest(traits=traits, seed=seed)])
    [c] = gen.generate([ImageRequest(traits=traits, seed=seed + 1)])
    assert a.pixels_sha256 == b.pixels_sha256 and a.png == b.png
    assert c.pixels_sha256 != a.pixels_sha256
    assert len({img.pixels_sha256 for img in fresh}) == len(fresh)


def test_each_image_of_a_call_is_the_image_made_alone_bit_for_bit(gen, fresh):
    """A batched UNet call gives a row other float bits than a batch-1 call (oneDNN picks convolution kernels by
    batch size), which a receipt could not replay; so on the CPU every image goes through the UNet alone."""
    for (traits, seed), made in zip(TOKENS, fresh, strict=True):
        [single] = gen.generate([ImageRequest(traits=traits, seed=seed)])
        assert single.pixels_sha256 == made.pixels_sha256 and single.png == made.png
    twins = gen.generate([ImageRequest(traits=TOKENS[0][0], seed=TOKENS[0][1])] * 3)
    assert {t.pixels_sha256 for t in twins} == {fresh[0].pixels_sha256}


@pytest.mark.slow
def test_a_call_runs_with_the_generators_thread_count_and_restores_the_callers(gen, fresh):
    import torch

    traits, seed = TOKENS[0]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        [img] = gen.generate([ImageRequest(traits=traits, seed=seed)])
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert img.config["torch_threads"] == 1 and img.pixels_sha256 == fresh[0].pixels_sha256
    two = EmbeddedSpriteGenerator(device="cpu", threads=2)
    [other] = two.generate([ImageRequest(traits=traits, seed=seed)])
    assert other.config["torch_threads"] == 2 and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads"):
        EmbeddedSpriteGenerator(device="cpu", threads=0)


def test_samples_are_far_more_symmetric_and_on_palette_than_noise(fresh):
    imgs = np.stack([native(i) for i in fresh])
    moods = [t["mood"] for t, _ in TOKENS]
    noise = np.random.default_rng(0).integers(0, 256, imgs.shape, dtype=np.uint8)
    got = quality.summarize(imgs, moods, [t["element"] for t, _ in TOKENS])
    base = quality.summarize(noise, moods, [t["element"] for t, _ in TOKENS])
    assert got["symmetry"] > base["symmetry"] + 0.2
    assert got["palette"] > base["palette"] + 0.5
    assert got["mood_acc"] >= 0.75


def test_evolution_keeps_identity_better_than_another_token(gen, fresh):
    evolved = gen.generate(
        [
            ImageRequest(
                traits={**t, "mood": NEXT_MOOD[t["mood"]]}, seed=s + 1000, init_image=img.png, strength=0.5
            )
            for (t, s), img in zip(TOKENS, fresh, strict=False)
        ]
    )
    for e, img in zip(evolved, fresh, strict=False):
        assert e.config["mode"] == "img2img" and e.config["init_image_sha256"] is not None
        assert e.config["init_pixels_sha256"] == img.pixels_sha256
        assert e.config["palette_transfer"]["from"] == quality.predicted_mood(native(img))
    # Identity is judged against each previous stage recoloured to the new mood (what the token would look like
    # in the new palette): the body, face and accessories must stay, the colours must change.
    moods = [NEXT_MOOD[t["mood"]] for t, _ in TOKENS]
    previous = np.stack(
        [
            transfer_palette(native(i), quality.predicted_mood(native(i)), m)
            for i, m in zip(fresh, moods, strict=False)
        ]
    )
    score = quality.identity_retrieval(np.stack([native(e) for e in evolved]), previous)
    assert score["own"] > score["others"] + 0.05
    assert score["rank1"] >= 0.75
    assert (
        np.mean([quality.predicted_mood(native(e)) == m for e, m in zip(evolved, moods, strict=False)])
        >= 0.75
    )


def test_strength_zero_returns_the_init_image(gen, fresh):
    traits, seed = TOKENS[2]
    [same] = gen.generate([ImageRequest(traits=traits, seed=seed + 1, init_image=fresh[2].png, strength=0.0)])
    assert same.pixels_sha256 == fresh[2].pixels_sha256
    assert same.config["denoise_steps"] == 0


def _png(w: int, h: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


GOOD = {"mood": "serene", "element": "fire"}


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (ImageRequest(traits={"mood": "calm", "element": "fire"}, seed=1), "serene, radiant, fierce, gloomy"),
        (ImageRequest(traits={"mood": "serene"}, seed=1), "element"),
        (ImageRequest(traits=GOOD, seed=-1), "seed"),
        (ImageRequest(traits=GOOD, seed=2**64), "seed"),
        (ImageRequest(traits=GOOD, seed=1, init_image=_png(32, 32), strength=1.5), r"strength 1\.5"),
        (ImageRequest(traits=GOOD, seed=1, init_image=_png(32, 32), strength=float("nan")), "strength"),
        (ImageRequest(traits=GOOD, seed=1, init_image=_png(32, 32, "JPEG")), "not PNG"),
        (ImageRequest(traits=GOOD, seed=1, init_image=b"/tmp/previous.png"), "not PNG"),
        (ImageRequest(traits=GOOD, seed=1, init_image=_png(100, 100)), "100x100"),
        (ImageRequest(traits=GOOD, seed=1, init_image=_png(512, 256)), "512x256"),
        (ImageRequest(traits=GOOD, seed=1, init_image=_png(32, 32)[:40]), "could not be decoded"),
    ],
)
def test_bad_requests_fail_before_any_work_with_a_fix(gen, request_, match):
    with pytest.raises(ConfigError, match=match) as e:
        gen.generate([ImageRequest(traits=GOOD, seed=1), request_])
    assert isinstance(e.value, ValueError) and e.value.hint
    assert "image request 2 of 2" in str(e.value)  # which request of the call, counted from 1


def test_native_and_upscaled_init_images_are_equivalent(gen, fresh):
    px = native(fresh[3])
    assert np.array_equal(decode_png(encode_png(px, 32)), px)
    assert np.array_equal(decode_png(fresh[3].png), px)


def test_empty_batch_and_bad_settings(gen):
    assert gen.generate([]) == []
    with pytest.raises(ConfigError, match="guidance_scale"):
        EmbeddedSpriteGenerator(device="cpu", guidance_scale=0.5)


@pytest.mark.parametrize("evolution_first", [False, True])
def test_a_batch_mixing_evolutions_and_new_sprites_keeps_each_request_apart(gen, fresh, evolution_first):
    """Regression: at strength 1 an evolution has as many steps as a new sprite, and the two once shared a UNet
    batch: the init image was ignored (new sprite first) or the batch crashed (evolution first)."""
    traits, seed = TOKENS[1]
    new = ImageRequest(traits=traits, seed=seed)
    evolution = ImageRequest(traits=TOKENS[0][0], seed=21, init_image=fresh[0].png, strength=1.0)
    batch = [evolution, new] if evolution_first else [new, evolution]
    out = dict(zip((id(r) for r in batch), gen.generate(batch), strict=True))
    [evolved_alone] = gen.generate([evolution])
    [new_alone] = gen.generate([new])
    assert out[id(evolution)].pixels_sha256 == evolved_alone.pixels_sha256
    assert out[id(evolution)].config["init_image_sha256"] == evolved_alone.config["init_image_sha256"]
    assert out[id(new)].pixels_sha256 == new_alone.pixels_sha256
