"""Genesis reports: the rarity report (counts per trait value against the target) and a contact sheet.

``rarity.md`` lists, for every trait value, its target share, the exact count the table asks for at this size,
the count the assignment dealt and the difference (always 0: counts are exact; the column is there so a reader
can see it). ``contact-sheet.png`` tiles an evenly spaced sample of the generated images, labelled with their
item numbers. ``gates.md`` / ``gates.json`` (:func:`gate_genesis`) say what the quality gates caught.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from agent.errors import NotFoundError
from agent.genesis.assign import Assignment
from agent.genesis.traits import TraitTable
from agent.settings import GatesSettings

SHEET_NAME = "contact-sheet.png"
TILE = 128
LABEL = 16


@dataclass(frozen=True)
class RarityRow:
    """One trait value in the rarity report."""

    trait: str
    value: str
    target_share: float
    target_count: int
    actual_count: int

    @property
    def off_by(self) -> int:
        return self.actual_count - self.target_count


def rarity_rows(table: TraitTable, assignment: Assignment) -> list[RarityRow]:
    """Every value of every trait, in table order, with target and actual counts."""
    target = table.counts(assignment.size)
    actual = assignment.value_counts()
    return [
        RarityRow(
            trait=spec.name,
            value=value,
            target_share=float(spec.target_share(value)),
            target_count=target[spec.name][value],
            actual_count=actual[spec.name][value],
        )
        for spec in table.traits
        for value in spec.values
    ]


def rarity_markdown(table: TraitTable, assignment: Assignment) -> str:
    """The rarity report as Markdown."""
    size = assignment.size
    lines = [
        f"# Rarity report: {table.name}, {size} tokens",
        "",
        f"Seed `{assignment.seed}`, table sha256 `{table.sha256}`, assignment sha256 `{assignment.sha256}`.",
        "",
    ]
    if table.unique:
        combos = {tuple(item[t] for t in table.unique) for item in assignment.items}
        lines += [
            (
                f"Unique over {', '.join(table.unique)}: {len(combos)} distinct combinations for {size} tokens "
                f"({table.combinations(size)} possible)."
            ),
            "",
        ]
    lines += [
        "| trait | value | target share | target count | actual count | actual share | off by |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rarity_rows(table, assignment):
        lines.append(
            f"| {row.trait} | {row.value} | {row.target_share:.2%} | {row.target_count} | {row.actual_count} | "
            f"{row.actual_count / size:.2%} | {row.off_by:+d} |"
        )
    lines += [
        "",
        (
            "Target counts are the table's weights rounded to the size by largest remainder (every value with a "
            "positive weight gets at least one token); actual counts are what the assignment dealt."
        ),
        "",
    ]
    return "\n".join(lines)


def sample_items(size: int, sample: int) -> list[int]:
    """``sample`` item numbers spread evenly over ``0 .. size-1`` (all of them when ``sample >= size``)."""
    if sample >= size:
        return list(range(size))
    if sample == 1:
        return [0]
    return sorted({round(k * (size - 1) / (sample - 1)) for k in range(sample)})


def contact_sheet(out_dir: Path, *, sample: int = 64, columns: int | None = None) -> Path:
    """Tile an evenly spaced sample of ``out_dir/images/<item>.png`` into ``out_dir/contact-sheet.png``.

    Raises:
        NotFoundError: an image of the sample is missing (the genesis is not finished).
    """
    images = out_dir / "images"
    size = sum(1 for p in images.glob("*.png")) if images.is_dir() else 0
    if size == 0:
        raise NotFoundError(f"no images in {images}", hint="run `chrysalis genesis` to generate them first")
    items = sample_items(size, sample)
    cols = columns or math.ceil(math.sqrt(len(items)))
    rows = math.ceil(len(items) / cols)
    sheet = Image.new("RGB", (cols * TILE, rows * (TILE + LABEL)), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, item in enumerate(items):
        path = images / f"{item}.png"
        if not path.is_file():
            raise NotFoundError(
                f"image {path} is missing", hint="finish the genesis run (rerun the same command)"
            )
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            tile = im.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
        x, y = (k % cols) * TILE, (k // cols) * (TILE + LABEL)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + TILE + 2), f"#{item}", fill=(220, 220, 220), font=font)
    out = out_dir / SHEET_NAME
    sheet.save(out, format="PNG")
    return out


# -- quality gates ---------------------------------------------------------------------------------------------

GATES_NAME = "gates.md"
GATES_JSON = "gates.json"


@dataclass(frozen=True)
class GateRow:
    """One gate over a genesis: how many items it failed on the first try, rerolls spent, items left flagged."""

    gate: str
    failed_first_try: int
    rerolls: int
    flagged: int


def gate_genesis(out_dir: Path, settings: GatesSettings) -> list[GateRow]:
    """Run the quality gates (:mod:`agent.gates`) over every item of the genesis in ``out_dir``, in item order,
    and write ``gates.json`` (every failing item's report) and ``gates.md`` (the table :func:`gates_markdown`).

    Near duplicates are looked for within the genesis: each item is compared with the items before it (an item is
    its own token, so nothing is excluded). The image backend's metrics come from each receipt's model. Genesis
    items are not rerolled here (their receipts are committed to by the provenance hash): a failing item is
    reported as flagged, for the operator (or a curator, in review mode) to decide on. Deterministic: the same
    genesis gives the same files.

    Raises:
        NotFoundError: the genesis has no ``assignment.json`` or an item's image or receipt is missing.
    """
    import json

    from agent.gates import GateReport, Gates

    assignment = out_dir / "assignment.json"
    if not assignment.is_file():
        raise NotFoundError(f"{out_dir} holds no genesis", hint="run `chrysalis genesis` first")
    items = json.loads(assignment.read_text())["items"]
    gates = Gates(settings)
    failed: dict[str, int] = {}
    reports = []
    for record in items:
        item = int(record["item"])
        png_path, receipt_path = out_dir / "images" / f"{item}.png", out_dir / "receipts" / f"{item}.json"
        if not (png_path.is_file() and receipt_path.is_file()):
            raise NotFoundError(
                f"genesis item {item} has no image or receipt in {out_dir}",
                hint="run the genesis again to finish it (it resumes)",
            )
        png = png_path.read_bytes()
        receipt = json.loads(receipt_path.read_text())
        lore = ((receipt.get("lore") or {}).get("output") or {}).get("text")
        backend = ((receipt.get("image") or {}).get("model") or {}).get("backend")
        results = gates.check(png=png, lore=lore, traits=record["traits"], backend=backend, token_id=item)
        report = GateReport(tuple(results))
        gates.accept(item, 0, f"images/{item}.png", png)
        for r in report.failed:
            failed[r.name] = failed.get(r.name, 0) + 1
        if not report.passed:
            reports.append({"item": item, **report.to_json()})
    names = [r.name for r in results] if items else []
    rows = [
        GateRow(n, failed.get(n, 0), 0, failed.get(n, 0)) for n in dict.fromkeys([*names, *sorted(failed)])
    ]
    atomic = out_dir / GATES_JSON
    atomic.write_text(
        json.dumps(
            {"items": len(items), "flagged": reports, "table": [r.__dict__ for r in rows]},
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    (out_dir / GATES_NAME).write_text(gates_markdown(rows, len(items), len(reports)))
    return rows


def gates_markdown(rows: list[GateRow], size: int, flagged: int) -> str:
    """The genesis report's gates table."""
    lines = [
        f"# Quality gates: {flagged} of {size} items flagged",
        "",
        "| gate | failed first try | rerolls | flagged |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.gate} | {r.failed_first_try} | {r.rerolls} | {r.flagged} |" for r in rows]
    return "\n".join(lines) + "\n"
