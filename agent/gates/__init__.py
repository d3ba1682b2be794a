"""Automatic quality gates: checks every candidate passes before it is published or shown to a curator.

* :mod:`agent.gates.model`: :class:`GateResult`, :class:`GateReport` (stored with the candidate) and
  :class:`GatesFailedError`;
* :mod:`agent.gates.phash` and :mod:`agent.gates.index`: the near-duplicate gate (64-bit dHash, multi-index
  hashing, the ``gate_hashes`` table);
* :mod:`agent.gates.metrics`: the image model's own metrics (symmetry and palette for the sprite model) and
  ``module:function`` plug-ins;
* :mod:`agent.gates.lore`: length, blocklist, repeated sentences, prompt/template leakage;
* :mod:`agent.gates.runner`: :class:`Gates`, the configured checks and the index;
* :mod:`agent.gates.reroll`: the public reroll of a seed a failing candidate is regenerated with.

Layering: below the pipeline, review and genesis; imports :mod:`agent.generate`, :mod:`agent.store`,
:mod:`agent.domain` and :mod:`agent.settings` only. Thresholds and their measured evidence: ``bench/gates.py``.
"""

from agent.gates.model import GateReport, GateResult, GatesFailedError
from agent.gates.reroll import MAX_REROLLS, reroll_seed
from agent.gates.runner import Gates

__all__ = ["MAX_REROLLS", "GateReport", "GateResult", "Gates", "GatesFailedError", "reroll_seed"]
