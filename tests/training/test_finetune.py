"""``chrysalis model train`` and ``model verify-training`` on a small neon dataset (real PNGs, the real shipped
UNet, a few CPU steps): the output loads like the shipped model and carries a receipt the manifest binds; a run
killed with SIGKILL resumes to the same weights; verify-training matches in another process and names what
differs for an edited hyperparameter or one changed byte of one image; bad input gets an error and a hint."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.generate.base import ImageRequest
from agent.generate.image.embedded import SHIPPED_DIR, EmbeddedSpriteGenerator, verify_model_dir
from agent.training.receipt import SCHEMA, TrainingReceipt
from agent.training.result import loss_curve_sha256
from agent.training.sprites import (
    FinetuneConfig,
    TrainingError,
    finetune_sprites,
    lineage,
)
from tests.training.conftest import TINY, chrysalis_process, run_chrysalis

pytestmark = pytest.mark.slow

SHIPPED = json.loads((SHIPPED_DIR / "manifest.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_model_directory_loads_like_the_shipped_one_and_binds_its_receipt(
    trained: Path, dataset_dir: Path, tmp_path: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {p.name for p in trained.iterdir()}
    assert names == {
        "config.json", "scheduler_config.json", "conditioning.json", "diffusion_pytorch_model.safetensors",
        "manifest.json", "training-receipt.json", "training.json",
    }  # fmt: skip
    manifest = verify_model_dir(trained)  # every hashed file matches
    receipt = TrainingReceipt.load(trained / "training-receipt.json")
    assert receipt.schema == SCHEMA and receipt.trainer == "chrysalis.sprites-finetune/1"
    assert manifest["training_receipt"] == "training-receipt.json"
    assert manifest["training_receipt_sha256"] == _sha(trained / "training-receipt.json") == receipt.sha256()
    assert manifest["base_model"] == {
        "model_id": SHIPPED["model_id"],
        "weights_sha256": SHIPPED["weights_sha256"],
        "cid": None,
    }
    assert receipt.base == {
        "name": SHIPPED["model_id"],
        "weights_sha256": SHIPPED["weights_sha256"],
        "cid": None,
    }
    assert (
        receipt.weights_sha256
        == manifest["weights_sha256"]
        == _sha(trained / "diffusion_pytorch_model.safetensors")
    )
    assert receipt.weights_sha256 != SHIPPED["weights_sha256"]
    assert manifest["dataset_root"] == receipt.dataset["root"] and receipt.dataset["n"] == 16
    assert receipt.dataset["kind"] == "image" and receipt.dataset["mode"] == "public"
    assert len(receipt.dataset["items"]) == 16
    assert receipt.hyperparameters["steps"] == 6 and receipt.hyperparameters["batch_size"] == 4
    assert receipt.hyperparameters["method"] == "full" and receipt.seed == 0 and receipt.steps == 6
    assert (receipt.device, receipt.dtype, receipt.threads) == ("cpu", "float32", 1)
    assert {"torch", "diffusers", "peft", "numpy", "python"} <= set(receipt.libraries)
    assert [s for s, _ in receipt.loss_checkpoints] == [1, 2, 3, 4, 5, 6]
    assert receipt.loss_curve_sha256 == loss_curve_sha256([v for _, v in receipt.loss_checkpoints])
    assert not (trained / ".checkpoint").exists()

    # the embedded backend loads it unchanged and draws with it
    gen = EmbeddedSpriteGenerator(trained, "cpu", num_inference_steps=4)
    out = gen.generate([ImageRequest(traits={"mood": "fierce", "element": "air"}, seed=1)])
    assert out[0].config["weights_sha256"] == receipt.weights_sha256

    # `chrysalis model sample` draws with it when it is the configured image model
    monkeypatch.setenv("CHRYSALIS_MODELS__IMAGE_MODEL", str(trained))
    result = chrysalis(
        "model",
        "sample",
        "-t",
        "mood=gloomy",
        "-t",
        "element=fire",
        "--no-lore",
        "--out",
        str(tmp_path / "s"),
    )
    assert result.code == 0, result.text
    sample_receipt = json.loads((tmp_path / "s" / "receipt.json").read_text())
    assert receipt.weights_sha256 in json.dumps(sample_receipt)

    # two hops: weights -> manifest -> receipt -> dataset root
    got = lineage(trained)
    assert got["weights_sha256"] == receipt.weights_sha256
    assert got["trained_on"]["dataset_root"] == receipt.dataset["root"]
    assert got["training_receipt"]["sha256"] == receipt.sha256()
    assert lineage(SHIPPED_DIR)["trained_on"] is None


def test_resumes_after_sigkill_with_the_same_weights_as_an_uninterrupted_run(
    dataset_dir: Path, trained: Path, tmp_path: Path
) -> None:
    args = ["model", "train", "--dataset", str(dataset_dir), "--out", "model", *TINY]
    proc = chrysalis_process(*args, cwd=tmp_path)
    checkpoint = tmp_path / "model" / ".checkpoint" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the condition: the first checkpoint on disk
    assert checkpoint.exists(), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "model" / "manifest.json").exists()

    again = run_chrysalis(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    model = tmp_path / "model"
    assert _sha(model / "diffusion_pytorch_model.safetensors") == _sha(
        trained / "diffusion_pytorch_model.safetensors"
    )
    a = TrainingReceipt.load(model).to_json()
    b = TrainingReceipt.load(trained).to_json()
    a.pop("train_seconds"), b.pop("train_seconds")
    assert a == b


def test_verify_training_matches_in_a_second_process(trained: Path, dataset_dir: Path) -> None:
    done = run_chrysalis(
        "model", "verify-training", str(trained / "training-receipt.json"), "--dataset", str(dataset_dir),
        "--json", cwd=trained.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["status"] == "match" and verdict["weights_sha256"] == verdict["recorded_weights_sha256"]


def test_a_changed_hyperparameter_is_a_mismatch_naming_the_step(
    trained: Path, dataset_dir: Path, tmp_path: Path, chrysalis
) -> None:
    receipt = json.loads((trained / "training-receipt.json").read_text())
    receipt["hyperparameters"]["lr"] = 1e-3
    edited = tmp_path / "training-receipt.json"
    edited.write_text(json.dumps(receipt))
    result = chrysalis("model", "verify-training", str(edited), "--dataset", str(dataset_dir))
    assert result.code == 1, result.text
    # the first step's loss is taken before the first update, so the edited learning rate shows at step 2
    assert "mismatch: the loss diverged first at step 2: recorded" in result.text
    assert "Traceback" not in result.err


def test_one_changed_byte_in_one_image_is_named(
    trained: Path, dataset_dir: Path, tmp_path: Path, chrysalis
) -> None:
    changed = tmp_path / "ds"
    shutil.copytree(dataset_dir, changed)
    victim = changed / "images" / "05-0.png"
    px = np.asarray(Image.open(victim).convert("RGB")).copy()
    px[3, 4, 0] ^= 1  # one byte of one pixel
    Image.fromarray(px).save(victim)
    result = chrysalis("model", "verify-training", str(trained), "--dataset", str(changed))
    assert result.code == 3, result.text
    assert "error: dataset" in result.text and "the receipt records" in result.text
    assert "images/05-0.png: sha256" in result.text and "recorded" in result.text
    assert "hint: verify against the exact dataset" in result.text


def test_bad_input_gets_an_error_and_a_hint(dataset_dir: Path, tmp_path: Path, chrysalis) -> None:
    base = ["model", "train", "--dataset", str(dataset_dir), *TINY]
    result = chrysalis(*base, "--out", str(tmp_path / "a"), "--base", str(tmp_path / "nope"))
    assert (
        result.code == 1
        and "error: unknown base model" in result.text
        and "hint: use --base shipped" in result.text
    )

    result = chrysalis(*base, "--out", str(tmp_path / "a"), "--min-free-bytes", str(10**18))
    assert result.code == 1 and "error: too little disk space for the fine-tune" in result.text
    assert "hint: free some space" in result.text and not (tmp_path / "a").exists()

    big = tmp_path / "big"
    (big / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big / "images" / "a.png")
    (big / "labels.jsonl").write_text(
        json.dumps({"file": "images/a.png", "traits": {"mood": "serene", "element": "fire"}}) + "\n"
    )
    result = chrysalis("model", "train", "--dataset", str(big), "--out", str(tmp_path / "b"), *TINY)
    assert (
        result.code == 1 and "images/a.png" in result.text and "32" in result.text and "hint:" in result.text
    )

    odd = tmp_path / "odd"
    (odd / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(odd / "images" / "a.png")
    (odd / "labels.jsonl").write_text(
        json.dumps({"file": "images/a.png", "traits": {"mood": "sleepy", "element": "fire"}}) + "\n"
    )
    result = chrysalis("model", "train", "--dataset", str(odd), "--out", str(tmp_path / "c"), *TINY)
    assert result.code == 1 and "sleepy" in result.text and "hint:" in result.text
    assert "Traceback" not in result.err

    with pytest.raises(TrainingError, match="holds a finished model"):
        finetune_sprites(dataset_dir, SHIPPED_DIR, config=FinetuneConfig(steps=1, batch_size=2))


def test_lora_merges_into_a_plain_unet(dataset_dir: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(method="lora", steps=3, batch_size=4, lr=1e-3, holdout_every=0)
    result = finetune_sprites(dataset_dir, tmp_path / "lora", config=config, card=False, seed=5)
    receipt = TrainingReceipt.load(tmp_path / "lora")
    assert receipt.hyperparameters["lora_rank"] == 8 and receipt.hyperparameters["lora_alpha"] == 8
    assert "time_emb_proj" in receipt.hyperparameters["lora_targets"] and receipt.seed == 5
    assert result.weights["diffusion_pytorch_model.safetensors"] == receipt.weights_sha256
    config_json = json.loads((tmp_path / "lora" / "config.json").read_text())
    assert config_json["_class_name"] == "UNet2DModel"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lora" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    with safe_open(str(SHIPPED_DIR / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert keys == set(f.keys())  # merged: no lora_A/lora_B, the shipped layout
    verify_model_dir(tmp_path / "lora")


def test_a_recorded_root_names_its_folder(dataset_dir: Path, tmp_path: Path) -> None:
    from agent.datasets import load_dataset
    from agent.datasets.store import record_of, save_record
    from agent.errors import NotFoundError
    from agent.training.sprites import open_dataset

    ds = load_dataset(dataset_dir)
    save_record(tmp_path, record_of(ds))
    assert open_dataset(ds.root[:12], tmp_path).root == ds.root
    with pytest.raises(NotFoundError, match="no dataset"):
        open_dataset("deadbeef00", tmp_path)
