"""Genesis and the quality gates: a planted duplicate and planted bad lore are reported; an item a gate fails is
rerolled publicly (its seed recomputable from the genesis seed and the reroll), its traits kept, and the same
genesis config gives the same manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.errors import IntegrityError
from agent.gates import GateResult, reroll_seed
from agent.generate.receipt import InferenceReceipt
from agent.genesis.assign import check_item_seed, genesis_seed, item_seed
from agent.genesis.provenance import Reveal, item_record, record_sha256
from agent.genesis.report import gate_genesis
from agent.genesis.reveal import publish_genesis
from agent.genesis.run import run_genesis
from agent.ipfs.importer import import_file
from agent.ipfs.repo import IpfsRepo
from agent.metadata import parse_metadata
from agent.settings import GatesSettings, ModelSettings
from tests.genesis.conftest import small_table

SIZE = 6
KNOWN_BAD: set[str] = set()
"""sha256 of the PNGs :func:`known_bad` fails: the images a known seed makes (the test fills it in)."""
PLUGIN = f"{__name__}:known_bad"


def known_bad(png: bytes, traits: Mapping[str, str], backend: str | None) -> list[GateResult]:
    """A gate plug-in that fails exactly the images listed in :data:`KNOWN_BAD`."""
    digest = hashlib.sha256(png).hexdigest()
    if digest in KNOWN_BAD:
        return [
            GateResult("known_bad", False, digest[:12], None, f"image {digest[:12]} is on the test's list")
        ]
    return [GateResult("known_bad", True, None, None, "not on the list")]


@pytest.fixture(scope="module")
def models(tiny_lm: Path) -> ModelSettings:
    return ModelSettings(image_steps=4, lore_backend="transformers", lore_model=str(tiny_lm),
                         lore_max_new_tokens=8, device="cpu", threads=1)  # fmt: skip


def lenient(**extra: object) -> GatesSettings:
    """Gates that the tiny test models' output passes (4 DDIM steps miss the mood palettes), plus ``extra``."""
    return GatesSettings(lore_min_chars=0, min_symmetry=0.0, min_palette=0.0, **extra)  # type: ignore[arg-type]


def genesis(out: Path, models: ModelSettings, gates: GatesSettings, workers: int = 1):
    return run_genesis(small_table(), SIZE, "gates", out, models=models, batch_size=SIZE, sheet_size=0,
                       progress=False, gates=gates, workers=workers)  # fmt: skip


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, models: ModelSettings) -> Path:
    """A genesis every item of which passes the lenient gates on its first try."""
    out = tmp_path_factory.mktemp("clean") / "genesis"
    genesis(out, models, lenient())
    return out


def test_genesis_reports_planted_duplicates_and_bad_lore(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "genesis"
    shutil.copytree(clean, out)
    settings = lenient(blocklist=["forbidden"])
    baseline = {r.gate: r.flagged for r in gate_genesis(out, settings)}
    assert baseline["near_duplicate"] == 0

    # plant: item 3's image is item 1's; item 2's lore leaks the template and says a blocked word
    shutil.copy(out / "images" / "1.png", out / "images" / "3.png")
    receipt = json.loads((out / "receipts" / "2.json").read_text())
    receipt["lore"]["output"]["text"] = "It is forbidden. It is forbidden. <|im_end|>"
    (out / "receipts" / "2.json").write_text(json.dumps(receipt))

    rows = {r.gate: r for r in gate_genesis(out, settings)}  # no models: the files are judged as they are
    assert rows["near_duplicate"].flagged == 1
    for gate in ("lore_leakage", "lore_blocklist", "lore_repetition"):
        assert rows[gate].flagged == baseline.get(gate, 0) + 1, gate
    report = json.loads((out / "gates.json").read_text())
    by_item = {f["item"]: f for f in report["flagged"]}
    assert "near_duplicate: 0 bits from token 1 stage 0" in by_item[3]["reasons"][0]
    assert by_item[3]["kept_reroll"] == 0 and by_item[3]["outcome"] == "still failing"
    assert "| near_duplicate | 1 | 0 | 1 | 0 |" in (out / "gates.md").read_text()


def test_a_planted_near_duplicate_is_rerolled_with_the_runs_models(
    clean: Path, models: ModelSettings, tmp_path: Path
) -> None:
    """Item 3's image replaced by item 1's: the near-duplicate gate catches it and reroll 1 of the genesis seed,
    made by the run's own models, passes."""
    from agent.genesis.assign import assign
    from agent.genesis.run import genesis_models, spec_of
    from agent.genesis.worker import BatchMaker

    out = tmp_path / "genesis"
    shutil.copytree(clean, out)
    shutil.copy(out / "images" / "1.png", out / "images" / "3.png")
    assignment = assign(small_table(), SIZE, "gates")
    maker = BatchMaker(spec_of(small_table(), assignment, genesis_models(models, SIZE), out, None))

    def remake(item: int, reroll: int):
        row = (item, assignment.items[item], item_seed(assignment.genesis_seed, item, reroll))
        return maker.make(0, [row], reroll=reroll).outputs[0]

    rows = {r.gate: r for r in gate_genesis(out, lenient(), remake=remake)}
    assert (rows["near_duplicate"].failed_first_try, rows["near_duplicate"].passed_after_reroll) == (1, 1)
    assert rows["near_duplicate"].flagged == 0
    report = json.loads((out / "gates.json").read_text())
    (kept,) = report["rerolled"]
    assert kept["item"] == 3 and kept["kept_reroll"] == 1
    assert kept["history"][0][0].startswith("near_duplicate: 0 bits from token 1 stage 0")
    assert (out / "images" / "3.png").read_bytes() != (out / "images" / "1.png").read_bytes()
    receipt = json.loads((out / "receipts" / "3.json").read_text())
    check_item_seed(assignment.genesis_seed, 3, 1, receipt)


def test_an_item_a_gate_fails_is_rerolled_publicly_and_passes(
    clean: Path, models: ModelSettings, tmp_path: Path
) -> None:
    """Item 2's first image is on the plug-in's list: the genesis rerolls it (reroll 1) and it passes; everything
    else, the traits and the rarity included, is the clean genesis'; a second run gives the same manifest."""
    item = 2
    first_try = (clean / "images" / f"{item}.png").read_bytes()
    KNOWN_BAD.clear()
    KNOWN_BAD.add(hashlib.sha256(first_try).hexdigest())
    out = tmp_path / "rerolled"
    result = genesis(out, models, lenient(metrics=[PLUGIN]))

    # the report: caught, rerolled and passed, nothing still failing
    rows = {r.gate: r for r in result.gates or []}
    assert (rows["known_bad"].failed_first_try, rows["known_bad"].passed_after_reroll) == (1, 1)
    assert (rows["known_bad"].flagged, rows["known_bad"].rerolls) == (0, 1)
    md = (out / "gates.md").read_text()
    assert f"1 of {SIZE} items caught, 1 rerolled and passed, 0 still failing" in md
    assert f"- item {item}: kept reroll 1: passed; reroll 0 failed (known_bad: image " in md
    report = json.loads((out / "gates.json").read_text())
    assert (report["caught"], report["rerolled_passed"], report["still_failing"]) == (1, 1, 0)
    assert report["flagged"] == [] and [r["item"] for r in report["rerolled"]] == [item]
    kept = report["rerolled"][0]
    assert (
        kept["kept_reroll"] == 1 and kept["passed"] and kept["history"][0][0].startswith("known_bad: image ")
    )

    # the rerolled item: a new image, its seed the public reroll of the genesis seed, its traits unchanged
    key = genesis_seed("gates")
    png = (out / "images" / f"{item}.png").read_bytes()
    assert png != first_try
    receipt = InferenceReceipt.load(out / "receipts" / f"{item}.json")
    assert receipt.seed.onchain_seed == reroll_seed(key, 1) and receipt.seed.token_id == item
    assert receipt.seed.derived_seed == item_seed(key, item, 1) != item_seed(key, item)
    check_item_seed(key, item, 1, receipt.to_json())
    with pytest.raises(IntegrityError, match="is reroll 1 of the genesis seed, not reroll 0"):
        check_item_seed(key, item, 0, receipt.to_json())
    assert (out / "assignment.json").read_text() == (clean / "assignment.json").read_text()
    assert (out / "rarity.md").read_text() == (clean / "rarity.md").read_text()  # exact counts unchanged

    # the manifest: only the rerolled item's record changed; it says its reroll, and recomputes from it
    provenance = json.loads((out / "provenance.json").read_text())
    before = json.loads((clean / "provenance.json").read_text())
    assert provenance["rerolls"] == {str(item): 1} and "rerolls" not in before
    changed = [i for i in range(SIZE) if provenance["record_sha256"][i] != before["record_sha256"][i]]
    assert changed == [item]
    traits = json.loads((out / "assignment.json").read_text())["items"][item]["traits"]
    assert receipt.lore is not None
    record = item_record(
        item=item, traits=traits, seed=item_seed(key, item, provenance["rerolls"][str(item)]),
        image_cid=str(import_file(png).cid), png_sha256=hashlib.sha256(png).hexdigest(),
        lore_sha256=hashlib.sha256(receipt.lore.output["text"].encode()).hexdigest(),
        receipt_sha256=receipt.sha256(), reroll=1,
    )  # fmt: skip
    assert record_sha256(record) == provenance["record_sha256"][item]

    # determinism: the same config (here with two worker processes) gives the same files and manifest; a rerun
    # in the same directory changes nothing
    again = tmp_path / "again"
    assert (
        genesis(again, models, lenient(metrics=[PLUGIN]), workers=2).provenance_sha256
        == result.provenance_sha256
    )
    for name in ("provenance.json", "gates.json", "gates.md", f"images/{item}.png", f"receipts/{item}.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    rerun = genesis(out, models, lenient(metrics=[PLUGIN]))
    assert rerun.generated == 0 and rerun.provenance_sha256 == result.provenance_sha256
    assert (out / "gates.json").read_text() == json.dumps(report, indent=1, sort_keys=True) + "\n"

    # publishing checks every receipt's seed against the reroll the ledger records, and accepts this one
    reveal = Reveal.of(block_number=1, block_hash="0x" + "00" * 32, chain_id=0, size=SIZE,
                       provenance_sha256=result.provenance_sha256)  # fmt: skip
    repo = IpfsRepo(tmp_path / "repo", sync=False)
    published = publish_genesis(out, repo, reveal=reveal)
    cid = repo.resolve(f"{published.dir_cid}/{item + 1}")  # offset 0: token t shows item t - 1
    metadata = parse_metadata(b"".join(repo.cat(cid)), cid=str(cid))
    assert metadata.receipt["seed"]["onchain_seed"] == reroll_seed(key, 1)


def test_an_item_still_failing_after_every_reroll_stays_flagged(
    clean: Path, models: ModelSettings, tmp_path: Path
) -> None:
    """Both of item 2's tries are on the list and max_rerolls is 1: the last try is kept, flagged with both
    tries' reasons; a resumed run with other gates is refused (they decide what is rerolled)."""
    item = 2
    probe = tmp_path / "probe"
    KNOWN_BAD.clear()
    KNOWN_BAD.add(hashlib.sha256((clean / "images" / f"{item}.png").read_bytes()).hexdigest())
    genesis(probe, models, lenient(metrics=[PLUGIN], max_rerolls=1))
    KNOWN_BAD.add(hashlib.sha256((probe / "images" / f"{item}.png").read_bytes()).hexdigest())

    out = tmp_path / "flagged"
    result = genesis(out, models, lenient(metrics=[PLUGIN], max_rerolls=1))
    rows = {r.gate: r for r in result.gates or []}
    assert (rows["known_bad"].failed_first_try, rows["known_bad"].passed_after_reroll) == (1, 0)
    assert rows["known_bad"].flagged == 1
    report = json.loads((out / "gates.json").read_text())
    assert (report["caught"], report["rerolled_passed"], report["still_failing"]) == (1, 0, 1)
    (flagged,) = report["flagged"]
    assert flagged["item"] == item and flagged["kept_reroll"] == 1 and flagged["outcome"] == "still failing"
    assert len(flagged["history"]) == 1 and not flagged["passed"]
    assert (
        f"1 of {SIZE} items caught, 0 rerolled and passed, 1 still failing" in (out / "gates.md").read_text()
    )
    assert (out / "rarity.md").read_text() == (clean / "rarity.md").read_text()

    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="gated with gates.max_rerolls = 1, not 2") as err:
        genesis(out, models, lenient(metrics=[PLUGIN]))
    assert err.value.hint is not None and "[gates]" in err.value.hint
