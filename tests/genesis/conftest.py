"""Genesis fixtures: real models (the shipped sprite model with few steps, the tiny random Llama for lore of
tests/support/models.py), small trait tables, and the shared anvil (tests/support/fixtures.py) with nothing
deployed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.genesis.traits import TraitTable, parse_table
from agent.settings import ModelSettings
from tests.support.devchain import DevChain

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IMAGE_STEPS = 4
LORE_TOKENS = 8


@pytest.fixture(scope="module")
def module_chain(anvil_url: str) -> DevChain:
    """The shared anvil with nothing deployed: each test deploys the collection it reveals on."""
    return DevChain(anvil_url)


@pytest.fixture(scope="session")
def models(tiny_lm: Path) -> ModelSettings:
    """Shipped sprite model (4 DDIM steps), tiny Llama lore, one torch thread (outputs must not depend on cores)."""
    return ModelSettings(
        image_steps=IMAGE_STEPS,
        lore_backend="transformers",
        lore_model=str(tiny_lm),
        lore_max_new_tokens=LORE_TOKENS,
        device="cpu",
        threads=1,
    )


def model_env(models: ModelSettings) -> dict[str, str]:
    """The same models as ``CHRYSALIS_MODELS__*`` variables, for a ``chrysalis`` subprocess."""
    return {
        "CHRYSALIS_MODELS__IMAGE_STEPS": str(models.image_steps),
        "CHRYSALIS_MODELS__LORE_BACKEND": models.lore_backend,
        "CHRYSALIS_MODELS__LORE_MODEL": str(models.lore_model),
        "CHRYSALIS_MODELS__LORE_MAX_NEW_TOKENS": str(models.lore_max_new_tokens),
        "CHRYSALIS_MODELS__DEVICE": models.device,
        "CHRYSALIS_MODELS__THREADS": str(models.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def small_table(**extra: object) -> TraitTable:
    """mood x element (the image model's conditioning) and a metadata-only background; 96 combinations, and
    unique assignments exist up to 60 tokens."""
    data: dict[str, object] = {
        "name": "Testling",
        "unique": ["mood", "element", "background"],
        "lore": {"facts": {"origin": "newly hatched"}},
        "traits": {
            "mood": {"weights": {"serene": 3, "radiant": 3, "fierce": 2, "gloomy": 2}},
            "element": {"weights": {"fire": 1, "water": 1, "earth": 1, "air": 1}},
            "background": {
                "image": False,
                "weights": {"dawn": 2, "dusk": 2, "void": 1, "reef": 1, "moss": 1, "ash": 1},
            },
        },
    }
    data.update(extra)
    return parse_table(data)


@pytest.fixture
def table() -> TraitTable:
    return small_table()
