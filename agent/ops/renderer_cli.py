"""``chrysalis renderer publish``: pin the token viewer site and the image model's ONNX export into the embedded
IPFS repo, and print both CIDs and a token's ``animation_url`` form (:mod:`agent.ops.renderer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.clicontext import current_settings

renderer_app = typer.Typer(help="The token viewer: a page that re-renders a token's art in any browser.")


@renderer_app.callback()
def _renderer() -> None:
    """The token viewer: a page that re-renders a token's art in any browser."""


@renderer_app.command("publish")
def publish_command(
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="An ONNX export (unet.onnx + scheduler.json; default: the configured image model's, made into "
            "<models.cache_dir>/portable/ if missing).",
            show_default=False,
        ),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo", help="IPFS repo directory (default: ipfs.repo from the settings).", show_default=False
        ),
    ] = None,
) -> None:
    """Pin the viewer site and the model's ONNX export; print their CIDs and the animation_url form
    ipfs://<site>/?token=<metadata CID>&model=<export CID>. Serve it with a gateway whose script roots include
    the site CID (agent.ipfs.gateway.create_app(script_roots=...)): the node's default gateway runs no scripts."""
    from agent.ipfs.repo import IpfsRepo
    from agent.ops.renderer import publish_renderer

    settings = current_settings()
    export_dir = export if export is not None else _configured_export()
    store = IpfsRepo(repo if repo is not None else settings.ipfs_repo)
    release = publish_renderer(store, export_dir)
    typer.echo(f"site   {release.site_cid}")
    typer.echo(f"model  {release.model_cid}")
    typer.echo(f"url    {release.animation_url()}")


def _configured_export() -> Path:
    """The ONNX export of the configured image model (``models.*``), from the model cache or made now.

    Raises:
        ConfigError: the configured image model is not the embedded sprite model (only it has an ONNX export).
    """
    from agent.errors import ConfigError
    from agent.generate.factory import image_model_dir
    from agent.generate.image.embedded import verify_model_dir
    from agent.generate.portable.generator import cached_export, pinned_export

    models = current_settings().models
    if models.image_backend != "embedded":
        raise ConfigError(
            f"models.image_backend is {models.image_backend!r}: only the embedded sprite model has a portable export",
            hint="set models.image_backend = 'embedded', or pass --export DIR",
        )
    directory = image_model_dir(models)
    pinned = pinned_export(directory, Path(models.cache_dir))  # a model loaded from its CID: the pinned bytes
    if pinned is not None:
        return pinned[0]
    export_dir, _ = cached_export(directory, verify_model_dir(directory), Path(models.cache_dir))
    return export_dir
