"""Several agents on one database: who works it (table ``agents``) and which agent holds each singleton role
(table ``agent_roles``), through leases with failover.

Jobs need no coordinator: every agent claims them with leases (:class:`~agent.store.jobs.SqlJobStore`). Some work
must run in exactly one agent at a time: watching the chain (the cursor and the event router), the cron scheduler of
refreshes, the price triggers. Each is a *role*, held by one agent until its lease lapses:

- :meth:`RoleLeases.hold` takes a free or lapsed role, or renews one this agent holds, in ONE guarded statement
  (``UPDATE ... WHERE holder = me OR lease_until < now``, else ``INSERT ... ON CONFLICT DO NOTHING``), so two
  agents can never both get it (SQLite runs it under ``BEGIN IMMEDIATE``, PostgreSQL locks the row);
- an agent renews its roles every few seconds while it runs, and gives them back when it stops;
- an agent that dies keeps its roles until the lease lapses (``agent.role_lease_s``); then the next agent to ask
  takes them over.

An agent also records itself (:meth:`RoleLeases.register`, :meth:`RoleLeases.beat`), so ``chrysalis status`` and
the studio can list every agent with its key, last heartbeat and roles.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from agent.errors import ConfigError
from agent.jobs import JobState
from agent.store.db import Database
from agent.store.tables import AGENT_ROLES, AGENTS, JOBS

WATCH = "watch"
"""The role that polls the chain for the collection's events (and the price triggers with them)."""
SCHEDULE = "schedule"
"""The role that runs the refreshes' cron scheduler."""


SAME_HOST_WINDOW_S = 3600.0
"""How long an agent on this host whose process still exists counts as live without a heartbeat (an agent busy
loading models or working a long job beats seldom; a pid recycled by another program is not an agent forever)."""

_STARTED_HERE: set[str] = set()
"""The worker ids of the agents this process registered and has not stopped."""


@dataclass(frozen=True)
class RoleHolder:
    """Who holds ``role`` until ``lease_until`` (lapsed when that is in the past)."""

    role: str
    holder: str
    lease_until: datetime
    acquired_at: datetime


@dataclass(frozen=True)
class AgentInfo:
    """One agent as it recorded itself, with the roles it holds (unlapsed) and the jobs it holds."""

    worker_id: str
    signer: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    roles: tuple[str, ...] = ()
    jobs_held: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "worker_id": self.worker_id,
            "signer": self.signer,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat(),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "roles": list(self.roles),
            "jobs_held": self.jobs_held,
        }


class RoleLeases:
    """One agent's view of the ``agents`` and ``agent_roles`` tables (see the module docstring).

    Args:
        db: The agent's database (migrated).
        worker_id: This agent's id (the one it claims jobs with).
        signer: This agent's key (its address), shown beside it.
        lease_s: How long a role stays this agent's without a renewal.
        scope: Prefix of every role name (the chain and collection), so agents of two collections sharing a
            database never compete.
        clock: Aware UTC ``now`` (tests move it).
    """

    def __init__(
        self,
        db: Database,
        worker_id: str,
        *,
        signer: str,
        lease_s: float,
        scope: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.signer = signer
        self.lease_s = lease_s
        self.scope = scope
        self._clock = clock or (lambda: datetime.now(UTC))

    def name(self, role: str) -> str:
        return f"{self.scope}{role}"

    # -- roles ---------------------------------------------------------------------------------------------------

    def hold(self, role: str) -> bool:
        """Take ``role`` (free or lapsed) or renew it (ours); return whether this agent holds it now."""
        now = self._clock()
        until = now + timedelta(seconds=self.lease_s)
        name = self.name(role)
        t = AGENT_ROLES
        with self.db.begin() as conn:
            renewed = conn.execute(
                sa.update(t)
                .where(t.c.role == name, t.c.holder == self.worker_id)
                .values(lease_until=until, renewed_at=now)
            )
            if renewed.rowcount == 1:
                return True
            taken = conn.execute(
                sa.update(t)
                .where(t.c.role == name, t.c.lease_until < now)
                .values(holder=self.worker_id, lease_until=until, acquired_at=now, renewed_at=now)
            )
            if taken.rowcount == 1:
                return True
            inserted = conn.execute(
                self.db.insert(t)
                .values(role=name, holder=self.worker_id, lease_until=until, acquired_at=now, renewed_at=now)
                .on_conflict_do_nothing(index_elements=["role"])
            )
            return bool(inserted.rowcount == 1)

    def release(self, roles: Sequence[str] | None = None) -> None:
        """Give back ``roles`` (default: every role this agent holds), so another agent takes them at once."""
        t = AGENT_ROLES
        where = t.c.holder == self.worker_id
        if roles is not None:
            where = sa.and_(where, t.c.role.in_([self.name(r) for r in roles]))
        with self.db.begin() as conn:
            conn.execute(sa.delete(t).where(where))

    def holders(self) -> list[RoleHolder]:
        """Every role of this scope and who holds it (lapsed leases included: ``lease_until`` says)."""
        t = AGENT_ROLES
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.role.startswith(self.scope, autoescape=True)).order_by(t.c.role)
            ).mappings()
            return [
                RoleHolder(
                    r["role"].removeprefix(self.scope), r["holder"], r["lease_until"], r["acquired_at"]
                )
                for r in rows
            ]

    # -- agents --------------------------------------------------------------------------------------------------

    def _register(self) -> None:
        now = self._clock()
        values = {
            "signer": self.signer,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
        }
        with self.db.begin() as conn:
            updated = conn.execute(
                sa.update(AGENTS).where(AGENTS.c.worker_id == self.worker_id).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(sa.insert(AGENTS).values(worker_id=self.worker_id, **values))

    def register_exclusive(self, window_s: float) -> None:
        """Record this agent, unless another live agent works with the same key: then refuse, recording nothing.

        Two agents on one key race for its nonces (one's transactions replace or block the other's), so every
        agent needs a key of its own. Another agent recorded with this key, not stopped, counts as live:

        - in this very process: while it has not stopped (this process knows which agents it started);
        - elsewhere on this host: while its process exists (a restart after a crash or a SIGKILL is not held
          back by its dead predecessor, and an agent busy loading models is not mistaken for a dead one), and
          it beat within :data:`SAME_HOST_WINDOW_S` (a recycled pid is not mistaken for an agent forever);
        - on another host: while its heartbeat is younger than ``window_s`` (the job lease: an agent silent for
          longer has lost its jobs too).

        This agent records itself first and then looks, so two agents started together on one key both see each
        other and both refuse rather than both starting.

        Raises:
            ConfigError: another live agent has this key.
        """
        self.register()
        now = self._clock()
        live = _live_on_key(self.db, self.signer, now, window_s)
        others = [a for a in live if a.worker_id != self.worker_id]
        if not others:
            return
        _STARTED_HERE.discard(self.worker_id)
        with self.db.begin() as conn:
            conn.execute(sa.delete(AGENTS).where(AGENTS.c.worker_id == self.worker_id))
        other = others[0]
        ago = (now - _aware(other.heartbeat_at)).total_seconds()
        raise ConfigError(
            f"another agent already works with the key {self.signer}: {other.worker_id} (host {other.host}, "
            f"pid {other.pid}, last heartbeat {max(0.0, ago):.0f} s ago); two agents on one key race for its "
            "nonces",
            hint="give each agent its own key (`chrysalis agent add-key` creates one and grants it AGENT_ROLE) "
            "and point this agent's signer.keystore at it, or stop the other agent; a dead agent stops counting "
            f"once its process is gone (on this host) or {window_s:.0f} s (agent.lease_s) after its last "
            "heartbeat (on another host)",
        )

    def register(self) -> None:
        """Record this agent (or record it again after a restart with the same id) as started now."""
        self._register()
        _STARTED_HERE.add(self.worker_id)

    def beat(self) -> None:
        """Note that this agent is alive now."""
        with self.db.begin() as conn:
            conn.execute(
                sa.update(AGENTS)
                .where(AGENTS.c.worker_id == self.worker_id)
                .values(heartbeat_at=self._clock())
            )

    def stopped(self) -> None:
        """Give back every role and record that this agent stopped."""
        _STARTED_HERE.discard(self.worker_id)
        self.release()
        with self.db.begin() as conn:
            conn.execute(
                sa.update(AGENTS).where(AGENTS.c.worker_id == self.worker_id).values(stopped_at=self._clock())
            )


def _live_on_key(db: Database, signer: str, now: datetime, window_s: float) -> list[AgentInfo]:
    """The agents recorded with key ``signer`` that look alive at ``now`` (see
    :meth:`RoleLeases.register_exclusive`)."""
    here, me = socket.gethostname(), os.getpid()
    live = []
    for a in list_agents(db, jobs={}):
        if a.signer.lower() != signer.lower() or a.stopped_at is not None:
            continue
        silent_s = (now - _aware(a.heartbeat_at)).total_seconds()
        if a.host != here:
            alive = silent_s <= window_s
        elif a.pid == me:
            alive = a.worker_id in _STARTED_HERE
        else:
            alive = _process_exists(a.pid) and silent_s <= max(window_s, SAME_HOST_WINDOW_S)
        if alive:
            live.append(a)
    return live


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def list_agents(db: Database, *, scope: str = "", jobs: dict[str, int] | None = None) -> list[AgentInfo]:
    """Every agent recorded in ``db``, newest heartbeat first, with the unlapsed roles of ``scope`` each holds and
    the jobs each holds (``jobs``: worker id -> count; default: read from the job table)."""
    now = datetime.now(UTC)
    with db.connect() as conn:
        if jobs is None:
            held = conn.execute(
                sa.select(JOBS.c.worker_id, sa.func.count())
                .where(JOBS.c.state == JobState.RUNNING.value, JOBS.c.worker_id.is_not(None))
                .group_by(JOBS.c.worker_id)
            ).all()
            jobs = {str(worker): int(n) for worker, n in held}
        roles: dict[str, list[str]] = {}
        for r in conn.execute(
            sa.select(AGENT_ROLES).where(AGENT_ROLES.c.role.startswith(scope, autoescape=True))
        ).mappings():
            if r["lease_until"] >= now:
                roles.setdefault(r["holder"], []).append(r["role"].removeprefix(scope))
        rows = conn.execute(sa.select(AGENTS).order_by(AGENTS.c.heartbeat_at.desc())).mappings().all()
    return [
        AgentInfo(
            worker_id=r["worker_id"],
            signer=r["signer"],
            host=r["host"],
            pid=r["pid"],
            started_at=r["started_at"],
            heartbeat_at=r["heartbeat_at"],
            stopped_at=r["stopped_at"],
            roles=tuple(sorted(roles.get(r["worker_id"], []))),
            jobs_held=(jobs or {}).get(r["worker_id"], 0),
        )
        for r in rows
    ]


__all__ = ["SCHEDULE", "WATCH", "AgentInfo", "RoleHolder", "RoleLeases", "list_agents"]
