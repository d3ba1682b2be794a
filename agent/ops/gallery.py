"""A static HTML page of a collection's tokens (the demo's ``index.html``): images by relative path, lore,
traits and every stage's image, so the page can be opened from disk or copied anywhere with its images."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

_env = Environment(
    loader=PackageLoader("agent.ops", "templates"),
    autoescape=select_autoescape(["html"]),  # lore is model output: always escaped
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_gallery(tokens: list[Any], *, deployment: Any, title: str = "Chrysalis") -> str:
    """The page for ``tokens`` (``agent.ops.demo.TokenResult`` s, newest version first) of ``deployment``."""
    return _env.get_template("gallery.html").render(
        title=title,
        tokens=tokens,
        collection=deployment.address(),
        chain_id=deployment.chain_id,
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
