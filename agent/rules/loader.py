"""Loading rules files: TOML -> :class:`~agent.rules.model.RulesSpec` -> validated :class:`RuleEngine`.

Every problem in a file is reported at once, each naming its rule and its fix::

    agent.rules.errors.RulesConfigError: rules file my_rules.toml has 2 problems:
      [traits.mood] band 3 ('radiant') [1, 10) overlaps band 2 [-5, 2)
        fix: start band 3 where band 2 ends, with exactly one of the touching ends inclusive
      [traits.element] value 'lava' is not one the image model accepts for 'element'
        fix: change it to one of: fire, water, earth, air
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import NotFoundError
from agent.rules.engine import RuleEngine
from agent.rules.errors import RuleProblem, RulesConfigError
from agent.rules.model import RulesSpec

_IMAGE = ("allowed", "conditioning", "strength")

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")
"""The shipped rules for the embedded sprite model (commented: read it as the format's documentation)."""


def load_rules(
    path: str | os.PathLike[str] = DEFAULT_RULES,
    *,
    features: Iterable[str] | None = None,
    conditioning: Mapping[str, Sequence[str]] | None = None,
) -> RuleEngine:
    """Read, parse and validate a rules file.

    Args:
        path: The TOML file (default: the shipped ``default_rules.toml``).
        features: Reading names the configured oracles provide (``Oracle.provides`` of each); when given,
            every feature the file declares must be one of them.
        conditioning: The image model's allowed values per conditioning key (:func:`load_conditioning` of its
            ``conditioning.json``); when given it overrides and must match ``[image.allowed]``.

    Raises:
        NotFoundError: the file does not exist.
        RulesConfigError: the file is not valid TOML or its rules are invalid (every problem listed).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(
            f"rules file {path} does not exist",
            hint=f"point the agent at an existing rules file, or copy {DEFAULT_RULES} and edit it",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        problem = RuleProblem("(file)", f"cannot be read: {exc}", "make it readable and save it as UTF-8")
        raise RulesConfigError(str(path), [problem]) from exc
    return parse_rules(text, source=str(path), features=features, conditioning=conditioning)


def parse_rules(
    text: str,
    *,
    source: str = "<string>",
    features: Iterable[str] | None = None,
    conditioning: Mapping[str, Sequence[str]] | None = None,
) -> RuleEngine:
    """Like :func:`load_rules`, from TOML text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesConfigError(
            source, [RuleProblem("(file)", f"is not valid TOML: {exc}", "fix the TOML syntax at that line")]
        ) from None
    try:
        spec = RulesSpec.model_validate(data)
    except ValidationError as exc:
        raise RulesConfigError(source, [_problem(err) for err in exc.errors()]) from None
    return RuleEngine(spec, source=source, features=features, conditioning=conditioning)


def load_conditioning(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """An image model's allowed conditioning values, from its ``conditioning.json`` (``{"traits": ...}``).

    Raises:
        NotFoundError: the file does not exist.
        RulesConfigError: it has no ``traits`` object of string lists.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(
            f"conditioning file {path} does not exist", hint="pass the model's conditioning.json"
        )
    try:
        traits = json.loads(path.read_text(encoding="utf-8"))["traits"]
        ok = isinstance(traits, dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in traits.values()
        )
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise RulesConfigError(
            str(path),
            [
                RuleProblem(
                    "traits", "is not an object of string lists", 'write {"traits": {"mood": ["serene"]}}'
                )
            ],
        )
    return {str(k): list(v) for k, v in traits.items()}


def _problem(err: Mapping[str, Any]) -> RuleProblem:
    """One pydantic error as a :class:`RuleProblem` that names the TOML table and the fix."""
    loc = [str(part) for part in err["loc"]]
    kind = err["type"]
    # Discriminated unions put the tag in the path: traits.mood.bands.bands.0.min -> traits.mood / bands.0.min
    if len(loc) >= 3 and loc[0] in ("traits", "facts") and loc[2] in ("bands", "map", "constant"):
        del loc[2]
    if len(loc) >= 2 and (
        loc[0] in ("traits", "facts", "features") or loc[0] == "image" and loc[1] in _IMAGE
    ):
        table, rest = loc[:2], loc[2:]
    elif loc[:1] == ["image"]:
        table, rest = loc[:1], loc[1:]
    else:
        table, rest = [], loc
    rule = "[" + ".".join(f'"{p}"' if "." in p else p for p in table) + "]" if table else "(top level)"
    if len(rest) >= 2 and rest[0] == "bands" and rest[1].isdigit():  # 1-based, as the semantic checks count
        band = f"band {int(rest[1]) + 1}"
        subject = f"`{'.'.join(rest[2:])}` of {band}" if rest[2:] else band
    else:
        subject = f"`{'.'.join(rest)}`" if rest else "the table"
    fixes = {
        "missing": f"add {subject}",
        "extra_forbidden": f"remove {subject} or fix its spelling",
        "union_tag_invalid": 'set kind to "bands", "map" or "constant"',
        "union_tag_not_found": 'add kind = "bands", "map" or "constant"',
        "literal_error": f"set {subject} to {err.get('ctx', {}).get('expected', 'an allowed value')}",
        "too_short": f"give {subject} at least one entry",
    }
    fix = fixes.get(kind, f"set {subject} to a valid value")
    problem = f"{subject}: {err['msg']}" if kind != "missing" else f"{subject} is missing"
    return RuleProblem(rule, problem, fix)
