"""Errors of the evolution rules: a bad rules file (found on load) and a bad input (found on evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError, PermanentError


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with a rules file.

    Attributes:
        rule: Where, as the TOML table that holds it (``[traits.mood]``, ``[image.conditioning]``).
        problem: What is wrong.
        fix: How to fix it.
    """

    rule: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.rule} {self.problem}\n    fix: {self.fix}"


class RulesConfigError(ConfigError):
    """A rules file is invalid. Lists every problem found, each with the rule it is in and its fix.

    Attributes:
        path: The rules file (or ``<string>`` for rules parsed from text).
        problems: Every problem found, in file order.
        rule: The first problem's rule. fix: The first problem's fix.
    """

    def __init__(self, path: str, problems: Sequence[RuleProblem]) -> None:
        self.path = path
        self.problems = tuple(problems)
        self.rule = self.problems[0].rule if self.problems else ""
        self.fix = self.problems[0].fix if self.problems else ""
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        listing = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"rules file {path} has {count}:\n{listing}",
            hint="agent/rules/default_rules.toml is a commented example of every rule kind",
        )


class RuleEvaluationError(PermanentError):
    """A rule could not be evaluated on the inputs given.

    Attributes:
        rule: The rule, as its TOML table (``[traits.mood]``).
        feature: The feature it reads.
    """

    def __init__(self, message: str, *, rule: str, feature: str, hint: str) -> None:
        self.rule = rule
        self.feature = feature
        super().__init__(f"{rule}: {message}", hint=hint)


class MissingFeatureError(RuleEvaluationError, LookupError):
    """A rule's feature is not in the inputs and the rule declares no ``default``.

    Attributes:
        available: The feature names the inputs did have.
    """

    def __init__(self, *, rule: str, feature: str, available: Sequence[str]) -> None:
        self.available = tuple(available)
        super().__init__(
            f"feature {feature!r} is missing from the inputs "
            f"(they have: {', '.join(self.available) or 'nothing'})",
            rule=rule,
            feature=feature,
            hint=f"add an oracle that provides {feature!r} to the snapshot, "
            f'or declare `default = "..."` in {rule}',
        )


class FeatureValueError(RuleEvaluationError, ValueError):
    """A feature's value does not fit its rule: a non-number for bands, NaN, or a value a map does not list.

    Attributes:
        value: The offending value.
        reason: Which check failed, as a stable code: ``not_a_number``, ``nan``, ``not_a_string``,
            ``not_in_map`` or ``band_count`` (``renderer/rules.js`` reports the same codes).
    """

    def __init__(
        self, message: str, *, rule: str, feature: str, value: Any, hint: str, reason: str = ""
    ) -> None:
        self.value = value
        self.reason = reason
        super().__init__(message, rule=rule, feature=feature, hint=hint)
