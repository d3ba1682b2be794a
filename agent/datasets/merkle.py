"""A dataset's commitment: a Merkle root over per-item digests, and inclusion proofs for one item.

Everything here is ``hashlib.sha256`` over bytes, so a third party can recompute a root with any sha256 and a JSON
encoder. The rule (version ``v1``):

- **Canonical JSON** (:func:`agent.domain.canonical_json`): ``json.dumps(obj, sort_keys=True,
  separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8.
- **Leaf fields** of item ``i``: ``{"name": NAME, "sha256": HEX, "label": LABEL}`` where NAME is the image's
  relative POSIX path in the dataset folder (``images/0001.png``) or ``lore.jsonl#<line number>``, HEX the
  lowercase sha256 of the image file's bytes (or of the canonical JSON of the lore pair ``{"lore": ..., "traits":
  ...}``), and LABEL ``{"traits": {...}}`` (class-conditional images and lore) or ``{"caption": "..."}``
  (text-conditioned images).
- **Leaf**: ``sha256(b"chrysalis/dataset-leaf/v1\\0" + salt + canonical_json(leaf fields))``. ``salt`` is empty in
  public mode and 32 random bytes per item in private mode (so a leaf reveals nothing about an item that is not
  disclosed: the salts are secret).
- **Tree**: leaves in the dataset's item order (0..n-1). Each level pairs neighbours left to right:
  ``node = sha256(b"\\x01" + left + right)``; the last node of a level with an odd count is promoted unchanged.
  Repeat until one node (``top``) is left.
- **Root**: ``sha256(b"chrysalis/dataset-root/v1\\0" + n.to_bytes(8, "big") + top)``, as 64 lowercase hex. The
  item count is bound into the root, so a proof cannot pass a tree of another size off as this one.
- **Proof** of item ``index``: ``{"n": n, "index": index, "path": [{"sibling": HEX, "side": "left"|"right"},
  ...]}`` from the leaf level up, ``side`` being where the sibling sits; a level where the node is promoted has no
  entry. :func:`verify_proof` checks that the path's shape is the one ``(index, n)`` implies, so neither can be
  changed without failing.

Same inputs -> same bytes: no randomness here (private salts are drawn by the caller, :func:`new_salt`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from agent.domain import canonical_json

LEAF_RULE = "chrysalis/dataset-leaf/v1"
LEAF_PREFIX = b"chrysalis/dataset-leaf/v1\0"
ROOT_PREFIX = b"chrysalis/dataset-root/v1\0"
NODE_PREFIX = b"\x01"
SALT_BYTES = 32

__all__ = [
    "LEAF_RULE",
    "SALT_BYTES",
    "leaf_hash",
    "merkle_proof",
    "merkle_root",
    "new_salt",
    "verify_proof",
]


def new_salt() -> bytes:
    """32 bytes from the OS's CSPRNG: one private item's salt."""
    return secrets.token_bytes(SALT_BYTES)


def leaf_hash(fields: Mapping[str, Any], salt: bytes = b"") -> bytes:
    """The leaf of one item: ``fields`` must be exactly ``{"name", "sha256", "label"}``.

    Raises:
        ValueError: other keys, or a malformed digest.
    """
    if set(fields) != {"name", "sha256", "label"}:
        raise ValueError(f"leaf fields must be name, sha256 and label, got {sorted(fields)}")
    digest = fields["sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or digest != digest.lower():
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {digest!r}")
    bytes.fromhex(digest)
    body = canonical_json({"name": fields["name"], "sha256": digest, "label": fields["label"]})
    return hashlib.sha256(LEAF_PREFIX + bytes(salt) + body).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        up = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
    return levels


def _seal(n: int, top: bytes) -> str:
    return hashlib.sha256(ROOT_PREFIX + n.to_bytes(8, "big") + top).hexdigest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """The root (64 hex) over ``leaves`` in order.

    Raises:
        ValueError: no leaves.
    """
    return _seal(len(leaves), _levels(leaves)[-1][0])


def _shape(index: int, n: int) -> list[str]:
    """The sides of the siblings on the way up from ``index`` in a tree of ``n`` leaves."""
    sides = []
    while n > 1:
        if not (index == n - 1 and n % 2):  # not promoted
            sides.append("left" if index % 2 else "right")
        index //= 2
        n = (n + 1) // 2
    return sides


def merkle_proof(leaves: Sequence[bytes], index: int) -> dict[str, Any]:
    """The inclusion proof of leaf ``index``: ``{"n", "index", "path"}`` (see the module docstring).

    Raises:
        IndexError: ``index`` is not 0..n-1.
    """
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of {len(leaves)}")
    path = []
    position = index
    for level in _levels(leaves)[:-1]:
        if not (position == len(level) - 1 and len(level) % 2):
            sibling = position ^ 1
            path.append({"sibling": level[sibling].hex(), "side": "left" if position % 2 else "right"})
        position //= 2
    return {"n": len(leaves), "index": index, "path": path}


def verify_proof(root: str, leaf_fields: Mapping[str, Any], salt: bytes, proof: Mapping[str, Any]) -> bool:
    """Whether ``proof`` shows the item ``leaf_fields`` (with ``salt``) at ``proof["index"]`` of ``root``.

    Never raises on a malformed proof or fields: they are simply not valid (False).
    """
    try:
        n, index, path = proof["n"], proof["index"], proof["path"]
        if type(n) is not int or type(index) is not int or not 0 <= index < n or not isinstance(path, list):
            return False
        sides = _shape(index, n)
        if [step.get("side") if isinstance(step, Mapping) else None for step in path] != sides:
            return False
        node = leaf_hash(leaf_fields, salt)
        for step in path:
            sibling = bytes.fromhex(step["sibling"])
            if len(sibling) != 32:
                return False
            node = _node(sibling, node) if step["side"] == "left" else _node(node, sibling)
        return secrets.compare_digest(_seal(n, node), str(root).lower())
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
