"""Datasets you can commit to: checked folders of labelled images or lore, a Merkle root over their items, public
pinning to IPFS or private (salted) commitment with per-item inclusion proofs.

``chrysalis dataset add | show | list | prove | check-proof`` (:mod:`agent.datasets.cli`); the folder format and
the checks are in :mod:`agent.datasets.model`, the commitment rule in :mod:`agent.datasets.merkle`.
"""

from agent.datasets.model import Dataset, DatasetError, Item, load_dataset, load_traits_file

__all__ = ["Dataset", "DatasetError", "Item", "load_dataset", "load_traits_file"]
