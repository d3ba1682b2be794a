"""Singleton roles through database leases (:mod:`agent.store.roles`), on SQLite and the real PostgreSQL: one holder
at a time whatever the interleaving of asks, renewals, releases and clock jumps; a lapsed role goes to the next
agent that asks; agents of two collections never compete; every agent is listed with its key, beat and roles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from agent.errors import ConfigError
from agent.store import Database
from agent.store.roles import SCHEDULE, WATCH, RoleLeases, list_agents
from agent.store.tables import AGENTS as AGENT_TABLE
from tests.support.clock import FakeClock

LEASE_S = 10.0
AGENTS = ("a1", "a2", "a3")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    try:
        yield database
    finally:
        database.close()


def _leases(db: Database, clock: FakeClock, worker: str, scope: str = "31337:0xabc:") -> RoleLeases:
    return RoleLeases(db, worker, signer=f"0x{worker:0>40}", lease_s=LEASE_S, scope=scope, clock=clock)


def test_one_holder_at_a_time_a_lapsed_role_moves_and_a_release_frees_it(
    db: Database, clock: FakeClock
) -> None:
    a, b = _leases(db, clock, "a1"), _leases(db, clock, "a2")
    assert a.hold(WATCH) and not b.hold(WATCH)
    clock.advance(LEASE_S - 1)
    assert a.hold(WATCH)  # renewed: another full lease from now
    clock.advance(LEASE_S - 1)
    assert not b.hold(WATCH)
    clock.advance(2)  # a stopped renewing (killed): the lease lapsed
    assert b.hold(WATCH) and not a.hold(WATCH)
    assert [(h.role, h.holder) for h in b.holders()] == [(WATCH, "a2")]
    b.release()
    assert a.hold(WATCH)  # given back: taken at once, no lease to wait out
    # another collection on the same database has roles of its own
    other = _leases(db, clock, "a3", scope="31337:0xdef:")
    assert other.hold(WATCH) and other.hold(SCHEDULE) and not b.hold(WATCH)


def test_random_interleavings_never_give_a_role_to_two_agents(db: Database, clock: FakeClock) -> None:
    leases = {w: _leases(db, clock, w) for w in AGENTS}

    class Roles(RuleBasedStateMachine):
        """Model: who the store says holds the role, and until when; each step checked against it."""

        def __init__(self) -> None:
            super().__init__()
            with db.begin() as conn:
                conn.execute(sa.text("DELETE FROM agent_roles"))
            self.holder: tuple[str, datetime] | None = None

        @rule(worker=st.sampled_from(AGENTS))
        def hold(self, worker: str) -> None:
            got = leases[worker].hold(WATCH)
            free = self.holder is None or self.holder[0] == worker or self.holder[1] < clock.now
            assert got == free, (worker, self.holder, clock.now)
            if got:
                self.holder = (worker, clock.now + timedelta(seconds=LEASE_S))

        @rule(worker=st.sampled_from(AGENTS))
        def release(self, worker: str) -> None:
            leases[worker].release()
            if self.holder is not None and self.holder[0] == worker:
                self.holder = None

        @rule(seconds=st.sampled_from([1.0, 6.0, 9.0, 11.0]))
        def tick(self, seconds: float) -> None:
            clock.advance(seconds)

    run_state_machine_as_test(
        Roles, settings=settings(max_examples=25, stateful_step_count=30, deadline=None,
                                 suppress_health_check=[HealthCheck.function_scoped_fixture])
    )  # fmt: skip


def test_agents_asking_at_once_get_one_holder(db: Database, clock: FakeClock) -> None:
    """Eight threads, each its own agent, ask for a free role at the same moment: exactly one gets it."""
    barrier = threading.Barrier(8)
    got: list[str] = []

    def ask(worker: str) -> None:
        lease = _leases(db, clock, worker)
        barrier.wait()
        if lease.hold(SCHEDULE):
            got.append(worker)

    threads = [threading.Thread(target=ask, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 1, got


def test_every_agent_is_listed_with_its_key_beat_roles_and_jobs(db: Database, clock: FakeClock) -> None:
    a, b = _leases(db, clock, "a1"), _leases(db, clock, "a2")
    a.register()
    b.register()
    assert a.hold(WATCH) and b.hold(SCHEDULE)
    listed = {x.worker_id: x for x in list_agents(db, scope=a.scope, jobs={"a1": 3})}
    assert listed["a1"].roles == (WATCH,) and listed["a1"].jobs_held == 3
    assert listed["a2"].roles == (SCHEDULE,) and listed["a2"].signer == "0x" + "0" * 38 + "a2"
    b.stopped()
    listed = {x.worker_id: x for x in list_agents(db, scope=a.scope)}
    assert listed["a2"].stopped_at is not None and listed["a2"].roles == ()
    assert listed["a1"].to_json()["roles"] == [WATCH]


def test_a_second_live_agent_on_one_key_is_refused_and_leaves_no_record(
    db: Database, clock: FakeClock
) -> None:
    """Two agents on one key race for its nonces: the second is refused while the first looks alive, and is let
    in once it does not (stopped; in this process, stopped; on this host, its process gone; elsewhere, silent for
    longer than the window)."""
    key = "0x" + "ab" * 20

    def agent(worker: str, signer: str = key) -> RoleLeases:
        return RoleLeases(db, worker, signer=signer, lease_s=LEASE_S, clock=clock)

    def move(worker: str, **values: object) -> None:
        with db.begin() as conn:
            conn.execute(sa.update(AGENT_TABLE).where(AGENT_TABLE.c.worker_id == worker).values(**values))

    first, second = agent("first"), agent("second", key.upper().replace("0X", "0x"))
    first.register_exclusive(window_s=60)
    agent("other", "0x" + "cd" * 20).register_exclusive(window_s=60)  # another key: no conflict
    first.register_exclusive(window_s=60)  # the same agent again (a restart with the same id): no conflict

    with pytest.raises(ConfigError) as err:
        second.register_exclusive(window_s=60)
    assert f"another agent already works with the key {second.signer}: first" in err.value.message
    assert "chrysalis agent add-key" in (err.value.hint or "") and "60 s" in (err.value.hint or "")
    assert {a.worker_id for a in list_agents(db)} == {"first", "other"}  # the refused one left nothing
    clock.advance(600)  # in this process, silence does not matter: it has not stopped
    with pytest.raises(ConfigError):
        second.register_exclusive(window_s=60)
    first.stopped()  # stopped cleanly: let in at once
    second.register_exclusive(window_s=60)
    second.stopped()

    # on another host: live while its heartbeat is younger than the window
    first.register_exclusive(window_s=60)
    move("first", host="elsewhere")
    clock.advance(59)
    with pytest.raises(ConfigError):
        second.register_exclusive(window_s=60)
    clock.advance(2)
    second.register_exclusive(window_s=60)
    second.stopped()

    # on this host, in another process: live while the process exists
    move("first", host=socket.gethostname(), pid=os.getppid(), heartbeat_at=clock())
    with pytest.raises(ConfigError):
        second.register_exclusive(window_s=60)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that no longer exists: a crashed or SIGKILLed agent
    move("first", pid=dead.pid)
    second.register_exclusive(window_s=60)  # not held back by its dead predecessor
    second.stopped()
