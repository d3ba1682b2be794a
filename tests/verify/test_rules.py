"""What verify knows without a deployment record must agree with the contract and with the agent: the views and
events it names by signature exist in the compiled LivingCollection, and the rules it recomputes (a curator's
reroll seed, which verify imports from agent.gates like the review queue; a refresh batch's provenance, which it
recomputes) are the ones the review and refresh packages apply."""

from __future__ import annotations

import secrets

from agent.refresh.runner import PROVENANCE_SCHEMA, batch_provenance
from agent.review.model import MAX_REROLLS, reroll_seed
from agent.verify import chain, core
from tests.support.devchain import artifacts


def _signature(entry: dict) -> str:
    return f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"


def test_every_view_event_and_call_verify_reads_is_in_the_compiled_collection() -> None:
    abi = artifacts()["LivingCollection"]["abi"]
    functions = {_signature(e): [o["type"] for o in e["outputs"]] for e in abi if e["type"] == "function"}
    events = {_signature(e) for e in abi if e["type"] == "event"}
    for name, (signature, outputs) in chain.VIEWS.items():
        assert signature in functions, name
        assert tuple(functions[signature]) == outputs, name
    assert set(chain.EVENTS.values()) <= events
    assert chain.REFRESH_CALL in functions


def test_rerolls_and_refresh_provenance_are_the_agents_rules() -> None:
    seed = "0x" + secrets.token_hex(32)
    for n in (0, 1, 2, MAX_REROLLS):
        assert core.find_reroll(seed, reroll_seed(seed, n)) == n
    assert core.find_reroll(seed, "0x" + secrets.token_hex(32)) is None
    assert core.REFRESH_PROVENANCE_SCHEMA == PROVENANCE_SCHEMA
    items = [(3, "0x" + "ab" * 32, "cd" * 32), (4, "0x" + "ef" * 32, "01" * 32)]
    block_hash = "0x" + secrets.token_hex(32)
    assert core.refresh_provenance(block_hash, items) == "0x" + batch_provenance(block_hash, items).hex()
