"""The studio's hardening (issue 12; audit rows M1, M5c, I1, I4), through the real app over the session's world.

* ``/ipfs/`` shares the studio's origin, so only PNG, JPEG, GIF, WebP and JSON are served inline (by their bytes);
  HTML, SVG and anything else come back as ``application/octet-stream`` attachments, ``?filename=`` only names the
  download, every reply carries the gateway's sandbox CSP and ``nosniff``, and there is no CAR export.
* Every studio reply carries a CSP with ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: same-origin`` and ``nosniff``; a foreign Host header gets 400.
* Redirects "back" follow the Referer only to a path of the studio itself.
"""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest
from starlette.testclient import TestClient

from agent.ipfs.gateway import GATEWAY_CSP
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.studio.app import create_app, safe_back
from agent.studio.service import Studio
from tests.studio.conftest import BASE_URL
from tests.studio.world import submit

HTML = b"<!doctype html>\n<html><body><script>fetch('/review')</script></body></html>\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
TEXT = "une chrysalide \u2192 un papillon\n".encode()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
ATTACHMENT = re.compile(r"^attachment; filename\*=UTF-8''")


def gateway_headers_ok(reply: httpx.Response) -> None:
    assert reply.headers["content-security-policy"] == GATEWAY_CSP
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"


def is_attachment(reply: httpx.Response, name: str) -> None:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/octet-stream"
    assert ATTACHMENT.match(reply.headers["content-disposition"]), reply.headers["content-disposition"]
    assert reply.headers["content-disposition"].endswith(name)
    gateway_headers_ok(reply)


# -- /ipfs on the studio ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [HTML, SVG, TEXT, b"<html>" + b" " * (1 << 20) + b"</html>"],  # the last one is streamed (over 1 MiB)
    ids=["html", "svg", "text", "big-html"],
)
def test_html_svg_and_text_blocks_are_attachments_of_octets(
    client: TestClient, studio: Studio, data: bytes
) -> None:
    cid = studio.repo.add(data).cid
    reply = client.get(f"/ipfs/{cid}")
    is_attachment(reply, str(cid))
    assert reply.content == data
    head = client.head(f"/ipfs/{cid}")
    assert head.headers["content-type"] == "application/octet-stream"
    assert head.headers["content-disposition"].startswith("attachment")
    named = client.get(f"/ipfs/{cid}", params={"filename": "page.html"})  # a name does not make it HTML
    is_attachment(named, "page.html")


def test_a_file_named_html_in_a_directory_and_its_index_are_attachments(
    client: TestClient, studio: Studio
) -> None:
    page = studio.repo.add(HTML)
    folder = studio.repo.add_directory({"page.html": page, "art.svg": studio.repo.add(SVG)}, pin=False)
    is_attachment(client.get(f"/ipfs/{folder}/page.html"), "page.html")
    is_attachment(client.get(f"/ipfs/{folder}/art.svg"), "art.svg")
    site = studio.repo.add_directory({"index.html": page}, pin=False)
    is_attachment(client.get(f"/ipfs/{site}/"), "index.html")


def test_filename_never_chooses_the_type(client: TestClient) -> None:
    metadata = client.get("/api/tokens/1").json()["metadata_cid"]
    reply = client.get(f"/ipfs/{metadata}", params={"filename": "x.html"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["content-disposition"] == "inline; filename*=UTF-8''x.html"
    gateway_headers_ok(reply)
    image = client.get("/api/tokens/1").json()["image"].removeprefix("ipfs://")
    svg_named = client.get(f"/ipfs/{image}", params={"filename": "x.svg", "download": "true"})
    assert svg_named.headers["content-type"] == "image/png"
    assert svg_named.headers["content-disposition"] == "attachment; filename*=UTF-8''x.svg"


def test_png_and_json_are_served_inline_with_nosniff_and_the_csp(client: TestClient, studio: Studio) -> None:
    token = client.get("/api/tokens/1").json()
    png = client.get(f"/ipfs/{token['image'].removeprefix('ipfs://')}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG") and "content-disposition" not in png.headers
    gateway_headers_ok(png)
    metadata = client.get(f"/ipfs/{token['metadata_cid']}")
    assert (
        metadata.headers["content-type"] == "application/json"
        and "content-disposition" not in metadata.headers
    )
    assert metadata.json()["name"] == token["name"]
    gateway_headers_ok(metadata)
    for data, media_type in [(PNG, "image/png"), (b"GIF89a" + b"\x00" * 20, "image/gif")]:
        reply = client.get(f"/ipfs/{studio.repo.add(data).cid}")
        assert reply.headers["content-type"] == media_type and "content-disposition" not in reply.headers
        gateway_headers_ok(reply)


def test_car_export_is_refused_and_raw_blocks_are_attachments(client: TestClient) -> None:
    image = client.get("/api/tokens/1").json()["image"].removeprefix("ipfs://")
    car = client.get(f"/ipfs/{image}", params={"format": "car"})
    assert (
        car.status_code == 400
        and "format=car" in car.text
        and car.headers["content-type"].startswith("text/plain")
    )
    gateway_headers_ok(car)
    by_accept = client.get(f"/ipfs/{image}", headers={"Accept": "application/vnd.ipld.car"})
    assert by_accept.status_code == 406 and "CAR export is off" in by_accept.text
    raw = client.get(f"/ipfs/{image}", params={"format": "raw"})
    assert raw.status_code == 200 and raw.headers["content-disposition"].startswith("attachment")
    gateway_headers_ok(raw)


def test_errors_of_the_gateway_carry_the_headers_too(client: TestClient) -> None:
    reply = client.get("/ipfs/not-a-cid")
    assert reply.status_code == 400
    gateway_headers_ok(reply)


def test_the_standalone_gateway_keeps_html_but_sandboxed(tmp_path: object) -> None:
    """``chrysalis ipfs serve`` is its own origin: HTML and SVG still render there, but in a sandbox (no scripts,
    an opaque origin) and with nosniff, and it keeps CAR export."""
    repo = IpfsRepo(tmp_path)  # type: ignore[arg-type]
    html_cid = repo.add(HTML).cid
    with NodeServer(repo) as node, httpx.Client(base_url=node.url) as http:
        reply = http.get(f"/ipfs/{html_cid}")
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert reply.headers["content-security-policy"] == GATEWAY_CSP and "sandbox" in GATEWAY_CSP
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert http.get(f"/ipfs/{html_cid}", params={"format": "car"}).status_code == 200
        missing = http.get("/ipfs/bafkqaaa-nope")
        assert missing.status_code == 400 and missing.headers["content-security-policy"] == GATEWAY_CSP


# -- studio pages -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/tokens/1", 200),
        ("/ops", 200),
        ("/login", 200),
        ("/review", 401),
        ("/api/tokens", 200),
        ("/api/ops", 200),
        ("/tokens/999999", 404),
        ("/static/studio.css", 200),
        ("/static/studio.js", 200),
    ],
)
def test_every_studio_reply_carries_the_security_headers(client: TestClient, path: str, status: int) -> None:
    reply = client.get(path)
    assert reply.status_code == status
    csp = reply.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["referrer-policy"] == "same-origin"
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_the_review_pages_inline_confirm_is_allowed_by_its_hash(curator: TestClient) -> None:
    page = curator.get("/review")
    handler = re.search(r'onclick="([^"]+)"', page.text)
    assert handler, "the review page lost its bulk-approve confirm()"
    digest = base64.b64encode(hashlib.sha256(handler.group(1).encode()).digest()).decode()
    assert f"'unsafe-hashes' 'sha256-{digest}'" in page.headers["content-security-policy"]


def test_the_event_stream_carries_the_headers(studio: Studio) -> None:
    with TestClient(create_app(studio), base_url=BASE_URL) as c, c.stream("GET", "/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in stream.headers["content-security-policy"]


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8090", "127.0.0.1.evil.example", "[::2]:8090"]
)
def test_a_foreign_host_is_refused(client: TestClient, host: str) -> None:
    reply = client.get("/", headers={"Host": host})
    assert reply.status_code == 400 and "Invalid host header" in reply.text
    assert (
        client.get(
            "/ipfs/" + client.get("/api/tokens/1").json()["metadata_cid"], headers={"Host": host}
        ).status_code
        == 400
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8090", "localhost:1234", "LOCALHOST", "[::1]:8090"])
def test_the_configured_host_and_loopback_names_are_served(client: TestClient, host: str) -> None:
    assert client.get("/", headers={"Host": host}).status_code == 200


def test_allowed_hosts_replaces_the_default(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(studio.settings.studio, "allowed_hosts", ["studio.example.org", "*.chrysalis.test"])
    with TestClient(create_app(studio), base_url="http://studio.example.org") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"Host": "a.chrysalis.test"}).status_code == 200
        assert c.get("/", headers={"Host": "127.0.0.1"}).status_code == 400
    with TestClient(create_app(studio, host="10.0.0.5"), base_url="http://10.0.0.5") as c:
        assert (
            c.get("/").status_code == 400
        )  # the listen address is a default only, not with allowed_hosts set
    monkeypatch.setattr(studio.settings.studio, "allowed_hosts", None)
    with TestClient(create_app(studio, host="10.0.0.5"), base_url="http://10.0.0.5") as c:
        assert c.get("/").status_code == 200


# -- redirects back ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        ("https://evil.example/x", "/review"),
        ("//evil.example/x", "/review"),
        ("/\\evil.example/x", "/review"),
        ("javascript:alert(1)", "/review"),
        (f"{BASE_URL}/review?tab=open", "/review?tab=open"),
        ("/tokens/2", "/tokens/2"),
    ],
)
def test_an_action_redirects_back_only_to_a_local_path(
    curator: TestClient, studio: Studio, referer: str, expected: str
) -> None:
    review_id = submit(studio)
    reply = curator.post(
        f"/review/{review_id}/reject",
        data={"csrf_token": curator.csrf, "reason": "hardening test"},
        headers={"Referer": referer},
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == expected


def test_safe_back() -> None:
    host = "127.0.0.1:8090"
    assert safe_back(None, "/review", host) == "/review"
    assert safe_back("http://127.0.0.1:8090/ops?x=1", "/review", host) == "/ops?x=1"
    assert safe_back("http://127.0.0.1:9999/ops", "/review", host) == "/review"  # another origin
    assert safe_back("https://evil.example/x", "/", host) == "/"
    assert safe_back("/a\tb", "/", host) == "/"
    assert safe_back("ftp://127.0.0.1:8090/x", "/", host) == "/"


def test_a_malformed_allowed_hosts_pattern_is_a_config_error() -> None:
    from agent.errors import ConfigError
    from agent.settings import load_settings

    with pytest.raises(ConfigError, match="studio.allowed_hosts: 'studio.\\*.org' is not a host name"):
        load_settings(studio={"allowed_hosts": ["studio.*.org"]})
    assert load_settings(studio={"allowed_hosts": ["*.example.org", "*"]}).studio.allowed_hosts == [
        "*.example.org",
        "*",
    ]
