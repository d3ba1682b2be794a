"""``chrysalis dataset add | show | list | prove | check-proof``: commit to a training dataset (see
:mod:`agent.datasets`). Heavy work is imported inside the commands so ``chrysalis --help`` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.clicontext import current_settings

dataset_app = typer.Typer(
    help="Training datasets you can commit to: check a folder of labelled images (or lore), commit to it with a "
    "Merkle root, pin it to IPFS (public) or disclose single items with inclusion proofs (private)."
)

EXIT_INVALID = 1
EXIT_BAD_INPUT = 3


@dataset_app.callback()
def _dataset() -> None:
    """Training datasets you can commit to: check, commit (Merkle root), pin or prove items."""


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _print_record(record: dict[str, Any], *, path: Path | None = None) -> None:
    from rich.table import Table

    out = _console()
    size = f", {record['resolution'][0]}x{record['resolution'][1]}" if record.get("resolution") else ""
    out.print(
        f"{record['mode']} {record['kind']} dataset ({record.get('conditioning', 'traits')}{size}) from "
        f"{record['source']}: {record['n']} items",
        soft_wrap=True,
    )
    out.print(f"root {record['root']}", soft_wrap=True)
    if record.get("cid"):
        out.print(f"cid  {record['cid']} (ipfs://{record['cid']})", soft_wrap=True)
    else:
        out.print("[dim]private: nothing published; disclose items with `chrysalis dataset prove ITEM`[/]")
    table = Table("label", "items")
    for label, count in record["counts"].items():
        table.add_row(label, str(count))
    out.print(table)
    if path is not None:
        out.print(f"[dim]record {path}[/]", soft_wrap=True)


@dataset_app.command("add")
def add_command(
    folder: Annotated[
        Path,
        typer.Argument(
            help="The dataset folder: images plus labels.jsonl ({'file', 'traits'} or {'file', 'caption'} per "
            "line), or lore.jsonl ({'traits', 'lore'} per line).",
            show_default=False,
        ),
    ],
    private: Annotated[
        bool,
        typer.Option(
            "--private",
            help="Salt every leaf and publish nothing (salts stay in the local record, mode 0600); disclose items "
            "one by one with `chrysalis dataset prove`.",
        ),
    ] = False,
    traits_file: Annotated[
        Path | None,
        typer.Option(
            "--traits",
            help="JSON or TOML mapping trait -> allowed values, for a model other than the shipped sprite model "
            "(default: mood and element of the sprite model).",
            show_default=False,
        ),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", help="Every image must be N x N pixels.", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the record as JSON (without salts).")
    ] = False,
) -> None:
    """Check every image (decodable, size, mode) and label (known trait values), naming each bad file; commit to
    the dataset with a Merkle root over its items; public: pin it to the embedded IPFS repo as one directory."""
    from agent.datasets.model import load_traits_file
    from agent.datasets.store import add_dataset

    settings = current_settings()
    traits = load_traits_file(traits_file) if traits_file is not None else None
    repo = None
    if not private:
        from agent.ipfs.reader import DagLimits
        from agent.ipfs.repo import IpfsRepo

        repo = IpfsRepo(settings.ipfs_repo, limits=DagLimits.from_settings(settings.ipfs))
    _dataset, record, path = add_dataset(
        folder, data_dir=settings.data_dir, repo=repo, private=private, traits=traits, resolution=resolution
    )
    if as_json:
        shown = {k: v for k, v in record.items() if k != "salts"}
        typer.echo(json.dumps({**shown, "record": str(path)}, indent=2))
        return
    _print_record(record, path=path)


@dataset_app.command("show")
def show_command(
    root: Annotated[
        str, typer.Argument(help="The dataset's root (or its first 8+ hex digits).", show_default=False)
    ],
    items: Annotated[bool, typer.Option("--items", help="Also list every item.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the record as JSON (without salts).")
    ] = False,
) -> None:
    """Print a recorded dataset: mode, root, CID (public), item count and items per label."""
    from agent.datasets.store import load_record

    record = load_record(current_settings().data_dir, root)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in record.items() if k != "salts"}, indent=2))
        return
    _print_record(record)
    if items:
        out = _console()
        for i, item in enumerate(record["items"]):
            label = json.dumps(item["label"], sort_keys=True, ensure_ascii=False)
            out.print(f"{i:>5}  {item['name']}  {item['sha256'][:16]}  {label}", soft_wrap=True, markup=False)


@dataset_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the recorded datasets."""
    from agent.datasets.store import list_records

    records = list_records(current_settings().data_dir)
    rows = [{k: r.get(k) for k in ("root", "mode", "kind", "n", "cid", "source")} for r in records]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    out = _console()
    if not rows:
        out.print("no datasets yet: add one with `chrysalis dataset add DIR`")
    for row in rows:
        out.print(
            f"{row['root']}  {row['mode']:<7} {row['kind']:<5} {row['n']:>6} items  {row['source']}",
            soft_wrap=True,
            markup=False,
        )


@dataset_app.command("prove")
def prove_command(
    item: Annotated[
        str, typer.Argument(help="The item's name (images/0001.png, lore.jsonl#12).", show_default=False)
    ],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", help="The dataset's root (or its first 8+ hex digits).", show_default=False
        ),
    ],
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write the proof here (default: print it).", show_default=False),
    ] = None,
) -> None:
    """Disclose one item with its inclusion proof: {root, n, index, item {name, sha256, label}, salt, proof}. For a
    private dataset this reveals that item's salt, and only that one."""
    from agent.datasets.store import load_record, prove_item

    proof = prove_item(load_record(current_settings().data_dir, dataset), item)
    text = json.dumps(proof, indent=2, ensure_ascii=False) + "\n"
    if out_file is None:
        typer.echo(text, nl=False)
        return
    out_file.write_text(text, encoding="utf-8")
    _console().print(
        f"proof of {item} (item {proof['index']} of {proof['n']}) written to {out_file}", markup=False
    )


@dataset_app.command("check-proof")
def check_proof_command(
    proof_file: Annotated[
        Path, typer.Argument(help="The proof `chrysalis dataset prove` wrote.", show_default=False)
    ],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Also check this file is the disclosed item (its sha256).", show_default=False
        ),
    ] = None,
) -> None:
    """Verify an inclusion proof (needs no record: anyone can run it). Exit 0: valid; 1: invalid; 3: bad input."""
    from agent.datasets.model import DatasetError
    from agent.datasets.store import check_proof
    from agent.errors import error_exit_code

    with error_exit_code(EXIT_BAD_INPUT):
        try:
            doc = json.loads(proof_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"cannot read proof {proof_file}: {exc}",
                hint="give the JSON file `chrysalis dataset prove ITEM --dataset ROOT --out FILE` wrote",
            ) from None
        data = None
        if file is not None:
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise DatasetError(f"cannot read {file}: {exc}", hint="name the item's file") from None
        ok, why = check_proof(doc, data)
    out = _console()
    if ok:
        out.print(f"[green]valid[/]: {why}", soft_wrap=True)
        return
    out.print(f"[red]invalid[/]: {why}", soft_wrap=True)
    raise typer.Exit(EXIT_INVALID)
