"""The path gateway of the embedded node, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import random
from io import BytesIO

import httpx
import pytest

from agent.ipfs.cid import CID, raw_cid
from agent.ipfs.gateway import IMMUTABLE
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 80  # ~20 KB
SAMPLES = {
    "png": (PNG, "image/png"),
    "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 100, "image/jpeg"),
    "gif": (b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 50, "image/gif"),
    "webp": (b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40, "image/webp"),
    "json": (json.dumps({"name": "Chrysalis #1", "attributes": []}).encode(), "application/json"),
    "svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/svg+xml"),
    "text": ("une chrysalide \u2192 un papillon\n".encode(), "text/plain; charset=utf-8"),
    "binary": (bytes([0, 1, 2, 3, 255, 254]) * 20, "application/octet-stream"),
}


def raw_request(node: NodeServer, method: str, path: str) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (httpx would normalise '..' away before sending)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_content_type_is_sniffed(repo: IpfsRepo, gateway: httpx.Client, kind: str) -> None:
    data, expected = SAMPLES[kind]
    cid = repo.add(data).cid
    reply = gateway.get(f"/ipfs/{cid}")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == expected
    assert reply.content == data


def test_content_type_is_declared_by_name(repo: IpfsRepo, gateway: httpx.Client) -> None:
    png = repo.add(PNG)
    doc = repo.add(b"plain words")
    folder = repo.add_directory({"notes.json": doc, "art.png": png})
    assert gateway.get(f"/ipfs/{folder}/notes.json").headers["content-type"] == "application/json"
    reply = gateway.get(f"/ipfs/{doc.cid}", params={"filename": "story.md"})
    assert reply.headers["content-type"] == "text/markdown; charset=utf-8"
    assert "story.md" in reply.headers["content-disposition"]
    named = repo.add_directory({"chrysalide \u2192 papillon.svg": repo.add(SAMPLES["svg"][0])})
    reply = gateway.get(f"/ipfs/{named}/chrysalide%20%E2%86%92%20papillon.svg")
    assert reply.headers["content-type"] == "image/svg+xml"
    assert reply.headers["x-ipfs-path"] == f"/ipfs/{named}/chrysalide%20%E2%86%92%20papillon.svg"


def test_caching_headers_and_if_none_match(repo: IpfsRepo, gateway: httpx.Client) -> None:
    cid = repo.add(SAMPLES["json"][0]).cid
    reply = gateway.get(f"/ipfs/{cid}")
    assert reply.headers["etag"] == f'"{cid}"'
    assert reply.headers["cache-control"] == IMMUTABLE == "public, max-age=29030400, immutable"
    assert reply.headers["x-ipfs-path"] == f"/ipfs/{cid}"
    again = gateway.get(f"/ipfs/{cid}", headers={"If-None-Match": f'W/"other", "{cid}"'})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == f'"{cid}"'
    assert gateway.get(f"/ipfs/{cid}", headers={"If-None-Match": '"bafyother"'}).status_code == 200


@pytest.fixture
def big(repo: IpfsRepo) -> tuple[CID, bytes]:
    """A 600,000-byte file: three 262,144-byte chunks, the last one partial."""
    data = random.Random(7).randbytes(600_000)
    return repo.add(data).cid, data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=262000-262300", 262000, 262300),  # across the first chunk boundary
        ("bytes=0-0", 0, 0),
        ("bytes=524200-", 524200, 599999),  # open-ended, inside the last chunk
        ("bytes=-100", 599900, 599999),  # suffix
        ("bytes=100-10000000", 100, 599999),  # clipped to the end
        ("bytes=-700000", 0, 599999),  # suffix longer than the file
    ],
)
def test_single_ranges(
    gateway: httpx.Client, big: tuple[CID, bytes], header: str, start: int, end: int
) -> None:
    cid, data = big
    reply = gateway.get(f"/ipfs/{cid}", headers={"Range": header})
    assert reply.status_code == 206
    assert reply.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert int(reply.headers["content-length"]) == end - start + 1
    assert reply.content == data[start : end + 1]


def test_range_spanning_every_chunk_streams_exact_bytes(
    gateway: httpx.Client, big: tuple[CID, bytes]
) -> None:
    cid, data = big
    with gateway.stream("GET", f"/ipfs/{cid}", headers={"Range": "bytes=1-599998"}) as reply:
        body = b"".join(reply.iter_bytes())
    assert reply.status_code == 206
    assert body == data[1:599999]


@pytest.mark.parametrize("header", ["bytes=600000-", "bytes=700000-700010", "bytes=-0"])
def test_unsatisfiable_range_is_416(gateway: httpx.Client, big: tuple[CID, bytes], header: str) -> None:
    cid, data = big
    reply = gateway.get(f"/ipfs/{cid}", headers={"Range": header})
    assert reply.status_code == 416
    assert reply.headers["content-range"] == f"bytes */{len(data)}"


def test_multi_range_is_answered_whole(gateway: httpx.Client, big: tuple[CID, bytes]) -> None:
    cid, data = big
    reply = gateway.get(f"/ipfs/{cid}", headers={"Range": "bytes=0-1,5-6"})
    assert reply.status_code == 200
    assert reply.content == data


def test_head_gives_headers_without_body(gateway: httpx.Client, big: tuple[CID, bytes]) -> None:
    cid, data = big
    reply = gateway.head(f"/ipfs/{cid}")
    assert reply.status_code == 200
    assert reply.content == b""
    assert int(reply.headers["content-length"]) == len(data)
    assert reply.headers["etag"] == f'"{cid}"'
    ranged = gateway.head(f"/ipfs/{cid}", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.headers["content-length"] == "10"


def test_unknown_content_is_404(repo: IpfsRepo, gateway: httpx.Client) -> None:
    absent = raw_cid(b"never added")
    assert gateway.get(f"/ipfs/{absent}").status_code == 404
    folder = repo.add_directory({"a.txt": repo.add(b"a")})
    assert gateway.get(f"/ipfs/{folder}/missing.txt").status_code == 404


@pytest.mark.parametrize(
    "bad", ["not-a-cid", "QmTooShort", "bafy!!!", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"]
)
def test_malformed_cid_is_400_with_reason(gateway: httpx.Client, bad: str) -> None:
    reply = gateway.get(f"/ipfs/{bad}")
    assert reply.status_code == 400
    assert "invalid CID" in reply.text
    assert bad in reply.text


@pytest.mark.parametrize(
    "suffix",
    [
        "/../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/a/..",
        "/.%2e/x",
        "/a\\..\\b",
        "/a%5c..%5cb",
        "/a%2fb",
    ],
)
def test_path_traversal_is_refused(repo: IpfsRepo, node: NodeServer, suffix: str) -> None:
    folder = repo.add_directory({"a": repo.add_directory({"b": repo.add(b"b")})})
    status, body = raw_request(node, "GET", f"/ipfs/{folder}{suffix}")
    assert status == 400, body


def test_directory_without_index_lists_entries(repo: IpfsRepo, gateway: httpx.Client) -> None:
    folder = repo.add_directory({"one.txt": repo.add(b"1"), "two <b>.txt": repo.add(b"2")})
    redirect = gateway.get(f"/ipfs/{folder}")
    assert redirect.status_code == 301
    assert redirect.headers["location"] == f"/ipfs/{folder}/"
    listing = gateway.get(f"/ipfs/{folder}/")
    assert listing.status_code == 200
    assert listing.headers["content-type"].startswith("text/html")
    assert 'href="./one.txt"' in listing.text
    assert "two &lt;b&gt;.txt" in listing.text  # names are escaped


def test_directory_with_index_serves_it(repo: IpfsRepo, gateway: httpx.Client) -> None:
    page = b"<!doctype html><title>hi</title>"
    folder = repo.add_directory({"index.html": repo.add(page)})
    reply = gateway.get(f"/ipfs/{folder}/")
    assert reply.content == page
    assert reply.headers["content-type"].startswith("text/html")


def test_sharded_directory_of_10000_entries_resolves() -> None:
    repo = IpfsRepo(None)  # in memory: 10,000 files on disk would only measure the filesystem
    entries = {
        f"token-{i:05d}.json": repo.add_raw_block(f'{{"id": {i}}}'.encode(), pin=False) for i in range(10_000)
    }
    folder = repo.add_directory(entries)
    assert repo.stat(folder).sharded  # Kubo would shard it too (HAMT, fanout 256)
    with NodeServer(repo) as node, httpx.Client(base_url=node.url) as gateway:
        for i in (0, 4242, 9999):
            reply = gateway.get(f"/ipfs/{folder}/token-{i:05d}.json")
            assert reply.status_code == 200
            assert reply.json() == {"id": i}
            assert reply.headers["etag"] == f'"{entries[f"token-{i:05d}.json"]}"'
        assert gateway.get(f"/ipfs/{folder}/token-10000.json").status_code == 404
        assert "10000 entries" in gateway.get(f"/ipfs/{folder}/").text


def test_format_raw_and_car(repo: IpfsRepo, gateway: httpx.Client) -> None:
    folder = repo.add_directory({"a.json": repo.add(SAMPLES["json"][0]), "b.png": repo.add(PNG)})
    raw = gateway.get(f"/ipfs/{folder}", params={"format": "raw"})
    assert raw.headers["content-type"] == "application/vnd.ipld.raw"
    assert raw.content == repo.block_get(folder)
    car = gateway.get(f"/ipfs/{folder}", headers={"Accept": "application/vnd.ipld.car"})
    assert car.headers["content-type"].startswith("application/vnd.ipld.car")
    other = IpfsRepo(None)
    assert other.import_car(BytesIO(car.content)) == [folder]
    assert b"".join(other.cat(other.resolve(f"{folder}/b.png"))) == PNG
    assert gateway.get(f"/ipfs/{folder}", params={"format": "tar"}).status_code == 400


def test_allow_scripts_lets_one_directory_run_its_scripts_from_then_on(tmp_path) -> None:
    """The agent pins its token viewer after its gateway started: ``allow_scripts`` moves that directory (and only
    it) from the sandbox to the app policy while the gateway serves."""
    from agent.ipfs.cli import add_path
    from agent.ipfs.gateway import APP_CSP, GATEWAY_CSP

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><script type=module src=viewer.js></script>")
    (site / "viewer.js").write_text("export {};")
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("<script>alert(1)</script>")
    repo = IpfsRepo(tmp_path / "repo")
    roots = [add_path(repo, d, cid_version=1, raw_leaves=True) for d in (site, other)]
    site_cid, other_cid = (str(r if isinstance(r, CID) else r.cid) for r in roots)
    with NodeServer(repo, rpc=False) as node:

        def policy(cid: str) -> str:
            return httpx.get(f"{node.url}/ipfs/{cid}/index.html").headers["content-security-policy"]

        assert policy(site_cid) == GATEWAY_CSP
        node.allow_scripts(site_cid)
        assert policy(site_cid) == APP_CSP and policy(other_cid) == GATEWAY_CSP
