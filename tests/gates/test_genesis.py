"""Genesis reports what the gates caught: a planted duplicate image and planted bad lore are flagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent.genesis.run import run_genesis
from agent.settings import GatesSettings, ModelSettings
from tests.genesis.conftest import small_table


def test_genesis_reports_planted_duplicates_and_bad_lore(tiny_lm: Path, tmp_path: Path) -> None:
    models = ModelSettings(image_steps=10, lore_backend="transformers", lore_model=str(tiny_lm),
                           lore_max_new_tokens=8, device="cpu", threads=1)  # fmt: skip
    out = tmp_path / "genesis"
    settings = GatesSettings(lore_min_chars=0, min_symmetry=0.0, min_palette=0.0, blocklist=["forbidden"])
    clean = run_genesis(small_table(), 6, "gates", out, models=models, batch_size=6, sheet_size=0,
                        progress=False, gates=settings)  # fmt: skip
    assert clean.gates is not None
    baseline = {r.gate: r.flagged for r in clean.gates}
    assert baseline["near_duplicate"] == 0

    # plant: item 3's image is item 1's; item 2's lore leaks the template and says a blocked word
    shutil.copy(out / "images" / "1.png", out / "images" / "3.png")
    receipt = json.loads((out / "receipts" / "2.json").read_text())
    receipt["lore"]["output"]["text"] = "It is forbidden. It is forbidden. <|im_end|>"
    (out / "receipts" / "2.json").write_text(json.dumps(receipt))
    from agent.genesis.report import gate_genesis

    rows = {r.gate: r for r in gate_genesis(out, settings)}
    assert rows["near_duplicate"].flagged == 1
    for gate in ("lore_leakage", "lore_blocklist", "lore_repetition"):
        assert rows[gate].flagged == baseline.get(gate, 0) + 1, gate
    report = json.loads((out / "gates.json").read_text())
    by_item = {f["item"]: f for f in report["flagged"]}
    assert "near_duplicate: 0 bits from token 1 stage 0" in by_item[3]["reasons"][0]
    assert "| near_duplicate | 1 | 0 | 1 |" in (out / "gates.md").read_text()
