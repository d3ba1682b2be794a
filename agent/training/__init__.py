"""Training on your own data (issue 15): fine-tune the embedded sprite model (:mod:`agent.training.sprites`), its
training receipt (:mod:`agent.training.receipt`), model card (:mod:`agent.training.card`) and bit-for-bit replay
(:mod:`agent.training.verify`). Every trainer returns a :class:`~agent.training.result.TrainResult`.

This package root imports no torch: the CLI imports the heavy modules inside its commands.
"""

from agent.training.result import TrainResult

__all__ = ["TrainResult"]
