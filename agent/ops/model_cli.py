"""``chrysalis model publish`` and ``chrysalis model fetch`` (their work is in :mod:`agent.ops.models`); mounted on
the ``model`` group of :mod:`agent.generate.cli` by :func:`agent.ops.cli.register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.clicontext import current_settings
from agent.ipfs.cli import GatewaysOption, IpfsApisOption


def publish_command(
    model: Annotated[
        str | None,
        typer.Argument(
            help="The model directory to publish, or ipfs://CID of one in the model cache (default: the configured "
            "image model; the shipped sprite model with the default settings).",
            show_default=False,
        ),
    ] = None,
    account: Annotated[
        str,
        typer.Option(
            "--from",
            help="The collection's admin, who registers the model: a development account index on a local chain "
            "(0, dev:2), a V3 keystore file, or an Ape account alias (ape:alice).",
        ),
    ] = "0",
    register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register",
            help="Register it in the collection's model registry (chain.deployment); --no-register only pins it.",
        ),
    ] = True,
    activate: Annotated[
        bool, typer.Option("--activate", help="Also make it the active model (setActiveModel).")
    ] = False,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="File holding the keystore password.", show_default=False),
    ] = None,
    portable: Annotated[
        bool,
        typer.Option(
            "--portable/--no-portable",
            help="Pin an embedded sprite model's ONNX export (unet.onnx + scheduler.json) beside it and name it in "
            "the manifest; --no-portable leaves it out (the CID a publication made before the export was pinned).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pin a whole model directory to IPFS (every file and a manifest of their sha256) and register it on-chain:
    registerModel(weights sha256, "ipfs://<directory CID>"). Publishing the same model again changes nothing."""
    from agent.ops.cli import out
    from agent.ops.models import publish_model

    done = publish_model(
        current_settings(), model, signer_spec=account, register=register, activate=activate,
        password_file=password_file, portable=portable,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(done.to_json(), indent=2))
        return
    m = done.pinned.model
    out.print(f"model {m.model_id} ({m.kind}, {m.backend}) from {m.directory}")
    out.print(f"weights sha256 {m.weights_sha256}", soft_wrap=True)
    out.print(
        f"pinned {len(m.files) + 1} files ({m.size:,} bytes) as {done.pinned.uri} "
        f"(confirmed by {', '.join(done.pins)})",
        soft_wrap=True,
    )
    if m.portable is not None:
        out.print(
            f"ONNX export pinned as ipfs://{m.portable['cid']} (unet.onnx {m.portable['unet_onnx_sha256']}, "
            f"scheduler.json {m.portable['scheduler_sha256']}, opset {m.portable['opset']})",
            soft_wrap=True,
        )
    r = done.registration
    if r is None:
        out.print("[dim]not registered (--no-register)[/]")
        return
    if r.status == "registered":
        out.print(f"registered as model {r.model_id} of {done.collection} (tx {r.tx_hash})", soft_wrap=True)
    else:
        out.print(
            f"already registered as model {r.model_id} of {done.collection} with this URI: nothing to do"
        )
    if r.activated:
        out.print(f"model {r.model_id} is now the active model")
    elif not r.active:
        out.print(f"[dim]not the active model: activate it with --activate (setActiveModel({r.model_id}))[/]")


def fetch_command(
    uri: Annotated[
        str | None,
        typer.Argument(
            help="ipfs://CID of a published model (default: the URI the registry records for --model).",
            show_default=False,
        ),
    ] = None,
    registry_id: Annotated[
        int | None,
        typer.Option(
            "--model",
            help="The registry's model id whose record (URI and weights digest) to use (default: the active "
            "model, when no URI is given).",
            show_default=False,
            min=1,
        ),
    ] = None,
    weights_sha256: Annotated[
        str | None,
        typer.Option(
            "--weights-sha256",
            help="The weights digest to expect (with a URI and no --model; the record's otherwise).",
            show_default=False,
        ),
    ] = None,
    gateway: GatewaysOption = None,
    ipfs_api: IpfsApisOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds each source may take for one block.", min=0.1)
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Load a published model from IPFS into the model cache, every file checked against its manifest and the
    weights against the chain's record; then set models.image_model (or lore_model) to its ipfs:// URI. Sources:
    the embedded repo (when there is one, or when no other is named), --ipfs-api nodes, --gateway gateways."""
    from agent.ops.cli import out
    from agent.ops.models import fetch_model

    got = fetch_model(
        current_settings(), uri, registry_id=registry_id, weights_sha256=weights_sha256, gateways=gateway or (),
        ipfs_apis=ipfs_api or (), timeout_s=timeout,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(got.to_json(), indent=2))
        return
    source = f"model {got.registry_id}'s record" if got.registry_id else "its manifest"
    out.print(f"{got.model_id} loaded into {got.path}: every file matches {source}", soft_wrap=True)
    out.print(f"weights sha256 {got.weights_sha256}", soft_wrap=True)
    out.print(
        f'[dim]use it: models.image_model = "ipfs://{got.cid}" (or models.lore_model)[/]', soft_wrap=True
    )


# -- fine-tuning (agent.training) -------------------------------------------------------------------------------


def _progress_bar(label: str) -> Any:
    """A rich progress bar on stderr with the step, the loss and the ETA; ``(bar, callback)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(label, total=None, loss="-")

    def update(step: int, total: int, loss: float) -> None:
        bar.update(task, completed=step, total=total, loss=f"{loss:.4f}")

    return bar, update


def train_command(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="The dataset: a folder (labels.jsonl + images, or lore.jsonl), or the root of one added with "
            "`chrysalis dataset add` (8+ hex digits).",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="The model directory to write (resumes a killed run).")
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="The model to start from. Sprites: shipped (default), a sprite-model directory or ipfs://CID. A "
            "diffusers pipeline directory (model_index.json) or ipfs://CID: a LoRA on its UNet or transformer. "
            "With a lore dataset: shipped (default: the shipped SmolLM2), a causal LM directory or ipfs://CID.",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option("--method", help="Sprites: full (every weight; the default, see the README) or lora."),
    ] = "full",
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", min=1, help="Training steps (sprites: 300; LoRA: one epoch).", show_default=False
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Sprites: 32; image LoRA: 1; lore: 4.", show_default=False),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Learning rate, AdamW (sprites: 2e-3 peak; image LoRA: 1e-4; lore: 2e-3).",
            show_default=False,
        ),
    ] = None,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", min=0, help="Sprites only.")] = 20,
    ema_decay: Annotated[
        float, typer.Option("--ema-decay", help="Sprites only: EMA of the weights (0: none).")
    ] = 0.99,
    label_dropout: Annotated[float, typer.Option("--label-dropout", help="Sprites only.")] = 0.1,
    holdout_every: Annotated[
        int,
        typer.Option(
            "--holdout-every", help="Hold out every Nth item for the card's quality table (0: none)."
        ),
    ] = 8,
    lora_rank: Annotated[
        int | None,
        typer.Option("--lora-rank", min=1, help="Sprites: 8; image LoRA: 4; lore: 8.", show_default=False),
    ] = None,
    lora_alpha: Annotated[
        int | None,
        typer.Option("--lora-alpha", min=1, help="Sprites: 8; image LoRA: 4; lore: 16.", show_default=False),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution",
            min=8,
            help="Image LoRA: training size (default: the pipeline's own).",
            show_default=False,
        ),
    ] = None,
    max_length: Annotated[
        int, typer.Option("--max-length", min=16, help="Lore: most tokens per pair (prompt + lore).")
    ] = 384,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="LoRA runs: cpu (canonical: float32, one thread, reproducible by verify-training), auto or cuda "
            "(faster; the receipt says it cannot be replayed bit for bit). Sprites always train on the CPU.",
        ),
    ] = "cpu",
    palettes: Annotated[
        str | None,
        typer.Option(
            "--palettes",
            help="Sprites: the palette family the dataset is drawn in (shipped or neon); the manifest declares it "
            "and evolutions recolour within it (default: none declared, evolutions keep the previous colours).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 50,
    model_id: Annotated[
        str | None, typer.Option("--model-id", help="Default: <base>+<dataset folder>@<weights[:8]>.")
    ] = None,
    min_free_bytes: Annotated[
        int | None,
        typer.Option(
            "--min-free-bytes", min=0, help="Refuse to start with less free disk (default: an estimate)."
        ),
    ] = None,
    card: Annotated[
        bool, typer.Option("--card/--no-card", help="Write MODEL_CARD.md (and a sample grid for images).")
    ] = True,
    stop_after: Annotated[
        int | None,
        typer.Option("--stop-after", min=1, hidden=True, help="Stop (checkpointed) after N steps."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fine-tune on your own data: the sprite model (full or LoRA), a diffusers pipeline (a LoRA) or the lore model
    (a LoRA, merged), in the canonical configuration (CPU, float32, one thread) so that `chrysalis model
    verify-training` can make the same weights again. Writes a model directory with a training receipt, a manifest
    and a model card; run the same command again to resume after a kill."""
    from agent.errors import ConfigError
    from agent.ops.cli import out
    from agent.training.adapters import AdapterConfig, finetune_adapter, is_adapter_run
    from agent.training.sprites import FinetuneConfig, finetune_sprites

    settings = current_settings()
    adapter = is_adapter_run(base, dataset, settings.data_dir, settings.models.cache_dir)
    bar, update = _progress_bar("training")
    if adapter:
        if stop_after is not None or palettes is not None:
            raise ConfigError(
                "--stop-after and --palettes are for sprite fine-tunes",
                hint="leave them out of a LoRA run (stop one with Ctrl-C: the same command resumes it)",
            )
        config = AdapterConfig(
            steps=steps, rank=lora_rank, alpha=lora_alpha, lr=lr, batch_size=batch_size, resolution=resolution,
            max_length=max_length, holdout_every=holdout_every, checkpoint_every=checkpoint_every,
        )  # fmt: skip
        with bar:
            result = finetune_adapter(
                dataset, out_dir, base=base, config=config, seed=seed, device=device, model_id=model_id,
                cache_dir=settings.models.cache_dir, data_dir=settings.data_dir, min_free_bytes=min_free_bytes,
                progress=update, card=card,
            )  # fmt: skip
        total = result.steps
    else:
        if device != "cpu":
            raise ConfigError(
                f"--device {device}: the sprite model always trains on the CPU (the canonical configuration)",
                hint="leave --device out",
            )
        if resolution is not None:
            raise ConfigError(
                "--resolution is for LoRA runs on a diffusers pipeline: the sprite model draws 32x32",
                hint="leave --resolution out, or pass a pipeline directory as --base",
            )
        given: dict[str, Any] = {
            "steps": steps, "batch_size": batch_size, "lr": lr, "lora_rank": lora_rank, "lora_alpha": lora_alpha,
        }  # fmt: skip
        sprite_config = FinetuneConfig(
            method=method, warmup_steps=warmup_steps, ema_decay=ema_decay, label_dropout=label_dropout,
            holdout_every=holdout_every, checkpoint_every=checkpoint_every,
            **{k: v for k, v in given.items() if v is not None},
        )  # fmt: skip
        with bar:
            result = finetune_sprites(
                dataset, out_dir, base=base, config=sprite_config, seed=seed, model_id=model_id,
                cache_dir=settings.models.cache_dir, data_dir=settings.data_dir, min_free_bytes=min_free_bytes,
                progress=update, stop_after=stop_after, card=card, palettes=palettes,
            )  # fmt: skip
        total = sprite_config.steps
    done = bool(result.weights)
    if as_json:
        typer.echo(
            json.dumps({"done": done, "out": str(out_dir), **result.__dict__, "losses": None}, indent=2)
        )
        return
    if not done:
        out.print(f"stopped at step {result.steps} of {total}; run the same command again to go on")
        return
    manifest = json.loads((out_dir / "manifest.json").read_text())
    out.print(f"trained {manifest['model_id']} in {result.train_seconds:.0f} s: {out_dir}", soft_wrap=True)
    out.print(f"weights sha256 {manifest['weights_sha256']}", soft_wrap=True)
    out.print(
        f"final loss {result.losses[-1]:.4f}; receipt {out_dir / 'training-receipt.json'}", soft_wrap=True
    )
    where = out_dir.resolve()
    use = {
        "image": f'models.image_lora = "{where}"' if manifest.get("backend") == "diffusers" else (
            f'models.image_model = "{where}"'
        ),
        "lore": f'models.lore_backend = "transformers", models.lore_model = "{where}"',
    }[manifest.get("kind", "image")]  # fmt: skip
    out.print(
        f"[dim]use it: {use}; check it: chrysalis model verify-training "
        f"{out_dir / 'training-receipt.json'} --dataset {dataset}; publish it: chrysalis model publish {out_dir}[/]",
        soft_wrap=True,
    )


def verify_training_command(
    receipt: Annotated[
        Path,
        typer.Argument(help="training-receipt.json (or the model directory holding it).", show_default=False),
    ],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", help="The dataset folder (or a recorded root) it was trained on.", show_default=False
        ),
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="The base model (default: the shipped one, or the receipt's CID).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Train again from a receipt in the canonical configuration and compare: exit 0 when the weights match bit for
    bit, 1 when they do not (naming the first step whose loss diverged), 2 when this machine cannot reproduce the
    receipt (not canonical, or other library versions and a mismatch), 3 on bad input (another dataset)."""
    from agent.errors import error_exit_code
    from agent.ops.cli import out
    from agent.training.verify import verify_training

    settings = current_settings()
    bar, update = _progress_bar("re-training")
    with error_exit_code(3), bar:
        verdict = verify_training(
            receipt, dataset, base=base, cache_dir=settings.models.cache_dir, data_dir=settings.data_dir,
            progress=update,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(verdict.to_json(), indent=2))
    else:
        for w in verdict.warnings:
            out.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
        out.print(f"{verdict.status}: {verdict.message}", soft_wrap=True)
    if verdict.code:
        raise typer.Exit(verdict.code)
