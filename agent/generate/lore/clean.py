"""Lore post-processing: from a model's raw output to the final text, with what was dropped and why.

:func:`clean_sentences` strips special tokens, markdown, list markers, quotes and labels, and drops sentences with
numbers, invented names, meta talk or no ending. :func:`finish_lore` puts the template header
(:func:`~agent.generate.lore.prompt.lore_header`) before the first :data:`~agent.generate.lore.prompt.N_SENTENCES`
clean sentences and fills missing ones from a template, recording how many were filled.

Guarantee: the output is a function of the raw text and the request alone. :data:`POSTPROCESS_VERSION` names these
rules; it is part of every output's details, so a change to them must change it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.generate.base import LoreRequest
from agent.generate.lore.prompt import N_SENTENCES, fallback_sentences, lore_header

POSTPROCESS_VERSION = "chrysalis.lore.clean/1"
"""Names the cleaning + stopping rules; part of every output's details (changing them changes outputs)."""

_SPECIAL = re.compile(r"<\|[^|>]{0,40}\|>|</?s>|\[/?INST\]")
_MARKDOWN = re.compile(r"[*_`#>~]+")
_LIST_MARKER = re.compile(r"^\s*(?:[-\u2022*+\u2013\u2014]|\(?\d{1,2}[.)]|\(?[a-zA-Z][.)])\s+")
_LABEL = re.compile(r"^\s*(?:[A-Za-z][\w ]{0,24}):\s+")
_DQUOTES = re.compile(r"[\"\u201c\u201d\u201e\u00ab\u00bb]")
_SQUOTE_EDGE = re.compile(r"(?:(?<=^)|(?<=\s))['\u2018\u2019]+|['\u2018\u2019]+(?=\s|$|[.!?,;:])")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+)")
_META = re.compile(
    r"\b(?:sentences?|creature:|facts?:|here is|here's|as an ai|i cannot|i can't|lore|assistant|user)\b",
    re.IGNORECASE,
)
_NAMING = re.compile(r"\b(?:named|called|known as|name is)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*")


@dataclass(frozen=True)
class CleanedLore:
    """Result of :func:`clean_sentences`: the usable sentences and what was dropped, with reasons."""

    sentences: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()


def _normalise(raw: str) -> str:
    text = _SPECIAL.sub(" ", raw).replace("\r", "\n").replace("\u2026", "...")
    text = _MARKDOWN.sub("", text)
    lines = []
    for line in text.split("\n"):
        line = _LIST_MARKER.sub("", line).strip()
        if not line or line.endswith(":"):
            continue  # empty, or an intro line ("Here are two sentences:")
        line = _LABEL.sub("", line) if len(line.split(":")[0].split()) <= 3 else line
        lines.append(line)
    text = " ".join(lines)
    text = _DQUOTES.sub("", text)
    text = _SQUOTE_EDGE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def _drop_reason(sentence: str, allowed: frozenset[str]) -> str | None:
    words = _WORD.findall(sentence)
    if sentence.endswith(".."):
        return "unfinished"
    if any(ch.isdigit() for ch in sentence):
        return "number"
    if len(words) < 4:
        return "too short"
    if len(words) > 40:
        return "too long"
    if not sentence[0].isupper():
        return "fragment"
    if _META.search(sentence):
        return "meta"
    if _NAMING.search(sentence):
        return "invented name"
    for w in words[1:]:
        base = w.split("'")[0].split("\u2019")[0]
        if base[:1].isupper() and base != "I" and base.lower() not in allowed:
            return "invented name"
    return None


def clean_sentences(raw: str, *, allowed_words: Sequence[str] = (), limit: int = N_SENTENCES) -> CleanedLore:
    """The first ``limit`` clean sentences of a model's raw output.

    Args:
        raw: Decoded model output (special tokens may be present).
        allowed_words: Words that may appear capitalised mid-sentence (trait values); any other capitalised
            word there is taken as a name the model invented, and its sentence is dropped. (A name as the
            very first word cannot be told from an ordinary capitalised word without a dictionary; the prompt
            forbids names and the one-shot example starts with "It", which keeps that case rare.)
        limit: How many sentences to keep.
    """
    allowed = frozenset(w.lower() for phrase in allowed_words for w in _WORD.findall(str(phrase)))
    text = _normalise(raw)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    end = 0
    for m in _SENTENCE.finditer(text):
        end = m.end()
        s = m.group(0).strip()
        s = re.sub(r"([.!?])[.!?]*$", r"\1", s) if not s.endswith("...") else s
        reason = _drop_reason(s, allowed)
        if reason is None and s.lower() in seen:
            reason = "repeat"
        if reason is not None:
            dropped.append((s, reason))
            continue
        seen.add(s.lower())
        if len(kept) < limit:
            kept.append(s)
    tail = text[end:].strip()
    if tail:
        dropped.append((tail, "unfinished"))
    return CleanedLore(tuple(kept), tuple(dropped))


def allowed_words_for(request: LoreRequest) -> list[str]:
    """Words the model may capitalise mid-sentence (:func:`clean_sentences`): the request's trait values."""
    return [str(v) for v in request.traits.values()]


def finish_lore(request: LoreRequest, raw: str) -> tuple[str, dict[str, Any]]:
    """Final text (header + two sentences) and the post-processing facts for one raw model output."""
    cleaned = clean_sentences(raw, allowed_words=allowed_words_for(request))
    sentences = list(cleaned.sentences)
    filled = 0
    fallback = fallback_sentences(request)
    while len(sentences) < N_SENTENCES:
        sentences.append(fallback[len(sentences)])
        filled += 1
    text = lore_header(request) + "\n\n" + " ".join(sentences)
    return text, {
        "raw_text": raw,
        "fallback_sentences": filled,
        "dropped": [list(d) for d in cleaned.dropped],
        "postprocess": POSTPROCESS_VERSION,
    }
