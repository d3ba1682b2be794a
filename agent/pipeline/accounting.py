"""What the agent's transactions cost, read from the job store: one rule for ``chrysalis status`` and the Agent.

A confirmed job whose result records a transaction the agent sent (``how == "sent"``, with ``tx_hash`` and
``gas_used``: :func:`agent.pipeline.submit.confirmation_result`) paid for it. Jobs fulfilled by one batched
transaction all record the same hash, so gas is summed per distinct transaction, never per job. A job settled
without sending (``how`` is e.g. ``"found on-chain"``: another attempt's or another agent's transaction did the
work) costs nothing here. Every job kind counts (evolutions, refreshes, genesis): the agent paid for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.jobs import JobState, JobStore

_PAGE = 1000


@dataclass(frozen=True)
class GasSpent:
    """Gas of the agent's recorded transactions.

    Attributes:
        gas: Gas used, summed over distinct transactions.
        transactions: How many distinct transactions.
    """

    gas: int = 0
    transactions: int = 0


def sent_transaction(result: Any) -> tuple[str | None, int]:
    """``(tx hash, gas used)`` of the transaction a confirmed job's result records, or ``(None, 0)`` when the
    agent sent nothing for it. Hashes are lower-cased so that one transaction is one key."""
    if not isinstance(result, Mapping) or result.get("how", "sent") != "sent":
        return None, 0
    tx_hash = result.get("tx_hash")
    if not tx_hash or "gas_used" not in result:
        return None, 0
    return str(tx_hash).lower(), int(result["gas_used"])


def gas_spent(store: JobStore) -> GasSpent:
    """Gas of the distinct transactions recorded by the store's confirmed jobs (see the module docstring)."""
    by_tx: dict[str, int] = {}
    offset = 0
    while True:
        page = store.list_jobs(state=JobState.CONFIRMED, limit=_PAGE, offset=offset)
        for job in page:
            tx_hash, gas = sent_transaction(job.result)
            if tx_hash is not None:
                by_tx[tx_hash] = gas
        if len(page) < _PAGE:
            break
        offset += len(page)
    return GasSpent(sum(by_tx.values()), len(by_tx))
