"""The commitment rule by itself: roots, proofs for every position of trees of many sizes, and what fails them."""

from __future__ import annotations

import copy
import hashlib

import pytest

from agent.datasets.merkle import leaf_hash, merkle_proof, merkle_root, verify_proof
from agent.domain import canonical_json


def fields(i: int) -> dict[str, object]:
    return {"name": f"images/{i:04d}.png", "sha256": hashlib.sha256(bytes([i])).hexdigest(),
            "label": {"traits": {"mood": "serene", "element": "fire"}}}  # fmt: skip


def test_the_rule_recomputed_with_hashlib_alone() -> None:
    f = [fields(i) for i in range(3)]
    leaves = [hashlib.sha256(b"chrysalis/dataset-leaf/v1\0" + canonical_json(x)).digest() for x in f]
    top = hashlib.sha256(
        b"\x01" + hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest() + leaves[2]
    ).digest()
    want = hashlib.sha256(b"chrysalis/dataset-root/v1\0" + (3).to_bytes(8, "big") + top).hexdigest()
    assert merkle_root([leaf_hash(x) for x in f]) == want


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_every_item_proves_and_a_wrong_one_does_not(n: int) -> None:
    salts = [bytes([i]) * 32 for i in range(n)]
    leaves = [leaf_hash(fields(i), salts[i]) for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        proof = merkle_proof(leaves, i)
        assert verify_proof(root, fields(i), salts[i], proof)
        other = (i + 1) % n
        if other != i:
            assert not verify_proof(root, fields(other), salts[i], proof)  # wrong item
            assert not verify_proof(root, fields(i), salts[other], proof)  # wrong salt
            moved = {**proof, "index": other}
            assert not verify_proof(root, fields(i), salts[i], moved)  # wrong position
        assert not verify_proof(root, fields(i), b"", proof)  # salt left out
        assert not verify_proof(root, fields(i), salts[i], {**proof, "n": n + 1})  # another tree size
        label = copy.deepcopy(fields(i))
        label["label"] = {"traits": {"mood": "gloomy", "element": "fire"}}
        assert not verify_proof(root, label, salts[i], proof)  # a changed label
        for k in range(len(proof["path"])):
            bad = copy.deepcopy(proof)
            bad["path"][k]["sibling"] = "00" * 32
            assert not verify_proof(root, fields(i), salts[i], bad)  # wrong sibling
            flipped = copy.deepcopy(proof)
            flipped["path"][k]["side"] = "left" if proof["path"][k]["side"] == "right" else "right"
            assert not verify_proof(root, fields(i), salts[i], flipped)


def test_the_count_and_order_are_bound_and_malformed_proofs_are_just_invalid() -> None:
    leaves = [leaf_hash(fields(i)) for i in range(4)]
    assert merkle_root(leaves) != merkle_root(leaves[::-1])
    assert merkle_root(leaves[:3]) != merkle_root(leaves)
    root = merkle_root(leaves)
    for junk in ({}, {"n": "4", "index": 0, "path": []}, {"n": 4, "index": 0, "path": "x"},
                 {"n": 4, "index": 9, "path": []}, {"n": 4, "index": 0, "path": [{"side": "right"}] * 2}):  # fmt: skip
        assert not verify_proof(root, fields(0), b"", junk)
    assert not verify_proof(root, {"name": "x"}, b"", merkle_proof(leaves, 0))
    with pytest.raises(ValueError):
        merkle_root([])
