"""Model registry: immutable records, the active model, and what fulfilments record."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.contracts.support import (
    DEFAULT_ADMIN_ROLE,
    MANIFEST_V1,
    MANIFEST_V2,
    WEIGHTS_V1,
    WEIGHTS_V2,
    ZERO32,
    ev,
    events,
    reverts,
    unauthorized,
)

WEIGHTS_V3 = hashlib.sha256(b"sprites-v3.safetensors").digest()


def test_register_model(bare: Any, admin: Any) -> None:
    receipt = bare.registerModel(WEIGHTS_V1, MANIFEST_V1, sender=admin)
    assert events(receipt, bare) == [
        ev("ModelRegistered", modelId=1, weightsDigest=WEIGHTS_V1, manifestURI=MANIFEST_V1)
    ]
    if receipt.return_value is not None:
        assert receipt.return_value == 1
    weights, manifest, registered_at = bare.modelRecord(1)
    assert (weights, manifest, registered_at) == (WEIGHTS_V1, MANIFEST_V1, receipt.timestamp)
    assert bare.modelCount() == 1
    assert bare.modelIdOf(WEIGHTS_V1) == 1
    assert bare.modelIdOf(WEIGHTS_V2) == 0
    # Registering does not activate.
    assert bare.activeModel() == 0
    receipt = bare.registerModel(WEIGHTS_V2, "", sender=admin)
    assert events(receipt, bare) == [
        ev("ModelRegistered", modelId=2, weightsDigest=WEIGHTS_V2, manifestURI="")
    ]
    assert bare.modelCount() == 2
    assert bare.modelRecord(2)[:2] == (WEIGHTS_V2, "")


def test_register_rejections(collection: Any, admin: Any, agent: Any, alice: Any) -> None:
    with reverts(collection.LivingCollectionModelExists, weightsDigest=WEIGHTS_V1):
        collection.registerModel(WEIGHTS_V1, "another manifest", sender=admin)
    with reverts(collection.LivingCollectionInvalidDigest, digest=ZERO32):
        collection.registerModel(ZERO32, MANIFEST_V2, sender=admin)
    for account in (agent, alice):
        with unauthorized(collection, account, DEFAULT_ADMIN_ROLE):
            collection.registerModel(WEIGHTS_V3, "x", sender=account)
    assert collection.modelCount() == 1
    # The record is immutable: still the first manifest.
    assert collection.modelRecord(1)[1] == MANIFEST_V1


def test_set_active_model(collection: Any, admin: Any) -> None:
    collection.registerModel(WEIGHTS_V2, MANIFEST_V2, sender=admin)
    receipt = collection.setActiveModel(2, sender=admin)
    assert events(receipt, collection) == [ev("ActiveModelChanged", previousModelId=1, modelId=2)]
    assert collection.activeModel() == 2
    receipt = collection.setActiveModel(2, sender=admin)  # re-selecting is allowed and logged
    assert events(receipt, collection) == [ev("ActiveModelChanged", previousModelId=2, modelId=2)]
    receipt = collection.setActiveModel(1, sender=admin)
    assert events(receipt, collection) == [ev("ActiveModelChanged", previousModelId=2, modelId=1)]


def test_unknown_models(collection: Any, admin: Any, agent: Any) -> None:
    for model_id in (0, 2, 65535):
        with reverts(collection.LivingCollectionUnknownModel, modelId=model_id):
            collection.setActiveModel(model_id, sender=admin)
        with reverts(collection.LivingCollectionUnknownModel, modelId=model_id):
            collection.modelRecord(model_id)
    with unauthorized(collection, agent, DEFAULT_ADMIN_ROLE):
        collection.setActiveModel(1, sender=agent)
    assert collection.activeModel() == 1
