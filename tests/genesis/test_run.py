"""Generating a small genesis with real models: files, receipts, provenance, determinism and resumption."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from agent.errors import ConfigError
from agent.generate.receipt import InferenceReceipt
from agent.generate.seed import derive_seed
from agent.genesis.assign import genesis_seed
from agent.genesis.ledger import Ledger
from agent.genesis.provenance import item_record, provenance_hash, record_sha256
from agent.genesis.run import genesis_snapshot, run_genesis
from agent.ipfs.importer import import_file

SIZE = 24
BATCH = 8


@pytest.fixture(scope="module")
def generated(tmp_path_factory, models):
    """One 24-item genesis (3 batches), shared by the read-only tests of this module."""
    from tests.genesis.conftest import small_table

    out = tmp_path_factory.mktemp("genesis") / "g"
    result = run_genesis(
        small_table(), SIZE, "seed-a", out, models=models, batch_size=BATCH, sheet_size=9, progress=False
    )
    return out, result


def test_every_item_has_an_image_a_receipt_and_a_committed_record(generated, table) -> None:
    out, result = generated
    assert result.generated == SIZE and result.resumed == 0
    key = genesis_seed("seed-a")
    assignment = json.loads((out / "assignment.json").read_text())["items"]
    digests = []
    for item in range(SIZE):
        png = (out / "images" / f"{item}.png").read_bytes()
        with Image.open(out / "images" / f"{item}.png") as im:
            assert im.size == (512, 512)
        receipt = InferenceReceipt.load(out / "receipts" / f"{item}.json")
        traits = assignment[item]["traits"]
        # the seed chain: derive_seed(genesis seed, item), the same for image and lore
        assert receipt.seed.onchain_seed == "0x" + key.hex() and receipt.seed.token_id == item
        assert receipt.seed.derived_seed == derive_seed(key, item) == int(assignment[item]["seed"])
        assert receipt.image is not None and receipt.lore is not None
        assert (
            receipt.image.request["traits"] == traits
            and receipt.image.output["png_sha256"] == hashlib.sha256(png).hexdigest()
        )
        assert receipt.image.config["class_label"] == ["serene", "radiant", "fierce", "gloomy"].index(
            traits["mood"]
        ) * 4 + ["fire", "water", "earth", "air"].index(traits["element"])
        assert receipt.lore.request["traits"] == traits and receipt.lore.request["facts"] == {
            "origin": "newly hatched"
        }
        assert receipt.lore.output["text"].startswith("Testling · stage 0 · ")
        assert receipt.input_snapshot_sha256 == genesis_snapshot(table.sha256, SIZE, item).sha256
        record = item_record(
            item=item,
            traits=traits,
            seed=receipt.seed.derived_seed,
            image_cid=str(import_file(png).cid),
            png_sha256=hashlib.sha256(png).hexdigest(),
            lore_sha256=hashlib.sha256(receipt.lore.output["text"].encode()).hexdigest(),
            receipt_sha256=receipt.sha256(),
        )
        digests.append(record_sha256(record))
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["record_sha256"] == digests
    assert provenance["provenance_sha256"] == provenance_hash(digests) == result.provenance_sha256


def test_reports_are_written(generated) -> None:
    out, _ = generated
    rarity = (out / "rarity.md").read_text()
    # 24 x 3/10 = 7.2 and 24 x 2/10 = 4.8: floors 7, 7, 4, 4 and the two tokens left go to the .8 remainders
    assert "| mood | serene | 30.00% | 7 | 7 | 29.17% | +0 |" in rarity
    assert "| mood | gloomy | 20.00% | 5 | 5 | 20.83% | +0 |" in rarity
    assert "Unique over mood, element, background: 24 distinct combinations for 24 tokens" in rarity
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.size == (3 * 128, 3 * (128 + 16))  # 9 items, 3 x 3


def test_same_seed_same_collection_hash(generated, tmp_path, models, table) -> None:
    _, first = generated
    again = run_genesis(
        table,
        SIZE,
        "seed-a",
        tmp_path / "again",
        models=models,
        batch_size=BATCH,
        sheet_size=0,
        progress=False,
    )
    assert again.provenance_sha256 == first.provenance_sha256
    assert again.assignment_sha256 == first.assignment_sha256


@pytest.mark.slow
def test_two_worker_processes_make_the_same_collection(generated, tmp_path, models, table) -> None:
    """Batches made in two spawned workers (one torch thread each) are bit-identical to batches made here."""
    src, first = generated
    out = tmp_path / "two"
    two = run_genesis(
        table, SIZE, "seed-a", out, models=models, batch_size=BATCH, workers=2, sheet_size=0, progress=False
    )
    assert two.provenance_sha256 == first.provenance_sha256 and two.generated == SIZE
    assert two.timings.workers == 2 and two.timings.threads == 1
    assert two.timings.images_cpu > 0 and two.timings.lore_cpu > 0 and two.timings.load_models > 0
    for item in range(SIZE):
        for name in (f"images/{item}.png", f"receipts/{item}.json"):
            assert (out / name).read_bytes() == (src / name).read_bytes(), name
    receipt = InferenceReceipt.load(out / "receipts" / "0.json")
    assert receipt.image is not None and receipt.lore is not None
    # the receipt describes how it was made: one thread; the genesis batch as the lore batch, while each image
    # goes through the sprite model alone on the CPU (a batched image could not be replayed bit for bit)
    assert receipt.image.runtime["threads"] == 1 and receipt.image.runtime["batch_size"] == 1
    assert receipt.lore.runtime["threads"] == 1 and receipt.lore.runtime["batch_size"] == BATCH
    assert receipt.lore.runtime["prefix_tokens"] > 0
    with Ledger.read(out) as ledger:
        assert ledger.params()["models"]["lore_batch_size"] == str(BATCH)


def test_genesis_batches_and_steps_unless_the_settings_say_otherwise(models) -> None:
    from agent.genesis.run import GENESIS_IMAGE_STEPS, genesis_models
    from agent.settings import ModelSettings

    plain = genesis_models(ModelSettings(), 64)
    assert plain.lore_batch_size == plain.image_batch_size == 64 and plain.image_steps == GENESIS_IMAGE_STEPS
    explicit = genesis_models(models.model_copy(update={"lore_batch_size": 4}), 64)
    assert explicit.lore_batch_size == 4 and explicit.image_batch_size == 64 and explicit.image_steps == 4
    # a production pipeline keeps its own default number of steps
    assert genesis_models(ModelSettings(image_backend="diffusers", image_model="x"), 8).image_steps is None


def test_other_seed_other_collection(generated, tmp_path, models, table) -> None:
    _, first = generated
    other = run_genesis(
        table, 8, "seed-b", tmp_path / "b", models=models, batch_size=BATCH, sheet_size=0, progress=False
    )
    assert other.provenance_sha256 != first.provenance_sha256


def test_a_finished_run_is_skipped_and_a_damaged_batch_is_redone(generated, tmp_path, models, table) -> None:
    src, first = generated
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(src, out)
    rerun = run_genesis(
        table, SIZE, "seed-a", out, models=models, batch_size=BATCH, sheet_size=0, progress=False
    )
    assert (
        rerun.generated == 0 and rerun.resumed == SIZE and rerun.provenance_sha256 == first.provenance_sha256
    )

    (out / "images" / "9.png").write_bytes(b"not the image")  # batch 1 (items 8..15)
    (out / "receipts" / "17.json").unlink()  # batch 2
    repaired = run_genesis(
        table, SIZE, "seed-a", out, models=models, batch_size=BATCH, sheet_size=0, progress=False
    )
    assert repaired.generated == 2 * BATCH and repaired.resumed == SIZE - 2 * BATCH
    assert repaired.provenance_sha256 == first.provenance_sha256
    assert (out / "images" / "9.png").read_bytes() == (src / "images" / "9.png").read_bytes()


def test_a_directory_holding_another_run_is_refused(generated, tmp_path, models, table) -> None:
    src, _ = generated
    for kwargs, key in (
        ({"seed": "seed-b"}, "seed"),
        ({"batch_size": 4}, "batch_size"),
        ({"size": 20}, "size"),
    ):
        args = {"seed": "seed-a", "batch_size": BATCH, "size": SIZE, **kwargs}
        with pytest.raises(ConfigError, match=f"holds a genesis run with {key} = ") as e:
            run_genesis(
                table,
                args["size"],
                args["seed"],
                src,
                models=models,
                batch_size=args["batch_size"],
                sheet_size=0,
                progress=False,
            )
        assert "another --out" in (e.value.hint or "")
    other_models = models.model_copy(update={"image_steps": 3})
    with pytest.raises(ConfigError, match="models"):
        run_genesis(
            table, SIZE, "seed-a", src, models=other_models, batch_size=BATCH, sheet_size=0, progress=False
        )


def test_ledger_records_the_run(generated) -> None:
    out, result = generated
    with Ledger.read(out) as ledger:
        params = ledger.params()
        assert params["size"] == SIZE and params["seed"] == "seed-a" and params["batch_size"] == BATCH
        assert params["assignment_sha256"] == result.assignment_sha256
        assert (
            params["weights"]["image"]
            == json.loads(
                (Path(__file__).parents[2] / "agent/generate/shipped/sprites32/manifest.json").read_text()
            )["weights_sha256"]
        )
        assert ledger.done_count() == SIZE and ledger.pending_batches() == []


def test_bad_batch_size_or_worker_count_is_refused(tmp_path, models, table) -> None:
    with pytest.raises(ConfigError, match="batch size 0"):
        run_genesis(table, 4, "x", tmp_path / "z", models=models, batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="0 workers") as e:
        run_genesis(table, 4, "x", tmp_path / "z", models=models, workers=0, progress=False)
    assert "--workers 1 or more" in (e.value.hint or "")


def test_two_runs_in_one_directory_do_not_race(generated, models, table) -> None:
    src, _ = generated
    with Ledger.read(src) as ledger:
        params = ledger.params()
    params.pop("weights")
    with Ledger.open(src, params, [], batch_size=BATCH):  # the first run holds the directory
        with pytest.raises(ConfigError, match="another genesis is running in") as e:
            run_genesis(
                table, SIZE, "seed-a", src, models=models, batch_size=BATCH, sheet_size=0, progress=False
            )
        assert "wait for it" in (e.value.hint or "")
    resumed = run_genesis(
        table, SIZE, "seed-a", src, models=models, batch_size=BATCH, sheet_size=0, progress=False
    )
    assert resumed.generated == 0  # released: the directory is usable again


def test_a_different_thread_count_names_the_setting(generated, models, table) -> None:
    src, _ = generated
    with pytest.raises(ConfigError, match="torch_threads = 1, not 2") as e:
        run_genesis(
            table,
            SIZE,
            "seed-a",
            src,
            models=models.model_copy(update={"threads": 2}),
            batch_size=BATCH,
            sheet_size=0,
            progress=False,
        )
    assert "CHRYSALIS_MODELS__THREADS" in (e.value.hint or "")
