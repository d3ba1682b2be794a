"""The near-duplicate index: 64-bit perceptual hashes, looked up by Hamming distance with multi-index hashing.

Multi-index hashing (Norouzi et al.): each hash is split into ``b`` bands of contiguous bits and each band value
indexes a dict. If two hashes differ in at most ``t`` bits and there are ``b > t`` bands, then by the pigeonhole
principle at least one band holds no differing bit, so an exact lookup of every band of the query finds every
hash within ``t``: the lookup is *complete* (no near duplicate is missed), and only candidates sharing a band are
compared bit by bit. :class:`HashIndex` uses ``b = max(4, t + 1)`` bands (4 x 16 bits for ``t <= 3``; more,
narrower bands for larger thresholds). Cost per lookup: ``b`` dict probes plus one popcount per candidate sharing
a band; for unrelated hashes a 16-bit band collides with probability ``n / 65536``, so 10,000 entries cost a
handful of comparisons (``bench/gates.py`` measures 1k/10k/100k).

Entries are keyed by ``(token_id, stage)``: adding the same key again replaces its hash (a rerolled or
regenerated stage). A token's own stages never count as its duplicates (an evolution is meant to resemble its
parent). :class:`SqlHashStore` persists the entries in the table ``gate_hashes`` (per collection) so a restarted
agent loads the index in one query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from agent.gates.phash import hamming
from agent.store import Database
from agent.store.tables import GateHashRow, table


@dataclass(frozen=True)
class Match:
    """A stored hash within the threshold of a query."""

    token_id: int
    stage: int
    image_cid: str
    distance: int


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, mask) of each band: ``max(4, threshold + 1)`` contiguous bands covering all 64 bits."""
    n = max(4, threshold + 1)
    if n > 64:
        raise ValueError(f"a threshold of {threshold} bits needs more than 64 bands")
    widths = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
    out, shift = [], 64
    for w in widths:
        shift -= w
        out.append((shift, (1 << w) - 1))
    return out


class HashIndex:
    """Perceptual hashes of published (and batch) images, searchable by Hamming distance.

    Args:
        threshold: The largest distance :meth:`near` reports (its bands are chosen so lookups are complete).
    """

    def __init__(self, threshold: int) -> None:
        if not 0 <= threshold < 64:
            raise ValueError(f"threshold {threshold} is outside 0..63")
        self.threshold = threshold
        self._bands = _bands(threshold)
        self._tables: list[dict[int, set[tuple[int, int]]]] = [defaultdict(set) for _ in self._bands]
        self._entries: dict[tuple[int, int], tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, token_id: int, stage: int, image_cid: str, value: int) -> None:
        """Index ``value`` for ``(token_id, stage)``, replacing what that key had."""
        key = (token_id, stage)
        self.remove(token_id, stage)
        self._entries[key] = (value, image_cid)
        for (shift, mask), tbl in zip(self._bands, self._tables, strict=True):
            tbl[(value >> shift) & mask].add(key)

    def remove(self, token_id: int, stage: int) -> None:
        key = (token_id, stage)
        old = self._entries.pop(key, None)
        if old is None:
            return
        for (shift, mask), tbl in zip(self._bands, self._tables, strict=True):
            band = (old[0] >> shift) & mask
            bucket = tbl.get(band)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del tbl[band]

    def near(
        self, value: int, *, exclude_token: int | None = None, threshold: int | None = None
    ) -> list[Match]:
        """Every entry within ``threshold`` (default the index's; at most it) bits of ``value``, nearest first,
        leaving out the stages of ``exclude_token``."""
        t = self.threshold if threshold is None else min(threshold, self.threshold)
        seen: set[tuple[int, int]] = set()
        found = []
        for (shift, mask), tbl in zip(self._bands, self._tables, strict=True):
            for key in tbl.get((value >> shift) & mask, ()):
                if key in seen or key[0] == exclude_token:
                    continue
                seen.add(key)
                stored, cid = self._entries[key]
                d = hamming(value, stored)
                if d <= t:
                    found.append(Match(key[0], key[1], cid, d))
        found.sort(key=lambda m: (m.distance, m.token_id, m.stage))
        return found


class SqlHashStore:
    """The ``gate_hashes`` table: one row per (collection, token, stage), the hash as 16 hex digits."""

    def __init__(self, db: Database, collection: str) -> None:
        self.db = db
        self.collection = collection.lower()
        self._t = table(GateHashRow)

    def load(self, index: HashIndex) -> HashIndex:
        """Add every stored hash of this collection to ``index`` and return it."""
        t = self._t
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(t.c.token_id, t.c.stage, t.c.image_cid, t.c.hash).where(
                    t.c.collection == self.collection
                )
            ).all()
        for token_id, stage, cid, value in rows:
            index.add(int(token_id), int(stage), str(cid), int(value, 16))
        return index

    def put(self, entries: Iterable[tuple[int, int, str, int]]) -> None:
        """Store ``(token_id, stage, image_cid, hash)`` rows, replacing the same token and stage."""
        t = self._t
        now = datetime.now(UTC)
        with self.db.begin() as conn:
            for token_id, stage, cid, value in entries:
                conn.execute(
                    t.delete().where(
                        (t.c.collection == self.collection)
                        & (t.c.token_id == token_id)
                        & (t.c.stage == stage)
                    )
                )
                conn.execute(
                    t.insert().values(
                        collection=self.collection,
                        token_id=token_id,
                        stage=stage,
                        image_cid=cid,
                        hash=f"{value:016x}",
                        created_at=now,
                    )  # fmt: skip
                )
