"""Token metadata: canonical bytes, digest and CID, reading back, size limit, parent history."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from agent.domain import InputSnapshot, ModelRef, OracleReading
from agent.errors import IntegrityError
from agent.metadata import (
    MAX_METADATA_BYTES,
    SCHEMA,
    MetadataDigestMismatchError,
    MetadataHistoryError,
    MetadataSchemaError,
    MetadataTooLargeError,
    TokenMetadata,
    build_metadata,
    cid_from_digest,
    digest_from_cid,
    history,
    metadata_cid,
    metadata_digest,
    parse_metadata,
)

VECTORS = Path(__file__).resolve().parents[1] / "ipfs" / "data" / "unixfs-cids.json"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
IMAGE_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
IMAGE = ModelRef("chrysalis/sprites-32@1", "43d46ec39e3e676b02ca0dbee7853c27c8d19bbe10dbde623b85bf0736de318e")
LORE = ModelRef("HuggingFaceTB/SmolLM2-135M-Instruct@q4_1", "ab" * 32)


def snapshot(block: int = 100) -> InputSnapshot:
    return InputSnapshot(
        chain_id=31337,
        block_number=block,
        block_hash="0x" + f"{block:064x}",
        readings=(
            OracleReading(
                "wallet.held_seconds", 90_000, "erc721.Transfer:0xabc", block, {"acquired_block": 3}
            ),
            OracleReading("price.change_pct", 3.25, "chainlink:0xdef", block, {"raw": 312_345_678_900}),
        ),
    )


def make(stage: int = 1, parent: str | None = None, **overrides: Any) -> TokenMetadata:
    fields: dict[str, Any] = {
        "name": "Chrysalis #7",
        "lore": "Born in a quiet season, the larva dreams of wings. Ünïcödé — ok.",
        "image_cid": IMAGE_CID,
        "traits": {"mood": "serene", "element": "water", "form": "larva"},
        "stage": stage,
        "parent": parent,
        "receipt": {"seed": "0x01", "inputs_sha256": snapshot().sha256, "steps": 50},
        "models": {"image": IMAGE, "lore": LORE},
        "snapshot": snapshot(100 + stage),
    }
    fields.update(overrides)
    return build_metadata(**fields)


# -- addressing ---------------------------------------------------------------------------------------------


def test_digest_and_cid_known_vector() -> None:
    assert metadata_cid(b"hello world\n") == HELLO_CID
    assert metadata_digest(b"hello world\n") == hashlib.sha256(b"hello world\n").digest()
    assert len(metadata_digest(b"")) == 32
    assert digest_from_cid(HELLO_CID) == metadata_digest(b"hello world\n")
    assert cid_from_digest(digest_from_cid(HELLO_CID)) == HELLO_CID


def test_cid_matches_kubo_for_a_full_chunk() -> None:
    """The largest metadata still is one raw block: Kubo's CID for exactly 262144 bytes is sha256-derived."""
    vectors = {v["name"]: v for v in json.loads(VECTORS.read_text())["vectors"]}
    one_chunk = vectors["exactly one chunk"]
    data = random.Random(one_chunk["seed"]).randbytes(one_chunk["size"])
    assert len(data) == MAX_METADATA_BYTES
    assert metadata_cid(data) == one_chunk["cid_v1"]
    assert metadata_cid(b"") == vectors["empty"]["cid_v1"]


@pytest.mark.parametrize(
    "cid",
    [
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",  # CIDv0
        "bafybeierkjfp3gikhok7e3uw76jqrwbiugazgobf3unah546bhw5atsl4q",  # dag-pb, not raw
        HELLO_CID[:-1],
        HELLO_CID.upper(),
        "",
    ],
)
def test_digest_from_cid_refuses_other_cids(cid: str) -> None:
    with pytest.raises(ValueError, match="raw sha2-256 CIDv1"):
        digest_from_cid(cid)


# -- the document -------------------------------------------------------------------------------------------


def test_document_shape() -> None:
    md = make(stage=2, parent=HELLO_CID, approved_by="0x" + "12" * 20)
    doc = json.loads(md.encode())
    assert doc["name"] == "Chrysalis #7"
    assert doc["description"].startswith("Born in a quiet season")
    assert doc["image"] == f"ipfs://{IMAGE_CID}"
    assert doc["attributes"] == [
        {"trait_type": "element", "value": "water"},
        {"trait_type": "form", "value": "larva"},
        {"trait_type": "mood", "value": "serene"},
        {"display_type": "number", "trait_type": "stage", "value": 2},
    ]
    props = doc["properties"]
    assert props["schema"] == SCHEMA
    assert (props["stage"], props["parent"], props["approved_by"]) == (2, HELLO_CID, "0x" + "12" * 20)
    assert props["models"] == {
        "image": {"model_id": IMAGE.model_id, "weights_sha256": IMAGE.weights_sha256},
        "lore": {"model_id": LORE.model_id, "weights_sha256": LORE.weights_sha256},
    }
    assert props["inputs"] == snapshot(102).to_json()
    assert props["receipt"]["steps"] == 50
    assert md.inputs_sha256 == snapshot(102).sha256
    assert "approved_by" not in json.loads(make().encode())["properties"]  # optional: absent, not null


def test_bytes_are_canonical_and_stable() -> None:
    a = make()
    b = make(
        traits={"form": "larva", "element": "water", "mood": "serene"},
        receipt={"steps": 50, "inputs_sha256": snapshot().sha256, "seed": "0x01"},
    )
    data = a.encode()
    assert data == b.encode()  # insertion order never matters
    assert "Ünïcödé —".encode() in data  # raw UTF-8, not \u escapes
    assert (
        data
        == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert parse_metadata(data).encode() == data  # round trip is byte-exact
    assert parse_metadata(data) == a
    assert metadata_cid(data) == metadata_cid(b.encode())


def test_metadata_records_only_a_models_id_and_weights_digest() -> None:
    """A generator's full ModelRef (kind, backend, details) publishes as its metadata projection, nothing more."""
    full = ModelRef(
        IMAGE.model_id, IMAGE.weights_sha256, kind="image", backend="embedded", extra={"device": "cpu"}
    )
    assert full.metadata_json() == {"model_id": IMAGE.model_id, "weights_sha256": IMAGE.weights_sha256}
    data = make(models={"image": full, "lore": LORE}).encode()
    assert data == make().encode()
    assert parse_metadata(data).models == {"image": IMAGE, "lore": LORE}


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"traits": {"stage": "x"}}, "attributes"),
        ({"traits": {"mood": 3}}, "attributes.0.value"),
        ({"image_cid": "not-a-cid"}, "image"),
        ({"parent": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"}, "properties.parent"),
        ({"stage": -1}, "properties.stage"),
        ({"stage": True}, "properties.stage"),
        ({"name": " "}, "name"),
        ({"models": {"image": ModelRef("x", "ABC")}}, "properties.models.image.weights_sha256"),
        ({"receipt": {"loss": float("nan")}}, "(document)"),
        ({"receipt": {"raw": b"bytes"}}, "(document)"),
    ],
)
def test_building_malformed_metadata_is_refused(overrides: dict, path: str) -> None:
    with pytest.raises(MetadataSchemaError) as info:
        make(**overrides)
    assert info.value.path == path
    assert info.value.hint


def test_size_limit() -> None:
    base = len(make(lore="").encode())
    at_limit = make(lore="x" * (MAX_METADATA_BYTES - base))
    assert len(at_limit.encode()) == MAX_METADATA_BYTES
    assert metadata_cid(at_limit.encode()).startswith("bafkrei")
    too_big = make(lore="x" * (MAX_METADATA_BYTES - base + 1))
    with pytest.raises(MetadataTooLargeError) as info:
        too_big.encode()
    assert (info.value.size, info.value.limit) == (MAX_METADATA_BYTES + 1, MAX_METADATA_BYTES)
    assert "raw IPFS block" in str(info.value) and "shorten the lore" in str(info.value)
    with pytest.raises(MetadataTooLargeError):
        parse_metadata(b" " * (MAX_METADATA_BYTES + 1))


# -- reading back -------------------------------------------------------------------------------------------


def mutate(change) -> bytes:
    doc = json.loads(make(stage=1).encode())
    change(doc)
    return json.dumps(doc).encode()


SCHEMA_ERRORS = [
    pytest.param(lambda d: d.pop("name"), "name", "is missing", id="missing-name"),
    pytest.param(lambda d: d.update(name=7), "name", "not a string", id="name-type"),
    pytest.param(lambda d: d.update(image="https://x/y.png"), "image", "ipfs://", id="image-not-ipfs"),
    pytest.param(lambda d: d.update(external="x"), "external", "not a field", id="unknown-field"),
    pytest.param(lambda d: d.update(attributes={}), "attributes", "not a list", id="attributes-type"),
    pytest.param(
        lambda d: d["attributes"].pop(), "attributes", "no stage attribute", id="no-stage-attribute"
    ),
    pytest.param(
        lambda d: d["attributes"][-1].update(value=5), "attributes.3.value", "differs", id="stage-mismatch"
    ),
    pytest.param(
        lambda d: d["attributes"].insert(0, {"trait_type": "mood", "value": "fierce"}),
        "attributes.3",
        "repeats trait 'mood'",
        id="duplicate-trait",
    ),
    pytest.param(
        lambda d: d["attributes"][0].pop("value"), "attributes.0.value", "missing", id="trait-no-value"
    ),
    pytest.param(
        lambda d: d["properties"].update(schema="other/2"), "properties.schema", "other/2", id="schema"
    ),
    pytest.param(lambda d: d["properties"].pop("inputs"), "properties.inputs", "missing", id="no-inputs"),
    pytest.param(
        lambda d: d["properties"]["inputs"].pop("block_hash"),
        "properties.inputs.block_hash",
        "missing",
        id="inputs",
    ),
    pytest.param(
        lambda d: d["properties"].update(parent="bafk"), "properties.parent", "raw CIDv1", id="parent"
    ),
    pytest.param(
        lambda d: d["properties"].update(receipt=[]), "properties.receipt", "not an object", id="receipt"
    ),
    pytest.param(
        lambda d: d["properties"]["models"]["lore"].update(weights_sha256="00"),
        "properties.models.lore.weights_sha256",
        "64 lower-case hex",
        id="model-digest",
    ),
    pytest.param(
        lambda d: d["properties"].update(approved_by=1),
        "properties.approved_by",
        "not a string",
        id="approved-by",
    ),
]


@pytest.mark.parametrize(("change", "path", "problem"), SCHEMA_ERRORS)
def test_schema_errors_name_the_field(change, path: str, problem: str) -> None:
    with pytest.raises(MetadataSchemaError) as info:
        parse_metadata(mutate(change))
    assert info.value.path == path
    assert problem in str(info.value)
    assert "hint:" in str(info.value)


@pytest.mark.parametrize(
    ("data", "problem"), [(b"\xff\xfe", "not UTF-8"), (b"{", "not JSON"), (b"[]", "not a JSON object")]
)
def test_unreadable_documents(data: bytes, problem: str) -> None:
    with pytest.raises(MetadataSchemaError, match=problem):
        parse_metadata(data)


def test_parse_checks_the_cid() -> None:
    data = make().encode()
    assert parse_metadata(data, cid=metadata_cid(data)) == make()
    with pytest.raises(MetadataDigestMismatchError) as info:
        parse_metadata(data + b" ", cid=metadata_cid(data))
    assert info.value.expected_cid == metadata_cid(data)
    assert isinstance(info.value, IntegrityError)


# -- history ------------------------------------------------------------------------------------------------


class Store(dict):
    """An in-memory content-addressed store: put(bytes) -> CID."""

    def put(self, data: bytes) -> str:
        cid = metadata_cid(data)
        self[cid] = data
        return cid

    def fetch(self, cid: str) -> bytes:
        return self[cid]


def test_history_follows_parent_links_newest_first() -> None:
    store = Store()
    first = store.put(make(stage=0).encode())
    second = store.put(make(stage=1, parent=first).encode())
    refresh = store.put(make(stage=1, parent=second, traits={"mood": "gloomy"}).encode())  # same stage
    third = store.put(make(stage=2, parent=refresh).encode())

    chain = history(store.fetch, third)
    assert [e.cid for e in chain] == [third, refresh, second, first]
    assert [e.metadata.stage for e in chain] == [2, 1, 1, 0]
    assert chain[-1].metadata.parent is None
    assert chain[1].metadata.traits["mood"] == "gloomy"
    # The on-chain digest is enough to start the walk.
    assert history(store.fetch, cid_from_digest(metadata_digest(store[third])))[0].cid == third


def test_history_detects_tampering_and_inconsistency() -> None:
    store = Store()
    first = store.put(make(stage=0).encode())
    second = store.put(make(stage=1, parent=first).encode())
    store[first] = make(stage=0, name="Forged").encode()  # served bytes no longer match the CID
    with pytest.raises(MetadataDigestMismatchError):
        history(store.fetch, second)

    store = Store()
    later = store.put(make(stage=3).encode())
    child = store.put(make(stage=2, parent=later).encode())
    with pytest.raises(MetadataHistoryError, match="stage 3 is later"):
        history(store.fetch, child)

    store = Store()
    cid = store.put(make(stage=0).encode())
    for stage in range(1, 4):
        cid = store.put(make(stage=stage, parent=cid).encode())
    assert len(history(store.fetch, cid, max_depth=4)) == 4
    with pytest.raises(MetadataHistoryError, match="more than 3 versions"):
        history(store.fetch, cid, max_depth=3)


def test_external_url_is_written_only_when_set_and_read_back() -> None:
    """OpenSea's external_url: the token's page (agent.external_url); absent by default, so digests do not move."""
    plain = make()
    assert "external_url" not in json.loads(plain.encode())
    linked = make(external_url="https://example.org/tokens/7")
    document = json.loads(linked.encode())
    assert document["external_url"] == "https://example.org/tokens/7"
    assert parse_metadata(linked.encode()) == linked
    with pytest.raises(MetadataSchemaError) as info:
        make(external_url="javascript:alert(1)")
    assert info.value.path == "external_url" and "agent.external_url" in str(info.value)


@pytest.mark.parametrize(
    ("template", "problem"),
    [("https://example.org/{tokenId}", "only {token_id}"), ("ftp://example.org/{token_id}", "http(s)://")],
)
def test_an_external_url_template_is_checked_when_the_settings_load(template: str, problem: str) -> None:
    from pydantic import ValidationError

    from agent.settings import AgentSettings

    assert AgentSettings(external_url="https://example.org/t/{token_id}").external_url is not None
    with pytest.raises(ValidationError, match=problem):
        AgentSettings(external_url=template)
