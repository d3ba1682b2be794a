"""Replay an inference receipt in the canonical configuration and name every field that differs.

Canonical configuration: CPU, float32, one torch thread, batch size 1, the receipt's library versions. A
receipt produced that way replays bit for bit (same versions + threads + seed give the same bits on any CPU).

- A CPU/float32 receipt made with more threads or a bigger batch is replayed with its own thread count at
  batch size 1; the result says so in its note (batching can move a few pixels by 1/255).
- A GPU or half-precision receipt cannot be reproduced on a CPU: its output hashes are *not* compared, the
  result says so explicitly (``reproducible=False``), and only what does not depend on the device is checked
  (seed chain, model digests, prompt, decoding settings).
- An image made under the portable scheme (``image.config.generator == "chrysalis-portable/1"``) is replayed by
  the same runtime that made it: the model's ONNX export under onnxruntime-web's WASM build in Node.js
  (:mod:`agent.generate.portable.generator`), whose bits do not depend on the CPU or the thread count. Without
  ``node`` or the pinned onnxruntime-web here, its output hashes are not compared and the result says why
  (exit 2, not reproducible here).

Run it as ``python -m agent.generate.verify RECEIPT.json`` or ``chrysalis model verify RECEIPT.json``:
exit 0 on match, 1 on a mismatch, 2 when the receipt's bits cannot be reproduced on this machine, 3 when
verification could not run (missing model, unreadable receipt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from agent.errors import ChrysalisError, ConfigError, NotFoundError
from agent.generate.base import ImageRequest, LoreRequest
from agent.generate.receipt import (
    IMAGE_RUNTIME_KEYS,
    ImageRecord,
    InferenceReceipt,
    LoreRecord,
    snapshot_hash,
)
from agent.generate.runtime import CANONICAL_THREADS, library_versions, torch_threads
from agent.generate.seed import derive_seed, onchain_seed_bytes
from agent.settings import ModelSettings

InitImageLoader = Callable[[str, "str | None"], bytes]
"""``loader(init_image_sha256, init_image_cid) -> PNG bytes`` of the previous stage's image."""

MACHINE_KEYS = frozenset({"path", "device", "dtype", "cpu_offload", "channels_last", "compile"})
"""``ModelRef.extra`` keys that describe this machine's copy or placement of a model, not the model."""

EXIT_MATCH, EXIT_MISMATCH, EXIT_NOT_REPRODUCIBLE, EXIT_ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class FieldMismatch:
    """One field whose replayed value differs from the receipt's (``field`` is a dotted receipt path)."""

    field: str
    expected: Any
    actual: Any


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`.

    Attributes:
        match: True when every checked field matched *and* the outputs were reproduced.
        mismatches: The fields that differ (receipt value = ``expected``, replay = ``actual``).
        note: What was replayed and how, and anything a reader must know (non-canonical, GPU, versions).
        reproducible: False when the receipt's outputs cannot be reproduced on this machine (GPU / fp16).
        checked: Dotted names of the fields that were compared.
    """

    match: bool
    mismatches: list[FieldMismatch]
    note: str
    reproducible: bool = True
    checked: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.mismatches:
            return EXIT_MISMATCH
        return EXIT_MATCH if self.match else EXIT_NOT_REPRODUCIBLE

    def to_json(self) -> dict[str, Any]:
        return {
            "match": self.match,
            "reproducible": self.reproducible,
            "mismatches": [
                {"field": m.field, "expected": m.expected, "actual": m.actual} for m in self.mismatches
            ],
            "note": self.note,
            "checked": self.checked,
        }


class _Checker:
    def __init__(self) -> None:
        self.mismatches: list[FieldMismatch] = []
        self.checked: list[str] = []

    def eq(self, name: str, expected: Any, actual: Any) -> bool:
        self.checked.append(name)
        if _norm(expected) != _norm(actual):
            self.mismatches.append(FieldMismatch(name, expected, actual))
            return False
        return True

    def mapping(
        self, prefix: str, expected: Mapping[str, Any], actual: Mapping[str, Any], skip: frozenset[str]
    ) -> None:
        for key in sorted(set(expected) | set(actual)):
            if key in skip:
                continue
            self.eq(f"{prefix}.{key}", expected.get(key), actual.get(key))


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _reproducible(runtime: Mapping[str, Any]) -> bool:
    return runtime.get("device") == "cpu" and runtime.get("dtype") == "float32"


class _CanonicalImageRuntime(TypedDict):
    device: Literal["cpu"]
    dtype: Literal["float32"]
    image_batch_size: int
    threads: int


def image_settings(
    part: ImageRecord, *, model: str | None = None, lora: str | None = None, cache_dir: Path | None = None
) -> ModelSettings:
    """Settings that rebuild the receipt's image generator: CPU, float32, batch 1, the receipt's thread count.

    The generator pins its own thread count for each call, so the count must be in the settings (a count set
    around the call would be overridden). ``model`` may be ``ipfs://<CID>`` of a published model in ``cache_dir``.
    """
    cfg = part.config
    common: _CanonicalImageRuntime = {
        "device": "cpu",
        "dtype": "float32",
        "image_batch_size": 1,
        "threads": _threads_for(part.runtime),
    }
    if cache_dir is not None:
        return image_settings(part, model=model, lora=lora).model_copy(update={"cache_dir": Path(cache_dir)})
    if part.model.backend == "embedded":
        from agent.generate.portable.generator import is_portable

        return ModelSettings(
            image_backend="embedded",
            image_runtime="portable" if is_portable(cfg) else "torch",
            image_model=model,  # a sprite-model directory here (e.g. loaded from its CID); None: the shipped one
            image_steps=cfg.get("num_inference_steps"),
            image_guidance=cfg.get("guidance_scale"),
            **common,
        )
    if part.model.backend == "diffusers":
        lora_cfg = cfg.get("lora") or None
        size = cfg.get("size_setting") or [None, None]
        return ModelSettings(
            image_backend="diffusers",
            image_model=model or part.model.model_id,
            image_lora=(lora or lora_cfg["source"]) if lora_cfg else None,
            image_lora_scale=lora_cfg["scale"] if lora_cfg else 1.0,
            image_scheduler=(cfg.get("scheduler") or {}).get("class"),
            image_steps=cfg.get("num_inference_steps"),
            image_guidance=cfg.get("guidance_scale"),
            image_width=size[0],
            image_height=size[1],
            image_negative_prompt=cfg.get("negative_prompt"),
            attention_slicing=bool(cfg.get("attention_slicing", False)),
            **common,
        )
    raise ConfigError(
        f"receipt names an unknown image backend {part.model.backend!r}", hint="upgrade Chrysalis"
    )


def lore_settings(
    part: LoreRecord, *, model: str | None = None, cache_dir: Path | None = None
) -> ModelSettings:
    """Settings that rebuild the receipt's lore writer: CPU, float32, batch 1, the receipt's thread count."""
    gc = part.generation_config
    extra: dict[str, Any] = {} if cache_dir is None else {"cache_dir": cache_dir}
    backend: Literal["embedded", "transformers"]
    if part.model.backend == "embedded":
        backend = "embedded"
    elif part.model.backend == "transformers":
        backend = "transformers"
    else:
        raise ConfigError(
            f"receipt names an unknown lore backend {part.model.backend!r}", hint="upgrade Chrysalis"
        )
    return ModelSettings(
        lore_backend=backend,
        lore_model=(model or part.model.model_id) if backend == "transformers" else None,
        lore_max_new_tokens=gc.get("max_new_tokens") or 64,
        lore_do_sample=bool(gc.get("do_sample")),
        lore_temperature=gc.get("temperature") or 0.7,
        lore_top_p=gc.get("top_p") or 0.9,
        lore_repetition_penalty=gc.get("repetition_penalty") or 1.0,
        lore_batch_size=1,
        device="cpu",
        dtype="float32",
        threads=_threads_for(part.runtime),  # loading applies this count: it must be the receipt's
        **extra,
    )


class ModelUnavailableError(NotFoundError):
    """A model a receipt names cannot be loaded on this machine (not there, not downloadable, or a local copy
    whose files are not the ones its manifest names): the receipt cannot be replayed here.

    Attributes:
        role: ``image`` or ``lore``. model: The receipt's record of it.
    """

    def __init__(self, role: str, model: Any, reason: str, hint: str | None) -> None:
        self.role = role
        self.model = model
        super().__init__(
            f"the receipt's {role} model {model.model_id} (weights sha256 {model.weights_sha256}) cannot be loaded "
            f"here: {reason}",
            hint=hint
            or f"put the model on this machine and pass its location (--{role}-model PATH), or fetch it from the "
            "collection's model registry",
        )


def load_models(
    receipt: InferenceReceipt | Mapping[str, Any] | Path | str,
    *,
    image_model: str | None = None,
    image_lora: str | None = None,
    lore_model: str | None = None,
    cache_dir: Path | None = None,
) -> None:
    """Load the receipt's models exactly as :func:`verify` will (the factory keeps them), so that a model that is
    not on this machine is told apart from a replay that differs.

    Raises:
        ModelUnavailableError: a model cannot be loaded here (names the role and the model).
    """
    from agent.generate import factory

    r = _coerce(receipt)
    if r.image is not None:
        part = r.image
        with torch_threads(_threads_for(part.runtime)):
            try:
                factory.load_image_generator(
                    image_settings(part, model=image_model, lora=image_lora, cache_dir=cache_dir)
                )
            except (ChrysalisError, OSError) as exc:
                raise ModelUnavailableError(
                    "image", part.model, _reason(exc), getattr(exc, "hint", None)
                ) from None
    if r.lore is not None:
        lore = r.lore
        with torch_threads(_threads_for(lore.runtime)):
            try:
                factory.load_lore_writer(lore_settings(lore, model=lore_model, cache_dir=cache_dir))
            except (ChrysalisError, OSError) as exc:
                raise ModelUnavailableError(
                    "lore", lore.model, _reason(exc), getattr(exc, "hint", None)
                ) from None


def _reason(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, ChrysalisError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def verify(
    receipt: InferenceReceipt | Mapping[str, Any] | Path | str,
    *,
    init_image_loader: InitImageLoader | None = None,
    snapshot: Any = None,
    image_model: str | None = None,
    image_lora: str | None = None,
    lore_model: str | None = None,
    cache_dir: Path | None = None,
) -> VerifyResult:
    """Re-run a receipt in the canonical configuration and compare every recorded field.

    Args:
        receipt: A receipt, its JSON data, or the path of a receipt file.
        init_image_loader: Gives the previous stage's PNG for an evolution (by sha256 and CID).
        snapshot: The input snapshot, if at hand; its hash is then compared too.
        image_model, image_lora, lore_model: Where this machine keeps the receipt's models, when not at the
            recorded path / hub id (their digests are still checked against the receipt).
        cache_dir: The model cache: the embedded lore model's converted copy, and models published on IPFS (a
            ``image_model`` / ``lore_model`` of ``ipfs://<CID>``, loaded with ``chrysalis model fetch``).
    """
    from agent.generate import factory

    if cache_dir is None:
        cache_dir = _configured_cache_dir()
    r = _coerce(receipt)
    check = _Checker()
    notes: list[str] = []
    seed = derive_seed(onchain_seed_bytes(r.seed.onchain_seed), r.seed.token_id)
    check.eq("seed.derived_seed", r.seed.derived_seed, seed)
    if snapshot is not None:
        check.eq("input_snapshot_sha256", r.input_snapshot_sha256, snapshot_hash(snapshot))
    reproducible = True
    here = library_versions()
    for name, part in (("image", r.image), ("lore", r.lore)):
        if part is None:
            continue
        check.eq(f"{name}.request.seed", part.request.get("seed"), seed)
        rt = part.runtime
        if not _reproducible(rt):
            reproducible = False
            notes.append(
                f"{name} was produced on {rt.get('device')}/{rt.get('dtype')}; a CPU replay cannot reproduce its "
                f"bits, so its output hashes were not compared (compare the published {name} with a replay on the "
                "same GPU model and library versions, or regenerate it in the canonical configuration: "
                "cpu, float32, 1 thread, batch 1)"
            )
        elif not rt.get("canonical"):
            notes.append(
                f"{name} is not canonical (threads={rt.get('threads')}, batch_size={rt.get('batch_size')}); "
                f"replayed with {rt.get('threads')} thread(s) at batch size 1"
            )
        # keys this side does not read (node, for a portable image) are not compared here
        diff = {
            k: (v, here.get(k))
            for k, v in (rt.get("versions") or {}).items()
            if k in here and here.get(k) != v
        }
        if diff:
            notes.append(
                f"{name}: library versions differ from the receipt's ("
                + ", ".join(f"{k} {a} here {b}" for k, (a, b) in sorted(diff.items()))
                + "); bits may differ for that reason alone"
            )

    missing = _portable_runtime_missing(r.image)
    if missing is not None:
        reproducible = False
        notes.append(missing)
    if r.image is not None and missing is None:
        part = r.image
        threads = _threads_for(part.runtime)
        with torch_threads(threads):
            gen = factory.load_image_generator(
                image_settings(part, model=image_model, lora=image_lora, cache_dir=cache_dir)
            )
            info = gen.model_ref
            check.eq("image.model.weights_sha256", part.model.weights_sha256, info.weights_sha256)
            extra = _relocated(_plain_extra(info.extra), part.model.extra, image_lora)
            check.mapping("image.model.extra", part.model.extra, extra, MACHINE_KEYS)
            if part.model.backend == "embedded":
                check.eq("image.model.model_id", part.model.model_id, info.model_id)
            lora_cfg = part.config.get("lora")
            if lora_cfg:
                got = (info.extra.get("lora") or {}).get("sha256")
                check.eq("image.config.lora.sha256", lora_cfg.get("sha256"), got)
            if _reproducible(part.runtime):
                request = _image_request(part, init_image_loader, check)
                if request is not None:
                    out = gen.generate([request])[0]
                    check.eq(
                        "image.output.pixels_sha256", part.output.get("pixels_sha256"), out.pixels_sha256
                    )
                    check.eq(
                        "image.output.png_sha256",
                        part.output.get("png_sha256"),
                        hashlib.sha256(out.png).hexdigest(),
                    )
                    check.eq("image.output.width", part.output.get("width"), out.width)
                    check.eq("image.output.height", part.output.get("height"), out.height)
                    config = {k: v for k, v in out.config.items() if k not in IMAGE_RUNTIME_KEYS}
                    config = _relocated(_plain_extra(config), part.config, image_lora)
                    skip = frozenset({"model_id"}) if image_model else frozenset()
                    check.mapping("image.config", part.config, config, skip)

    if r.lore is not None:
        part = r.lore
        threads = _threads_for(part.runtime)
        with torch_threads(threads):
            writer = factory.load_lore_writer(lore_settings(part, model=lore_model, cache_dir=cache_dir))
            info = writer.model_ref
            check.eq("lore.model.weights_sha256", part.model.weights_sha256, info.weights_sha256)
            check.mapping("lore.model.extra", part.model.extra, _plain_extra(info.extra), MACHINE_KEYS)
            if part.model.backend == "embedded":
                check.eq("lore.model.model_id", part.model.model_id, info.model_id)
            lore_request = LoreRequest(
                name=part.request["name"],
                stage=part.request["stage"],
                traits=dict(part.request["traits"]),
                facts=dict(part.request["facts"]),
                seed=part.request["seed"],
            )
            prompt_for = getattr(writer, "prompt_for", None)
            if prompt_for is not None:
                check.eq("lore.prompt", part.prompt, prompt_for(lore_request))
            gen_cfg = getattr(writer, "generation_config", None)
            if gen_cfg is not None:
                check.mapping(
                    "lore.generation_config",
                    part.generation_config,
                    gen_cfg.to_dict(),
                    frozenset({"transformers_version"}),
                )
            if _reproducible(part.runtime):
                lore = writer.write([lore_request])[0]
                check.eq(
                    "lore.output.token_ids_sha256", part.output.get("token_ids_sha256"), lore.token_ids_sha256
                )
                check.eq("lore.output.text", part.output.get("text"), lore.text)

    match = not check.mismatches and reproducible
    if check.mismatches:
        head = "MISMATCH: " + ", ".join(m.field for m in check.mismatches)
    elif reproducible:
        head = "MATCH: every recorded field was reproduced in the canonical configuration"
    else:
        head = "NOT REPRODUCIBLE HERE: device-independent fields match, output bits were not compared"
    note = "; ".join([head, *notes])
    return VerifyResult(match, check.mismatches, note, reproducible, check.checked)


def _portable_runtime_missing(part: ImageRecord | None) -> str | None:
    """Why a portable image (scheme ``chrysalis-portable/1``) cannot be replayed on this machine (no node, or not
    the pinned onnxruntime-web), or None when it can or the image is not portable."""
    from agent.generate.portable.generator import PORTABLE_SCHEME, check_portable_runtime, is_portable

    if part is None or not is_portable(part.config):
        return None
    try:
        check_portable_runtime()
    except ConfigError as exc:
        return (
            f"CANNOT REPRODUCE HERE: the image was made under {PORTABLE_SCHEME}, which replays in Node.js with "
            f"onnxruntime-web {(part.config.get('onnxruntime_web') or {}).get('version')}: {exc.message} "
            f"({exc.hint}); its output hashes were not compared"
        )
    return None


def _configured_cache_dir() -> Path | None:
    try:
        from agent.settings import load_settings

        return load_settings().models.cache_dir
    except ChrysalisError:
        return None


def _relocated(
    actual: dict[str, Any], recorded: Mapping[str, Any], lora_override: str | None
) -> dict[str, Any]:
    """With a LoRA found elsewhere on this machine, its recorded source stands (its sha256 is still compared)."""
    if lora_override and isinstance(actual.get("lora"), dict) and isinstance(recorded.get("lora"), Mapping):
        actual["lora"] = {**actual["lora"], "source": recorded["lora"].get("source")}
    return actual


def _plain_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(extra), sort_keys=True, default=str))


def _threads_for(runtime: Mapping[str, Any]) -> int:
    if _reproducible(runtime) and isinstance(runtime.get("threads"), int) and runtime["threads"] >= 1:
        return int(runtime["threads"])
    return CANONICAL_THREADS


def _image_request(part: ImageRecord, loader: InitImageLoader | None, check: _Checker) -> ImageRequest | None:
    req = part.request
    init = None
    sha = req.get("init_image_sha256")
    if sha:
        if loader is None:
            raise ConfigError(
                f"the image is an evolution of an earlier image (sha256 {sha}, cid {req.get('init_image_cid')}), "
                "and no init_image_loader was given",
                hint="pass init_image_loader=... (or --init-image PATH on the command line)",
            )
        init = loader(sha, req.get("init_image_cid"))
        if not check.eq("image.request.init_image_sha256", sha, hashlib.sha256(bytes(init)).hexdigest()):
            return None
    return ImageRequest(
        traits=dict(req["traits"]),
        seed=req["seed"],
        init_image=init,
        strength=req["strength"] if req.get("strength") is not None else 0.6,
        prompt=req.get("prompt"),
    )


def _coerce(receipt: InferenceReceipt | Mapping[str, Any] | Path | str) -> InferenceReceipt:
    if isinstance(receipt, InferenceReceipt):
        return receipt
    if isinstance(receipt, (str, Path)):
        return InferenceReceipt.load(receipt)
    return InferenceReceipt.from_json(receipt)


def file_loader(path: Path) -> InitImageLoader:
    """An init-image loader that returns one file's bytes (the sha256 is checked by :func:`verify`)."""

    def load(sha256: str, cid: str | None) -> bytes:
        return Path(path).read_bytes()

    return load


def report(result: VerifyResult, receipt: InferenceReceipt) -> str:
    """Human-readable lines for a result."""
    lines = [f"receipt provenance {receipt.provenance_hex()}", result.note]
    for m in result.mismatches:
        lines.append(f"  {m.field}: receipt {m.expected!r}, replay {m.actual!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.generate.verify RECEIPT.json``: exit 0 match, 1 mismatch, 2 not reproducible, 3 error."""
    ap = argparse.ArgumentParser(prog="python -m agent.generate.verify", description=__doc__.splitlines()[0])
    ap.add_argument("receipt", type=Path)
    ap.add_argument("--init-image", type=Path, help="PNG of the previous stage (for evolutions)")
    ap.add_argument("--image-model", help="local path of the receipt's image model")
    ap.add_argument("--image-lora", help="local path of the receipt's LoRA")
    ap.add_argument("--lore-model", help="local path of the receipt's lore model")
    ap.add_argument("--cache-dir", type=Path, help="converted-model cache for the embedded lore model")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    try:
        receipt = InferenceReceipt.load(args.receipt)
        result = verify(
            receipt,
            init_image_loader=file_loader(args.init_image) if args.init_image else None,
            image_model=args.image_model,
            image_lora=args.image_lora,
            lore_model=args.lore_model,
            cache_dir=args.cache_dir,
        )
    except ChrysalisError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(result.to_json(), indent=2, default=str) if args.json else report(result, receipt))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
