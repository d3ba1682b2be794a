"""Evolution rules: a TOML file maps a token's inputs (oracle readings, stage, id) to its traits, the image
model's conditioning and strength, and qualitative lore facts. See ``default_rules.toml`` for the format."""

from agent.rules.engine import RuleEngine, TraitResult
from agent.rules.errors import (
    FeatureValueError,
    MissingFeatureError,
    RuleEvaluationError,
    RuleProblem,
    RulesConfigError,
)
from agent.rules.loader import DEFAULT_RULES, load_conditioning, load_rules, parse_rules
from agent.rules.model import RulesSpec, check_spec

__all__ = [
    "DEFAULT_RULES",
    "FeatureValueError",
    "MissingFeatureError",
    "RuleEngine",
    "RuleEvaluationError",
    "RuleProblem",
    "RulesConfigError",
    "RulesSpec",
    "TraitResult",
    "check_spec",
    "load_conditioning",
    "load_rules",
    "parse_rules",
]
