"""Chrysalis Studio: the web app for the gallery, token timelines, provenance, human review and operations.

::

    chain (views + logs) --> CollectionIndex --+--> Catalog (gallery cards, timelines) --> pages, chrysalis verify
    IPFS repo (metadata, images) ---------------+
    job store (jobs, cursor) --> ops view        review store (agent.review) <--> curators (pages, regeneration)

:class:`~agent.studio.service.Studio` wires the parts from settings, :func:`~agent.studio.app.create_app` serves
them. The review queue and the pipeline's gate are :mod:`agent.review`; the studio renders the queue and runs
regenerations (:mod:`agent.studio.regenerate`).
"""
