"""Scheduled and oracle-driven refreshes: whole collections re-rendered as the world changes.

::

    cron fire (APScheduler, schedules in the agent's DB) --+
    price moved > X% (AnswerUpdated, own watcher cursor) --+--> refresh job --> worker, between evolutions:
    `chrysalis refresh [--tokens ...]`, the studio --------+
        plan      ONE block B for every token; block-level oracles read once, screened by the guard
        evaluate  each token at B: the rules at its stage -> unchanged | deferred | oracle_skipped | changed
        generate  changed tokens: previous image -> img2img, lore, receipt (the evolution pipeline's stage)
        publish   metadata (parent = the previous metadata's CID) and image, pinned and replicated
        send      pre-send race check, budgets, refreshMetadata batches sized to the gas cap
        confirm   by receipt, else by chain truth

Modules: :mod:`~agent.refresh.runner` (the steps, the order with holders' requests, the budgets),
:mod:`~agent.refresh.inputs` (reading and evaluating at one block), :mod:`~agent.refresh.triggers` (cron, price,
manual), :mod:`~agent.refresh.schedule` (APScheduler), :mod:`~agent.refresh.store` / :mod:`~agent.refresh.models`
(what is recorded), :mod:`~agent.refresh.service` (wiring), :mod:`~agent.refresh.cli` (``chrysalis refresh``).
"""
