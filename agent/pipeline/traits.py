"""The rules step: a snapshot and the token's facts become traits, image conditioning, strength and lore facts.

A pure function of its inputs (the rules engine is deterministic), so its result is stored with the inputs
stage and a retried job never re-evaluates it differently.

Fusion (``fuse``: a kin token was burnt to open the request) adds the lore fact ``fusion`` and repaints at
least :data:`FUSION_STRENGTH` of the previous image.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.domain import InputSnapshot, RuleOutcome
from agent.rules import RuleEngine

FUSION_FACT = "fused with one of its kin"
FUSION_STRENGTH = 0.85


def evaluate_traits(
    engine: RuleEngine,
    snapshot: InputSnapshot,
    *,
    stage: int,
    token_id: int,
    previous: Mapping[str, str] | None,
    fused: bool = False,
) -> RuleOutcome:
    """Evaluate the rules for one render (``changed`` sorted).

    Raises:
        MissingFeatureError, FeatureValueError: the inputs do not fit the rules (permanent).
    """
    result = engine.evaluate(snapshot, stage=stage, token_id=token_id, previous=previous)
    facts = dict(result.facts)
    strength = result.strength
    if fused:
        facts["fusion"] = FUSION_FACT
        strength = max(strength, FUSION_STRENGTH)
    return RuleOutcome(
        rules_sha256=engine.sha256,
        traits=dict(result.traits),
        conditioning=dict(result.conditioning),
        strength=strength,
        facts=facts,
        changed=tuple(sorted(result.changed)),
    )
