"""EIP-1559 fees: what to offer, the cap the agent never pays above, and the bump a replacement needs.

A quote offers ``maxFeePerGas = base_fee_multiplier x next base fee + tip`` (room for the base fee to rise for
a few blocks) but never more than the cap. What the network *needs* is ``next base fee + tip``: when that is
above the cap, nothing is sent and :class:`FeeCapExceededError` (retryable) says both numbers.

The tip is ``submit.priority_fee_gwei`` when set, else the node's ``eth_maxPriorityFeePerGas``, else
``submit.fallback_priority_fee_gwei``. The next base fee is the pending block's ``baseFeePerGas`` when the
node reports it, else the worst case after the latest block (``x 9/8``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.errors import PermanentError, RetryableError
from agent.settings import SubmitSettings
from agent.submit.errors import GWEI, FeeCapExceededError
from agent.submit.rpc import ChainRpc

log = logging.getLogger(__name__)

#: The smallest bump geth's and anvil's pools accept for a same-nonce replacement is 10%; we use at least
#: The smallest bump geth's and anvil's pools accept for a same-nonce replacement is 10%; we use at least
#: 12.5%
#: (the most the base fee can rise in one block) on both fee fields.
MIN_BUMP_PERCENT = 12.5


@dataclass(frozen=True)
class FeeQuote:
    """Fees for one EIP-1559 transaction, in wei.

    Attributes:
        max_fee_per_gas: The most paid per gas (base fee + tip).
        max_priority_fee_per_gas: The tip to the block builder.
        base_fee: The base fee the quote was made for (the next block's).
    """

    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee: int

    def __str__(self) -> str:
        return (
            f"maxFee {self.max_fee_per_gas / GWEI:.3f} gwei, "
            f"tip {self.max_priority_fee_per_gas / GWEI:.3f} gwei (base {self.base_fee / GWEI:.3f} gwei)"
        )


def bump(value: int, percent: float) -> int:
    """``value`` raised by ``percent``, rounded up, and by at least 1 wei."""
    scaled = -(-value * round((100 + percent) * 10_000) // 1_000_000)
    return max(scaled, value + 1)


class FeeOracle:
    """Quotes EIP-1559 fees from the node, within a cap.

    Args:
        rpc: The node.
        max_fee_per_gas_wei: The cap; nothing is sent or replaced above it.
        priority_fee_wei: A fixed tip (None: ask the node).
        fallback_priority_fee_wei: The tip when the node cannot say.
        base_fee_multiplier: Headroom over the next base fee in ``maxFeePerGas``.
    """

    def __init__(
        self,
        rpc: ChainRpc,
        *,
        max_fee_per_gas_wei: int,
        priority_fee_wei: int | None = None,
        fallback_priority_fee_wei: int = 1 * GWEI,
        base_fee_multiplier: float = 2.0,
    ) -> None:
        self.rpc = rpc
        self.cap = max_fee_per_gas_wei
        self.priority_fee_wei = priority_fee_wei
        self.fallback_priority_fee_wei = fallback_priority_fee_wei
        self.base_fee_multiplier = base_fee_multiplier

    @classmethod
    def from_settings(cls, rpc: ChainRpc, settings: SubmitSettings) -> FeeOracle:
        """From the ``[submit]`` settings (fee cap, tip, fallback tip, base-fee multiplier)."""
        s = settings
        return cls(
            rpc,
            max_fee_per_gas_wei=int(s.max_fee_per_gas_gwei * GWEI),
            priority_fee_wei=int(s.priority_fee_gwei * GWEI) if s.priority_fee_gwei is not None else None,
            fallback_priority_fee_wei=int(s.fallback_priority_fee_gwei * GWEI),
            base_fee_multiplier=s.base_fee_multiplier,
        )

    def next_base_fee(self) -> int:
        """The base fee the next block will (at most) have."""
        pending = self.rpc.block("pending")
        if pending is not None and pending.base_fee is not None:
            return pending.base_fee
        latest = self.rpc.block("latest")
        if latest is None:
            # A node (or the backend of a load-balanced URL) that returned no block at all is lagging or
            # glitching, not a chain without EIP-1559: try again.
            raise RetryableError(
                "the node returned no latest block to read the base fee from",
                hint="a lagging or load-balanced provider; the next attempt asks again",
            )
        if latest.base_fee is None:
            raise PermanentError(
                "the chain reports no EIP-1559 base fee",
                hint="Chrysalis sends EIP-1559 transactions only; use a chain past the London fork",
            )
        return -(-latest.base_fee * 9 // 8)

    def tip(self) -> int:
        """The priority fee to offer."""
        if self.priority_fee_wei is not None:
            return self.priority_fee_wei
        suggested = self.rpc.max_priority_fee()
        return suggested if suggested is not None else self.fallback_priority_fee_wei

    def quote(self) -> FeeQuote:
        """Fees for a new transaction.

        Raises:
            FeeCapExceededError: the next base fee plus the tip is above the cap.
        """
        base = self.next_base_fee()
        tip = self.tip()
        required = base + tip
        if required > self.cap:
            raise FeeCapExceededError(
                required, self.cap, detail=f"next base fee {base / GWEI:.3f} gwei + tip {tip / GWEI:.3f} gwei"
            )
        offered = int(base * self.base_fee_multiplier) + tip
        return FeeQuote(max_fee_per_gas=min(offered, self.cap), max_priority_fee_per_gas=tip, base_fee=base)

    def bump(self, previous: FeeQuote, percent: float = MIN_BUMP_PERCENT) -> FeeQuote:
        """Fees for a same-nonce replacement of a transaction sent with ``previous``.

        Both fields rise by at least ``percent`` (rounded up), and to today's quote when that is higher.

        Raises:
            FeeCapExceededError: the bumped ``maxFeePerGas`` is above the cap (a replacement below the bump
                would be refused by the pool, so none is sent).
        """
        percent = max(percent, MIN_BUMP_PERCENT)
        base = self.next_base_fee()
        tip = max(bump(previous.max_priority_fee_per_gas, percent), self.tip())
        fresh = int(base * self.base_fee_multiplier) + tip
        max_fee = max(bump(previous.max_fee_per_gas, percent), base + tip)
        if max_fee > self.cap:
            raise FeeCapExceededError(
                max_fee,
                self.cap,
                what="replacing the stuck transaction",
                detail=f"a {percent:g}% bump over {previous.max_fee_per_gas / GWEI:.3f} gwei, next base fee "
                f"{base / GWEI:.3f} gwei",
            )
        max_fee = max(max_fee, min(fresh, self.cap))
        return FeeQuote(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip, base_fee=base)
