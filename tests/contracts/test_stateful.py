"""Random sequences of holder, agent and admin actions against a Python model of the collection.

Hypothesis drives mint, transfer, request, fulfil (single and batch), cancel (with time travel to either side of
the deadline), fuse, withdraw, refresh, and the admin's fee/timeout/model/pause switches. Every rule predicts
its outcome from the model, including the exact custom error and its arguments, and checks events and exact
balances. After every step the invariants compare the chain with the model:

- contract balance == escrowedFees + withdrawableFees, and both equal the model's totals;
- a token's stage never decreases (and equals the model's);
- at most one pending request per token: ``pendingRequestOf`` is exactly the model's (id, requester, fee, time),
  its id names the token and its latest nonce, and ``isPending`` of the latest id agrees;
- a burnt token has no pending request.

Bugs this is meant to catch (each was checked by mutating a copy of the contract, see the report of the helper
that wrote it): escrow not released or released twice, a refund sent to the holder instead of the requester or
computed from the current fee, a request id reused after a cancel, a stage rolled back wrongly by a cancel, a
token burnt with a pending request, an off-by-one at the cancellation deadline, stale request ids accepted.

Each example runs between ``chain.snapshot()`` and ``chain.restore()``, a day ahead of the wall clock (see
``next_block_at``), so a replay meets the chain its example met. Anvil runs fewer, shorter examples than the
in-process EVM, decided from the provider name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.contracts.support import (
    AGENT_ROLE,
    MANIFEST_V1,
    MANIFEST_V2,
    REFRESHER_ROLE,
    WEIGHTS_V1,
    WEIGHTS_V2,
    ZERO32,
    ZERO_ADDRESS,
    cid_of_digest,
    events,
    gas_paid,
    norm,
    reverts,
)

SUPPLY = 6
PER_WALLET = 3
PRICE = 3 * 10**15
FEES = (10**15, 2 * 10**15, 0)
TIMEOUTS = (3600, 5400, 7200)  # MIN_REQUEST_TIMEOUT is one hour

# (examples, steps per example) by provider: anvil is the slower of the two per transaction here.
BUDGET = {"foundry": (10, 20), "test": (5, 20)}
AHEAD = 86_400  # each example starts this many seconds after its snapshot's block: past the wall clock


@dataclass
class Pending:
    request_id: int
    requester: str
    fee: int
    requested_at: int
    cancellable_at: int
    seed: bytes = ZERO32  # the EvolutionRequested seed: fulfilments must name it


@dataclass
class Token:
    owner: str | None  # None once burnt
    stage: int = 0
    nonce: int = 0
    model: int = 0
    digest: bytes = ZERO32
    pending: Pending | None = None


@pytest.fixture(scope="module")
def machine_collection(deploy: Any, admin: Any, agent: Any, alice: Any, bob: Any) -> Any:
    c = deploy(
        maxSupply_=SUPPLY,
        maxPerWallet_=PER_WALLET,
        mintPrice_=PRICE,
        evolutionFee_=FEES[0],
        requestTimeout_=TIMEOUTS[0],
    )
    c.grantRole(AGENT_ROLE, agent, sender=admin)
    c.grantRole(REFRESHER_ROLE, agent, sender=admin)
    c.registerModel(WEIGHTS_V1, MANIFEST_V1, sender=admin)
    c.registerModel(WEIGHTS_V2, MANIFEST_V2, sender=admin)
    c.setActiveModel(1, sender=admin)
    c.mint(2, sender=alice, value=2 * PRICE)  # tokens 1, 2
    c.mint(1, sender=bob, value=PRICE)  # token 3
    return c


def test_random_sequences_keep_invariants(
    machine_collection: Any,
    chain: Any,
    admin: Any,
    agent: Any,
    treasury: Any,
    alice: Any,
    bob: Any,
    carol: Any,
    stranger: Any,
) -> None:
    c = machine_collection
    actors = [alice, bob, carol]
    by_address = {norm(a): a for a in [*actors, admin, agent, treasury, stranger]}
    examples, steps = BUDGET.get(chain.provider.name, BUDGET["foundry"])

    def next_block_at(when: int) -> int:
        """Stamps the next block exactly ``max(when, parent + 1)``, the parent's time read from the chain; returns it.

        Ape's in-process EVM (py-evm) stamps a pending block when it mines the one before, ``max(wall clock,
        parent + 1)``, and its time travel mines an empty block at ``when - 1``. So once the wall clock has passed
        parent + 1 (after ``chain.restore``, which rebuilds the pending block), ``parent + 1`` cannot be reached:
        Ape swallows the failed mine, the pending block keeps its parent's time, every later transaction fails
        ("timestamp must be strictly later than parent") and stays in that never-mined block until the block gas
        limit is reached, and a restore to an unchanged head does not clear it. Examples therefore run ``AHEAD`` of
        the wall clock (``Collection.__init__``), where the pending block is always parent + 1; the chain is asked
        back rather than trusted, so a wrong stamp fails here, naming the times, and not in a later step.
        """
        when = max(when, chain.blocks.head.timestamp + 1)
        chain.pending_timestamp = when
        pending = chain.pending_timestamp
        assert pending == when, f"next block at {pending}, not {when} (head {chain.blocks.head.timestamp})"
        return when

    class Collection(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = chain.snapshot()
            next_block_at(chain.blocks.head.timestamp + AHEAD)  # py-evm mines a block: the restore rewinds
            self.tokens: dict[int, Token] = {
                1: Token(norm(alice)),
                2: Token(norm(alice)),
                3: Token(norm(bob)),
            }
            self.minted_by = {norm(alice): 2, norm(bob): 1, norm(carol): 0}
            self.escrowed = 0
            self.withdrawable = 3 * PRICE
            self.refunds: dict[str, int] = {}  # credited by cancellations, not withdrawn yet
            self.fee = FEES[0]
            self.timeout = TIMEOUTS[0]
            self.active_model = 1
            self.paused = False
            self.seen_stage: dict[int, int] = {}
            self.serial = 0

        def teardown(self) -> None:
            chain.restore(self.snapshot)

        # ----------------------------------------------------------------------------------------------------
        # helpers
        # ----------------------------------------------------------------------------------------------------

        @property
        def minted(self) -> int:
            return len(self.tokens)

        def live(self) -> list[int]:
            return [t for t, m in self.tokens.items() if m.owner is not None]

        def pending(self) -> list[int]:
            return [t for t, m in self.tokens.items() if m.pending is not None]

        def digest(self) -> bytes:
            self.serial += 1
            return hashlib.sha256(b"metadata %d" % self.serial).digest()

        def holder_error(self, token_id: int, caller: Any) -> tuple | None:
            """The error _checkHolder gives (owner or approved; no approvals are given in this machine)."""
            m = self.tokens.get(token_id)
            if m is None or m.owner is None:
                return ("LivingCollectionUnknownToken", {"tokenId": token_id})
            if m.owner != norm(caller):
                return ("LivingCollectionNotHolder", {"tokenId": token_id, "caller": caller})
            return None

        def transact(self, error: tuple | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
            """Sends; expects exactly ``error`` = (name, arguments), or success (returns the receipt)."""
            if error is None:
                return fn(*args, **kwargs)
            name, inputs = error
            with reverts(getattr(c, name), **inputs):
                fn(*args, **kwargs)
            return None

        def open_request(self, token_id: int, sender: Any, receipt: Any) -> None:
            """Checks EvolutionRequested against the model and records the new pending request."""
            m = self.tokens[token_id]
            m.nonce += 1
            rid = token_id << 32 | m.nonce
            (requested,) = [args for name, args in events(receipt, c) if name == "EvolutionRequested"]
            seed = requested.pop("seed")
            assert requested == norm(
                {"requestId": rid, "tokenId": token_id, "requester": sender, "stage": m.stage}
            )
            assert len(seed) == 32
            m.pending = Pending(
                rid, norm(sender), self.fee, receipt.timestamp, receipt.timestamp + self.timeout, bytes(seed)
            )
            self.escrowed += self.fee

        def fulfilled(self, token_id: int, digest: bytes) -> None:
            m = self.tokens[token_id]
            self.escrowed -= m.pending.fee
            self.withdrawable += m.pending.fee
            m.pending = None
            m.stage += 1
            m.model = self.active_model
            m.digest = digest

        # ----------------------------------------------------------------------------------------------------
        # holder actions
        # ----------------------------------------------------------------------------------------------------

        @rule(actor=st.sampled_from(actors), quantity=st.integers(1, 2))
        def mint(self, actor: Any, quantity: int) -> None:
            wallet = norm(actor)
            left_wallet = PER_WALLET - self.minted_by[wallet]
            left_supply = SUPPLY - self.minted
            error = None
            if self.paused:
                error = ("EnforcedPause", {})
            elif quantity > left_wallet:
                error = (
                    "LivingCollectionWalletCapExceeded",
                    {"wallet": actor, "requested": quantity, "remaining": left_wallet},
                )
            elif quantity > left_supply:
                error = ("LivingCollectionSupplyExceeded", {"requested": quantity, "remaining": left_supply})
            before = c.balance
            receipt = self.transact(error, c.mint, quantity, sender=actor, value=quantity * PRICE)
            if receipt is None:
                assert c.balance == before
                return
            first = self.minted + 1
            assert [args["tokenId"] for name, args in events(receipt, c)] == list(
                range(first, first + quantity)
            )
            for token_id in range(first, first + quantity):
                self.tokens[token_id] = Token(wallet)
            self.minted_by[wallet] += quantity
            self.withdrawable += quantity * PRICE
            assert c.balance == before + quantity * PRICE

        @precondition(lambda self: self.live())
        @rule(data=st.data(), to=st.sampled_from(actors))
        def transfer(self, data: Any, to: Any) -> None:
            token_id = data.draw(st.sampled_from(self.live()), label="token")
            m = self.tokens[token_id]
            c.transferFrom(m.owner, to, token_id, sender=by_address[m.owner])
            m.owner = norm(to)  # a pending request stays with the token and its requester

        @precondition(lambda self: self.minted)
        @rule(
            data=st.data(), caller=st.sampled_from(["owner", "owner", "owner", "other"]), exact=st.booleans()
        )
        def request(self, data: Any, caller: str, exact: bool) -> None:
            token_id = data.draw(st.integers(1, self.minted), label="token")
            m = self.tokens[token_id]
            if caller == "owner" and m.owner is not None:
                sender = by_address[m.owner]
            else:
                sender = data.draw(st.sampled_from(actors), label="sender")
            value = self.fee if exact else self.fee + 1
            error = None
            if self.paused:
                error = ("EnforcedPause", {})
            elif holder := self.holder_error(token_id, sender):
                error = holder
            elif value != self.fee:
                error = ("LivingCollectionWrongPayment", {"sent": value, "required": self.fee})
            elif m.pending is not None:
                error = (
                    "LivingCollectionRequestPending",
                    {"tokenId": token_id, "requestId": m.pending.request_id},
                )
            before = c.balance
            receipt = self.transact(error, c.requestEvolution, token_id, sender=sender, value=value)
            if receipt is None:
                assert c.balance == before
                return
            self.open_request(token_id, sender, receipt)
            assert c.balance == before + self.fee
            assert c.modelOf(token_id) == m.model  # unchanged until fulfilled

        @precondition(lambda self: self.minted >= 2)
        @rule(data=st.data(), sensible=st.sampled_from([True, True, False]), exact=st.booleans())
        def fuse(self, data: Any, sensible: bool, exact: bool) -> None:
            owners = [o for o in {m.owner for m in self.tokens.values()} if o and self._owned(o, 2)]
            if sensible and owners:
                owner = data.draw(st.sampled_from(sorted(owners)), label="owner")
                keep, burn = data.draw(
                    st.lists(st.sampled_from(self._owned(owner)), min_size=2, max_size=2, unique=True),
                    label="pair",
                )
                sender = by_address[owner]
            else:
                keep = data.draw(st.integers(1, self.minted), label="keep")
                burn = data.draw(st.integers(1, self.minted), label="burn")
                sender = data.draw(st.sampled_from(actors), label="sender")
            value = self.fee if exact else (self.fee - 1 if self.fee else 1)
            error = None
            if self.paused:
                error = ("EnforcedPause", {})
            elif keep == burn:
                error = ("LivingCollectionSelfFuse", {"tokenId": keep})
            elif holder := self.holder_error(keep, sender) or self.holder_error(burn, sender):
                error = holder
            elif value != self.fee:
                error = ("LivingCollectionWrongPayment", {"sent": value, "required": self.fee})
            elif (p := self.tokens[burn].pending) is not None:
                error = ("LivingCollectionRequestPending", {"tokenId": burn, "requestId": p.request_id})
            elif (p := self.tokens[keep].pending) is not None:
                error = ("LivingCollectionRequestPending", {"tokenId": keep, "requestId": p.request_id})
            before = c.balance
            receipt = self.transact(error, c.fuse, keep, burn, sender=sender, value=value)
            if receipt is None:
                assert c.balance == before
                return
            self.tokens[burn].owner = None
            self.open_request(keep, sender, receipt)
            names = [name for name, _ in events(receipt, c)]
            assert names == ["Transfer", "EvolutionRequested", "Fused"]
            fused = events(receipt, c)[2][1]
            assert fused == norm(
                {"keepId": keep, "burnId": burn, "requestId": self.tokens[keep].pending.request_id}
            )
            assert c.exists(burn) is False
            assert c.balance == before + self.fee

        def _owned(self, owner: str, at_least: int = 0) -> Any:
            owned = [t for t, m in self.tokens.items() if m.owner == owner]
            return len(owned) >= at_least if at_least else owned

        @precondition(lambda self: self.pending())
        @rule(
            data=st.data(),
            offset=st.sampled_from([-1, 0, 0, 1, 10_000]),
            who=st.sampled_from(["requester", "owner", "stranger"]),
        )
        def cancel(self, data: Any, offset: int, who: str) -> None:
            token_id = data.draw(st.sampled_from(self.pending()), label="token")
            m = self.tokens[token_id]
            p = m.pending
            sender = {
                "requester": by_address[p.requester],
                "owner": by_address[m.owner],
                "stranger": stranger,
            }[who]
            assert c.cancellableAt(p.request_id) == p.cancellable_at
            when = next_block_at(p.cancellable_at + offset)
            error = None
            if who == "stranger":
                error = ("LivingCollectionNotRequester", {"requestId": p.request_id, "caller": stranger})
            elif when < p.cancellable_at:
                error = (
                    "LivingCollectionRequestNotExpired",
                    {"requestId": p.request_id, "cancellableAt": p.cancellable_at},
                )
            requester = by_address[p.requester]
            before_requester, before_contract = requester.balance, c.balance
            receipt = self.transact(error, c.cancelEvolution, p.request_id, sender=sender)
            if receipt is None:
                assert c.balance == before_contract
                return
            assert receipt.timestamp == when
            assert events(receipt, c) == [
                (
                    "EvolutionCancelled",
                    norm(
                        {
                            "requestId": p.request_id,
                            "tokenId": token_id,
                            "requester": p.requester,
                            "refund": p.fee,
                        }
                    ),
                )
            ]
            paid = gas_paid(receipt) if sender is requester else 0
            assert requester.balance == before_requester - paid  # credited, not sent
            assert c.balance == before_contract
            self.refunds[p.requester] = self.refunds.get(p.requester, 0) + p.fee
            self.escrowed -= p.fee
            m.pending = None
            assert c.modelOf(token_id) == m.model

        @rule(caller=st.sampled_from([*actors, stranger]), to=st.sampled_from([*actors, stranger]))
        def withdraw_refund(self, caller: Any, to: Any) -> None:
            owed = self.refunds.get(norm(caller), 0)
            error = None if owed else ("LivingCollectionNoRefund", {"account": caller})
            before_to, before_contract = to.balance, c.balance
            receipt = self.transact(error, c.withdrawRefund, to, sender=caller)
            if receipt is None:
                return
            paid = gas_paid(receipt) if to is caller else 0
            assert to.balance == before_to + owed - paid
            assert c.balance == before_contract - owed
            self.refunds[norm(caller)] = 0

        @rule(caller=st.sampled_from([*actors, stranger]))
        def withdraw(self, caller: Any) -> None:
            before = treasury.balance
            receipt = c.withdrawFees(sender=caller)
            assert events(receipt, c) == [
                ("FeesWithdrawn", norm({"treasury": treasury, "amount": self.withdrawable}))
            ]
            assert treasury.balance == before + self.withdrawable
            self.withdrawable = 0

        # ----------------------------------------------------------------------------------------------------
        # agent actions
        # ----------------------------------------------------------------------------------------------------

        @precondition(lambda self: self.minted)
        @rule(data=st.data(), wrong_seed=st.sampled_from([False, False, True]))
        def fulfil(self, data: Any, wrong_seed: bool) -> None:
            token_id = data.draw(st.integers(1, self.minted), label="token")
            m = self.tokens[token_id]
            digest = self.digest()
            provenance = hashlib.sha256(digest).digest()
            if m.pending is None:
                # The latest (fulfilled or cancelled) id, or a never-opened one: not pending.
                stale = token_id << 32 | max(m.nonce, 1)
                self.transact(
                    ("LivingCollectionRequestNotPending", {"requestId": stale}),
                    c.fulfillEvolution,
                    stale,
                    self.digest(),
                    digest,
                    provenance,
                    sender=agent,
                )
                return
            rid = m.pending.request_id
            if wrong_seed:  # e.g. generated for a copy of the request that a reorg orphaned
                other = self.digest()
                self.transact(
                    ("LivingCollectionSeedMismatch", {"requestId": rid, "seed": other}),
                    c.fulfillEvolution,
                    rid,
                    other,
                    digest,
                    provenance,
                    sender=agent,
                )
                return  # nothing changed: the invariants check it
            before = c.balance
            receipt = c.fulfillEvolution(rid, m.pending.seed, digest, provenance, sender=agent)
            assert events(receipt, c) == [
                (
                    "Evolved",
                    norm(
                        {
                            "tokenId": token_id,
                            "requestId": rid,
                            "stage": m.stage + 1,
                            "metadataDigest": digest,
                            "provenance": provenance,
                        }
                    ),
                ),
                ("MetadataUpdate", {"_tokenId": token_id}),
            ]
            self.fulfilled(token_id, digest)
            assert c.balance == before  # escrow -> withdrawable moves no ether
            assert c.tokenURI(token_id) == "ipfs://" + cid_of_digest(digest)
            assert c.modelOf(token_id) == self.active_model

        @precondition(lambda self: self.pending())
        @rule(data=st.data(), spoil=st.sampled_from([None, None, "stale", "duplicate", "seed"]))
        def fulfil_batch(self, data: Any, spoil: str | None) -> None:
            tokens = data.draw(
                st.lists(st.sampled_from(self.pending()), min_size=1, unique=True), label="tokens"
            )
            ids = [self.tokens[t].pending.request_id for t in tokens]
            seeds = [self.tokens[t].pending.seed for t in tokens]
            digests = [self.digest() for _ in ids]
            # A spoilt entry is skipped (FulfilmentSkipped); the rest of the batch goes through.
            skipped = None
            if spoil == "seed":  # the last request named with another seed
                seeds[-1] = self.digest()
                skipped = ids[-1]
            elif spoil is not None:
                bad = ids[0] if spoil == "duplicate" else (tokens[0] << 32 | self.tokens[tokens[0]].nonce + 1)
                ids.append(bad)
                seeds.append(seeds[0] if spoil == "duplicate" else self.digest())
                digests.append(self.digest())
                skipped = bad
            receipt = c.fulfillEvolutions(ids, seeds, digests, [ZERO32] * len(ids), sender=agent)
            fulfilled = len(tokens) - (1 if spoil == "seed" else 0)
            expected = ["Evolved", "MetadataUpdate"] * fulfilled
            if skipped is not None:
                expected.append("FulfilmentSkipped")
                assert events(receipt, c)[-1] == ("FulfilmentSkipped", {"requestId": skipped})
            assert [name for name, _ in events(receipt, c)] == expected
            for token_id, digest in list(zip(tokens, digests, strict=False))[:fulfilled]:
                self.fulfilled(token_id, digest)

        @precondition(lambda self: self.minted)
        @rule(data=st.data())
        def refresh(self, data: Any) -> None:
            ids = data.draw(st.lists(st.integers(1, self.minted), min_size=1, max_size=3), label="tokens")
            digests = [self.digest() for _ in ids]
            burnt = next((t for t in ids if self.tokens[t].owner is None), None)
            error = None if burnt is None else ("LivingCollectionUnknownToken", {"tokenId": burnt})
            if self.paused:
                error = ("EnforcedPause", {})
            if self.transact(error, c.refreshMetadata, ids, digests, ZERO32, sender=agent) is None:
                return
            for token_id, digest in zip(ids, digests, strict=True):
                self.tokens[token_id].digest = digest  # stage, model and pending requests stay
            assert c.metadataDigestOf(ids[-1]) == digests[-1]

        # ----------------------------------------------------------------------------------------------------
        # time and admin
        # ----------------------------------------------------------------------------------------------------

        @rule(seconds=st.sampled_from([1, 59, 600, 3600]))
        def warp(self, seconds: int) -> None:
            next_block_at(chain.blocks.head.timestamp + seconds)

        @rule(fee=st.sampled_from(FEES))
        def set_fee(self, fee: int) -> None:
            c.setEvolutionFee(fee, sender=admin)
            self.fee = fee  # pending requests keep theirs

        @rule(timeout=st.sampled_from(TIMEOUTS))
        def set_timeout(self, timeout: int) -> None:
            c.setRequestTimeout(timeout, sender=admin)
            self.timeout = timeout

        @rule(model=st.sampled_from([1, 2]))
        def switch_model(self, model: int) -> None:
            c.setActiveModel(model, sender=admin)
            self.active_model = model

        @rule()
        def toggle_pause(self) -> None:
            (c.unpause if self.paused else c.pause)(sender=admin)
            self.paused = not self.paused

        # ----------------------------------------------------------------------------------------------------
        # invariants
        # ----------------------------------------------------------------------------------------------------

        @invariant()
        def fees_are_backed(self) -> None:
            escrowed, withdrawable = c.escrowedFees(), c.withdrawableFees()
            assert c.balance == escrowed + withdrawable + c.owedRefunds()
            assert c.owedRefunds() == sum(self.refunds.values())
            for account, owed in self.refunds.items():
                assert c.refundOf(account) == owed
            assert (escrowed, withdrawable) == (self.escrowed, self.withdrawable)
            assert escrowed == sum(self.tokens[t].pending.fee for t in self.pending())

        @invariant()
        def requests_and_stages(self) -> None:
            for token_id, m in self.tokens.items():
                request = norm(c.pendingRequestOf(token_id))
                if m.owner is None:
                    assert request == norm((0, ZERO_ADDRESS, 0, 0)), f"burnt token {token_id} has a request"
                    continue
                p = m.pending
                expected = (
                    (p.request_id, p.requester, p.fee, p.requested_at) if p else (0, ZERO_ADDRESS, 0, 0)
                )
                assert request == norm(expected), f"token {token_id}"
                if p is not None:
                    assert p.request_id >> 32 == token_id and p.request_id & 0xFFFFFFFF == m.nonce
                if m.nonce:
                    assert c.isPending(token_id << 32 | m.nonce) is (p is not None)
                if p is not None:
                    assert c.isPendingWith(p.request_id, p.seed) is True
                    flipped = bytes([p.seed[0] ^ 1]) + p.seed[1:]
                    assert c.isPendingWith(p.request_id, flipped) is False
                stage = c.stageOf(token_id)
                assert stage >= self.seen_stage.get(token_id, 0), f"token {token_id}'s stage went down"
                assert stage == m.stage
                self.seen_stage[token_id] = stage

    run_state_machine_as_test(
        Collection,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
