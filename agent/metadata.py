"""Token metadata: OpenSea-standard JSON that carries its own provenance and a hash-linked history.

One evolution's metadata looks like this (canonical bytes: sorted keys, compact, UTF-8)::

    {
      "name": "Chrysalis #7",
      "description": "<the lore>",
      "image": "ipfs://bafkrei...",
      "attributes": [
        {"trait_type": "element", "value": "water"},          # every trait, sorted by trait_type
        {"trait_type": "mood", "value": "radiant"},
        {"display_type": "number", "trait_type": "stage", "value": 2}
      ],
      "properties": {
        "schema": "chrysalis.metadata/1",
        "stage": 2,
        "parent": "bafkrei..." | null,          # the previous metadata's CID: a hash-linked history
        "receipt": {...},                        # the inference receipt
        "models": {"image": {"model_id": "...", "weights_sha256": "..."}, "lore": {...}},
        "inputs": {...},                         # InputSnapshot.to_json()
        "approved_by": "..."                     # only when a reviewer approved it
      }
    }

The bytes are stored as ONE raw IPFS block, so they must fit in :data:`MAX_METADATA_BYTES` (Kubo's chunk
size: a larger file becomes a multi-block DAG whose CID is no longer the sha256 of the file). Their sha256 is
the digest the collection stores on-chain (:func:`metadata_digest`), and the contract rebuilds the CIDv1
(raw codec, sha2-256) from it: :func:`metadata_cid`, ``bafkrei...``.

CIDs are computed here with :mod:`base64` (no dependency on :mod:`agent.ipfs`, which pins and serves them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent.domain import InputSnapshot, ModelRef, canonical_json, sha256_hex
from agent.errors import IntegrityError, PermanentError

SCHEMA = "chrysalis.metadata/1"
"""``properties.schema`` of metadata this module writes and reads."""

MAX_METADATA_BYTES = 262_144
"""Largest metadata that is still one raw IPFS block (Kubo's 256 KiB chunk)."""

CID_RAW_SHA256_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
"""CIDv1, raw codec (0x55), sha2-256 multihash (0x12) of 32 bytes (0x20)."""

_CID_V1 = re.compile(r"^b[a-z2-7]{58,}$")
_CID_V0 = re.compile(r"^Qm[1-9A-HJ-NP-Za-km-z]{44}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = {"name", "description", "image", "attributes", "properties"}
_OPTIONAL_TOP_KEYS = {"external_url", "animation_url"}
_PROPERTY_KEYS = {"schema", "stage", "parent", "receipt", "models", "inputs", "approved_by"}
_INPUT_KEYS = {"chain_id", "block_number", "block_hash", "readings"}


# -- errors -------------------------------------------------------------------------------------------------


class MetadataTooLargeError(PermanentError, ValueError):
    """The metadata does not fit in one raw IPFS block.

    Attributes:
        size: Its size in bytes. limit: :data:`MAX_METADATA_BYTES`.
    """

    def __init__(self, size: int, limit: int = MAX_METADATA_BYTES) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"metadata is {size} bytes; one raw IPFS block holds at most {limit}",
            hint="shorten the lore, or trim the receipt and snapshot meta; large artefacts belong in their "
            "own IPFS objects, linked by CID",
        )


class MetadataSchemaError(PermanentError, ValueError):
    """Metadata does not have the expected shape.

    Attributes:
        path: The offending field as a dotted path (``properties.models.image.weights_sha256``).
        problem: What is wrong with it.
    """

    def __init__(self, path: str, problem: str, *, fix: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"metadata field {path}: {problem}", hint=fix)


class MetadataDigestMismatchError(IntegrityError):
    """Fetched metadata does not hash to the CID it was fetched by.

    Attributes:
        expected_cid: The CID asked for. actual_cid: The CID of the bytes received.
    """

    def __init__(self, expected_cid: str, actual_cid: str) -> None:
        self.expected_cid = expected_cid
        self.actual_cid = actual_cid
        super().__init__(
            f"metadata fetched as {expected_cid} hashes to {actual_cid}",
            hint="the source returned the wrong or corrupted bytes; fetch from another gateway or node",
        )


class MetadataHistoryError(PermanentError):
    """A token's parent chain is inconsistent or too long.

    Attributes:
        cid: The metadata where the walk stopped.
    """

    def __init__(self, cid: str, problem: str, *, fix: str) -> None:
        self.cid = cid
        super().__init__(f"history at {cid}: {problem}", hint=fix)


# -- addressing ---------------------------------------------------------------------------------------------


def metadata_digest(data: bytes) -> bytes:
    """The 32-byte sha256 of the metadata bytes: the ``bytes32`` the collection stores on-chain."""
    return hashlib.sha256(data).digest()


def metadata_cid(data: bytes) -> str:
    """The CIDv1 (raw, sha2-256, base32) of the metadata bytes as one raw block: ``bafkrei...``."""
    return cid_from_digest(metadata_digest(data))


def cid_from_digest(digest: bytes) -> str:
    """The raw CIDv1 of a sha256 digest: what the contract's ``tokenURI`` rebuilds from the stored digest."""
    if len(digest) != 32:
        raise ValueError(f"a sha256 digest is 32 bytes, got {len(digest)}")
    return "b" + base64.b32encode(CID_RAW_SHA256_PREFIX + digest).decode().lower().rstrip("=")


def digest_from_cid(cid: str) -> bytes:
    """The sha256 digest inside a raw CIDv1 (``bafkrei...``); inverse of :func:`cid_from_digest`.

    Raises:
        ValueError: ``cid`` is not a base32 CIDv1 with raw codec and a sha2-256 multihash.
    """
    body = cid[1:] if cid.startswith("b") else ""
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 36 or not raw.startswith(CID_RAW_SHA256_PREFIX) or cid_from_digest(raw[4:]) != cid:
        raise ValueError(f"{cid!r} is not a raw sha2-256 CIDv1 (bafkrei...)")
    return raw[4:]


# -- the document -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenMetadata:
    """One version of a token's metadata. Build with :func:`build_metadata`, read with :func:`parse_metadata`.

    Attributes:
        name: Token name.
        description: The lore.
        image_cid: CID of the image (any CID; ``image`` is ``ipfs://<image_cid>``).
        traits: Trait name -> value (the ``attributes``, besides stage).
        stage: The token's stage.
        parent: CID of the previous metadata, None for the first.
        receipt: The inference receipt.
        models: Role (``"image"``, ``"lore"``) -> model; only :meth:`ModelRef.metadata_json` (its id and weights
            digest) is written.
        inputs: The input snapshot, as :meth:`~agent.domain.InputSnapshot.to_json` gives it.
        approved_by: Who approved it, when a reviewer did.
        external_url: OpenSea's ``external_url``: the token's page on the project's site (``agent.external_url``);
            left out when None.
        animation_url: OpenSea's ``animation_url``: the token viewer that re-renders this version in the browser,
            ``ipfs://<viewer site CID>/?token=<core CID>&model=<export CID>`` (:meth:`core`); left out when None.
    """

    name: str
    description: str
    image_cid: str
    traits: Mapping[str, str]
    stage: int
    parent: str | None
    receipt: Mapping[str, Any]
    models: Mapping[str, ModelRef]
    inputs: Mapping[str, Any]
    approved_by: str | None = None
    external_url: str | None = None
    animation_url: str | None = None
    _json: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        document = _document(self)
        _validate(document)  # the same checks a reader runs: never write what cannot be read back
        object.__setattr__(self, "_json", document)

    @property
    def image(self) -> str:
        return f"ipfs://{self.image_cid}"

    @property
    def inputs_sha256(self) -> str:
        """Hex sha256 of the snapshot's canonical JSON (equals :attr:`InputSnapshot.sha256`)."""
        return sha256_hex(canonical_json(dict(self.inputs)))

    def core(self) -> TokenMetadata:
        """This version without its ``animation_url``: the document the viewer link names.

        A document cannot contain its own CID, so the viewer's ``?token=`` names this copy, pinned beside the
        metadata: every field the viewer reads (image, receipt, parent, inputs) is the same in both, and the
        on-chain digest stays the full document's.
        """
        return replace(self, animation_url=None)

    def to_json(self) -> dict[str, Any]:
        """The metadata as a JSON object (a fresh copy)."""
        return json.loads(json.dumps(self._json))

    def encode(self) -> bytes:
        """Canonical bytes (sorted keys, compact, UTF-8): what is pinned and hashed.

        Raises:
            MetadataTooLargeError: over :data:`MAX_METADATA_BYTES`.
        """
        data = canonical_json(self._json)
        if len(data) > MAX_METADATA_BYTES:
            raise MetadataTooLargeError(len(data))
        return data


def build_metadata(
    *,
    name: str,
    lore: str,
    image_cid: str,
    traits: Mapping[str, str],
    stage: int,
    parent: str | None,
    receipt: Mapping[str, Any],
    models: Mapping[str, ModelRef],
    snapshot: InputSnapshot,
    approved_by: str | None = None,
    external_url: str | None = None,
) -> TokenMetadata:
    """Assemble one evolution's metadata.

    Raises:
        MetadataSchemaError: a field is malformed (e.g. a trait named ``stage``, a bad CID, a receipt that is
            not plain JSON).
    """
    return TokenMetadata(
        name=name,
        description=lore,
        image_cid=image_cid,
        traits=dict(traits),
        stage=stage,
        parent=parent,
        receipt=dict(receipt),
        models=dict(models),
        inputs=snapshot.to_json(),
        approved_by=approved_by,
        external_url=external_url,
    )


def encode_metadata(metadata: TokenMetadata) -> bytes:
    """Canonical bytes of ``metadata`` (see :meth:`TokenMetadata.encode`)."""
    return metadata.encode()


def _document(md: TokenMetadata) -> dict[str, Any]:
    if "stage" in md.traits:
        raise MetadataSchemaError(
            "attributes",
            "trait 'stage' clashes with the stage attribute",
            fix="rename the trait in the rules",
        )
    attributes: list[dict[str, Any]] = [{"trait_type": k, "value": v} for k, v in sorted(md.traits.items())]
    attributes.append({"display_type": "number", "trait_type": "stage", "value": md.stage})
    properties: dict[str, Any] = {
        "schema": SCHEMA,
        "stage": md.stage,
        "parent": md.parent,
        "receipt": md.receipt,
        "models": {role: ref.metadata_json() for role, ref in md.models.items()},
        "inputs": md.inputs,
    }
    if md.approved_by is not None:
        properties["approved_by"] = md.approved_by
    document = {
        "name": md.name,
        "description": md.description,
        "image": md.image,
        "attributes": attributes,
        "properties": properties,
    }
    if md.external_url is not None:
        document["external_url"] = md.external_url
    if md.animation_url is not None:
        document["animation_url"] = md.animation_url
    try:
        return json.loads(canonical_json(document))  # plain JSON only, and a private copy
    except (TypeError, ValueError) as exc:
        raise MetadataSchemaError(
            "(document)",
            f"is not plain JSON ({exc})",
            fix="receipt and inputs may hold only str, int, finite float, bool, None, lists and dicts",
        ) from None


# -- reading back -------------------------------------------------------------------------------------------


def parse_metadata(data: bytes, *, cid: str | None = None) -> TokenMetadata:
    """Read metadata bytes back, checking their shape.

    Args:
        data: The bytes fetched.
        cid: The CID they were fetched by; when given, the bytes must hash to it.

    Raises:
        MetadataDigestMismatchError: the bytes do not match ``cid``.
        MetadataTooLargeError: over :data:`MAX_METADATA_BYTES` (cannot be a raw block).
        MetadataSchemaError: not UTF-8 JSON, or a field is missing or malformed (names the field).
    """
    if cid is not None and metadata_cid(data) != cid:
        raise MetadataDigestMismatchError(cid, metadata_cid(data))
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataTooLargeError(len(data))
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MetadataSchemaError(
            "(document)", f"is not UTF-8 ({exc})", fix="metadata is UTF-8 JSON"
        ) from None
    except json.JSONDecodeError as exc:
        raise MetadataSchemaError(
            "(document)", f"is not JSON ({exc})", fix="metadata is one JSON object"
        ) from None
    _validate(document)
    props = document["properties"]
    return TokenMetadata(
        name=document["name"],
        description=document["description"],
        image_cid=document["image"].removeprefix("ipfs://"),
        traits={a["trait_type"]: a["value"] for a in document["attributes"] if a["trait_type"] != "stage"},
        stage=props["stage"],
        parent=props["parent"],
        receipt=props["receipt"],
        models={role: ModelRef.from_metadata_json(ref) for role, ref in props["models"].items()},
        inputs=props["inputs"],
        approved_by=props.get("approved_by"),
        external_url=document.get("external_url"),
        animation_url=document.get("animation_url"),
    )


def _validate(doc: Any) -> None:
    """Raise :class:`MetadataSchemaError` for the first field that is missing or malformed."""
    _expect(isinstance(doc, dict), "(document)", "is not a JSON object", "metadata is one JSON object")
    _keys(doc, "", _TOP_KEYS | _OPTIONAL_TOP_KEYS, _TOP_KEYS)
    if "external_url" in doc:
        url = doc["external_url"]
        _expect(
            isinstance(url, str) and url.startswith(("https://", "http://", "ipfs://")) and " " not in url,
            "external_url",
            f"{url!r} is not an http(s):// or ipfs:// URL",
            "set agent.external_url to a URL template such as https://example.org/tokens/{token_id}",
        )
    if "animation_url" in doc:
        url = doc["animation_url"]
        _expect(
            isinstance(url, str) and url.startswith(("https://", "http://", "ipfs://")) and " " not in url,
            "animation_url",
            f"{url!r} is not an http(s):// or ipfs:// URL",
            "the agent writes ipfs://<viewer site CID>/?token=<CID>&model=<CID>; publish the viewer with "
            "`chrysalis renderer publish`",
        )
    for key in ("name", "description"):
        _expect(isinstance(doc[key], str), key, "is not a string", f"set {key} to text")
    _expect(doc["name"].strip() != "", "name", "is empty", "give the token a name")
    image = doc["image"]
    _expect(
        isinstance(image, str) and image.startswith("ipfs://") and _is_cid(image[7:]),
        "image",
        f"{image!r} is not ipfs://<CID>",
        "set image to ipfs:// followed by the image's CID",
    )

    props = doc["properties"]
    _expect(
        isinstance(props, dict), "properties", "is not an object", "see the module docstring for its shape"
    )
    _keys(props, "properties.", _PROPERTY_KEYS, _PROPERTY_KEYS - {"approved_by"})
    _expect(
        props["schema"] == SCHEMA,
        "properties.schema",
        f"is {props['schema']!r}",
        f"this reader reads {SCHEMA}",
    )
    stage = props["stage"]
    _expect(
        _is_int(stage) and stage >= 0, "properties.stage", f"{stage!r} is not a whole number >= 0", "fix it"
    )
    parent = props["parent"]
    _expect(
        parent is None or _is_raw_cid(parent),
        "properties.parent",
        f"{parent!r} is neither null nor a raw CIDv1",
        "set it to the previous metadata's bafkrei... CID, or null for the first version",
    )
    _expect(
        isinstance(props["receipt"], dict), "properties.receipt", "is not an object", "store the receipt dict"
    )
    if "approved_by" in props:
        _expect(
            isinstance(props["approved_by"], str),
            "properties.approved_by",
            "is not a string",
            "omit or fix it",
        )

    models = props["models"]
    _expect(
        isinstance(models, dict),
        "properties.models",
        "is not an object",
        "map role -> {model_id, weights_sha256}",
    )
    for role, ref in models.items():
        where = f"properties.models.{role}"
        _expect(isinstance(ref, dict), where, "is not an object", "write {model_id, weights_sha256}")
        _keys(ref, where + ".", {"model_id", "weights_sha256"}, {"model_id", "weights_sha256"})
        _expect(
            isinstance(ref["model_id"], str) and ref["model_id"] != "",
            where + ".model_id",
            "is empty",
            "fix it",
        )
        _expect(
            isinstance(ref["weights_sha256"], str) and bool(_HEX64.match(ref["weights_sha256"])),
            where + ".weights_sha256",
            f"{ref['weights_sha256']!r} is not 64 lower-case hex digits",
            "record the sha256 of the model's weights",
        )

    inputs = props["inputs"]
    _expect(
        isinstance(inputs, dict), "properties.inputs", "is not an object", "store InputSnapshot.to_json()"
    )
    _keys(inputs, "properties.inputs.", _INPUT_KEYS, _INPUT_KEYS)
    for key in ("chain_id", "block_number"):
        _expect(
            _is_int(inputs[key]),
            f"properties.inputs.{key}",
            "is not an integer",
            "store InputSnapshot.to_json()",
        )
    _expect(isinstance(inputs["readings"], list), "properties.inputs.readings", "is not a list", "fix it")

    attributes = doc["attributes"]
    _expect(isinstance(attributes, list), "attributes", "is not a list", "list {trait_type, value} objects")
    seen: set[str] = set()
    for i, attr in enumerate(attributes):
        where = f"attributes.{i}"
        _expect(isinstance(attr, dict), where, "is not an object", "write {trait_type, value}")
        trait = attr.get("trait_type")
        _expect(
            isinstance(trait, str) and trait != "",
            where + ".trait_type",
            "is missing or empty",
            "name the trait",
        )
        _expect(trait not in seen, where, f"repeats trait {trait!r}", "list each trait once")
        seen.add(trait)
        if trait == "stage":
            _keys(
                attr,
                where + ".",
                {"display_type", "trait_type", "value"},
                {"display_type", "trait_type", "value"},
            )
            _expect(attr["display_type"] == "number", where + ".display_type", "is not 'number'", "fix it")
            _expect(
                attr["value"] == stage and _is_int(attr["value"]),
                where + ".value",
                f"{attr['value']!r} differs from properties.stage {stage!r}",
                "write the same stage in both places",
            )
        else:
            _keys(attr, where + ".", {"trait_type", "value"}, {"trait_type", "value"})
            _expect(
                isinstance(attr["value"], str), where + ".value", "is not a string", "trait values are text"
            )
    _expect(
        "stage" in seen,
        "attributes",
        "has no stage attribute",
        "add {display_type: number, trait_type: stage}",
    )


def _keys(obj: dict[str, Any], prefix: str, allowed: set[str], required: set[str]) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        raise MetadataSchemaError(prefix + missing[0], "is missing", fix=f"add {prefix + missing[0]}")
    unknown = sorted(obj.keys() - allowed)
    if unknown:
        raise MetadataSchemaError(
            prefix + unknown[0],
            "is not a field this schema has",
            fix=f"remove it (allowed: {', '.join(sorted(allowed))})",
        )


def _expect(ok: bool, path: str, problem: str, fix: str) -> None:
    if not ok:
        raise MetadataSchemaError(path, problem, fix=fix)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_cid(s: str) -> bool:
    return bool(_CID_V1.match(s) or _CID_V0.match(s))


def _is_raw_cid(s: Any) -> bool:
    try:
        digest_from_cid(s)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


# -- history ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One version in a token's history."""

    cid: str
    metadata: TokenMetadata


def history(fetch: Callable[[str], bytes], cid: str, *, max_depth: int = 10_000) -> list[HistoryEntry]:
    """Follow ``parent`` links from ``cid`` back to the first version; newest first.

    Every block is checked against the CID it was fetched by, so the chain is tamper-evident end to end.

    Args:
        fetch: CID -> bytes (an IPFS gateway, a node, a local repo).
        cid: The newest metadata's CID (e.g. rebuilt from the on-chain digest with :func:`cid_from_digest`).
        max_depth: Most versions to read before giving up.

    Raises:
        MetadataDigestMismatchError: a block does not hash to its CID.
        MetadataSchemaError: a version is malformed.
        MetadataHistoryError: a parent has a later stage than its child, or the chain exceeds ``max_depth``.
    """
    entries: list[HistoryEntry] = []
    current: str | None = cid
    while current is not None:
        if len(entries) == max_depth:
            raise MetadataHistoryError(
                current,
                f"more than {max_depth} versions",
                fix="raise max_depth if the token really is that old",
            )
        metadata = parse_metadata(fetch(current), cid=current)
        if entries and metadata.stage > entries[-1].metadata.stage:
            raise MetadataHistoryError(
                current,
                f"stage {metadata.stage} is later than its child's stage {entries[-1].metadata.stage}",
                fix="stages never go back; this parent link is wrong",
            )
        entries.append(HistoryEntry(current, metadata))
        current = metadata.parent
    return entries
