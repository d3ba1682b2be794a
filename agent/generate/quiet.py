"""Keep the model libraries' own chatter out of Chrysalis' output.

transformers, diffusers and huggingface_hub print to stderr on their own: tqdm bars while loading
("Loading weights", "Writing model shards", "Converting and de-quantizing GGUF tensors"), log warnings through
their own handlers (``[transformers] ... is deprecated``, a tokenizer's ``clean_up_tokenization_spaces``
notice) and Python warnings. None of it is something an operator acts on, and it lands in the middle of
``chrysalis genesis``' progress bar, a JSON log line or a table.

:func:`quiet_libraries` (idempotent, called before any model module is imported: the factory, ``model verify``,
``chrysalis run``):

* turns the libraries' progress bars off (their own switches; ``HF_HUB_DISABLE_PROGRESS_BARS``); Chrysalis' own
  bars (rich, e.g. the genesis bar) are untouched;
* sends the libraries' log records to the standard logging tree at DEBUG, so ``--log-level DEBUG`` still
  shows them and nothing else does;
* ignores the Python warnings those libraries raise (deprecations and the like in their own code).

:func:`gguf_bars_off` covers the one bar no switch reaches: the GGUF reader's plain ``tqdm``.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

LIBRARIES = ("transformers", "diffusers", "huggingface_hub", "accelerate", "tokenizers")
"""Loggers (and warning-raising packages) whose output is kept at DEBUG."""

_WARNING_MODULES = r"(transformers|diffusers|huggingface_hub|accelerate|tokenizers|torch)(\..*)?$"

_lock = threading.Lock()
_done = False


class DebugRelay(logging.Handler):
    """Re-emits a library's records at DEBUG through the root logger (dropped unless DEBUG is on there)."""

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if not root.isEnabledFor(logging.DEBUG):
            return
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        root.handle(record)


def route_to_debug(name: str) -> None:
    """Make logger ``name`` (and its children) hand every record to the root logger at DEBUG, and nothing else."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if not isinstance(handler, DebugRelay):
            logger.removeHandler(handler)
    if not any(isinstance(h, DebugRelay) for h in logger.handlers):
        logger.addHandler(DebugRelay())
    logger.propagate = False


def quiet_libraries() -> None:
    """Progress bars off, log records to DEBUG, warnings ignored, for the model libraries (see the module doc)."""
    global _done
    with _lock:
        if _done:
            return
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore", module=_WARNING_MODULES)
        for name in ("transformers.utils.logging", "diffusers.utils.logging"):
            try:
                module: Any = importlib.import_module(name)
            except ImportError:  # pragma: no cover - both are dependencies
                continue
            module.disable_progress_bar()
            module.disable_default_handler()  # transformers' own stderr handler
        try:
            from huggingface_hub.utils import disable_progress_bars
        except ImportError:  # pragma: no cover - a dependency of both
            pass
        else:
            disable_progress_bars()
        for name in LIBRARIES:
            route_to_debug(name)
        _done = True


@contextmanager
def gguf_bars_off() -> Iterator[None]:
    """Inside the block, the GGUF reader of transformers draws no tqdm bar (it imports tqdm directly)."""
    try:
        module: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # pragma: no cover - another transformers layout: nothing to silence
        yield
        return
    original = getattr(module, "tqdm", None)
    if original is None:  # pragma: no cover
        yield
        return
    module.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original
