"""Per-token seeds derived from the on-chain seed.

``derive_seed(onchain_seed, token_id)`` is the first 8 bytes (big-endian) of
``sha256(DOMAIN || onchain_seed (32 bytes) || token_id (32 bytes, big-endian))`` -- the same bytes as Solidity's
``abi.encodePacked(DOMAIN, bytes32 seed, uint256 tokenId)``, so a contract or any third party can recompute it.
The domain string keeps these seeds apart from every other use of the same on-chain randomness.

Seeds feed a CPU ``torch.Generator`` (:func:`cpu_generator`): CPU random streams are the same on every machine,
so noise does not depend on the device the model runs on.
"""

from __future__ import annotations

import hashlib

import torch

from agent.errors import ConfigError

DOMAIN = b"chrysalis.seed.v1"
"""Domain separator prefixed to every derivation (bump the version to change the rule)."""

MAX_SEED = 2**64 - 1


def derive_seed(onchain_seed: bytes, token_id: int) -> int:
    """The 64-bit seed for one token, from the collection's 32-byte on-chain seed.

    Raises:
        ConfigError: ``onchain_seed`` is not 32 bytes, or ``token_id`` is not a uint256.
    """
    seed = onchain_seed_bytes(onchain_seed)
    if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < 2**256:
        raise ConfigError(
            f"token_id {token_id!r} is not a uint256", hint="pass the token id as a non-negative int"
        )
    digest = hashlib.sha256(DOMAIN + seed + token_id.to_bytes(32, "big")).digest()
    return int.from_bytes(digest[:8], "big")


def onchain_seed_bytes(value: bytes | bytearray | str) -> bytes:
    """Accept 32 raw bytes or a ``0x``-prefixed 64-hex-digit string (as JSON-RPC returns bytes32)."""
    if isinstance(value, str):
        text = value.removeprefix("0x")
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(
                f"on-chain seed {value!r} is not hex", hint="pass a bytes32 as 0x followed by 64 hex digits"
            ) from None
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ConfigError(
            f"on-chain seed must be 32 bytes, got {len(value) if hasattr(value, '__len__') else type(value)}",
            hint="pass the contract's bytes32 seed (raw bytes or 0x + 64 hex digits)",
        )
    return bytes(value)


def check_seed(seed: int, where: str = "seed") -> int:
    """Validate an unsigned 64-bit seed (ConfigError saying how to fix otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"{where} {seed!r} is not an unsigned 64-bit integer",
            hint="derive it with agent.generate.seed.derive_seed (0 <= seed < 2**64)",
        )
    return seed


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (same stream on every machine)."""
    return torch.Generator("cpu").manual_seed(check_seed(seed))
