"""The model-setting lists come from one place: the ``ModelKey`` marks on ``ModelSettings``' fields."""

from __future__ import annotations

from agent.generate.factory import IMAGE_KEYS, LORE_KEYS
from agent.genesis.run import MODEL_KEYS
from agent.settings import ModelKey, ModelSettings, model_keys

# The lists as they were written out by hand before the marks: the marks must keep them.
OLD_IMAGE_KEYS = (
    "image_backend",
    "image_model",
    "image_runtime",  # added with the portable runtime (issue 16)
    "image_lora",
    "image_lora_scale",
    "image_scheduler",
    "image_steps",
    "image_guidance",
    "image_width",
    "image_height",
    "image_negative_prompt",
    "image_batch_size",
    "attention_slicing",
    "cpu_offload",
    "channels_last",
    "compile",
    "device",
    "dtype",
    "threads",
)
OLD_LORE_KEYS = (
    "lore_backend",
    "lore_model",
    "lore_max_new_tokens",
    "lore_do_sample",
    "lore_temperature",
    "lore_top_p",
    "lore_repetition_penalty",
    "lore_batch_size",
    "device",
    "dtype",
    "cache_dir",
)
OLD_MODEL_KEYS = (
    "image_backend",
    "image_model",
    "image_runtime",  # added with the portable runtime; a ledger leaves it out while it is "torch"
    "image_lora",
    "image_lora_scale",
    "image_scheduler",
    "image_steps",
    "image_guidance",
    "image_width",
    "image_height",
    "image_negative_prompt",
    "image_batch_size",
    "device",
    "dtype",
    "lore_backend",
    "lore_model",
    "lore_max_new_tokens",
    "lore_do_sample",
    "lore_temperature",
    "lore_top_p",
    "lore_repetition_penalty",
    "lore_batch_size",
)


def test_factory_cache_keys_are_the_marked_fields() -> None:
    # a cache key's order does not matter; each field is in it once
    assert sorted(IMAGE_KEYS) == sorted(OLD_IMAGE_KEYS) and len(set(IMAGE_KEYS)) == len(IMAGE_KEYS)
    assert sorted(LORE_KEYS) == sorted(OLD_LORE_KEYS) and len(set(LORE_KEYS)) == len(LORE_KEYS)


def test_genesis_keys_are_the_output_affecting_fields_in_the_ledgers_order() -> None:
    # the ledger stores a dict in this order: keep it, so new ledgers read as the old ones did
    assert MODEL_KEYS == OLD_MODEL_KEYS == model_keys("image", "lore", output_only=True)


def test_every_model_setting_is_marked_once() -> None:
    for name, info in ModelSettings.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, ModelKey)]
        assert len(marks) == 1, f"ModelSettings.{name} needs exactly one ModelKey mark"
        assert marks[0].loaders <= {"image", "lore"} and marks[0].loaders


def test_every_loader_setting_is_in_a_loader_key() -> None:
    assert set(IMAGE_KEYS) | set(LORE_KEYS) == set(ModelSettings.model_fields)
