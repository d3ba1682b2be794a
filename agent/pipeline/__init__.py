"""The agent pipeline: from an on-chain evolution request to an evolved token, exactly once.

::

    Watcher --> EvolutionRequested (and fuse) --> Job --> inputs (oracles at the event's block + rules)
            --> generated (image, lore, receipt) --> published (image + metadata block, replicated)
            --> submitted (batched fulfillEvolutions) --> confirmed | failed | cancelled

:class:`Agent` wires every stage from :class:`~agent.settings.Settings` and runs them; see :mod:`agent.pipeline.agent`.
"""

from agent.pipeline.agent import Agent, AgentStatus

__all__ = ["Agent", "AgentStatus"]
