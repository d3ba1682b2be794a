"""Image generators, one module per model family, as diffusers keeps its pipelines.

- :mod:`~agent.generate.image.embedded`: :class:`~agent.generate.image.embedded.EmbeddedSpriteGenerator`, the
  shipped 32x32 sprite model (``models.image_backend = "embedded"``);
- :mod:`~agent.generate.image.diffusers`: :class:`~agent.generate.image.diffusers.DiffusersImageGenerator`, any
  diffusers text-to-image pipeline (``models.image_backend = "diffusers"``).

Both load diffusers and torch when imported, so this package imports neither module itself: import the family you
use (:mod:`agent.generate.factory` does, from the settings).
"""
