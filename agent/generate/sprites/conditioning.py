"""Traits -> class label for the embedded sprite model.

The model knows 16 classes: ``mood`` picks the palette family and ``element`` the body plan. The index is
``MOODS.index(mood) * len(ELEMENTS) + ELEMENTS.index(element)``; class :data:`NULL_CLASS` is the unconditional
class used for classifier-free guidance. Values are matched exactly (lower case): the rules produce them, and a
verifier must map the same traits to the same label.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.errors import ConfigError

MOODS: tuple[str, ...] = ("serene", "radiant", "fierce", "gloomy")
"""Mood -> palette family: calm blues/greens, warm golds, reds on dark, muted purples/greys."""

ELEMENTS: tuple[str, ...] = ("fire", "water", "earth", "air")
"""Element -> body plan: flame-shaped, round with fins, blocky with legs, small with wings."""

NUM_CLASSES = len(MOODS) * len(ELEMENTS)
NULL_CLASS = NUM_CLASSES
"""Extra class embedding trained with label dropout; the unconditional branch of guidance."""

TRAITS: dict[str, tuple[str, ...]] = {"mood": MOODS, "element": ELEMENTS}


def class_index(mood: str, element: str) -> int:
    """Class label for a (mood, element) pair. Raises ConfigError for unknown values."""
    return _index("mood", mood) * len(ELEMENTS) + _index("element", element)


def class_label(traits: Mapping[str, str]) -> int:
    """Class label for a token's traits. Other trait names are ignored; ``mood`` and ``element`` are required."""
    for name in TRAITS:
        if name not in traits:
            raise ConfigError(
                f"trait {name!r} is missing; the embedded sprite model needs both 'mood' and 'element'",
                hint=f"give {name!r} one of {', '.join(TRAITS[name])} (got traits {sorted(traits)})",
            )
    return class_index(traits["mood"], traits["element"])


def class_traits(label: int) -> dict[str, str]:
    """Inverse of :func:`class_index`."""
    if not 0 <= label < NUM_CLASSES:
        raise ConfigError(f"class label {label} is out of range", hint=f"use 0..{NUM_CLASSES - 1}")
    return {"mood": MOODS[label // len(ELEMENTS)], "element": ELEMENTS[label % len(ELEMENTS)]}


def as_json() -> dict[str, object]:
    """The mapping as shipped in ``conditioning.json``."""
    return {
        "traits": {k: list(v) for k, v in TRAITS.items()},
        "rule": "class = index(mood) * 4 + index(element)",
        "classes": {str(i): class_traits(i) for i in range(NUM_CLASSES)},
        "null_class": NULL_CLASS,
    }


def _index(name: str, value: str) -> int:
    allowed = TRAITS[name]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(
            f"unknown {name} {value!r} for the embedded sprite model",
            hint=f"set trait {name!r} to one of: {', '.join(allowed)}",
        )
    return allowed.index(value)
