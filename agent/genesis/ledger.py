"""The genesis state directory's ledger: what a run is, and which batches of it are finished.

``<out>/genesis.db`` is a SQLite file (WAL). ``run`` holds the parameters the run was started with (size, seed,
table hash, assignment hash, batch size, models, torch threads); a later run in the same directory must match them,
so a resumed run can only ever finish the collection it started. ``items`` holds one row per item; a batch's rows
are marked done in one transaction after its files (``images/<item>.png``, ``receipts/<item>.json``) are written
and synced, so a kill at any moment leaves either a whole finished batch or none.

``gates`` holds, for every item the quality gates have judged (:func:`agent.genesis.report.gate_genesis`, in item
order), which public reroll of the genesis seed its files are (0: the first try) and its gate report; a rerolled
item's new outputs and its row are written in one transaction. Items without a row are first tries. Reopening a
batch deletes its items' rows (its files are made again on the first try, and gated again).

Batches are fixed slices of the item order (``[k * batch_size, (k + 1) * batch_size)``): a resumed run
regenerates exactly the batches an uninterrupted run would have made, with the same batch composition, so the
outputs (and the collection's provenance hash) are bit-identical.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from agent.errors import ConfigError, NotFoundError

LEDGER_NAME = "genesis.db"
LOCK_NAME = "genesis.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    traits TEXT NOT NULL,
    seed TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    image_cid TEXT,
    png_sha256 TEXT,
    receipt_sha256 TEXT,
    lore_sha256 TEXT,
    record_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS items_batch ON items (batch, done);
CREATE TABLE IF NOT EXISTS gates (
    item INTEGER PRIMARY KEY,
    reroll INTEGER NOT NULL,
    report TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ItemOutput:
    """What generating one item produced (the ledger row of a finished item)."""

    item: int
    image_cid: str
    png_sha256: str
    receipt_sha256: str
    lore_sha256: str
    record_sha256: str


class Ledger:
    """Open with :meth:`open`; one writer at a time (the genesis run)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: int | None = None) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock

    @classmethod
    def open(
        cls,
        out_dir: Path,
        params: Mapping[str, Any],
        items: Sequence[tuple[Mapping[str, str], int]],
        *,
        batch_size: int,
    ) -> Ledger:
        """Open (or create) the ledger of ``out_dir`` for a run with ``params``.

        Args:
            out_dir: The genesis output directory.
            params: JSON-able parameters that identify the run; an existing ledger must hold the same.
            items: (traits, seed) of every item, in item order (written once, when the ledger is created).
            batch_size: Items per batch.

        Raises:
            ConfigError: the directory holds a different run (names the first differing parameter).
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock(out_dir)
        path = out_dir / LEDGER_NAME
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        ledger = cls(path, conn, lock)
        stored = ledger.params()
        if stored:
            for key in params:  # in the caller's order: the most telling difference is named first
                if stored.get(key) != params[key]:
                    ledger.close()
                    how = _RESUME_HINTS.get(key, "rerun with the same options to resume it")
                    raise ConfigError(
                        f"{out_dir} holds a genesis run with {key} = {stored.get(key)!r}, not {params.get(key)!r}",
                        hint=f"{how}, or pass another --out for a new genesis",
                    )
            return ledger
        with ledger._tx():
            conn.executemany(
                "INSERT INTO run (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in params.items()]
            )
            conn.executemany(
                "INSERT INTO items (item, batch, traits, seed) VALUES (?, ?, ?, ?)",
                [
                    (i, i // batch_size, json.dumps(dict(traits), sort_keys=True), str(seed))
                    for i, (traits, seed) in enumerate(items)
                ],
            )
        return ledger

    @classmethod
    def read(cls, out_dir: Path) -> Ledger:
        """Open an existing ledger (to publish or report); NotFoundError when there is none."""
        path = out_dir / LEDGER_NAME
        if not path.is_file():
            raise NotFoundError(
                f"no genesis in {out_dir} (missing {LEDGER_NAME})",
                hint="run `chrysalis genesis --size N --out DIR` first",
            )
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --

    def params(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._conn.execute("SELECT key, value FROM run")}

    def size(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def done_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM items WHERE done = 1").fetchone()[0])

    def pending_batches(self) -> list[int]:
        rows = self._conn.execute("SELECT DISTINCT batch FROM items WHERE done = 0 ORDER BY batch")
        return [int(r[0]) for r in rows]

    def batch_items(self, batch: int) -> list[tuple[int, dict[str, str], int]]:
        rows = self._conn.execute(
            "SELECT item, traits, seed FROM items WHERE batch = ? ORDER BY item", (batch,)
        )
        return [(int(i), json.loads(t), int(s)) for i, t, s in rows]

    def outputs(self) -> Iterator[ItemOutput]:
        """Every finished item's outputs, in item order."""
        rows = self._conn.execute(
            "SELECT item, image_cid, png_sha256, receipt_sha256, lore_sha256, record_sha256 FROM items "
            "WHERE done = 1 ORDER BY item"
        )
        for row in rows:
            yield ItemOutput(int(row[0]), *row[1:])

    def gated(self) -> dict[int, tuple[int, dict[str, Any]]]:
        """Item -> (the reroll its files are, its gate report) for every item the gates have judged."""
        if not self._has_gates():
            return {}
        rows = self._conn.execute("SELECT item, reroll, report FROM gates ORDER BY item")
        return {int(i): (int(n), json.loads(r)) for i, n, r in rows}

    def rerolls(self) -> dict[int, int]:
        """Item -> reroll for every item whose files are a reroll (above 0) of the genesis seed."""
        if not self._has_gates():
            return {}
        rows = self._conn.execute("SELECT item, reroll FROM gates WHERE reroll > 0 ORDER BY item")
        return {int(i): int(n) for i, n in rows}

    def _has_gates(self) -> bool:
        """Whether the ledger has the ``gates`` table (one read with :meth:`read` may predate it)."""
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gates'"
        return self._conn.execute(query).fetchone() is not None

    def item_traits(self) -> list[dict[str, str]]:
        return [json.loads(t) for (t,) in self._conn.execute("SELECT traits FROM items ORDER BY item")]

    # -- writing --

    def finish_batch(self, outputs: Sequence[ItemOutput]) -> None:
        """Mark a batch's items done with their outputs, atomically."""
        with self._tx():
            self._update_outputs(outputs)

    def _update_outputs(self, outputs: Sequence[ItemOutput]) -> None:
        self._conn.executemany(
            "UPDATE items SET done = 1, image_cid = ?, png_sha256 = ?, receipt_sha256 = ?, lore_sha256 = ?, "
            "record_sha256 = ? WHERE item = ?",
            [
                (o.image_cid, o.png_sha256, o.receipt_sha256, o.lore_sha256, o.record_sha256, o.item)
                for o in outputs
            ],
        )

    def record_gate(
        self, item: int, reroll: int, report: Mapping[str, Any], output: ItemOutput | None = None
    ) -> None:
        """Record the gates' verdict on ``item`` (its files are reroll ``reroll``), and with ``output`` the outputs
        of that reroll, atomically."""
        with self._tx():
            if output is not None:
                self._update_outputs([output])
            self._conn.execute(
                "INSERT INTO gates (item, reroll, report) VALUES (?, ?, ?) ON CONFLICT (item) DO UPDATE SET "
                "reroll = excluded.reroll, report = excluded.report",
                (item, reroll, json.dumps(dict(report), sort_keys=True)),
            )

    def reopen_batches(self, batches: Sequence[int]) -> None:
        """Mark batches not done (their files are missing or damaged) so they are generated again (first tries:
        their items' gate rows go too)."""
        with self._tx():
            self._conn.executemany("UPDATE items SET done = 0 WHERE batch = ?", [(b,) for b in batches])
            self._conn.executemany(
                "DELETE FROM gates WHERE item IN (SELECT item FROM items WHERE batch = ?)",
                [(b,) for b in batches],
            )

    def set_param(self, key: str, value: Any) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT INTO run (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)


_RESUME_HINTS = {
    "torch_threads": "set models.threads (CHRYSALIS_MODELS__THREADS) to the run's thread count: outputs depend on it",
    "models": "use the run's model settings ([models], CHRYSALIS_MODELS__*)",
}


def _lock(out_dir: Path) -> int:
    """An exclusive lock on ``out_dir`` for the run (released when the process ends, even by SIGKILL)."""
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another genesis is running in {out_dir}",
            hint="wait for it to finish (or stop it); a second run in the same directory would race it",
        ) from None
    return fd


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
