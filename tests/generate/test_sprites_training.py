"""Training the sprite model: resumable bit-for-bit, exportable to a verified model directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from agent.errors import IntegrityError, NotFoundError
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    EmbeddedSpriteGenerator,
    file_sha256,
    write_shipped_model,
)
from agent.generate.sprites.training import CHECKPOINT_NAME, TrainConfig, load_checkpoint, lr_at, train

TINY = TrainConfig(
    steps=4,
    batch_size=4,
    lr=1e-3,
    warmup_steps=2,
    n_per_class=1,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    checkpoint_every=1,
    log_every=1,
)


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(out, TINY, device="cpu", log=_quiet)
    return out


def test_resumed_run_equals_uninterrupted_run(tiny_run, tmp_path):
    train(tmp_path, TINY, device="cpu", max_steps=2, log=_quiet)
    _, half = load_checkpoint(tmp_path / CHECKPOINT_NAME, torch.device("cpu"), restore_rng=False)
    assert half.step == 2
    train(tmp_path, None, device="cpu", log=_quiet)  # resumes: config comes from the checkpoint

    _, a = load_checkpoint(tiny_run / CHECKPOINT_NAME, torch.device("cpu"), restore_rng=False)
    _, b = load_checkpoint(tmp_path / CHECKPOINT_NAME, torch.device("cpu"), restore_rng=False)
    assert a.step == b.step == 4
    for k, v in a.unet.state_dict().items():
        assert torch.equal(v, b.unet.state_dict()[k]), k
    for k, v in a.ema.items():
        assert torch.equal(v, b.ema[k]), k
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) and torch.equal(
            sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]
        )
    assert [s for s, _ in a.losses] == [s for s, _ in b.losses] == [1, 2, 3, 4]
    assert [x for _, x in a.losses] == [x for _, x in b.losses]


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100)
    assert lr_at(cfg, 0) == pytest.approx(1e-5)
    assert lr_at(cfg, 500) == pytest.approx(1e-3)
    assert lr_at(cfg, 999) == pytest.approx(1e-4, rel=0.05)


@pytest.fixture(scope="module")
def tiny_model(tiny_run, tmp_path_factory):
    dest = tmp_path_factory.mktemp("tiny_model")
    write_shipped_model(tiny_run / CHECKPOINT_NAME, dest, model_id="test/tiny@0")
    return dest


def test_exported_model_loads_and_its_manifest_names_the_weights(tiny_model):
    manifest = json.loads((tiny_model / MANIFEST_NAME).read_text())
    assert manifest["weights_sha256"] == file_sha256(tiny_model / WEIGHTS_NAME)
    gen = EmbeddedSpriteGenerator(tiny_model, device="cpu", num_inference_steps=2)
    assert (
        gen.model_ref.weights_sha256 == manifest["weights_sha256"] and gen.model_ref.model_id == "test/tiny@0"
    )
    [img] = gen.generate([ImageRequest(traits={"mood": "serene", "element": "air"}, seed=1)])
    assert img.png.startswith(b"\x89PNG") and (img.width, img.height) == (32, 32)


def test_missing_model_dir_is_a_clear_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="no sprite model") as e:
        EmbeddedSpriteGenerator(tmp_path / "nowhere", device="cpu")
    assert "train_sprites.py" in str(e.value)


def test_tampered_weights_are_refused(tiny_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    data = bytearray((bad / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 1
    (bad / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(NotFoundError, match="sha256") as e:
        EmbeddedSpriteGenerator(bad, device="cpu")
    assert isinstance(e.value, IntegrityError) and e.value.hint
