"""Chrysalis Studio: the web app for the gallery, token timelines, provenance, human review and operations.

::

    chain (views + logs) --> CollectionIndex --+--> Catalog (gallery cards, timelines) --> pages, chrysalis verify
    IPFS repo (metadata, images) ---------------+
    job store (jobs, cursor) --> ops view        review store <--> ReviewGate (the pipeline) + curators

:class:`~agent.studio.service.Studio` wires the parts from settings, :func:`~agent.studio.app.create_app` serves
them, :mod:`agent.studio.review` is the review queue and the pipeline's gate.
"""

from agent.studio.review import Approved, Candidate, Pending, Rejected, ReviewGate, ReviewStore

__all__ = ["Approved", "Candidate", "Pending", "Rejected", "ReviewGate", "ReviewStore"]
