"""``chrysalis model publish`` and ``chrysalis model fetch`` (their work is in :mod:`agent.ops.models`); mounted on
the ``model`` group of :mod:`agent.generate.cli` by :func:`agent.ops.cli.register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pin a whole model directory to IPFS (every file and a manifest of their sha256) and register it on-chain:
    registerModel(weights sha256, "ipfs://<directory CID>"). Publishing the same model again changes nothing."""
    from agent.ops.cli import out
    from agent.ops.models import publish_model

    done = publish_model(
        current_settings(), model, signer_spec=account, register=register, activate=activate,
        password_file=password_file,
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
