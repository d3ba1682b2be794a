"""Seed derivation vectors, receipt canonical JSON and provenance, and receipts built from real generations."""

from __future__ import annotations

import hashlib
import json

import pytest

from agent.domain import InputSnapshot, ModelRef, OracleReading
from agent.errors import ConfigError
from agent.generate.base import ImageRequest, LoreRequest
from agent.generate.receipt import (
    SCHEMA,
    ImageRecord,
    InferenceReceipt,
    LoreRecord,
    SeedRecord,
    build_receipt,
    image_record,
    lore_record,
    snapshot_hash,
)
from agent.generate.runtime import torch_threads
from agent.generate.seed import DOMAIN, cpu_generator, derive_seed
from agent.settings import ModelSettings

# --- seeds ---------------------------------------------------------------------------------------------------

VECTORS = [
    (bytes(32), 0, 16914838191502297419),
    (bytes(32), 1, 7812545689836568491),
    (bytes(range(32)), 1, 5126545976544892371),
    (b"\xff" * 32, 2**256 - 1, 9645705865387200566),
]


@pytest.mark.parametrize(("seed", "token_id", "want"), VECTORS)
def test_derive_seed_vectors(seed, token_id, want):
    assert derive_seed(seed, token_id) == want
    # the rule, spelled out (Solidity: uint64(bytes8(sha256(abi.encodePacked(DOMAIN, seed, tokenId)))))
    digest = hashlib.sha256(b"chrysalis.seed.v1" + seed + token_id.to_bytes(32, "big")).digest()
    assert want == int.from_bytes(digest[:8], "big") and DOMAIN == b"chrysalis.seed.v1"


def test_derive_seed_accepts_hex_and_rejects_bad_input():
    assert derive_seed("0x" + "00" * 32, 1) == VECTORS[1][2]
    for bad in (b"short", "0xzz", bytes(33)):
        with pytest.raises(ConfigError, match="on-chain seed"):
            derive_seed(bad, 1)  # type: ignore[arg-type]
    for bad_id in (-1, 2**256, True, 1.0):
        with pytest.raises(ConfigError, match="uint256"):
            derive_seed(bytes(32), bad_id)  # type: ignore[arg-type]


def test_seeds_feed_a_cpu_generator():
    import torch

    g = cpu_generator(derive_seed(bytes(32), 1))
    assert g.device.type == "cpu"
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=cpu_generator(VECTORS[1][2])))


# --- canonical JSON and provenance -------------------------------------------------------------------------------


def fixed_receipt() -> InferenceReceipt:
    runtime = {
        "device": "cpu",
        "dtype": "float32",
        "threads": 1,
        "batch_size": 1,
        "versions": {"torch": "2.13.0+cpu", "diffusers": "0.39.0", "transformers": "5.17.0"},
        "canonical": True,
    }
    return InferenceReceipt(
        seed=SeedRecord("0x" + "00" * 32, 1, VECTORS[1][2]),
        input_snapshot_sha256="ab" * 32,
        image=ImageRecord(
            model=ModelRef("chrysalis/sprites-32@1", "cd" * 32, kind="image", backend="embedded"),
            request={
                "traits": {"mood": "serene", "element": "fire"},
                "seed": VECTORS[1][2],
                "strength": None,
                "prompt": None,
                "init_image_sha256": None,
                "init_image_cid": None,
            },
            config={"num_inference_steps": 50, "guidance_scale": 1.0},
            output={"pixels_sha256": "ef" * 32, "png_sha256": "01" * 32, "width": 32, "height": 32},
            runtime=runtime,
        ),
        lore=LoreRecord(
            model=ModelRef(
                "chrysalis/smollm2-135m-instruct-q4_1@1", "23" * 32, kind="lore", backend="embedded"
            ),
            request={
                "name": "Ember",
                "stage": 0,
                "traits": {"mood": "serene", "element": "fire"},
                "facts": {},
                "seed": VECTORS[1][2],
            },
            prompt="<|im_start|>user\nCreature: serene, fire.<|im_end|>\n",
            generation_config={"do_sample": False, "max_new_tokens": 64},
            output={
                "token_ids_sha256": "45" * 32,
                "text": "Ember · stage 0\n\nIt glows. It waits.",
                "fallback_sentences": 0,
                "postprocess": "chrysalis.lore.clean/1",
            },
            runtime=runtime,
        ),
    )


GOLDEN_PROVENANCE = "0x921c8da57da1f618eb6b61bf90829f0c240e7f3fdb98f2606be68c16be47216d"
"""provenance of fixed_receipt(); if it changes, receipts already on chain no longer verify: bump SCHEMA."""


def test_canonical_json_is_sorted_compact_utf8_with_schema():
    r = fixed_receipt()
    raw = r.canonical_json()
    data = json.loads(raw)
    assert data["schema"] == SCHEMA
    assert raw == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw.startswith(b'{"image":{"config":{"guidance_scale":1.0,"num_inference_steps":50},"model":')
    assert "·".encode() in raw  # UTF-8, not \u escapes
    assert r.canonical is True


def test_provenance_is_sha256_of_canonical_json_and_stable():
    r = fixed_receipt()
    assert r.provenance() == hashlib.sha256(r.canonical_json()).digest() and len(r.provenance()) == 32
    assert r.provenance_hex() == "0x" + r.sha256()
    assert r.provenance_hex() == GOLDEN_PROVENANCE
    # round trip through JSON, in any key order and with whitespace, gives the same provenance
    pretty = json.dumps(json.loads(r.canonical_json()), indent=3)
    assert InferenceReceipt.from_json(json.loads(pretty)).provenance() == r.provenance()
    assert fixed_receipt().provenance() == r.provenance()


def test_any_field_change_changes_provenance():
    base = fixed_receipt().to_json()
    changed = json.loads(json.dumps(base))
    changed["lore"]["output"]["text"] += " "
    assert InferenceReceipt.from_json(changed).provenance() != InferenceReceipt.from_json(base).provenance()


def test_unknown_schema_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a Chrysalis inference receipt"):
        InferenceReceipt.from_json({"schema": "something/else"})
    p = tmp_path / "r.json"
    fixed_receipt().save(p)
    assert InferenceReceipt.load(p) == InferenceReceipt.from_json(json.loads(p.read_text()))


def test_snapshot_hash_matches_the_domain_rule():
    snap = InputSnapshot(1, 10, "0x" + "aa" * 32, (OracleReading("eth_usd", 3000, "chainlink", 10),))
    assert snapshot_hash(snap) == snap.sha256
    assert snapshot_hash({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    with pytest.raises(ConfigError, match="not JSON"):
        snapshot_hash({"x": object()})


# --- receipts from real generations ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_image():
    from agent.generate import factory

    return factory.load_image_generator(
        ModelSettings(image_backend="embedded", device="cpu", image_batch_size=1)
    )


def test_receipt_from_embedded_image_and_tiny_lore(embedded_image, tiny_lm, fresh_factory):
    from agent.generate.lore import TransformersLoreWriter

    seed = derive_seed(bytes(32), 7)
    writer = TransformersLoreWriter(str(tiny_lm), device="cpu", max_new_tokens=8, batch_size=1)
    ireq = ImageRequest({"mood": "radiant", "element": "water"}, seed)
    lreq = LoreRequest("Tide", 0, {"mood": "radiant", "element": "water"}, {"season": "a warm season"}, seed)
    with torch_threads(1):
        img = embedded_image.generate([ireq])[0]
        lore = writer.write([lreq])[0]
    snapshot = {"chain_id": 1, "block_number": 5, "readings": []}
    r = build_receipt(
        onchain_seed=bytes(32),
        token_id=7,
        snapshot=snapshot,
        image=image_record(embedded_image, ireq, img),
        lore=lore_record(writer, lreq, lore),
    )
    assert r.seed == SeedRecord("0x" + "00" * 32, 7, seed)
    assert r.input_snapshot_sha256 == snapshot_hash(snapshot)
    assert r.image.model.backend == "embedded" and r.image.model.model_id == "chrysalis/sprites-32@1"
    assert r.image.output["pixels_sha256"] == img.pixels_sha256
    assert r.image.output["png_sha256"] == hashlib.sha256(img.png).hexdigest()
    assert "device" not in r.image.config and r.image.runtime["device"] == "cpu"
    assert r.lore.model.backend == "transformers" and r.lore.generation_config == dict(lore.generation_config)
    assert r.lore.prompt == lore.prompt and r.lore.output["token_ids_sha256"] == lore.token_ids_sha256
    assert r.canonical and r.image.runtime["threads"] == 1 and r.image.runtime["versions"]["torch"]
    # a request made with another seed cannot be receipted under this token
    with pytest.raises(ConfigError, match="derive_seed"):
        build_receipt(onchain_seed=bytes(32), token_id=8, image=image_record(embedded_image, ireq, img))
