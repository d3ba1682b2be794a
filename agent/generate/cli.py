"""``chrysalis model ...``: which models run, a sample with a receipt, and receipt verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent.clicontext import current_context, current_settings

model_app = typer.Typer(
    name="model", help="Inference models: info, sample, verify, publish, fetch.", no_args_is_help=True
)
console = Console()


def _use_config(path: Path | None) -> None:
    """A model command's own ``--config``: the file the root ``--config`` would name (same checks, same loading)."""
    if path is not None:
        current_context().use_config(path)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        hidden=True,
        help="Deprecated: the global option, `chrysalis -c FILE model ...`.",
        show_default=False,
        callback=_use_config,
        expose_value=False,
    ),
]
"""The settings file: hidden, kept for old scripts; the global ``chrysalis -c FILE`` is the one way to name it.
It is handled by its callback (the command reads :func:`~agent.clicontext.current_settings`), never passed on."""


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise typer.BadParameter(f"{what} {v!r} is not KEY=VALUE (e.g. --{what} mood=serene)")
        k, _, val = v.partition("=")
        out[k.strip()] = val.strip()
    return out


@model_app.command()
def info(
    _config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Load the configured image and lore models and show their ids, weight digests and devices."""
    from agent.generate.factory import load_image_generator, load_lore_writer
    from agent.generate.runtime import library_versions

    s = current_settings().models
    models = [load_image_generator(s).model_ref, load_lore_writer(s).model_ref]
    if as_json:
        data = {
            "models": [
                {
                    "kind": m.kind,
                    "model_id": m.model_id,
                    "weights_sha256": m.weights_sha256,
                    "extra": dict(m.extra),
                }
                for m in models
            ],
            "versions": library_versions(),
        }
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    table = Table(title="Chrysalis models")
    for col in ("kind", "backend", "model id", "device", "dtype"):
        table.add_column(col)
    for m in models:
        e = m.extra
        table.add_row(
            m.kind,
            m.backend,
            m.model_id,
            str(e.get("device")),
            str(e.get("dtype")),
        )
    console.print(table)
    # the digests are what one compares with the on-chain model registry: whole, one line each, never cut
    for m in models:
        console.print(f"{m.kind} weights sha256: {m.weights_sha256}", soft_wrap=True, highlight=False)
    console.print(", ".join(f"{k} {v}" for k, v in library_versions().items()))


@model_app.command()
def sample(
    trait: Annotated[list[str], typer.Option("--trait", "-t", help="KEY=VALUE, repeatable (-t mood=serene)")],
    fact: Annotated[list[str] | None, typer.Option("--fact", "-f", help="qualitative fact KEY=VALUE")] = None,
    onchain_seed: Annotated[
        str, typer.Option("--onchain-seed", help="the collection's bytes32 seed (hex)")
    ] = ("0x" + "00" * 32),
    token_id: Annotated[int, typer.Option("--token-id")] = 1,
    name: Annotated[str, typer.Option("--name")] = "Chrysalis #1",
    stage: Annotated[int, typer.Option("--stage")] = 0,
    init_image: Annotated[Path | None, typer.Option("--init-image", help="previous stage's PNG")] = None,
    strength: Annotated[float, typer.Option("--strength")] = 0.6,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="where image.png, lore.txt, receipt.json go")
    ] = Path("sample-out"),
    canonical: Annotated[
        bool, typer.Option("--canonical/--no-canonical", help="cpu, fp32, 1 thread, batch 1")
    ] = True,
    image: Annotated[bool, typer.Option("--image/--no-image")] = True,
    lore: Annotated[bool, typer.Option("--lore/--no-lore")] = True,
    snapshot: Annotated[Path | None, typer.Option("--snapshot", help="input snapshot JSON to hash")] = None,
    _config: ConfigOption = None,
) -> None:
    """Generate an image and lore for given traits and seed; write the files and an inference receipt."""
    from agent.generate.base import ImageRequest, LoreRequest
    from agent.generate.factory import load_image_generator, load_lore_writer
    from agent.generate.receipt import build_receipt, image_record, lore_record
    from agent.generate.seed import derive_seed, onchain_seed_bytes

    s = current_settings().models
    if canonical:
        s = s.model_copy(
            update={
                "device": "cpu",
                "dtype": "float32",
                "threads": 1,
                "image_batch_size": 1,
                "lore_batch_size": 1,
            }
        )
    seed_bytes = onchain_seed_bytes(onchain_seed)
    seed = derive_seed(seed_bytes, token_id)
    traits = _pairs(trait, "trait")
    out.mkdir(parents=True, exist_ok=True)
    image_part = lore_part = None
    if image:
        gen = load_image_generator(s)
        init_bytes = init_image.read_bytes() if init_image else None
        where = f"token {token_id}" + (f" (--init-image {init_image})" if init_image else "")
        req = ImageRequest(traits=traits, seed=seed, init_image=init_bytes, strength=strength, label=where)
        res = gen.generate([req])[0]
        (out / "image.png").write_bytes(res.png)
        image_part = image_record(gen, req, res)
    if lore:
        writer = load_lore_writer(s)
        lreq = LoreRequest(
            name=name,
            stage=stage,
            traits=traits,
            facts=_pairs(fact or [], "fact"),
            seed=seed,
            label=f"token {token_id} lore",
        )
        lres = writer.write([lreq])[0]
        (out / "lore.txt").write_text(lres.text + "\n")
        lore_part = lore_record(writer, lreq, lres)
    snap = json.loads(snapshot.read_text()) if snapshot else {}
    receipt = build_receipt(
        onchain_seed=seed_bytes, token_id=token_id, snapshot=snap, image=image_part, lore=lore_part
    )
    receipt.save(out / "receipt.json")
    console.print(f"wrote {out}/ (image.png, lore.txt, receipt.json)", highlight=False)
    console.print(f"provenance {receipt.provenance_hex()} canonical={receipt.canonical}", highlight=False)


@model_app.command()
def verify(
    receipt: Annotated[Path, typer.Argument(help="receipt.json to replay")],
    init_image: Annotated[
        Path | None, typer.Option("--init-image", help="previous stage's PNG (evolutions)")
    ] = None,
    image_model: Annotated[
        str | None, typer.Option("--image-model", help="where the image model is here")
    ] = None,
    image_lora: Annotated[str | None, typer.Option("--image-lora", help="where the LoRA is here")] = None,
    lore_model: Annotated[
        str | None, typer.Option("--lore-model", help="where the lore model is here")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="converted-model cache (embedded lore)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Replay a receipt in the canonical configuration. Exit 0 match, 1 mismatch, 2 not reproducible here, 3 when
    it could not verify (unreadable receipt, missing model...)."""
    from agent.errors import ChrysalisError, error_exit_code
    from agent.generate.receipt import InferenceReceipt
    from agent.generate.verify import EXIT_ERROR, file_loader, report
    from agent.generate.verify import verify as run_verify

    if cache_dir is None:  # the configured cache, if the settings load (verifying needs no config)
        try:
            cache_dir = current_settings().models.cache_dir
        except ChrysalisError:
            pass
    with error_exit_code(EXIT_ERROR):
        r = InferenceReceipt.load(receipt)
        result = run_verify(
            r,
            init_image_loader=file_loader(init_image) if init_image else None,
            image_model=image_model,
            image_lora=image_lora,
            lore_model=lore_model,
            cache_dir=cache_dir,
        )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
    else:
        console.print(report(result, r), highlight=False)
    raise typer.Exit(result.exit_code)
