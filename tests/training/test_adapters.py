"""``chrysalis model train`` for the production models: a lore LoRA (tiny random Llama) and an image LoRA (tiny
random Stable Diffusion) through the CLI, each a model directory with a receipt, a manifest and a card that
``verify-training`` replays bit for bit (in a second process for the lore model), that ``model publish`` pins
with the right kind, and that the production backends load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.generate.base import ImageRequest, LoreRequest
from agent.generate.runtime import weight_files, weights_digest
from agent.training.receipt import RECEIPT_NAME, TrainingReceipt
from agent.training.sprites import lineage
from tests.training.conftest import run_chrysalis
from tests.training.test_diffusers_lora import _write_dataset
from tests.training.test_lore_lora import PAIRS

pytest.importorskip("peft", reason="LoRA training needs peft (pip install peft==0.21.2)")

LORE = ["--steps", "4", "--batch-size", "2", "--lr", "0.05", "--lora-rank", "4", "--lora-alpha", "8"]
LORE += ["--holdout-every", "3", "--max-length", "512", "--checkpoint-every", "2", "--seed", "3"]
IMAGE = ["--steps", "3", "--batch-size", "2", "--lr", "0.05", "--resolution", "32", "--holdout-every", "2"]


@pytest.fixture(scope="module")
def lore_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lore-ds") / "voice"
    root.mkdir()
    lines = [json.dumps({"traits": t, "lore": lore}) for t, lore in PAIRS]
    (root / "lore.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("img-ds") / "captions")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.generate.conftest import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="module")
def lore_model(lore_dir: Path, tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lore-model") / "voice-lora"
    got = run_chrysalis(
        "model", "train", "--dataset", str(lore_dir), "--base", str(tiny_lm), "--out", str(out), *LORE,
        cwd=out.parent,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr + got.stdout
    assert "models.lore_backend" in got.stdout
    return out


def test_a_lore_lora_is_a_model_directory_with_receipt_manifest_and_card(
    lore_model: Path, lore_dir: Path, tiny_lm: Path
) -> None:
    from agent.datasets import load_dataset

    ds = load_dataset(lore_dir)
    manifest = json.loads((lore_model / "manifest.json").read_text())
    receipt = TrainingReceipt.load(lore_model)
    assert (manifest["kind"], manifest["backend"], receipt.trainer) == ("lore", "transformers", "lore-lora")
    weights = weights_digest(weight_files(lore_model))
    assert manifest["weights_sha256"] == receipt.weights_sha256 == weights
    assert receipt.dataset["root"] == manifest["dataset_root"] == ds.root and receipt.dataset["n"] == len(
        PAIRS
    )
    assert receipt.base["weights_sha256"] == weights_digest(weight_files(tiny_lm))
    assert receipt.hyperparameters["holdout_every"] == 3 and receipt.steps == 4
    assert (receipt.device, receipt.threads, receipt.loss_every) == ("cpu", 1, 1)
    assert "transformers" in receipt.libraries
    assert not (lore_model / ".checkpoint").exists()
    card = (lore_model / "MODEL_CARD.md").read_text()
    assert "held-out loss" in card and ds.root in card and "mood=serene" in card
    # two hops: manifest -> receipt (checked) -> dataset root
    assert lineage(lore_model)["trained_on"]["dataset_root"] == ds.root


def test_the_production_lore_backend_loads_the_merged_model(lore_model: Path) -> None:
    from agent.generate.lore import TransformersLoreWriter

    writer = TransformersLoreWriter(str(lore_model), device="cpu", max_new_tokens=8)
    (lore,) = writer.write([LoreRequest("Ember", 1, dict(PAIRS[0][0]), {}, 5)])
    assert lore.text.startswith("Ember · stage 1 · ")
    assert (
        writer.model_ref.weights_sha256
        == json.loads((lore_model / "manifest.json").read_text())["weights_sha256"]
    )


def test_verify_training_matches_the_lore_lora_in_a_second_process(
    lore_model: Path, lore_dir: Path, tiny_lm: Path
) -> None:
    got = run_chrysalis(
        "model", "verify-training", str(lore_model / RECEIPT_NAME), "--dataset", str(lore_dir),
        "--base", str(tiny_lm), "--json", cwd=lore_model.parent,
    )  # fmt: skip
    verdict = json.loads(got.stdout)
    assert got.returncode == 0 and verdict["status"] == "match", got.stderr + got.stdout
    assert (
        verdict["weights_sha256"] == json.loads((lore_model / "manifest.json").read_text())["weights_sha256"]
    )


def test_verify_training_names_the_divergence_of_a_changed_learning_rate(
    lore_model: Path, lore_dir: Path, tiny_lm: Path, tmp_path: Path, chrysalis
) -> None:
    data = json.loads((lore_model / RECEIPT_NAME).read_text())
    data["hyperparameters"]["lr"] = 0.04
    edited = tmp_path / RECEIPT_NAME
    edited.write_text(json.dumps(data))
    got = chrysalis(
        "model", "verify-training", str(edited), "--dataset", str(lore_dir), "--base", str(tiny_lm)
    )
    assert got.code == 1, got.text
    assert "diverged first at step 2" in got.out  # step 1's loss comes before the first update


def test_verify_training_names_a_changed_lore_item(
    lore_model: Path, lore_dir: Path, tiny_lm: Path, tmp_path: Path, chrysalis
) -> None:
    changed = tmp_path / "voice"
    changed.mkdir()
    lines = (lore_dir / "lore.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace("rages", "roars")
    (changed / "lore.jsonl").write_text("\n".join(lines) + "\n")
    got = chrysalis(
        "model", "verify-training", str(lore_model), "--dataset", str(changed), "--base", str(tiny_lm)
    )
    assert got.code == 3, got.text
    assert "the receipt records" in got.text and "lore.jsonl#2: sha256" in got.text


def test_publish_pins_a_lore_fine_tune_as_a_lore_model(
    lore_model: Path, tmp_path: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_IPFS__REPO", str(tmp_path / "ipfs"))
    got = chrysalis("model", "publish", str(lore_model), "--no-register", "--json")
    assert got.code == 0, got.text
    published = json.loads(got.out)
    assert (published["kind"], published["backend"]) == ("lore", "transformers")
    assert (
        published["weights_sha256"]
        == json.loads((lore_model / "manifest.json").read_text())["weights_sha256"]
    )


def test_sprite_only_options_are_refused_on_a_lora_run_and_back(
    lore_dir: Path, tmp_path: Path, chrysalis
) -> None:
    got = chrysalis(
        "model", "train", "--dataset", str(lore_dir), "--out", str(tmp_path / "a"), "--palettes", "neon"
    )
    assert got.code != 0 and "--palettes are for sprite fine-tunes" in got.err
    got = chrysalis(
        "model", "train", "--dataset", str(lore_dir), "--out", str(tmp_path / "b"), "--stop-after", "1"
    )
    assert got.code != 0 and "--stop-after" in got.err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_unknown_lore_base_is_refused_with_a_hint(lore_dir: Path, tmp_path: Path, chrysalis) -> None:
    got = chrysalis("model", "train", "--dataset", str(lore_dir), "--base", str(tmp_path / "nope"), "--out",
                    str(tmp_path / "out"))  # fmt: skip
    assert got.code != 0
    assert "unknown base model" in got.err and "causal LM directory" in got.err
    assert not (tmp_path / "out").exists()


def test_an_image_lora_trains_through_the_cli_and_verifies(
    image_dir: Path, tiny_sd: Path, tmp_path: Path, chrysalis
) -> None:
    from agent.generate.image.diffusers import DiffusersImageGenerator

    out = tmp_path / "captions-lora"
    got = chrysalis(
        "model", "train", "--dataset", str(image_dir), "--base", str(tiny_sd), "--out", str(out), *IMAGE
    )
    assert got.code == 0, got.text
    assert "models.image_lora" in got.out
    manifest = json.loads((out / "manifest.json").read_text())
    receipt = TrainingReceipt.load(out)
    assert (manifest["kind"], manifest["backend"], receipt.trainer) == (
        "image",
        "diffusers",
        "diffusers-lora",
    )
    assert manifest["weights_sha256"] == receipt.weights_sha256 == weights_digest(weight_files(out))
    assert receipt.dataset["n"] == 4 and receipt.hyperparameters["resolution"] == 32
    assert (out / "samples.png").is_file() and "difference to held-out" in (out / "MODEL_CARD.md").read_text()
    # the production backend loads it as models.image_lora, and it changes the image
    plain = DiffusersImageGenerator(str(tiny_sd), device="cpu", num_inference_steps=2, width=32, height=32)
    tuned = DiffusersImageGenerator(
        str(tiny_sd), device="cpu", num_inference_steps=2, width=32, height=32, lora=str(out)
    )
    req = ImageRequest(traits={}, seed=5, prompt="a red fox, flat colours")
    assert tuned.generate([req])[0].png != plain.generate([req])[0].png

    verified = chrysalis(
        "model", "verify-training", str(out), "--dataset", str(image_dir), "--base", str(tiny_sd), "--json"
    )
    assert verified.code == 0, verified.text
    assert json.loads(verified.out)["status"] == "match"


def test_a_transformer_pipeline_lora_trains_through_the_cli_and_verifies(
    image_dir: Path, tmp_path: Path, chrysalis
) -> None:
    from tests.generate.conftest import build_tiny_sd3

    sd3 = build_tiny_sd3(tmp_path / "sd3")
    out = tmp_path / "sd3-lora"
    got = chrysalis(
        "model", "train", "--dataset", str(image_dir), "--base", str(sd3), "--out", str(out), *IMAGE
    )
    assert got.code == 0, got.text
    receipt = TrainingReceipt.load(out)
    assert receipt.hyperparameters["pipeline"] == "StableDiffusion3Pipeline"
    verified = chrysalis(
        "model", "verify-training", str(out), "--dataset", str(image_dir), "--base", str(sd3)
    )
    assert verified.code == 0 and "match" in verified.out, verified.text
