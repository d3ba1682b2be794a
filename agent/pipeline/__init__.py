"""The agent pipeline: from an on-chain evolution request to an evolved token, exactly once.

::

    Watcher --> EvolutionRequested (and fuse) --> Job --> inputs (oracles at the event's block + rules)
            --> generated (image, lore, receipt) --> published (image + metadata block, replicated)
            --> submitted (batched fulfillEvolutions) --> confirmed | failed | cancelled

:class:`Agent` runs the stages that :func:`agent.app.build_agent` wires from :class:`~agent.settings.Settings`; see
:mod:`agent.pipeline.agent`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.pipeline.agent import Agent, AgentStatus

__all__ = ["Agent", "AgentStatus"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): light modules of the package (agent.pipeline.accounting, used by `chrysalis status`) must
    # not pull in the whole agent, torch included.
    if name in __all__:
        from agent.pipeline import agent

        return getattr(agent, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
