"""The portable export as a pinned part of the model: the embedded sprite model's ONNX export (``unet.onnx`` +
``scheduler.json``) is byte-identical across processes, is pinned beside the model when the model is published and
named by its manifest (CID, both sha256, opset), is fetched with the model from its CID, and is what the portable
generator and ``verify`` use then (every file checked; a changed file is refused, naming it and both digests), so
that no export runs.

Real parts only: the shipped model, torch's exporter (in two processes), the embedded IPFS repo on disk, the
verified fetcher, Node.js with the pinned onnxruntime-web."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent.errors import NotFoundError
from agent.generate import factory
from agent.generate.base import ImageRequest
from agent.generate.image.embedded import SHIPPED_DIR, file_sha256
from agent.generate.portable.generator import (
    PORTABLE_SCHEME,
    PortableSpriteGenerator,
    export_cache_dir,
    pinned_export,
)
from agent.generate.portable.onnx_export import CONSTANTS_NAME, ONNX_NAME, OPSET
from agent.generate.published import (
    PUBLICATION_MANIFEST,
    PinnedExportError,
    PublishedModelError,
    cache_path,
    describe_model_dir,
    load_model_from_cid,
    portable_cache_path,
)
from agent.generate.receipt import build_receipt, image_record
from agent.generate.seed import derive_seed
from agent.generate.verify import EXIT_MATCH, verify
from agent.ipfs.fetch import make_fetcher
from agent.ipfs.repo import IpfsRepo
from agent.ops.models import FileByFile, pin_model
from agent.verify.chain import RegistryRecord
from agent.verify.models import ModelLocation, locate_image_model

STEPS = 25
ONCHAIN = bytes(range(32))
FRESH = ImageRequest({"mood": "serene", "element": "fire"}, derive_seed(ONCHAIN, 1))
SHIPPED = json.loads((SHIPPED_DIR / "manifest.json").read_text())
EXPORT_CODE = (
    "import sys, json; from agent.generate.portable.onnx_export import export_sprite_model; "
    "from agent.generate.image.embedded import SHIPPED_DIR; "
    "print(json.dumps(export_sprite_model(SHIPPED_DIR, sys.argv[1])))"
)


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, dict]]:
    """The shipped model exported by two Python processes at once, each into its own directory."""
    outs = [tmp_path_factory.mktemp(f"export-{i}") for i in (1, 2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXPORT_CODE, str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    found = []
    for out, proc in zip(outs, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        found.append((out, json.loads(stdout.strip().splitlines()[-1])))
    return found


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    """The shipped model published into an embedded repo on disk: (repo path, the pinned model)."""
    path = tmp_path_factory.mktemp("repo") / "ipfs"
    return path, pin_model(IpfsRepo(path), describe_model_dir(SHIPPED_DIR))


@pytest.fixture(scope="module")
def loaded(published, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The published model loaded from its CID into an empty model cache: (cache, model directory)."""
    repo_path, pinned = published
    cache = tmp_path_factory.mktemp("cache")
    path = load_model_from_cid(
        pinned.uri,
        FileByFile(make_fetcher(repo=IpfsRepo(repo_path))),
        cache,
        weights_sha256=SHIPPED["weights_sha256"],
    )
    return cache, path


@pytest.fixture(scope="module")
def exported_receipt(tmp_path_factory: pytest.TempPathFactory):
    """A portable receipt made from the shipped model directory, whose manifest names no export: the generator
    exported the model (into its own cache)."""
    cache = tmp_path_factory.mktemp("agent-cache")
    gen = PortableSpriteGenerator(cache_dir=cache, num_inference_steps=STEPS)
    try:
        assert gen.export_source == "exported" and gen.export_dir == export_cache_dir(
            cache, SHIPPED["weights_sha256"]
        )
        [img] = gen.generate([FRESH])
        receipt = build_receipt(onchain_seed=ONCHAIN, token_id=1, image=image_record(gen, FRESH, img))
    finally:
        gen.close()
    return receipt, img


def test_the_export_is_byte_identical_in_two_processes(two_exports) -> None:
    (dir1, info1), (dir2, info2) = two_exports
    for name in (ONNX_NAME, CONSTANTS_NAME):
        assert (dir1 / name).read_bytes() == (dir2 / name).read_bytes(), name
        assert info1[name] == info2[name] == file_sha256(dir1 / name)
    assert info1["opset"] == OPSET and info1["weights_sha256"] == SHIPPED["weights_sha256"]


def test_publishing_pins_the_export_beside_the_model_and_the_manifest_names_it(
    published, two_exports
) -> None:
    repo_path, pinned = published
    repo = IpfsRepo(repo_path)
    ref = pinned.model.portable
    assert ref is not None and set(ref) == {"cid", "unet_onnx_sha256", "scheduler_sha256", "opset"}
    export_dir, info = two_exports[0]
    assert ref["unet_onnx_sha256"] == info[ONNX_NAME] and ref["scheduler_sha256"] == info[CONSTANTS_NAME]
    assert ref["opset"] == OPSET
    # the export is its own pinned UnixFS directory holding exactly the two files, byte for byte
    assert repo.is_pinned(ref["cid"]) and str(pinned.portable_cid) == ref["cid"]
    entries = {e.name: e.cid for e in repo.ls(ref["cid"])}
    assert sorted(entries) == [CONSTANTS_NAME, ONNX_NAME]
    for name, cid in entries.items():
        assert b"".join(repo.cat(cid)) == (export_dir / name).read_bytes(), name
    # the model's directory is unchanged but for its publication manifest, which names the export
    names = sorted(e.name for e in repo.ls(pinned.cid))
    assert ONNX_NAME not in names and PUBLICATION_MANIFEST in names
    manifest = json.loads(b"".join(repo.cat(repo.resolve(f"{pinned.cid}/{PUBLICATION_MANIFEST}"))))
    assert manifest["portable"] == ref and manifest["weights_sha256"] == SHIPPED["weights_sha256"]
    assert "portable" not in SHIPPED  # the shipped manifest.json is left as it is (its bytes are in the CID)
    # publishing again gives the same CIDs; without the export, the CID a publication had before it was pinned
    again = pin_model(IpfsRepo(None), describe_model_dir(SHIPPED_DIR))
    assert again.cid == pinned.cid and again.model.portable == ref
    bare = pin_model(IpfsRepo(None), describe_model_dir(SHIPPED_DIR), portable=False)
    assert bare.model.portable is None and bare.cid != pinned.cid


def test_loading_the_model_from_its_cid_fetches_the_export_beside_it(published, loaded) -> None:
    _, pinned = published
    cache, path = loaded
    ref = pinned.model.portable
    assert path == cache_path(str(pinned.cid), cache)
    export = portable_cache_path(ref["cid"], cache)
    assert file_sha256(export / ONNX_NAME) == ref["unet_onnx_sha256"]
    assert file_sha256(export / CONSTANTS_NAME) == ref["scheduler_sha256"]
    found = pinned_export(path, cache)
    assert found is not None and found[0] == export and found[1]["cid"] == ref["cid"]
    assert pinned_export(SHIPPED_DIR, cache) is None  # the shipped manifest names none: the generator exports


def test_a_tampered_pinned_unet_is_refused_naming_the_file_and_both_digests(
    published, loaded, tmp_path
) -> None:
    _, pinned = published
    ref = pinned.model.portable
    cache = tmp_path / "cache"
    shutil.copytree(loaded[0], cache)
    onnx = portable_cache_path(ref["cid"], cache) / ONNX_NAME
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    bad = file_sha256(onnx)
    with pytest.raises(PinnedExportError) as e:
        PortableSpriteGenerator(
            cache_path(str(pinned.cid), cache), cache_dir=cache, num_inference_steps=STEPS
        )
    assert (
        str(onnx) in e.value.message and bad in e.value.message and ref["unet_onnx_sha256"] in e.value.message
    )
    assert e.value.path == ONNX_NAME and e.value.hint and "chrysalis model fetch" in e.value.hint
    assert not export_cache_dir(cache, SHIPPED["weights_sha256"]).exists()  # refused, not exported instead

    # loading the model again checks the export it names, and says the same
    with pytest.raises(PinnedExportError, match=ONNX_NAME):
        load_model_from_cid(pinned.uri, FileByFile(make_fetcher()), cache)

    # named but not here: a clear error saying how to fetch it, not an export
    shutil.rmtree(onnx.parent)
    with pytest.raises(NotFoundError, match=f"names the pinned ONNX export {ref['cid']}") as e2:
        PortableSpriteGenerator(
            cache_path(str(pinned.cid), cache), cache_dir=cache, num_inference_steps=STEPS
        )
    assert e2.value.hint and "chrysalis model fetch" in e2.value.hint


def test_a_malformed_portable_entry_is_refused(tmp_path) -> None:
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_DIR, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["portable"] = {
        "cid": "not a cid",
        "unet_onnx_sha256": "00",
        "scheduler_sha256": "00",
        "opset": 17,
    }
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PublishedModelError, match="portable is not") as e:
        describe_model_dir(model)
    assert e.value.hint and "chrysalis model publish" in e.value.hint


def test_publishing_refuses_a_model_whose_manifest_names_another_export(published, tmp_path) -> None:
    """A sprite model whose own manifest.json names an export: publishing checks the export made here against it."""
    ref = dict(published[1].model.portable)
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_DIR, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["portable"] = {**ref, "unet_onnx_sha256": "ab" * 32}
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PinnedExportError) as e:
        pin_model(IpfsRepo(None), describe_model_dir(model))
    assert "ab" * 32 in e.value.message and ref["unet_onnx_sha256"] in e.value.message
    assert e.value.path == ONNX_NAME and e.value.hint
    # naming the export it makes, it publishes, and the manifest carries the same entry
    manifest["portable"] = ref
    (model / "manifest.json").write_text(json.dumps(manifest))
    assert pin_model(IpfsRepo(None), describe_model_dir(model)).model.portable == ref


@pytest.fixture()
def no_export(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts every ONNX export that runs (torch.onnx.export), and fails it."""
    ran: list[str] = []

    def counting(*args, **kwargs):
        ran.append(str(args[2]) if len(args) > 2 else "?")
        raise AssertionError("an ONNX export ran")

    monkeypatch.setattr(torch.onnx, "export", counting)
    return ran


def test_verify_of_a_portable_receipt_replays_from_the_pinned_export(
    published, loaded, exported_receipt, no_export
) -> None:
    _, pinned = published
    cache, _path = loaded
    receipt, img = exported_receipt
    # the receipt records the export's digests: the same as the pinned ones (the export is deterministic)
    ref = pinned.model.portable
    assert receipt.image.config["onnx"] == {
        ONNX_NAME: ref["unet_onnx_sha256"],
        CONSTANTS_NAME: ref["scheduler_sha256"],
        "opset": ref["opset"],
    }
    factory.clear_cache()
    try:
        result = verify(receipt, image_model=pinned.uri, cache_dir=cache)
    finally:
        factory.clear_cache()
    assert result.match and result.exit_code == EXIT_MATCH, result.note
    assert "image.config.onnx" in result.checked and "image.output.pixels_sha256" in result.checked
    assert no_export == []  # no export ran
    assert not export_cache_dir(cache, SHIPPED["weights_sha256"]).exists()
    gen = PortableSpriteGenerator(
        cache_path(str(pinned.cid), cache), cache_dir=cache, num_inference_steps=STEPS
    )
    try:
        assert gen.export_source == "pinned" and gen.export_dir == portable_cache_path(ref["cid"], cache)
        assert gen.generate([FRESH])[0].png == img.png
    finally:
        gen.close()
    assert no_export == []


def test_chrysalis_verify_fetches_the_registered_model_and_its_export_for_a_portable_receipt(
    published, exported_receipt, tmp_path, no_export
) -> None:
    """``chrysalis verify`` locates the model of a portable receipt: the registered publication (fetched from the
    repo by CID with its export), not the shipped copy that would export it again."""
    repo_path, pinned = published
    receipt, _ = exported_receipt
    cache = tmp_path / "verify-cache"
    record = RegistryRecord(1, SHIPPED["weights_sha256"], pinned.uri, 1)
    fetcher = make_fetcher(repo=IpfsRepo(repo_path))
    found = locate_image_model(receipt.image.model, record, fetcher=fetcher, cache_dir=cache)
    assert isinstance(found, ModelLocation) and found.path == pinned.uri
    ref = pinned.model.portable
    assert file_sha256(portable_cache_path(ref["cid"], cache) / ONNX_NAME) == ref["unet_onnx_sha256"]
    factory.clear_cache()
    try:
        result = verify(receipt, image_model=found.path, cache_dir=cache)
    finally:
        factory.clear_cache()
    assert result.match, result.note
    assert no_export == []
    # a torch-scheme receipt of the shipped model keeps using the shipped copy
    ref_model = receipt.image.model
    torch_ref = dataclasses.replace(
        ref_model, extra={k: v for k, v in ref_model.extra.items() if k != "runtime"}
    )
    assert receipt.image.model.extra["runtime"] == PORTABLE_SCHEME
    shipped = locate_image_model(torch_ref, record, fetcher=fetcher, cache_dir=tmp_path / "other")
    assert isinstance(shipped, ModelLocation) and shipped.path is None
    # a registered publication that cannot be had: the shipped copy replays it, and the report says why
    elsewhere = pin_model(IpfsRepo(None), describe_model_dir(SHIPPED_DIR), portable=False)  # not in the repo
    gone = RegistryRecord(1, SHIPPED["weights_sha256"], elsewhere.uri, 1)
    fallback = locate_image_model(receipt.image.model, gone, fetcher=fetcher, cache_dir=tmp_path / "other")
    assert isinstance(fallback, ModelLocation) and fallback.path is None
    assert "shipped with Chrysalis" in fallback.how and elsewhere.uri in fallback.how
