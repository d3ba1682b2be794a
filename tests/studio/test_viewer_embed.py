"""The studio embeds the token viewer (``studio.viewer_gateway``): frames only from that origin, the viewer's
address built from a version's ``ipfs://`` animation_url, and a setting that is not an origin refused by name.
The whole path (the demo's studio page framing the viewer, which renders bit-identical in Chromium) is
``tests/ops/test_demo.py::test_sigterm_while_the_studio_serves_stops_the_studio_and_the_chain``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.settings import StudioSettings
from agent.studio.app import page_csp, viewer_src

SITE = "bafybeicukhhco7jnpsh47uh5r2yj6feopnbqwo374mhijlob6efcyvlrri"


def test_frames_come_only_from_the_viewer_gateway() -> None:
    assert "frame-src 'none'" in page_csp()
    csp = page_csp("http://127.0.0.1:8080")
    assert "frame-src http://127.0.0.1:8080;" in csp and "frame-ancestors 'none'" in csp


def test_the_viewer_address_is_the_animation_url_on_the_gateway() -> None:
    url = f"ipfs://{SITE}/?token=bafkreiabc&model=bafymodel"
    assert (
        viewer_src("http://127.0.0.1:8080", url)
        == f"http://127.0.0.1:8080/ipfs/{SITE}/?token=bafkreiabc&model=bafymodel"
    )
    assert viewer_src(None, url) is None  # no gateway: the page shows the link only
    assert viewer_src("http://127.0.0.1:8080", None) is None
    assert (
        viewer_src("http://127.0.0.1:8080", "https://elsewhere.example/x") is None
    )  # never frame another origin


@pytest.mark.parametrize("value", ["127.0.0.1:8080", "http://127.0.0.1:8080/ipfs", "ftp://host", "http://"])
def test_a_viewer_gateway_that_is_not_an_origin_is_refused_by_name(value: str) -> None:
    with pytest.raises(ValidationError, match="studio.viewer_gateway .* is not a gateway origin"):
        StudioSettings(viewer_gateway=value)
    assert StudioSettings(viewer_gateway="http://127.0.0.1:8080/").viewer_gateway == "http://127.0.0.1:8080"
