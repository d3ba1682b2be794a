"""Lore checks: length, a blocklist, repeated sentences, and leakage of the prompt or its template.

All checks are pure functions of the text (and the settings), so the same lore always gets the same verdict.

* length: ``min_chars <= len(text.strip()) <= max_chars``;
* blocklist: a listed word or phrase appearing as whole words, case-insensitively;
* repetition: the same sentence (case and spacing ignored) twice;
* leakage: chat-template or prompt markers (``Creature:``, ``Facts:``, ``Traits:``, ``Lore:``, ``<|im_start|>``,
  ``Assistant:``...) or a sentence of the lore prompt's instructions or its one-shot example
  (:mod:`agent.generate.lore.prompt`) copied into the output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from agent.gates.model import GateResult

TEMPLATE_MARKERS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|",
    "|>",
    "</s>",
    "[INST]",
    "Creature:",
    "Facts:",
    "Traits:",
    "Lore:",
    "System:",
    "User:",
    "Assistant:",
)
"""Strings that only a prompt or a chat template contains; finding one in lore means the prompt leaked."""

_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def sentences(text: str) -> list[str]:
    """The text's sentences, lower-cased with spacing collapsed (empty ones dropped)."""
    out = []
    for m in _SENTENCE.finditer(text):
        s = " ".join(m.group(0).lower().split()).strip(" .!?")
        if s:
            out.append(s)
    return out


@cache
def prompt_sentences() -> tuple[str, ...]:
    """The lore prompt's own sentences (instructions and one-shot example) that must never appear in an output.

    (Imported when first needed: the lore package loads torch.)
    """
    from agent.generate.lore.prompt import EXAMPLE_ASSISTANT, EXAMPLE_USER, SYSTEM_PROMPT

    text = SYSTEM_PROMPT + " " + EXAMPLE_USER + " " + EXAMPLE_ASSISTANT
    return tuple(s for s in sentences(text) if len(s) >= 12)


def check_length(text: str, min_chars: int, max_chars: int) -> GateResult:
    n = len(text.strip())
    ok = min_chars <= n <= max_chars
    reason = (
        f"{n} characters, within {min_chars}..{max_chars}"
        if ok
        else f"{n} characters, outside {min_chars}..{max_chars}"
    )
    return GateResult("lore_length", ok, n, [min_chars, max_chars], reason)


def check_blocklist(text: str, blocklist: Sequence[str]) -> GateResult:
    hits = []
    for word in blocklist:
        w = word.strip()
        if w and re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text, flags=re.IGNORECASE):
            hits.append(w)
    reason = f"contains blocked word(s): {', '.join(hits)}" if hits else "no blocked words"
    return GateResult("lore_blocklist", not hits, hits, None, reason)


def check_repetition(text: str) -> GateResult:
    seen: set[str] = set()
    repeated: list[str] = []
    for s in sentences(text):
        if s in seen and s not in repeated:
            repeated.append(s)
        seen.add(s)
    reason = f"repeats the sentence(s): {'; '.join(repeated)}" if repeated else "no repeated sentences"
    return GateResult("lore_repetition", not repeated, repeated, None, reason)


def check_leakage(text: str, extra: Sequence[str] = ()) -> GateResult:
    low = " ".join(text.lower().split())
    hits = [m for m in TEMPLATE_MARKERS if m.lower() in low]
    hits += [s for s in (*prompt_sentences(), *(e.lower() for e in extra if e.strip())) if s in low]
    reason = f"contains prompt or template text: {', '.join(repr(h) for h in hits)}" if hits else "no leakage"
    return GateResult("lore_leakage", not hits, hits, None, reason)


def lore_gates(text: str, *, min_chars: int, max_chars: int, blocklist: Sequence[str]) -> list[GateResult]:
    """Every lore check of ``text``, in a fixed order."""
    return [
        check_length(text, min_chars, max_chars),
        check_blocklist(text, blocklist),
        check_repetition(text),
        check_leakage(text),
    ]
