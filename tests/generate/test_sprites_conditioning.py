"""Traits -> class label mapping of the embedded sprite model."""

from __future__ import annotations

import json

import pytest

from agent.errors import ConfigError
from agent.generate.image.embedded import SHIPPED_DIR
from agent.generate.sprites import conditioning as c


def test_mapping_is_mood_major_and_invertible():
    assert c.class_label({"mood": "serene", "element": "fire"}) == 0
    assert c.class_label({"mood": "serene", "element": "air"}) == 3
    assert c.class_label({"mood": "radiant", "element": "fire"}) == 4
    assert c.class_label({"mood": "gloomy", "element": "air"}) == 15
    labels = {c.class_index(m, e) for m in c.MOODS for e in c.ELEMENTS}
    assert labels == set(range(16)) and c.NULL_CLASS == 16
    for i in range(16):
        assert c.class_label(c.class_traits(i)) == i


def test_other_traits_are_ignored():
    assert c.class_label({"mood": "fierce", "element": "earth", "stage": "2", "name": "x"}) == 10


@pytest.mark.parametrize(
    ("traits", "name", "allowed"),
    [
        ({"mood": "angry", "element": "fire"}, "mood", "serene, radiant, fierce, gloomy"),
        ({"mood": "serene", "element": "lava"}, "element", "fire, water, earth, air"),
        ({"mood": "Serene", "element": "fire"}, "mood", "serene, radiant, fierce, gloomy"),
        ({"element": "fire"}, "mood", "serene, radiant, fierce, gloomy"),
        ({"mood": "serene"}, "element", "fire, water, earth, air"),
    ],
)
def test_bad_traits_name_the_trait_and_the_allowed_values(traits, name, allowed):
    with pytest.raises(ConfigError) as e:
        c.class_label(traits)
    assert isinstance(e.value, ValueError)
    assert repr(name) in str(e.value) and allowed in str(e.value)


def test_shipped_conditioning_json_matches_the_code():
    assert json.loads((SHIPPED_DIR / "conditioning.json").read_text()) == c.as_json()
