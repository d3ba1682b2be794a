"""Receipt verification: generate + receipt in one process, verify in another; tampering; GPU receipts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.generate.base import ImageRequest, LoreRequest
from agent.generate.receipt import InferenceReceipt, build_receipt, image_record, lore_record
from agent.generate.runtime import torch_threads
from agent.generate.seed import derive_seed
from agent.generate.verify import EXIT_MATCH, EXIT_MISMATCH, EXIT_NOT_REPRODUCIBLE, verify
from agent.settings import ModelSettings

REPO = Path(__file__).resolve().parents[2]
ONCHAIN_SEED = "0x" + "5a" * 32


def run_py(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def env(tiny_sd_dir, tiny_lm, tmp_path_factory) -> dict[str, str]:
    """A process environment that selects the tiny production models through CHRYSALIS_MODELS__*."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("CHRYSALIS_")}
    e.update(
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        CHRYSALIS_MODELS__IMAGE_BACKEND="diffusers",
        CHRYSALIS_MODELS__IMAGE_MODEL=str(tiny_sd_dir),
        CHRYSALIS_MODELS__IMAGE_STEPS="4",
        CHRYSALIS_MODELS__LORE_BACKEND="transformers",
        CHRYSALIS_MODELS__LORE_MODEL=str(tiny_lm),
        CHRYSALIS_MODELS__LORE_MAX_NEW_TOKENS="12",
        CHRYSALIS_MODELS__CACHE_DIR=str(tmp_path_factory.mktemp("cache")),
    )
    return e


@pytest.fixture(scope="module")
def sampled(env, tmp_path_factory) -> Path:
    """Process 1: ``chrysalis model sample`` writes image.png, lore.txt and receipt.json."""
    out = tmp_path_factory.mktemp("sample")
    cli = ["-c", "from agent.cli import main; main()", "model", "sample"]
    args = ["-t", "mood=serene", "-t", "element=fire", "-f", "season=a cold season", "--name", "Ember"]
    args += ["--onchain-seed", ONCHAIN_SEED, "--token-id", "42", "--stage", "1", "--out", str(out)]
    p = run_py(cli + args, cwd=out, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "provenance 0x" in p.stdout
    return out


def test_sample_writes_files_and_a_canonical_receipt(sampled):
    r = InferenceReceipt.load(sampled / "receipt.json")
    assert (sampled / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sampled / "lore.txt").read_text().startswith("Ember · stage 1 · element fire, mood serene")
    assert (
        r.canonical
        and r.seed.token_id == 42
        and r.seed.derived_seed == derive_seed(bytes.fromhex("5a" * 32), 42)
    )
    assert r.image.runtime["threads"] == 1 and r.image.runtime["batch_size"] == 1
    assert r.lore.request["facts"] == {"season": "a cold season"}
    # the file holds exactly the canonical JSON that provenance hashes
    assert (sampled / "receipt.json").read_bytes().strip() == r.canonical_json()


def test_verify_in_a_second_process_matches(sampled, env):
    p = run_py(["-m", "agent.generate.verify", str(sampled / "receipt.json")], cwd=sampled, env=env)
    assert p.returncode == EXIT_MATCH, p.stdout + p.stderr
    assert "MATCH" in p.stdout and "MISMATCH" not in p.stdout


def test_tampered_receipt_fails_in_a_second_process_naming_the_field(sampled, env, tmp_path):
    data = json.loads((sampled / "receipt.json").read_text())
    data["image"]["output"]["pixels_sha256"] = "00" * 32
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    cli = ["-c", "from agent.cli import main; main()", "model", "verify", str(tampered)]
    p = run_py(cli, cwd=tmp_path, env=env)
    assert p.returncode == EXIT_MISMATCH, p.stdout + p.stderr
    assert "image.output.pixels_sha256" in p.stdout and "MISMATCH" in p.stdout


@pytest.mark.parametrize(
    ("path", "value", "fields"),
    [
        (
            ("image", "request", "traits", "mood"),
            "fierce",
            {"image.output.pixels_sha256", "image.config.prompt"},
        ),
        (
            ("lore", "request", "facts", "season"),
            "a hot season",
            {"lore.prompt", "lore.output.token_ids_sha256"},
        ),
        # decoding settings are replayed as recorded, so a changed one shows up in the output ...
        (("lore", "generation_config", "repetition_penalty"), 1.5, {"lore.output.token_ids_sha256"}),
        # ... and one Chrysalis never sets is named directly
        (("lore", "generation_config", "num_beams"), 4, {"lore.generation_config.num_beams"}),
        (("lore", "model", "weights_sha256"), "11" * 32, {"lore.model.weights_sha256"}),
        (("seed", "derived_seed"), 1, {"seed.derived_seed"}),
    ],
)
def test_tampering_names_the_field(sampled, fresh_factory, path, value, fields):
    data = json.loads((sampled / "receipt.json").read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = verify(data)
    assert not result.match and result.exit_code == EXIT_MISMATCH
    assert fields <= {m.field for m in result.mismatches}, result.note
    assert "MISMATCH" in result.note


def test_gpu_receipt_says_cpu_replay_cannot_reproduce_bits(sampled, fresh_factory):
    data = json.loads((sampled / "receipt.json").read_text())
    data["image"]["runtime"].update(device="cuda", dtype="bfloat16", canonical=False)
    result = verify(data)
    assert result.reproducible is False and result.match is False and result.mismatches == []
    assert result.exit_code == EXIT_NOT_REPRODUCIBLE
    assert "produced on cuda/bfloat16" in result.note and "cannot reproduce its bits" in result.note
    assert "image.model.weights_sha256" in result.checked  # device-independent fields are still checked
    assert "image.output.pixels_sha256" not in result.checked
    assert "lore.output.token_ids_sha256" in result.checked  # the CPU lore part is replayed as usual


def test_evolution_receipt_needs_the_previous_image(tiny_sd_dir, fresh_factory):
    s = ModelSettings(
        image_backend="diffusers",
        image_model=str(tiny_sd_dir),
        image_steps=4,
        device="cpu",
        image_batch_size=1,
    )
    gen = fresh_factory.load_image_generator(s)
    seed = derive_seed(bytes(32), 3)
    with torch_threads(1):
        [base] = gen.generate([ImageRequest({"mood": "serene", "element": "fire"}, seed)])
        req = ImageRequest({"mood": "fierce", "element": "fire"}, seed, init_image=base.png, strength=0.5)
        [evolved] = gen.generate([req])
    r = build_receipt(
        onchain_seed=bytes(32),
        token_id=3,
        image=image_record(gen, req, evolved, init_image_cid="bafkreiexample"),
    )
    assert r.image.request["init_image_cid"] == "bafkreiexample" and r.image.request["strength"] == 0.5
    with pytest.raises(ConfigError, match="init_image_loader"):
        verify(r)
    seen = []

    def loader(sha: str, cid: str | None) -> bytes:
        seen.append((sha, cid))
        return base.png

    assert verify(r, init_image_loader=loader).match and seen[0][1] == "bafkreiexample"
    wrong = verify(r, init_image_loader=lambda sha, cid: evolved.png)
    assert [m.field for m in wrong.mismatches] == ["image.request.init_image_sha256"]


def test_non_canonical_cpu_receipt_is_replayed_with_its_thread_count(tiny_lm, fresh_factory):
    s = ModelSettings(
        lore_backend="transformers", lore_model=str(tiny_lm), device="cpu", lore_max_new_tokens=8
    )
    writer = fresh_factory.load_lore_writer(s)
    seed = derive_seed(bytes(32), 9)
    req = LoreRequest("Pip", 0, {"mood": "gloomy", "element": "air"}, {}, seed)
    other = LoreRequest("Pop", 0, {"mood": "radiant", "element": "earth"}, {}, seed)
    with torch_threads(2):
        lore, _ = writer.write([req, other])
    r = build_receipt(onchain_seed=bytes(32), token_id=9, lore=lore_record(writer, req, lore))
    assert not r.canonical and r.lore.runtime["batch_size"] == 2 and r.lore.runtime["threads"] == 2
    result = verify(r)
    assert result.match, result.note
    assert "not canonical (threads=2, batch_size=2)" in result.note


def test_an_image_made_with_two_threads_among_other_requests_replays_with_two(tiny_sd_dir, fresh_factory):
    """The generator pins its own thread count, so verify must rebuild it with the receipt's (not the canonical 1,
    nor whatever count is set around the call); and an image made in a call with others is replayed alone."""
    s = ModelSettings(
        image_backend="diffusers", image_model=str(tiny_sd_dir), image_steps=4, device="cpu", threads=2
    )
    gen = fresh_factory.load_image_generator(s)
    seed = derive_seed(bytes(32), 5)
    req = ImageRequest({"mood": "gloomy", "element": "water"}, seed)
    other = ImageRequest({"mood": "radiant", "element": "earth"}, derive_seed(bytes(32), 6))
    with torch_threads(1):
        _, img, _ = gen.generate([other, req, req])
    r = build_receipt(onchain_seed=bytes(32), token_id=5, image=image_record(gen, req, img))
    assert r.image.runtime["threads"] == 2 and r.image.runtime["batch_size"] == 1 and not r.canonical
    with torch_threads(1):
        result = verify(r)
    assert result.match, result.note
    assert "not canonical (threads=2, batch_size=1)" in result.note


def test_models_kept_elsewhere_are_found_by_override_and_still_digest_checked(
    sampled, tmp_path, fresh_factory
):
    import shutil

    r = InferenceReceipt.load(sampled / "receipt.json")
    image_copy = shutil.copytree(r.image.model.model_id, tmp_path / "sd-copy")
    lore_copy = shutil.copytree(r.lore.model.model_id, tmp_path / "lm-copy")
    result = verify(r, image_model=str(image_copy), lore_model=str(lore_copy))
    assert result.match, result.note
    # a different model at the override path is caught by its digest
    weights = image_copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    fresh_factory.clear_cache()
    bad = verify(r, image_model=str(image_copy), lore_model=str(lore_copy))
    assert "image.model.weights_sha256" in {m.field for m in bad.mismatches}
