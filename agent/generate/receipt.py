"""Inference receipts: everything needed to replay one token's image and lore, hashed into ``provenance``.

A receipt records the models (ids and weight digests), the exact requests, the generation configurations (the
lore ``GenerationConfig`` and prompt included), the seed chain (on-chain seed, token id, derived seed), the hash
of the input snapshot (wallet + oracle readings), the output hashes and the runtime configuration (device, dtype,
threads, batch size, library versions, canonical or not).

Its canonical JSON (sorted keys, compact separators, UTF-8, schema version inside) is hashed with sha256; those
32 bytes are the ``provenance`` value the contract stores (:meth:`InferenceReceipt.provenance`).
:mod:`agent.generate.verify` replays a receipt and names any field that differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.domain import ModelRef, canonical_json
from agent.errors import ConfigError
from agent.generate.base import (
    GeneratedImage,
    GeneratedLore,
    ImageGenerator,
    ImageRequest,
    LoreRequest,
    LoreWriter,
)
from agent.generate.runtime import RuntimeConfig, library_versions
from agent.generate.seed import derive_seed, onchain_seed_bytes

SCHEMA = "chrysalis.inference-receipt/1"

IMAGE_RUNTIME_KEYS = frozenset(
    {
        "device",
        "dtype",
        "batch_size",
        "torch_threads",
        "torch_version",
        "diffusers_version",
        "transformers_version",
        "node_version",
    }
)
"""Image-config keys that say where an image was made; they go to ``runtime``, not ``config`` (``node_version``,
which the portable runtime reports, goes to ``runtime.versions.node``)."""


def snapshot_hash(obj: Any) -> str:
    """sha256 (hex) of the canonical JSON of an input snapshot (wallet + oracle readings).

    Accepts an object with ``to_json()`` (:class:`agent.domain.InputSnapshot`), a dataclass, or plain JSON data.
    Same rule as ``InputSnapshot.sha256``.
    """
    if hasattr(obj, "to_json") and callable(obj.to_json):
        obj = obj.to_json()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    try:
        return hashlib.sha256(canonical_json(obj)).hexdigest()
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"snapshot is not JSON data: {e}",
            hint="pass an InputSnapshot or a dict of str/int/bool/list values",
        ) from e


def _plain(obj: Any) -> Any:
    """Deep copy into JSON types (mappings to dicts, tuples to lists)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


@dataclass(frozen=True)
class SeedRecord:
    """The seed chain: ``derived_seed = derive_seed(onchain_seed, token_id)``."""

    onchain_seed: str
    token_id: int
    derived_seed: int


@dataclass(frozen=True)
class ImageRecord:
    """One image: the model, the request as given, the generation config, output hashes and where it ran.

    ``model``: written as :meth:`ModelRef.receipt_json` (backend, model_id, weights_sha256, extra).

    ``request``: traits, seed, strength, prompt (None: built from traits), init_image_sha256, init_image_cid.
    ``output``: pixels_sha256 (uint8 H x W x 3), png_sha256, width, height.
    """

    model: ModelRef
    request: Mapping[str, Any]
    config: Mapping[str, Any]
    output: Mapping[str, Any]
    runtime: Mapping[str, Any]


@dataclass(frozen=True)
class LoreRecord:
    """One lore text: request, exact prompt, ``GenerationConfig.to_dict()``, output hashes and runtime.

    ``output``: token_ids_sha256, text, fallback_sentences, postprocess version.
    """

    model: ModelRef
    request: Mapping[str, Any]
    prompt: str
    generation_config: Mapping[str, Any]
    output: Mapping[str, Any]
    runtime: Mapping[str, Any]


@dataclass(frozen=True)
class InferenceReceipt:
    """Everything one inference took and gave. ``provenance()`` is what the contract stores."""

    seed: SeedRecord
    input_snapshot_sha256: str
    image: ImageRecord | None = None
    lore: LoreRecord | None = None
    schema: str = SCHEMA

    # --- serialisation ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name, part in (("image", self.image), ("lore", self.lore)):
            if part is not None:
                data[name]["model"] = part.model.receipt_json()
        return _plain(data)

    def canonical_json(self) -> bytes:
        """Sorted keys, compact separators, UTF-8: the bytes :meth:`provenance` hashes."""
        return canonical_json(self.to_json())

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    def provenance(self) -> bytes:
        """The bytes32 the contract stores: sha256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json()).digest()

    def provenance_hex(self) -> str:
        return "0x" + self.provenance().hex()

    @property
    def canonical(self) -> bool:
        """True when every part ran in the canonical verification configuration (CPU, fp32, 1 thread, batch 1)."""
        parts = [p for p in (self.image, self.lore) if p is not None]
        return bool(parts) and all(bool(p.runtime.get("canonical")) for p in parts)

    def save(self, path: Path | str) -> Path:
        """Write the canonical JSON (what is hashed) to ``path``."""
        path = Path(path)
        path.write_bytes(self.canonical_json() + b"\n")
        return path

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InferenceReceipt:
        """Parse a receipt; ConfigError if the schema is unknown or a field is missing."""
        schema = data.get("schema") if isinstance(data, Mapping) else None
        if schema != SCHEMA:
            raise ConfigError(
                f"not a Chrysalis inference receipt (schema {schema!r}, expected {SCHEMA!r})",
                hint="pass a receipt.json written by Chrysalis",
            )
        try:
            image = data.get("image")
            lore = data.get("lore")
            return cls(
                seed=SeedRecord(**data["seed"]),
                input_snapshot_sha256=data["input_snapshot_sha256"],
                image=None
                if image is None
                else ImageRecord(
                    **{**image, "model": ModelRef.from_receipt_json(image["model"], kind="image")}
                ),
                lore=None
                if lore is None
                else LoreRecord(**{**lore, "model": ModelRef.from_receipt_json(lore["model"], kind="lore")}),
                schema=schema,
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(
                f"receipt is missing or has an unknown field: {e}", hint="regenerate the receipt"
            ) from e

    @classmethod
    def load(cls, path: Path | str) -> InferenceReceipt:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            from agent.errors import NotFoundError

            raise NotFoundError(
                f"receipt {path} does not exist", hint="pass the path of a receipt.json"
            ) from None
        except ValueError as e:
            raise ConfigError(
                f"receipt {path} is not JSON: {e}", hint="pass a receipt.json written by Chrysalis"
            ) from None
        return cls.from_json(data)


# --- building receipts -----------------------------------------------------------------------------------------


def _recorded(model: ModelRef) -> ModelRef:
    """``model`` as a receipt holds it: its ``extra`` deep-copied into JSON types."""
    return dataclasses.replace(model, extra=_plain(model.extra))


def image_record(
    generator: ImageGenerator,
    request: ImageRequest,
    result: GeneratedImage,
    *,
    init_image_cid: str | None = None,
) -> ImageRecord:
    """The receipt part for one image (call in the process that generated it: library versions are read here)."""
    config = _plain(result.config)
    versions = library_versions()
    if config.get("node_version"):
        versions["node"] = str(config["node_version"])
    runtime = RuntimeConfig(
        device=str(config.get("device", "cpu")),
        dtype=str(config.get("dtype", "float32")),
        threads=int(config.get("torch_threads", 0)),
        batch_size=int(config.get("batch_size", 1)),
        versions=versions,
    ).to_json()
    init_sha = None
    if request.init_image is not None:
        init_sha = hashlib.sha256(bytes(request.init_image)).hexdigest()
    return ImageRecord(
        model=_recorded(generator.model_ref),
        request={
            "traits": dict(request.traits),
            "seed": request.seed,
            "strength": None if request.init_image is None else float(request.strength),
            "prompt": request.prompt,
            "init_image_sha256": init_sha,
            "init_image_cid": init_image_cid,
        },
        config={k: v for k, v in config.items() if k not in IMAGE_RUNTIME_KEYS},
        output={
            "pixels_sha256": result.pixels_sha256,
            "png_sha256": hashlib.sha256(result.png).hexdigest(),
            "width": result.width,
            "height": result.height,
        },
        runtime=runtime,
    )


def lore_record(writer: LoreWriter, request: LoreRequest, result: GeneratedLore) -> LoreRecord:
    """The receipt part for one lore text (call in the process that wrote it)."""
    details = dict(getattr(result, "details", {}) or {})
    runtime = (
        details.get("runtime") or RuntimeConfig("unknown", "unknown", 0, 0, library_versions()).to_json()
    )
    return LoreRecord(
        model=_recorded(writer.model_ref),
        request={
            "name": request.name,
            "stage": request.stage,
            "traits": dict(request.traits),
            "facts": dict(request.facts),
            "seed": request.seed,
        },
        prompt=result.prompt,
        generation_config=_plain(result.generation_config),
        output={
            "token_ids_sha256": result.token_ids_sha256,
            "text": result.text,
            "fallback_sentences": details.get("fallback_sentences"),
            "postprocess": details.get("postprocess"),
        },
        runtime=_plain(runtime),
    )


def build_receipt(
    *,
    onchain_seed: bytes | str,
    token_id: int,
    snapshot: Any = None,
    snapshot_sha256: str | None = None,
    image: ImageRecord | None = None,
    lore: LoreRecord | None = None,
) -> InferenceReceipt:
    """Assemble a receipt, checking that every request used ``derive_seed(onchain_seed, token_id)``.

    Pass the input snapshot itself (``snapshot``, hashed with :func:`snapshot_hash`) or its hash.
    """
    seed_bytes = onchain_seed_bytes(onchain_seed)
    derived = derive_seed(seed_bytes, token_id)
    for part, name in ((image, "image"), (lore, "lore")):
        if part is not None and part.request["seed"] != derived:
            raise ConfigError(
                f"the {name} request used seed {part.request['seed']}, not derive_seed(onchain_seed, {token_id}) "
                f"= {derived}",
                hint="derive request seeds with agent.generate.seed.derive_seed",
            )
    if image is None and lore is None:
        raise ConfigError("a receipt needs an image or a lore part", hint="pass image=... and/or lore=...")
    if snapshot_sha256 is None:
        snapshot_sha256 = snapshot_hash(snapshot if snapshot is not None else {})
    return InferenceReceipt(
        seed=SeedRecord("0x" + seed_bytes.hex(), token_id, derived),
        input_snapshot_sha256=snapshot_sha256,
        image=image,
        lore=lore,
    )
