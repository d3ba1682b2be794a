"""Deterministic assignment of traits to the items of a genesis, with exact counts and optional uniqueness.

Everything is derived from the operator's seed string ``S`` by rules a third party can re-implement:

- ``genesis_seed = sha256("chrysalis.genesis.seed.v1" || utf8(S))`` (32 bytes). It is the "on-chain seed" of
  every genesis item: item ``i`` is generated with ``derive_seed(genesis_seed, i)``. An item the quality gates
  rerolled (:mod:`agent.genesis.report`) is generated with ``derive_seed(reroll_seed(genesis_seed, n), i)``, the
  ``n``-th public reroll (:func:`agent.gates.reroll_seed`; its receipt's ``seed.onchain_seed``), and its record
  says ``n`` (:func:`item_seed`, :func:`check_item_seed`).
- A random stream per purpose (:class:`Stream`): 64-bit words, big-endian, taken four at a time from
  ``sha256(genesis_seed || utf8(label) || 0x00 || counter as 8 bytes big-endian)``, counter 0, 1, 2, ...;
  ``below(n)`` rejects words ``>= 2**64 - (2**64 mod n)`` and returns ``word mod n`` (no modulo bias).
- Each trait's column (its values repeated by their exact counts, in table order) is shuffled with Fisher-Yates
  from the last position down (``j = below(i + 1)``, swap ``i`` and ``j``) using the stream labelled
  ``"trait:<name>"``. Columns are independent, so every trait's counts are exactly the table's.
- Uniqueness (when the table lists ``unique`` traits) repairs duplicate combinations by swapping one trait's
  values between two items, which keeps every count exact; the choices come from the stream ``"unique"``. When the
  size equals the number of combinations, the full product is dealt out instead (shuffled with ``"unique"``).

The assignment hash is :func:`agent.genesis.provenance.provenance_hash` over the records ``{"item", "traits",
"seed"}`` of every item: the same table, size and seed always give the same hash.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from agent.errors import ConfigError, IntegrityError
from agent.gates.reroll import MAX_REROLLS, find_reroll, reroll_seed
from agent.generate.seed import derive_seed, onchain_seed_bytes
from agent.genesis.provenance import provenance_hash, record_sha256
from agent.genesis.traits import TraitTable, check_size

SEED_DOMAIN = b"chrysalis.genesis.seed.v1"

_TWO64 = 1 << 64


class UniquenessError(ConfigError):
    """Unique trait combinations cannot be dealt to the collection.

    Attributes:
        size: The collection size. combinations: How many distinct combinations the unique traits allow.
        traits: The unique traits.
    """

    def __init__(
        self, message: str, *, size: int, combinations: int, traits: Sequence[str], hint: str
    ) -> None:
        self.size = size
        self.combinations = combinations
        self.traits = tuple(traits)
        super().__init__(message, hint=hint)


def genesis_seed(seed: str) -> bytes:
    """The 32-byte genesis seed of an operator seed string."""
    if not isinstance(seed, str) or not seed:
        raise ConfigError(
            f"seed {seed!r} is empty", hint="pass --seed with any non-empty text, e.g. a launch name"
        )
    return hashlib.sha256(SEED_DOMAIN + seed.encode("utf-8")).digest()


def item_onchain_seed(genesis_seed: bytes, reroll: int = 0) -> bytes:
    """The on-chain seed a genesis item's receipt records: the genesis seed, or its ``reroll``-th public reroll
    (:func:`agent.gates.reroll_seed`).

    Raises:
        RerollError: ``reroll`` is outside ``0..MAX_REROLLS``.
    """
    return onchain_seed_bytes(reroll_seed(genesis_seed, reroll))


def item_seed(genesis_seed: bytes, item: int, reroll: int = 0) -> int:
    """The 64-bit generation seed of ``item`` at ``reroll``: ``derive_seed(item_onchain_seed(genesis_seed, reroll),
    item)`` (reroll 0: ``derive_seed(genesis_seed, item)``)."""
    return derive_seed(item_onchain_seed(genesis_seed, reroll), item)


def check_item_seed(
    genesis_seed: bytes,
    item: int,
    reroll: int,
    receipt: Mapping[str, Any],
    record_seed: int | str | None = None,
) -> None:
    """Check that a genesis item's receipt (``InferenceReceipt.to_json()``) was made with the seed its record
    says: the receipt's on-chain seed is reroll ``reroll`` of the genesis seed, its token id is ``item``, its derived
    seed is :func:`item_seed` (and equals ``record_seed``, the committed record's ``seed``, when given).

    Raises:
        IntegrityError: any of them differs (the message names the reroll the receipt's seed actually is, if any).
    """
    if not 0 <= reroll <= MAX_REROLLS:
        raise IntegrityError(
            f"genesis item {item} records reroll {reroll}, outside 0..{MAX_REROLLS}",
            hint="the ledger or record was edited; rerun `chrysalis genesis` with the same options",
        )
    seed = receipt.get("seed") or {}
    want_onchain = "0x" + item_onchain_seed(genesis_seed, reroll).hex()
    want = item_seed(genesis_seed, item, reroll)
    got_onchain = str(seed.get("onchain_seed") or "").lower()
    problems = []
    if got_onchain != want_onchain:
        found = find_reroll(genesis_seed, got_onchain) if got_onchain else None
        what = "not a reroll of the genesis seed" if found is None else f"reroll {found} of the genesis seed"
        problems.append(
            f"its receipt's on-chain seed {got_onchain or '(none)'} is {what}, not reroll {reroll}"
        )
    if seed.get("token_id") != item:
        problems.append(f"its receipt is for item {seed.get('token_id')}")
    if seed.get("derived_seed") != want:
        problems.append(f"its receipt's derived seed {seed.get('derived_seed')} is not {want}")
    if record_seed is not None and str(record_seed) != str(want):
        problems.append(f"its record's seed {record_seed} is not {want}")
    if problems:
        raise IntegrityError(
            f"genesis item {item} (reroll {reroll}): " + "; ".join(problems),
            hint="the receipt was changed after generation; rerun `chrysalis genesis` with the same options to redo "
            "it",
        )


class Stream:
    """A deterministic stream of uniform integers keyed by the genesis seed and a label (see the module docstring)."""

    def __init__(self, key: bytes, label: str) -> None:
        self._prefix = key + label.encode("utf-8") + b"\x00"
        self._counter = 0
        self._words: list[int] = []

    def word(self) -> int:
        if not self._words:
            digest = hashlib.sha256(self._prefix + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            self._words = [int.from_bytes(digest[k : k + 8], "big") for k in (24, 16, 8, 0)]
        return self._words.pop()

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        limit = _TWO64 - (_TWO64 % n)
        while True:
            w = self.word()
            if w < limit:
                return w % n

    def shuffle(self, items: list[Any]) -> None:
        """Fisher-Yates in place, from the last position down."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


@dataclass(frozen=True)
class Assignment:
    """Which traits each item of the genesis has, in item order.

    Attributes:
        table: The trait table. size: How many items. seed: The operator's seed string.
        items: Traits of item 0, 1, ... (trait -> value, in table order).
    """

    table: TraitTable
    size: int
    seed: str
    items: tuple[Mapping[str, str], ...]

    @cached_property
    def genesis_seed(self) -> bytes:
        return genesis_seed(self.seed)

    def item_seed(self, item: int) -> int:
        """The 64-bit generation seed of ``item``: ``derive_seed(genesis_seed, item)`` (before any reroll)."""
        return item_seed(self.genesis_seed, item)

    def record(self, item: int) -> dict[str, Any]:
        return {
            "item": item,
            "traits": dict(sorted(self.items[item].items())),
            "seed": str(self.item_seed(item)),
        }

    @cached_property
    def sha256(self) -> str:
        """The assignment hash (provenance hash over the assignment records)."""
        return provenance_hash(record_sha256(self.record(i)) for i in range(self.size))

    def value_counts(self) -> dict[str, dict[str, int]]:
        """Trait -> value -> how many items have it (every table value listed, zeros included)."""
        counts = {t.name: {v: 0 for v in t.values} for t in self.table.traits}
        for traits in self.items:
            for name, value in traits.items():
                counts[name][value] += 1
        return counts


def assign(table: TraitTable, size: int, seed: str) -> Assignment:
    """Deal the table's exact counts to ``size`` items, deterministically from ``seed``.

    Raises:
        ConfigError: a trait's counts do not fit ``size`` (see :meth:`TraitTable.counts`).
        UniquenessError: the unique traits have fewer combinations than ``size``, a value's count exceeds the
            combinations it can be part of, or no unique arrangement was found.
    """
    check_size(size)
    key = genesis_seed(seed)
    counts = table.counts(size)
    columns: dict[str, list[str]] = {}
    for spec in table.traits:
        column = [value for value in spec.values for _ in range(counts[spec.name][value])]
        Stream(key, f"trait:{spec.name}").shuffle(column)
        columns[spec.name] = column
    if table.unique:
        _make_unique(columns, table.unique, counts, size, Stream(key, "unique"))
    names = [spec.name for spec in table.traits]
    items = tuple({name: columns[name][i] for name in names} for i in range(size))
    return Assignment(table=table, size=size, seed=seed, items=items)


# -- uniqueness -----------------------------------------------------------------------------------------------


def _make_unique(
    columns: dict[str, list[str]],
    unique: Sequence[str],
    counts: Mapping[str, Mapping[str, int]],
    size: int,
    stream: Stream,
) -> None:
    present = {t: [v for v, c in counts[t].items() if c > 0] for t in unique}
    combos = math.prod(len(present[t]) for t in unique)
    traits_text = " x ".join(f"{t} ({len(present[t])})" for t in unique)
    if size > combos:
        raise UniquenessError(
            f"--size {size} exceeds the {combos} unique combinations of {traits_text}",
            size=size,
            combinations=combos,
            traits=unique,
            hint=f"lower --size to at most {combos}, add values to these traits, or add a trait to `unique`",
        )
    for t in unique:
        room = combos // len(present[t])  # combinations that contain one given value of t
        for value, c in counts[t].items():
            if c > room:
                raise UniquenessError(
                    f"{t} = {value!r} has {c} tokens, but only {room} unique combinations of {traits_text} "
                    f"contain it (--size {size}, {combos} combinations in all)",
                    size=size,
                    combinations=combos,
                    traits=unique,
                    hint=f"lower the weight of {value!r}, add values to the other unique traits, or lower --size",
                )
    if size == combos:
        _deal_full_product(columns, unique, present, stream)
        return
    _repair(columns, unique, size, stream, combos, traits_text)


def _deal_full_product(
    columns: dict[str, list[str]], unique: Sequence[str], present: Mapping[str, list[str]], stream: Stream
) -> None:
    """size == combinations: every combination exactly once (the per-value check made every count equal)."""
    product = list(itertools.product(*(present[t] for t in unique)))
    stream.shuffle(product)
    for k, t in enumerate(unique):
        columns[t] = [combo[k] for combo in product]


def _repair(
    columns: dict[str, list[str]],
    unique: Sequence[str],
    size: int,
    stream: Stream,
    combos: int,
    traits_text: str,
) -> None:
    """Swap single trait values between items until no two items share a combination (counts stay exact)."""
    cols = [columns[t] for t in unique]
    k = len(cols)
    keys = [tuple(col[i] for col in cols) for i in range(size)]
    where: dict[tuple[str, ...], set[int]] = {}
    for i, key in enumerate(keys):
        where.setdefault(key, set()).add(i)
    queue = deque(i for i in range(size) if len(where[keys[i]]) > 1 and min(where[keys[i]]) != i)
    scan = min(size, 4096)
    budget = 50 * size + 10_000  # random moves allowed before giving up

    def occupied(key: tuple[str, ...]) -> bool:
        return bool(where.get(key))

    def swap(i: int, j: int, p: int) -> None:
        for item in (i, j):
            where[keys[item]].discard(item)
        cols[p][i], cols[p][j] = cols[p][j], cols[p][i]
        for item in (i, j):
            keys[item] = tuple(col[item] for col in cols)
            where.setdefault(keys[item], set()).add(item)

    def moved(key: tuple[str, ...], p: int, value: str) -> tuple[str, ...]:
        return key[:p] + (value,) + key[p + 1 :]

    while queue:
        i = queue.popleft()
        if len(where[keys[i]]) < 2:
            continue
        if _clean_swap(i, keys, cols, k, size, scan, stream, occupied, moved, swap):
            continue
        # No swap frees both items: move i to a free combination and let j (if it now collides) queue up.
        budget -= 1
        if budget < 0:
            raise UniquenessError(
                f"could not make {size} tokens unique over {traits_text} ({combos} combinations) with these "
                "exact counts: the counts leave too few combinations free",
                size=size,
                combinations=combos,
                traits=unique,
                hint="lower --size, flatten the weights of the unique traits, or add values or traits to `unique`",
            )
        p = j = -1
        for _ in range(64):
            p, j = stream.below(k), stream.below(size)
            if cols[p][j] != cols[p][i] and not occupied(moved(keys[i], p, cols[p][j])):
                break
        if p < 0 or cols[p][j] == cols[p][i]:
            queue.append(i)
            continue
        swap(i, j, p)
        for item in (i, j):
            if len(where[keys[item]]) > 1:
                queue.append(item)


def _clean_swap(i, keys, cols, k, size, scan, stream, occupied, moved, swap) -> bool:
    """Find j and a trait such that swapping their values leaves both items on free combinations."""
    first = stream.below(k)
    start = stream.below(size)
    for dp in range(k):
        p = (first + dp) % k
        mine = cols[p][i]
        for step in range(scan):
            j = (start + step) % size
            theirs = cols[p][j]
            if theirs == mine:
                continue
            new_i = moved(keys[i], p, theirs)
            new_j = moved(keys[j], p, mine)
            if new_i != new_j and not occupied(new_i) and not occupied(new_j):
                swap(i, j, p)
                return True
    return False
