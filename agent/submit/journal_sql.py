"""The broadcast journal on the agent's database (table ``broadcasts`` of :mod:`agent.store.tables`); see
:mod:`agent.submit.journal`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from agent.domain import Submission
from agent.store.db import Database
from agent.store.tables import BROADCASTS
from agent.submit.journal import KINDS, BroadcastJournal, Recorded

log = logging.getLogger("chrysalis.jobs")

_t = BROADCASTS
_c = _t.c


def _keys(keys: Sequence[str]) -> str:
    return "," + ",".join(str(k) for k in keys) + "," if keys else ""


def _timestamp(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return 0.0
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


class SqlBroadcastJournal(BroadcastJournal):
    """:class:`~agent.submit.journal.BroadcastJournal` on the agent's database (SQLite or PostgreSQL).

    Args:
        db: The agent's database (migrated).
        clock: UTC now (default: the system's).
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    def record(self, submission: Submission, kind: str, keys: Sequence[str] = ()) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        sender = submission.sender.lower()
        with self.db.begin() as conn:
            joined = _keys(keys)
            if not joined:
                joined = (
                    conn.execute(
                        sa.select(_c["keys"])
                        .where(_c.sender == sender, _c.nonce == submission.nonce)
                        .order_by(_c.id)
                        .limit(1)
                    ).scalar_one_or_none()
                    or ""
                )
            insert = self.db.insert(_t)
            conn.execute(
                insert.values(
                    chain_id=submission.chain_id,
                    sender=sender,
                    nonce=submission.nonce,
                    tx_hash=submission.tx_hash.lower(),
                    kind=kind,
                    keys=joined,
                    submission=submission.to_json(),
                    created_at=self._clock(),
                ).on_conflict_do_nothing(index_elements=["tx_hash"])
            )

    def discard(self, tx_hash: str) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.delete(_t).where(_c.tx_hash == tx_hash.lower()))

    def _nonce(self, conn: Any, sender: str, nonce: int) -> Recorded | None:
        rows = list(
            conn.execute(
                sa.select(_t).where(_c.sender == sender.lower(), _c.nonce == nonce).order_by(_c.id)
            ).mappings()
        )
        if not rows:
            return None
        last = rows[-1]
        hashes = [str(r["tx_hash"]) for r in rows]
        sub = Submission.from_json(last["submission"])
        latest = sub.tx_hash.lower()
        earlier = tuple(h for h in dict.fromkeys(x.lower() for x in (*sub.replaced, *hashes)) if h != latest)
        keys = next((str(r["keys"]) for r in rows if r["keys"]), "")
        settled = [r for r in rows if r["outcome"] is not None]
        sent_at = sub.sent_at or _timestamp(last["created_at"])  # recorded just before it was sent
        return Recorded(
            submission=Submission.from_json({**sub.to_json(), "replaced": list(earlier), "sent_at": sent_at}),
            keys=tuple(k for k in keys.split(",") if k),
            replacements=sum(1 for r in rows if r["kind"] == "replace"),
            outcome=str(settled[-1]["outcome"]) if settled else None,
            mined_hash=settled[-1]["mined_hash"] if settled else None,
        )

    def latest(self, sender: str, nonce: int) -> Recorded | None:
        with self.db.connect() as conn:
            return self._nonce(conn, sender, nonce)

    def for_key(self, key: str) -> Recorded | None:
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(_c.sender, _c.nonce)
                .where(_c["keys"].like(f"%,{key},%"))
                .order_by(_c.id.desc())
                .limit(1)
            ).first()
            return self._nonce(conn, row.sender, int(row.nonce)) if row is not None else None

    def open(self, sender: str) -> list[Recorded]:
        with self.db.connect() as conn:
            nonces = conn.execute(
                sa.select(_c.nonce)
                .where(_c.sender == sender.lower(), _c.outcome.is_(None))
                .group_by(_c.nonce)
                .order_by(_c.nonce)
            ).scalars()
            found = [self._nonce(conn, sender, int(n)) for n in list(nonces)]
        return [r for r in found if r is not None and r.outcome is None]

    def highest_mined(self, sender: str) -> int | None:
        with self.db.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.max(_c.nonce)).where(_c.sender == sender.lower(), _c.outcome == "mined")
            ).scalar_one_or_none()
        return int(found) if found is not None else None

    def settle(self, sender: str, nonce: int, outcome: str, mined_hash: str | None = None) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.update(_t)
                .where(_c.sender == sender.lower(), _c.nonce == nonce, _c.outcome.is_(None))
                .values(outcome=outcome, mined_hash=mined_hash.lower() if mined_hash else None,
                        settled_at=self._clock())
            )  # fmt: skip
