"""The inference boundary: what an image generator and a lore writer take and give.

Implementations live in :mod:`agent.generate.image` and :mod:`agent.generate.lore`, one module per model family
(the embedded models shipped with Chrysalis, and production diffusers / transformers pipelines). They are chosen by
:class:`agent.settings.ModelSettings`. Each names its model with an :class:`agent.domain.ModelRef`. Everything here
is plain data so that a job can store it and a verifier can replay it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.domain import ModelRef


@dataclass(frozen=True)
class ImageRequest:
    """One image to make.

    Attributes:
        traits: Trait name -> value, already validated by the rules (e.g. ``{"mood": "serene", "element": "fire"}``).
        seed: 64-bit seed derived from the on-chain seed and token id (:func:`agent.generate.seed.derive_seed`).
        init_image: PNG bytes of the previous stage for image-to-image evolution, or None for a fresh image.
        strength: How far an evolution moves from ``init_image`` (0 keeps it, 1 ignores it).
        prompt: Text prompt for text-conditioned production pipelines; the embedded model ignores it.
        label: What the image is for, named in error messages (``token 7 (request 0x700000001)``); not part of
            the request's identity, never recorded in a receipt.
    """

    traits: Mapping[str, str]
    seed: int
    init_image: bytes | None = None
    strength: float = 0.6
    prompt: str | None = None
    label: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GeneratedImage:
    """A generated image and the facts needed to verify it.

    Attributes:
        png: Marketplace-ready PNG bytes (upscaled for the embedded pixel model).
        pixels_sha256: Hex sha256 of the raw uint8 pixel array (H x W x C, native resolution, C-order).
        width: Native width in pixels. height: Native height in pixels.
        config: The full generation configuration used (steps, scheduler, strength, guidance, class label, ...).
    """

    png: bytes
    pixels_sha256: str
    width: int
    height: int
    config: Mapping[str, Any]


class ImageGenerator(ABC):
    """Makes images for tokens. Loaded once per process and reused."""

    @property
    @abstractmethod
    def model_ref(self) -> ModelRef:
        """The loaded model's identity (kind, backend, id, weights digest, details)."""

    @abstractmethod
    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        """Generate one image per request, in order. Batches internally where the implementation can."""


def request_label(request: ImageRequest | LoreRequest, index: int, count: int) -> str:
    """How an error names a request: its ``label``, else its place in the call (``image 2 of 8``)."""
    if request.label:
        return request.label
    kind = "image" if isinstance(request, ImageRequest) else "lore"
    return f"the {kind} request" if count == 1 else f"{kind} request {index + 1} of {count}"


@dataclass(frozen=True)
class LoreRequest:
    """One piece of lore to write.

    Attributes:
        name: The token's name (template text, never left to the model).
        stage: The stage the token is evolving into.
        traits: Trait name -> value.
        facts: Qualitative facts from the inputs ("a cold season", "held for a long time").
        seed: 64-bit seed; ignored under greedy decoding but always recorded.
        label: What the lore is for, named in error messages; never recorded in a receipt.
    """

    name: str
    stage: int
    traits: Mapping[str, str]
    facts: Mapping[str, str]
    seed: int
    label: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GeneratedLore:
    """Generated lore and the facts needed to verify it.

    Attributes:
        text: The final lore (template header + two cleaned sentences from the model).
        token_ids_sha256: Hex sha256 of the generated token ids (int64 little-endian, prompt excluded).
        prompt: The exact prompt given to the model.
        generation_config: ``GenerationConfig.to_dict()`` of the decoding settings used.
    """

    text: str
    token_ids_sha256: str
    prompt: str
    generation_config: Mapping[str, Any]


class LoreWriter(ABC):
    """Writes lore for tokens. Loaded once per process and reused."""

    @property
    @abstractmethod
    def model_ref(self) -> ModelRef:
        """The loaded model's identity (kind, backend, id, weights digest, details)."""

    @abstractmethod
    def write(self, requests: Sequence[LoreRequest]) -> list[GeneratedLore]:
        """Write one lore text per request, in order. Batches internally where the implementation can."""
