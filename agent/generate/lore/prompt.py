"""Lore prompts: what the model is asked, and the template text it never writes.

Guarantees:

- Hard facts (name, stage, traits) are template text (:func:`lore_header`); the model never sees the name.
- The model gets the trait values and qualitative facts in a fixed order (mood, element, then the other traits by
  name; facts by key), a one-shot example and the tokenizer's chat template (:func:`render_prompt`), and is asked
  for :data:`N_SENTENCES` sentences. Changing any text here changes every prompt, and so every receipt's ``prompt``.
- :func:`fallback_sentences` fills in when the model gives fewer usable sentences than :data:`N_SENTENCES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.generate.base import LoreRequest

N_SENTENCES = 2
"""Sentences of model text in every lore: the prompt asks for them, the cleaner keeps them, decoding stops there."""

SYSTEM_PROMPT = (
    "You write lore for creatures in a collection of living art. Reply with exactly two short sentences in "
    "plain prose about how the creature feels and the world around it. Do not name the creature. "
    "Do not use numbers, lists or quotes."
)
EXAMPLE_USER = "Creature: calm, water. Facts: a warm season; its keeper has held it for a long time."
EXAMPLE_ASSISTANT = (
    "It drifts through the warm shallows, humming to the patient hands that have kept it so long. "
    "Each ripple it leaves behind is softer than the last."
)


# --- prompts ---------------------------------------------------------------------------------------------------


def user_message(traits: Mapping[str, str], facts: Mapping[str, str]) -> str:
    """The user turn for one creature: trait values, then qualitative facts (sorted by key for stability)."""
    order = [k for k in ("mood", "element") if k in traits] + sorted(
        k for k in traits if k not in ("mood", "element")
    )
    trait_text = ", ".join(str(traits[k]) for k in order)
    fact_text = "; ".join(str(facts[k]) for k in sorted(facts)) or "nothing unusual"
    return f"Creature: {trait_text}. Facts: {fact_text}."


def build_messages(request: LoreRequest) -> list[dict[str, str]]:
    """Chat messages: system rules, the one-shot example, then this creature."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": EXAMPLE_USER},
        {"role": "assistant", "content": EXAMPLE_ASSISTANT},
        {"role": "user", "content": user_message(request.traits, request.facts)},
    ]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The exact prompt text: the tokenizer's chat template, or a plain transcript if it has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def lore_header(request: LoreRequest) -> str:
    """Template text holding the hard facts: ``Name · stage N · element fire, mood serene``."""
    traits = ", ".join(f"{k} {request.traits[k]}" for k in sorted(request.traits))
    return f"{request.name} · stage {request.stage} · {traits}"


def fallback_sentences(request: LoreRequest) -> list[str]:
    """Template sentences used when the model gives fewer than two usable ones."""
    t = request.traits
    if "mood" in t and "element" in t:
        first = f"It stirs with a {t['mood']} heart and the pull of {t['element']}."
    else:
        first = "It stirs, " + " and ".join(str(t[k]) for k in sorted(t)) + "."
    return [first, "Its story is still being written."]
