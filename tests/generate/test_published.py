"""Models on IPFS: the shipped sprite model pinned as one UnixFS directory in the embedded repo, loaded back from its
CID into an empty model cache with every digest checked, and refused, naming the file, when one byte differs (in a
block of the repo, in the published directory, in the cache) or when the weights are not the on-chain record's.

Real parts only: the shipped model, the embedded repo (blocks on disk), the verified fetcher of agent/ipfs, the
generator factory."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from agent.errors import ConfigError, NotFoundError
from agent.generate.factory import clear_cache, load_image_generator
from agent.generate.image.embedded import SHIPPED_DIR
from agent.generate.published import (
    PUBLICATION_MANIFEST,
    PublishedModelError,
    cache_path,
    describe_model_dir,
    load_model_from_cid,
    parse_model_uri,
)
from agent.ipfs.fetch import make_fetcher
from agent.ipfs.repo import IpfsRepo
from agent.ops.models import FileByFile, pin_model
from agent.settings import ModelSettings

SHIPPED_MANIFEST = json.loads((SHIPPED_DIR / "manifest.json").read_text())
WEIGHTS = "diffusion_pytorch_model.safetensors"
SHIPPED_FILES = sorted(
    p.name for p in SHIPPED_DIR.iterdir() if p.is_file() and p.name != "__init__.py" and p.suffix != ".pyc"
)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The shipped model pinned in an embedded repo on disk: (repo path, directory CID)."""
    path = tmp_path_factory.mktemp("repo") / "ipfs"
    pinned = pin_model(IpfsRepo(path), describe_model_dir(SHIPPED_DIR))
    return path, str(pinned.cid)


def _fetcher(repo_path: Path) -> FileByFile:
    return FileByFile(make_fetcher(repo=IpfsRepo(repo_path)))


def _copy_repo(published: tuple[Path, str], tmp_path: Path) -> Path:
    copy = tmp_path / "repo-copy"
    shutil.copytree(published[0], copy)
    return copy


def _flip_a_byte(repo_path: Path, root: str, name: str) -> None:
    """Change one byte of the first block of file ``name`` in the repo on disk (the file's CID is unchanged)."""
    repo = IpfsRepo(repo_path)
    entry = next(e for e in repo.ls(root) if e.name == name)
    block = entry.cid
    if block.codec != 0x55:  # a multi-block file: its first leaf
        block = repo.reader.links(block)[0].cid
    path = repo.blockstore.path(block)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_publishing_pins_every_file_of_the_model_directory_and_a_manifest_of_their_digests(published) -> None:
    repo_path, cid = published
    repo = IpfsRepo(repo_path)
    assert repo.is_pinned(cid)
    names = sorted(e.name for e in repo.ls(cid))
    assert names == sorted([*SHIPPED_FILES, PUBLICATION_MANIFEST])
    assert {"MODEL_CARD.md", "samples.png", "manifest.json", WEIGHTS, "config.json"} <= set(names)
    for entry in repo.ls(cid):
        if entry.name != PUBLICATION_MANIFEST:
            assert b"".join(repo.cat(entry.cid)) == (SHIPPED_DIR / entry.name).read_bytes(), entry.name
    manifest = json.loads(b"".join(repo.cat(repo.resolve(f"{cid}/{PUBLICATION_MANIFEST}"))))
    assert manifest["weights_sha256"] == SHIPPED_MANIFEST["weights_sha256"]
    assert manifest["weights_files"] == [WEIGHTS]
    assert sorted(manifest["files"]) == SHIPPED_FILES
    for name, entry in manifest["files"].items():
        data = (SHIPPED_DIR / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    # the same files always give the same directory CID (what makes re-publishing idempotent)
    assert str(pin_model(IpfsRepo(None), describe_model_dir(SHIPPED_DIR)).cid) == cid


def test_loading_from_the_cid_into_an_empty_cache_gives_the_same_weights_and_the_generator_loads_it(
    published, tmp_path: Path
) -> None:
    repo_path, cid = published
    cache = tmp_path / "models"
    path = load_model_from_cid(
        f"ipfs://{cid}", _fetcher(repo_path), cache, weights_sha256="0x" + SHIPPED_MANIFEST["weights_sha256"]
    )
    assert path == cache_path(cid, cache)
    assert hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest() == SHIPPED_MANIFEST["weights_sha256"]
    for name in SHIPPED_FILES:
        assert (path / name).read_bytes() == (SHIPPED_DIR / name).read_bytes(), name
    assert sorted(p.name for p in cache.joinpath("ipfs").iterdir()) == [cid]  # no staging left behind

    settings = ModelSettings(device="cpu", image_steps=4, threads=1, image_batch_size=1)
    clear_cache()
    try:
        from_cid = load_image_generator(
            settings.model_copy(update={"image_model": f"ipfs://{cid}", "cache_dir": cache})
        )
        shipped = load_image_generator(settings)
        assert from_cid is not shipped
        assert from_cid.model_ref == shipped.model_ref
        from agent.generate.base import ImageRequest

        request = ImageRequest(traits={"mood": "fierce", "element": "fire"}, seed=7)
        assert from_cid.generate([request])[0].pixels_sha256 == shipped.generate([request])[0].pixels_sha256
    finally:
        clear_cache()
    # loading again finds it in the cache (checked, not fetched): a fetcher with no source is never asked
    assert load_model_from_cid(cid, FileByFile(make_fetcher()), cache) == path


@pytest.mark.parametrize("name", ["MODEL_CARD.md", WEIGHTS])
def test_a_byte_changed_in_a_block_of_the_repo_is_refused_naming_the_file(
    published, tmp_path: Path, name: str
) -> None:
    repo_path = _copy_repo(published, tmp_path)
    cid = published[1]
    _flip_a_byte(repo_path, cid, name)
    cache = tmp_path / "models"
    with pytest.raises(Exception) as caught:
        load_model_from_cid(cid, _fetcher(repo_path), cache)
    assert f"fetching {name}" in str(caught.value), caught.value
    assert not cache_path(cid, cache).exists()
    assert not any(cache.joinpath("ipfs").iterdir())  # nothing half-written stays


def test_a_directory_whose_file_differs_from_its_manifest_is_refused_naming_the_file(
    published, tmp_path: Path
) -> None:
    """A publisher (or a source that does not check blocks) hands out a directory with one byte changed: its blocks
    match their CIDs, but the file does not match the manifest."""
    repo_path = _copy_repo(published, tmp_path)
    repo = IpfsRepo(repo_path)
    entries = {e.name: e.cid for e in repo.ls(published[1])}
    card = bytearray((SHIPPED_DIR / "MODEL_CARD.md").read_bytes())
    card[10] ^= 0x01
    entries["MODEL_CARD.md"] = repo.add(bytes(card)).cid
    tampered = str(repo.add_directory(entries))
    cache = tmp_path / "models"
    with pytest.raises(PublishedModelError) as caught:
        load_model_from_cid(tampered, _fetcher(repo_path), cache)
    assert caught.value.path == "MODEL_CARD.md"
    assert "sha256 of MODEL_CARD.md is" in caught.value.message
    assert caught.value.hint
    assert not cache_path(tampered, cache).exists()

    # a file the manifest does not list is refused too
    entries["MODEL_CARD.md"] = repo.add((SHIPPED_DIR / "MODEL_CARD.md").read_bytes()).cid
    entries["extra.bin"] = repo.add(b"not part of the model").cid
    extra = str(repo.add_directory(entries))
    with pytest.raises(PublishedModelError, match="extra.bin is not listed") as caught:
        load_model_from_cid(extra, _fetcher(repo_path), cache)
    assert caught.value.path == "extra.bin"


def test_weights_that_are_not_the_on_chain_records_are_refused(published, tmp_path: Path) -> None:
    repo_path, cid = published
    with pytest.raises(PublishedModelError, match="on-chain record says 0x" + "ab" * 32) as caught:
        load_model_from_cid(cid, _fetcher(repo_path), tmp_path / "models", weights_sha256="ab" * 32)
    assert caught.value.path == WEIGHTS
    assert not cache_path(cid, tmp_path / "models").exists()


def test_a_cached_model_is_checked_again_on_every_load(published, tmp_path: Path) -> None:
    repo_path, cid = published
    cache = tmp_path / "models"
    path = load_model_from_cid(cid, _fetcher(repo_path), cache)
    config = path / "config.json"
    config.write_bytes(config.read_bytes().replace(b"{", b"{ ", 1))
    settings = ModelSettings(device="cpu", image_model=f"ipfs://{cid}", cache_dir=cache)
    clear_cache()
    with pytest.raises(PublishedModelError, match="sha256 of config.json") as caught:
        load_image_generator(settings)
    assert caught.value.path == "config.json"
    with pytest.raises(PublishedModelError, match="config.json"):
        load_model_from_cid(cid, _fetcher(repo_path), cache)


def test_a_model_not_in_the_cache_and_a_uri_that_names_no_model_are_clear_errors(
    published, tmp_path: Path
) -> None:
    cid = published[1]
    clear_cache()
    with pytest.raises(NotFoundError, match="is not in the model cache") as caught:
        load_image_generator(ModelSettings(device="cpu", image_model=f"ipfs://{cid}", cache_dir=tmp_path))
    assert f"chrysalis model fetch ipfs://{cid}" in (caught.value.hint or "")
    assert parse_model_uri(f"ipfs://{cid}/{PUBLICATION_MANIFEST}") == cid
    for bad in ("https://example.org/model", f"ipfs://{cid}/config.json", "ipfs://not-a-cid"):
        with pytest.raises(ConfigError, match="does not name a published model"):
            parse_model_uri(bad)
    with pytest.raises(NotFoundError, match="is missing"):
        describe_model_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds no weight file"):
        describe_model_dir(tmp_path / "empty")


def test_a_local_model_directory_that_differs_from_its_own_manifest_is_not_published(tmp_path: Path) -> None:
    copy = tmp_path / "sprites32"
    shutil.copytree(SHIPPED_DIR, copy)
    config = copy / "config.json"
    config.write_bytes(config.read_bytes().replace(b"{", b"{ ", 1))
    with pytest.raises(PublishedModelError, match="config.json") as caught:
        describe_model_dir(copy)
    assert caught.value.path == "config.json" and "before publishing" in (caught.value.hint or "")
