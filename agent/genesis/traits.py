"""The trait table: which values each trait takes at genesis, and how many tokens get each one.

A table is TOML (see ``example_traits.toml`` beside this file)::

    version = 1
    name = "Chrysalis"                 # token names are "<name> #<token id>"; lore calls the creature this
    unique = ["mood", "element", "background"]   # optional: no two tokens share these traits' values

    [image]
    conditioning = "shipped"           # the embedded sprite model's conditioning.json (default),
                                       # a path to another model's conditioning.json, or "prompt"

    [lore]
    facts = { origin = "newly hatched" } # qualitative facts for the genesis lore (words, no digits)

    [traits.mood]
    weights = { serene = 40, radiant = 30, fierce = 20, gloomy = 10 }   # proportions ...

    [traits.element]
    counts = { fire = 25, water = 25, earth = 25, air = 25 }            # ... or exact counts (sum = size)

    [traits.background]
    image = false                      # metadata only: the image model is not conditioned on it
    weights = { dawn = 3, dusk = 2, void = 1 }

Counts are exact (:func:`exact_counts`): weights become counts by largest-remainder rounding to the size, and a
value with a positive weight never gets fewer than one token (a value whose weight is 0 gets none).

Every problem is reported as a :class:`~agent.errors.ConfigError` naming the TOML key and the fix: unknown keys,
a trait the image model is not conditioned on (unless it says ``image = false``), a value the model does not know,
a conditioning trait missing from the table, negative or non-finite weights, empty values, counts that do not add
up to the size.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from agent.domain import canonical_json, sha256_hex
from agent.errors import ConfigError, NotFoundError

EXAMPLE_TABLE = Path(__file__).with_name("example_traits.toml")
"""The trait table shipped with Chrysalis (the default of ``chrysalis genesis --traits``)."""

SHIPPED_CONDITIONING = Path(__file__).parents[1] / "generate" / "shipped" / "sprites32" / "conditioning.json"
"""The embedded sprite model's conditioning (``mood`` x ``element``)."""

RESERVED_TRAITS = frozenset({"stage"})
"""Trait names metadata uses for itself (``stage`` is a number attribute)."""

_TOP_KEYS = {"version", "name", "description", "unique", "image", "lore", "traits"}
_TRAIT_KEYS = {"weights", "counts", "image", "description"}


@dataclass(frozen=True)
class TraitSpec:
    """One trait: its values in table order, with either weights or exact counts.

    Attributes:
        name: The trait's name (the metadata ``trait_type``).
        values: Its values, in table order (the order ties are broken in).
        weights: Relative weights (exact fractions), or None when the table gives counts.
        counts: Exact counts, or None when the table gives weights.
        image: Whether the image model is conditioned on it.
    """

    name: str
    values: tuple[str, ...]
    weights: tuple[Fraction, ...] | None
    counts: tuple[int, ...] | None
    image: bool

    def counts_for(self, size: int) -> dict[str, int]:
        """Value -> exact number of tokens for a collection of ``size``.

        Raises:
            ConfigError: the table's counts do not add up to ``size``, or there are more positive-weight values
                than tokens.
        """
        if self.counts is not None:
            total = sum(self.counts)
            if total != size:
                raise ConfigError(
                    f"trait {self.name!r}: its counts add up to {total}, but the collection has {size} tokens",
                    hint=f"make [traits.{self.name}].counts add up to {size}, run with --size {total}, or give "
                    "weights instead of counts",
                )
            return dict(zip(self.values, self.counts, strict=False))
        assert self.weights is not None
        try:
            return dict(zip(self.values, exact_counts(self.weights, size), strict=False))
        except ConfigError as exc:
            raise ConfigError(f"trait {self.name!r}: {exc.message}", hint=exc.hint) from None

    def target_share(self, value: str) -> Fraction:
        """The value's target share of the collection (its weight, or count, over the total)."""
        parts = self.weights if self.weights is not None else tuple(Fraction(c) for c in self.counts or ())
        return parts[self.values.index(value)] / sum(parts)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "values": list(self.values), "image": self.image}
        if self.weights is not None:
            out["weights"] = [f"{w.numerator}/{w.denominator}" for w in self.weights]
        else:
            out["counts"] = list(self.counts or ())
        return out


@dataclass(frozen=True)
class TraitTable:
    """A validated trait table.

    Attributes:
        name: Collection name (token names, lore).
        description: Free text.
        traits: The traits, in table order.
        unique: Traits whose value combination must differ between every two tokens (empty: no uniqueness).
        conditioning: The image model's conditioning: trait -> allowed values; None for ``"prompt"`` models.
        lore_facts: Qualitative facts given to the lore model for every genesis token.
        source: Where the table came from (a path, or ``<string>``).
    """

    name: str
    description: str
    traits: tuple[TraitSpec, ...]
    unique: tuple[str, ...]
    conditioning: Mapping[str, tuple[str, ...]] | None
    lore_facts: Mapping[str, str] = field(default_factory=dict)
    source: str = "<string>"

    def trait(self, name: str) -> TraitSpec:
        for spec in self.traits:
            if spec.name == name:
                return spec
        raise NotFoundError(
            f"trait {name!r} is not in the table {self.source}",
            hint=f"the table has {', '.join(t.name for t in self.traits)}",
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.traits)

    def counts(self, size: int) -> dict[str, dict[str, int]]:
        """Trait -> value -> exact count for ``size`` tokens."""
        check_size(size)
        return {spec.name: spec.counts_for(size) for spec in self.traits}

    def combinations(self, size: int, traits: Sequence[str] | None = None) -> int:
        """How many distinct combinations of ``traits`` (default: the unique ones) can occur at ``size``.

        Only values that get at least one token count.
        """
        names = self.unique if traits is None else tuple(traits)
        counts = self.counts(size)
        return math.prod(sum(1 for c in counts[n].values() if c > 0) for n in names)

    def to_json(self) -> dict[str, Any]:
        """The normalised table (what :attr:`sha256` is taken over)."""
        return {
            "schema": "chrysalis.genesis.traits/1",
            "name": self.name,
            "description": self.description,
            "traits": [t.to_json() for t in self.traits],
            "unique": list(self.unique),
            "conditioning": None
            if self.conditioning is None
            else {k: list(v) for k, v in sorted(self.conditioning.items())},
            "lore_facts": dict(sorted(self.lore_facts.items())),
        }

    @property
    def sha256(self) -> str:
        """Hex sha256 of the normalised table: binds an assignment to the exact table it came from."""
        return sha256_hex(canonical_json(self.to_json()))


# -- exact counts ---------------------------------------------------------------------------------------------


def check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(
            f"collection size {size!r} is not a positive whole number", hint="pass --size N, N >= 1"
        )
    return size


def exact_counts(weights: Sequence[Fraction | int | float], size: int) -> list[int]:
    """Largest-remainder (Hamilton) rounding of ``weights`` to whole counts that add up to ``size``.

    Each value's quota is ``size * weight / total``. Every value first gets the floor of its quota; the tokens
    left over go one each to the largest fractional remainders (ties: the earlier value in table order). Then every
    value with a positive weight that got 0 is raised to 1, each time taking a token from the value that is most
    above its quota (among those with at least 2). A value with weight 0 always gets 0.

    Raises:
        ConfigError: no positive weight, a negative or non-finite weight, or more positive-weight values than
            ``size`` (each needs at least one token).
    """
    check_size(size)
    exact = [_fraction(w, f"weight #{i + 1}") for i, w in enumerate(weights)]
    total = sum(exact, Fraction(0))
    if total <= 0:
        raise ConfigError("every weight is 0", hint="give at least one value a positive weight")
    positive = [i for i, w in enumerate(exact) if w > 0]
    if len(positive) > size:
        raise ConfigError(
            f"{len(positive)} values have a positive weight but the collection has only {size} tokens, "
            "and each of them needs at least one",
            hint=f"raise --size to at least {len(positive)}, or set the weights of rarer values to 0",
        )
    quotas = [w * size / total for w in exact]
    counts = [math.floor(q) for q in quotas]
    left = size - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    for i in positive:
        if counts[i] == 0:
            donor = max(
                (j for j in range(len(counts)) if counts[j] >= 2),
                key=lambda j: (counts[j] - quotas[j], -j),
            )
            counts[donor] -= 1
            counts[i] = 1
    return counts


def _fraction(value: Any, where: str) -> Fraction:
    problem = _weight_problem(value)
    if problem is not None:
        raise ConfigError(f"{where} {problem}", hint=_WEIGHT_HINT)
    # floats go through their shortest repr, so 0.1 is exactly 1/10 (what the table says), not the binary double
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


_WEIGHT_HINT = "weights are finite numbers >= 0 (e.g. 12 or 0.5); use 0 to leave a value out"


def _weight_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        return f"is {value!r}, not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value!r}, not a finite number"
    if value < 0:
        return f"is negative ({value!r})"
    return None


# -- loading --------------------------------------------------------------------------------------------------


def load_table(path: str | Path | None = None) -> TraitTable:
    """Read and validate a trait table (the shipped example when ``path`` is None).

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: it is not TOML, or anything in it is wrong (the message names the key and the fix).
    """
    path = Path(path) if path is not None else EXAMPLE_TABLE
    if not path.is_file():
        raise NotFoundError(
            f"trait table {path} does not exist",
            hint=f"pass --traits FILE; {EXAMPLE_TABLE} is an example to copy",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"trait table {path} is not valid TOML: {exc}", hint="fix the syntax") from None
    return parse_table(data, source=str(path), base_dir=path.parent)


def parse_table(
    data: Mapping[str, Any], *, source: str = "<string>", base_dir: Path | None = None
) -> TraitTable:
    """Validate a parsed trait table (see the module docstring for its shape)."""

    def fail(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"trait table {source}: {key} {problem}", hint=fix)

    if not isinstance(data, Mapping):
        raise fail("(document)", "is not a table", "write a TOML document")
    _no_unknown(data, _TOP_KEYS, "", fail)
    version = data.get("version", 1)
    if version != 1:
        raise fail("version", f"is {version!r}", "this Chrysalis reads version = 1")
    name = data.get("name", "Chrysalis")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", f"is {name!r}", 'give the collection a name, e.g. name = "Chrysalis"')
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "is not text", "write description as a string")

    conditioning = _conditioning(data.get("image", {}), base_dir, fail)
    lore_facts = _lore_facts(data.get("lore", {}), fail)

    raw_traits = data.get("traits")
    if not isinstance(raw_traits, Mapping) or not raw_traits:
        raise fail(
            "[traits]", "is missing or empty", "add a [traits.<name>] table with weights or counts per value"
        )
    traits = tuple(_trait(str(tname), spec, conditioning, fail) for tname, spec in raw_traits.items())

    if conditioning is not None:
        missing = [key for key in conditioning if key not in raw_traits]
        if missing:
            raise fail(
                "[traits]",
                f"has no {', '.join(repr(m) for m in missing)}, which the image model is conditioned on",
                f"add [traits.{missing[0]}] with values from {', '.join(conditioning[missing[0]])}",
            )

    unique = data.get("unique", [])
    if not isinstance(unique, list) or not all(isinstance(u, str) for u in unique):
        raise fail("unique", f"is {unique!r}", 'list trait names, e.g. unique = ["mood", "element"]')
    names = [t.name for t in traits]
    for u in unique:
        if u not in names:
            raise fail(
                "unique", f"names {u!r}, which is not a trait of the table", f"use some of {', '.join(names)}"
            )
    if len(set(unique)) != len(unique):
        raise fail("unique", "names a trait twice", "list each trait once")
    return TraitTable(
        name=name.strip(),
        description=description,
        traits=traits,
        unique=tuple(unique),
        conditioning=conditioning,
        lore_facts=lore_facts,
        source=source,
    )


def _no_unknown(table: Mapping[str, Any], allowed: set[str], prefix: str, fail: Any) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise fail(
            prefix + unknown[0], "is not a key of a trait table", f"use only {', '.join(sorted(allowed))}"
        )


def _conditioning(image: Any, base_dir: Path | None, fail: Any) -> dict[str, tuple[str, ...]] | None:
    if not isinstance(image, Mapping):
        raise fail("[image]", "is not a table", 'write [image] conditioning = "shipped"')
    _no_unknown(image, {"conditioning"}, "image.", fail)
    choice = image.get("conditioning", "shipped")
    if choice == "prompt":
        return None
    if not isinstance(choice, str) or not choice:
        raise fail(
            "image.conditioning", f"is {choice!r}", 'use "shipped", "prompt" or a conditioning.json path'
        )
    path = SHIPPED_CONDITIONING if choice == "shipped" else Path(choice)
    if not path.is_absolute() and base_dir is not None and choice != "shipped":
        path = base_dir / path
    if not path.is_file():
        raise fail(
            "image.conditioning",
            f"points at {path}, which does not exist",
            'use "shipped" (the embedded sprite model), "prompt" (text-prompted models) or the path of the '
            "model's conditioning.json",
        )
    try:
        traits = json.loads(path.read_text(encoding="utf-8"))["traits"]
        ok = isinstance(traits, dict) and all(
            isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in traits.values()
        )
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise fail(
            "image.conditioning",
            f"file {path} has no traits object of string lists",
            'it must hold {"traits": {...}}',
        )
    return {str(k): tuple(v) for k, v in traits.items()}


def _lore_facts(lore: Any, fail: Any) -> dict[str, str]:
    if not isinstance(lore, Mapping):
        raise fail("[lore]", "is not a table", 'write [lore] facts = { origin = "newly hatched" }')
    _no_unknown(lore, {"facts"}, "lore.", fail)
    facts = lore.get("facts", {})
    if not isinstance(facts, Mapping):
        raise fail("lore.facts", "is not a table", 'write facts = { origin = "newly hatched" }')
    out: dict[str, str] = {}
    for key, text in facts.items():
        if not isinstance(text, str) or not text.strip():
            raise fail(f"lore.facts.{key}", f"is {text!r}", "facts are short phrases of words")
        if any(c.isdigit() for c in text):
            raise fail(
                f"lore.facts.{key}",
                f"contains a digit ({text!r})",
                "the lore model gets words, never numbers",
            )
        out[str(key)] = text.strip()
    return out


def _trait(name: str, spec: Any, conditioning: Mapping[str, tuple[str, ...]] | None, fail: Any) -> TraitSpec:
    where = f"[traits.{name}]"
    if not name.strip() or name != name.strip():
        raise fail(where, "has an empty name or one with spaces at its ends", "name traits with plain words")
    if name in RESERVED_TRAITS:
        raise fail(
            where, f"uses the reserved name {name!r}", "metadata records the stage itself; rename the trait"
        )
    if not isinstance(spec, Mapping):
        raise fail(where, "is not a table", f"write [traits.{name}] with weights = {{ value = 1, ... }}")
    _no_unknown(spec, _TRAIT_KEYS, f"traits.{name}.", fail)
    if ("weights" in spec) == ("counts" in spec):
        raise fail(
            where,
            "must have exactly one of weights or counts",
            "weights = { a = 3, b = 1 } for proportions, counts = { a = 75, b = 25 } for exact numbers",
        )
    key = "weights" if "weights" in spec else "counts"
    table = spec[key]
    if not isinstance(table, Mapping) or not table:
        raise fail(f"traits.{name}.{key}", "is empty", f"give every value of {name!r} a {key[:-1]}")
    values = tuple(str(v) for v in table)
    for value in values:
        if not value.strip() or value != value.strip():
            raise fail(
                f"traits.{name}.{key}",
                f"has the value {value!r}, which is empty or has spaces at its ends",
                "values are non-empty words; quote a value only to keep inner spaces",
            )

    image = spec.get("image")
    if image is not None and not isinstance(image, bool):
        raise fail(f"traits.{name}.image", f"is {image!r}", "write image = false for a metadata-only trait")
    if conditioning is None:
        image = True if image is None else image
    elif name in conditioning:
        if image is False:
            raise fail(
                f"traits.{name}.image",
                "is false, but the image model is conditioned on this trait",
                "remove image = false (the model needs a value for it)",
            )
        image = True
        allowed = conditioning[name]
        for value in values:
            if value not in allowed:
                raise fail(
                    f"traits.{name}.{key}.{value}",
                    f"is not a value the image model knows for {name!r}",
                    f"use values from {', '.join(allowed)}",
                )
    elif image is not False:
        raise fail(
            where,
            f"is not a trait the image model is conditioned on (it knows {', '.join(conditioning)})",
            f"fix the name, or add image = false under [traits.{name}] for a metadata-only trait",
        )

    if key == "weights":
        weights = []
        for value, w in table.items():
            problem = _weight_problem(w)
            if problem is not None:
                raise fail(f"traits.{name}.weights.{value}", problem, _WEIGHT_HINT)
            weights.append(_fraction(w, f"weight of {value!r}"))
        if not any(w > 0 for w in weights):
            raise fail(f"traits.{name}.weights", "are all 0", "give at least one value a positive weight")
        return TraitSpec(name, values, tuple(weights), None, bool(image))
    counts = []
    for value, c in table.items():
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise fail(f"traits.{name}.counts.{value}", f"is {c!r}", "counts are whole numbers >= 0")
        counts.append(c)
    if sum(counts) == 0:
        raise fail(f"traits.{name}.counts", "are all 0", "give at least one value a positive count")
    return TraitSpec(name, values, None, tuple(counts), bool(image))
