"""Genesis reports: the rarity report (counts per trait value against the target) and a contact sheet.

``rarity.md`` lists, for every trait value, its target share, the exact count the table asks for at this size,
the count the assignment dealt and the difference (always 0: counts are exact; the column is there so a reader
can see it). ``contact-sheet.png`` tiles an evenly spaced sample of the generated images, labelled with their
item numbers. ``gates.md`` / ``gates.json`` (:func:`gate_genesis`) say what the quality gates caught, which items a
reroll made pass and which still fail (flagged for review).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from agent.errors import NotFoundError
from agent.genesis.assign import Assignment
from agent.genesis.ledger import ItemOutput, Ledger
from agent.genesis.traits import TraitTable
from agent.genesis.worker import atomic_write
from agent.settings import GatesSettings

if TYPE_CHECKING:
    from agent.gates import GateReport

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
    """One gate over a genesis: the items it failed on their first try, how many of those a reroll made pass, the
    items whose kept try still fails it (flagged), and the rerolls spent on the items it caught."""

    gate: str
    failed_first_try: int
    passed_after_reroll: int
    flagged: int
    rerolls: int


Remake = Callable[[int, int], ItemOutput]
"""``remake(item, reroll)``: generate ``item`` again with that public reroll of the genesis seed, write its files
and return its outputs (:func:`agent.genesis.run.run_genesis` makes one from the run's models)."""


def gate_genesis(
    out_dir: Path,
    settings: GatesSettings,
    *,
    ledger: Ledger | None = None,
    remake: Remake | None = None,
) -> list[GateRow]:
    """Run the quality gates (:mod:`agent.gates`) over every item of the genesis in ``out_dir``, in item order,
    reroll the failing ones, and write ``gates.json`` and ``gates.md`` (:func:`gates_markdown`).

    Near duplicates are looked for within the genesis: each item is compared with the items before it (as kept;
    an item is its own token, so nothing is excluded), and every kept item joins the index, flagged or not (it
    stays in the collection unless the operator acts). The image backend's metrics come from each receipt's model.

    With ``remake``, an item that fails is made again with the next public reroll of the genesis seed
    (:func:`agent.genesis.assign.item_seed`), as the pipeline rerolls a candidate, up to ``settings.max_rerolls``
    times; its traits never change (so rarity stays exact). The last try is kept: passing, or still failing and
    flagged for the operator (or a curator) with its reasons. Each item's report says which reroll was kept and
    why the earlier tries failed. With ``ledger``, each item's verdict (and a rerolled item's new outputs) is
    recorded as it is reached, and items already recorded are taken from it, so an interrupted pass resumes where
    it stopped. Without ``remake`` the files are judged as they are (nothing rerolled). Deterministic: every check
    and every reroll is a function of the files, the settings and the seed, so the same genesis gives the same
    files and reports.

    Raises:
        NotFoundError: the genesis has no ``assignment.json`` or an item's image or receipt is missing.
    """
    from agent.gates import GateReport, Gates

    assignment = out_dir / "assignment.json"
    if not assignment.is_file():
        raise NotFoundError(f"{out_dir} holds no genesis", hint="run `chrysalis genesis` first")
    data = json.loads(assignment.read_text())
    items, request_seed = data["items"], str(data["genesis_seed"])
    gates = Gates(settings)
    done = ledger.gated() if ledger is not None else {}
    kept: list[tuple[int, GateReport]] = []
    names: list[str] = []
    for record in items:
        item = int(record["item"])
        if item in done:
            report = GateReport.from_json(done[item][1])
            png, _lore, _model = _item_files(out_dir, item)
        else:
            history: list[tuple[str, ...]] = []
            reroll, output = 0, None
            while True:
                png, lore, model = _item_files(out_dir, item)
                results = gates.check(png=png, lore=lore, traits=record["traits"], token_id=item, **model)
                report = GateReport(tuple(results), reroll, request_seed, tuple(history))
                if report.passed or remake is None or reroll >= settings.max_rerolls:
                    break
                history.append(report.reasons)
                reroll += 1
                output = remake(item, reroll)
            if ledger is not None:
                ledger.record_gate(item, reroll, report.to_json(), output)
            names = names or [r.name for r in report.results]
        gates.accept(item, 0, f"images/{item}.png", png)
        kept.append((item, report))
    names = names or [r.name for _, rep in kept[:1] for r in rep.results]
    rows = gate_rows(names, [rep for _, rep in kept])
    caught = [_caught_json(item, rep) for item, rep in kept if rep.history or not rep.passed]
    flagged = [c for c in caught if not c["passed"]]
    atomic_write(
        out_dir / GATES_JSON,
        json.dumps(
            {
                "items": len(items),
                "caught": len(caught),
                "rerolled_passed": len(caught) - len(flagged),
                "still_failing": len(flagged),
                "max_rerolls": settings.max_rerolls if remake is not None else 0,
                "rerolled": [c for c in caught if c["passed"]],
                "flagged": flagged,
                "table": [r.__dict__ for r in rows],
            },
            indent=1,
            sort_keys=True,
        ).encode()
        + b"\n",
    )
    atomic_write(out_dir / GATES_NAME, gates_markdown(rows, len(items), caught).encode())
    return rows


def _item_files(out_dir: Path, item: int) -> tuple[bytes, str | None, Mapping[str, Any]]:
    """An item's PNG, and from its receipt its lore and what the gates need to know of its image model
    (:func:`_model_args`)."""
    png_path, receipt_path = out_dir / "images" / f"{item}.png", out_dir / "receipts" / f"{item}.json"
    if not (png_path.is_file() and receipt_path.is_file()):
        raise NotFoundError(
            f"genesis item {item} has no image or receipt in {out_dir}",
            hint="run the genesis again to finish it (it resumes)",
        )
    receipt = json.loads(receipt_path.read_text())
    lore = ((receipt.get("lore") or {}).get("output") or {}).get("text")
    return png_path.read_bytes(), lore, _model_args((receipt.get("image") or {}).get("model") or {})


def _model_args(model: Mapping[str, Any]) -> dict[str, Any]:
    """``Gates.check``'s image-model arguments from a receipt's ``image.model`` record (as the pipeline passes its
    generator's ``ModelRef``): backend, weights digest, declared palette families."""
    extra = model.get("extra") or {}
    return {
        "backend": model.get("backend"),
        "weights_sha256": model.get("weights_sha256"),
        "palettes": extra.get("palettes"),
    }


def _failed_names(reasons: Sequence[str]) -> set[str]:
    """Gate names of a report's ``name: reason`` strings."""
    return {r.split(": ", 1)[0] for r in reasons}


def gate_rows(names: Sequence[str], reports: Sequence[GateReport]) -> list[GateRow]:
    """The per-gate table over every item's kept report (gates in run order, then any other that failed)."""
    first: dict[str, int] = {}
    fixed: dict[str, int] = {}
    flagged: dict[str, int] = {}
    rerolls: dict[str, int] = {}
    for rep in reports:
        caught = _failed_names(rep.history[0]) if rep.history else {r.name for r in rep.failed}
        for name in caught:
            first[name] = first.get(name, 0) + 1
            rerolls[name] = rerolls.get(name, 0) + rep.reroll
            if rep.passed:
                fixed[name] = fixed.get(name, 0) + 1
        for r in rep.failed:
            flagged[r.name] = flagged.get(r.name, 0) + 1
    order = dict.fromkeys([*names, *sorted(first), *sorted(flagged)])
    return [GateRow(n, first.get(n, 0), fixed.get(n, 0), flagged.get(n, 0), rerolls.get(n, 0)) for n in order]


def _caught_json(item: int, report: GateReport) -> dict[str, Any]:
    outcome = "rerolled and passed" if report.passed else "still failing"
    return {"item": item, "kept_reroll": report.reroll, "outcome": outcome, **report.to_json()}


def gates_markdown(rows: list[GateRow], size: int, caught: Sequence[Mapping[str, Any]]) -> str:
    """The genesis report's gates table, then every caught item: the reroll kept and why earlier tries failed."""
    flagged = sum(1 for c in caught if not c["passed"])
    lines = [
        f"# Quality gates: {len(caught)} of {size} items caught, {len(caught) - flagged} rerolled and passed, "
        f"{flagged} still failing (flagged for review)",
        "",
        "| gate | failed first try | rerolled and passed | still failing | rerolls |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.gate} | {r.failed_first_try} | {r.passed_after_reroll} | {r.flagged} | {r.rerolls} |"
        for r in rows
    ]
    if caught:
        lines += ["", "## Caught items", ""]
    for c in caught:
        kept = f"kept reroll {c['kept_reroll']}: " + (
            "passed" if c["passed"] else "still failing (" + "; ".join(c["reasons"]) + ")"
        )
        tries = "".join(
            f"; reroll {n} failed ({'; '.join(reasons)})" for n, reasons in enumerate(c["history"])
        )
        lines.append(f"- item {c['item']}: {kept}{tries}")
    return "\n".join(lines) + "\n"
