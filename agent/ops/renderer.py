"""The token viewer's static site, and publishing it with the model's ONNX export into the embedded IPFS repo.

The viewer (``renderer/index.html`` + ``renderer/viewer.js``) is what a marketplace loads as a token's
``animation_url``: opened from a gateway as ``/ipfs/<site CID>/?token=<metadata CID>&model=<export CID>``, it
fetches the token's metadata, receipt, parent chain and the model from the same gateway by relative path, checks
them, re-renders the image in the browser and shows it beside the published one.

- :func:`assemble_viewer_site` writes the site: ``index.html``, ``renderer/*.js``, onnxruntime-web under ``ort/``
  (:func:`~agent.generate.portable.browser.copy_renderer`, the bench page's files) and ``palettes.json`` (the
  palette families evolutions recolour within, as data, for the viewer's palette transfer).
- :func:`publish_renderer` adds and pins the site and the export (``unet.onnx`` + ``scheduler.json``) as two
  UnixFS directories, and returns both CIDs (``chrysalis renderer publish``).

Guarantees: the same renderer files, onnxruntime-web build and palettes give the same site CID; the same export
gives the same model CID. Pinning changes nothing else in the repo.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.generate.portable.browser import copy_renderer
from agent.generate.portable.onnx_export import CONSTANTS_NAME, ONNX_NAME
from agent.generate.portable.wasm_runtime import _check_export_dir
from agent.ipfs.cid import CID
from agent.ipfs.repo import IpfsRepo

VIEWER_PAGE = "index.html"
PALETTES_NAME = "palettes.json"
PALETTES_FORMAT = "chrysalis-palettes/1"
"""``palettes.json``'s format: ``{"format", "fixed": [[r, g, b], ...], "families": {name: {mood: [[[r, g, b] x 5]
x 3]}}}``: what :func:`agent.generate.sprites.palette.transfer_palette` maps between, in its table order."""


def palettes_json() -> dict[str, Any]:
    """The palette families (:data:`~agent.generate.sprites.palette.PALETTE_FAMILIES`) and the fixed eye colours,
    in the order :func:`~agent.generate.sprites.palette.transfer_palette` builds its tables: each mood's three
    palettes of five roles, then the fixed colours."""
    from agent.generate.sprites.dataset import EYE_WHITE, PUPIL
    from agent.generate.sprites.palette import PALETTE_FAMILIES

    return {
        "format": PALETTES_FORMAT,
        "fixed": [list(EYE_WHITE), list(PUPIL)],
        "families": {
            name: {mood: [[list(c) for c in pal] for pal in fam] for mood, fam in sorted(moods.items())}
            for name, moods in sorted(PALETTE_FAMILIES.items())
        },
    }


def assemble_viewer_site(dest: Path | str) -> Path:
    """Write the token viewer's site into ``dest`` (created if missing) and return it (see the module docstring).

    Raises:
        ConfigError: onnxruntime-web is missing or not the pinned version (the hint says how to install it).
    """
    site = copy_renderer(dest, VIEWER_PAGE)
    data = json.dumps(palettes_json(), sort_keys=True, separators=(",", ":")) + "\n"
    (site / PALETTES_NAME).write_text(data)
    return site


@dataclass(frozen=True)
class RendererRelease:
    """What :func:`publish_renderer` pinned: the viewer site's and the model export's directory CIDs."""

    site_cid: CID
    model_cid: CID

    def animation_url(self, metadata_cid: str = "<metadata CID>") -> str:
        """The viewer's URL for one token, as a token's ``animation_url``: ``ipfs://<site>/?token=...&model=...``."""
        return f"ipfs://{self.site_cid}/?token={metadata_cid}&model={self.model_cid}"


def _add_tree(repo: IpfsRepo, path: Path) -> CID:
    from agent.ipfs.cli import add_path  # the CLI's recursive add (what `chrysalis ipfs add DIR` does)

    result = add_path(repo, path, cid_version=1, raw_leaves=True)
    return result if isinstance(result, CID) else result.cid


def publish_renderer(repo: IpfsRepo, export_dir: Path | str) -> RendererRelease:
    """Add the viewer site (:func:`assemble_viewer_site`) and the ONNX export in ``export_dir`` (its ``unet.onnx``
    and ``scheduler.json`` only) to ``repo`` as two CIDv1 UnixFS directories with raw leaves, pin both
    recursively, and return their CIDs.

    Raises:
        NotFoundError: ``export_dir`` lacks ``unet.onnx`` or ``scheduler.json``.
        ConfigError: onnxruntime-web is missing or not the pinned version.
    """
    export = _check_export_dir(export_dir)
    with tempfile.TemporaryDirectory(prefix="chrysalis-viewer-") as tmp:
        site = assemble_viewer_site(Path(tmp) / "site")
        model = Path(tmp) / "model"
        model.mkdir()
        for name in (ONNX_NAME, CONSTANTS_NAME):
            (model / name).write_bytes((export / name).read_bytes())
        site_cid = _add_tree(repo, site)
        model_cid = _add_tree(repo, model)
    repo.pin_add(site_cid)
    repo.pin_add(model_cid)
    return RendererRelease(site_cid, model_cid)


__all__ = [
    "PALETTES_FORMAT",
    "RendererRelease",
    "assemble_viewer_site",
    "palettes_json",
    "publish_renderer",
]
