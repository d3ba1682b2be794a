"""The strict ``reverts`` helper itself: it must fail on a wrong error, wrong or missing arguments, or no revert.

Everything else in this directory relies on it, on both providers (whose revert reporting differs).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.contracts.support import EVOLUTION_FEE, reverts


def test_accepts_the_exact_error(collection: Any, alice: Any) -> None:
    with reverts(collection.LivingCollectionNotHolder, tokenId=4, caller=alice):
        collection.requestEvolution(4, sender=alice, value=EVOLUTION_FEE)
    with reverts(collection.LivingCollectionUnknownToken, tokenId=77):
        collection.tokenURI(77)  # a view call


@pytest.mark.parametrize("view", [False, True], ids=["transaction", "call"])
def test_rejects_wrong_arguments(collection: Any, alice: Any, view: bool) -> None:
    def revert() -> None:
        if view:
            collection.tokenURI(77)
        else:
            collection.requestEvolution(77, sender=alice, value=EVOLUTION_FEE)

    with pytest.raises(AssertionError, match="expected"):
        with reverts(collection.LivingCollectionUnknownToken, tokenId=78):
            revert()
    with pytest.raises(AssertionError, match="expected"):
        with reverts(collection.LivingCollectionUnknownToken):  # arguments left out
            revert()
    with pytest.raises(AssertionError, match="LivingCollectionNotHolder"):
        with reverts(collection.LivingCollectionNotHolder, tokenId=77, caller=alice):
            revert()


def test_rejects_no_revert(collection: Any) -> None:
    with pytest.raises(AssertionError, match="did not revert"):
        with reverts(collection.LivingCollectionUnknownToken, tokenId=1):
            collection.tokenURI(1)
