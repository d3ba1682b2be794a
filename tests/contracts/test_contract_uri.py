"""ERC-7572: ``contractURI()``, its admin setter and the ``ContractURIUpdated()`` event."""

from __future__ import annotations

from typing import Any

from tests.contracts.support import DEFAULT_ADMIN_ROLE, ev, events, unauthorized

URI = "ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_contract_uri_starts_empty(bare: Any) -> None:
    assert bare.contractURI() == ""
    assert [e for e in events(bare.creation_metadata.receipt, bare) if e[0] == "ContractURIUpdated"] == []


def test_admin_sets_the_contract_uri_and_the_event_says_so(collection: Any, admin: Any, chain: Any) -> None:
    receipt = collection.setContractURI(URI, sender=admin)
    assert events(receipt, collection) == [ev("ContractURIUpdated")]
    # The raw log: one topic (the event), no data.
    (raw,) = chain.provider.get_receipt(receipt.txn_hash).logs
    assert [bytes(t) for t in raw["topics"]] == [
        bytes.fromhex("a5d4097edda6d87cb9329af83fb3712ef77eeb13738ffe43cc35a4ce305ad962")
    ]
    assert bytes(raw["data"]) == b""
    assert collection.contractURI() == URI
    data_uri = 'data:application/json;utf8,{"name":"Chrysalis"}'
    collection.setContractURI(data_uri, sender=admin)
    assert collection.contractURI() == data_uri
    receipt = collection.setContractURI("", sender=admin)  # unset again
    assert events(receipt, collection) == [ev("ContractURIUpdated")] and collection.contractURI() == ""


def test_only_the_admin_sets_the_contract_uri(collection: Any, agent: Any, alice: Any, stranger: Any) -> None:
    for caller in (stranger, alice, agent):
        with unauthorized(collection, caller, DEFAULT_ADMIN_ROLE):
            collection.setContractURI(URI, sender=caller)
    assert collection.contractURI() == ""
