"""Errors of the submit stage, and decoding revert data into readable custom errors.

:class:`ErrorDecoder` turns revert data into a :class:`DecodedError` using the contract's ABI
(``LivingCollectionRequestNotPending(requestId=0x100000001)``), plus the two built-in shapes ``Error(string)``
and ``Panic(uint256)``. The exceptions carry structured fields, and their messages name the problem and the
fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from agent.errors import PermanentError, RetryableError

if TYPE_CHECKING:  # pragma: no cover
    from agent.domain import Confirmation

GWEI = 10**9

#: Solidity's panic codes (docs: "Panic via assert and error via require").
PANIC_CODES: dict[int, str] = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "corrupt storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function pointer",
}

_ERROR_STRING = function_signature_to_4byte_selector("Error(string)")
_PANIC = function_signature_to_4byte_selector("Panic(uint256)")


# ------------------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedError:
    """Revert data, decoded.

    Attributes:
        name: The error's name (``LivingCollectionRequestNotPending``, ``Error``, ``Panic``), or ``""`` when
            the selector is unknown.
        args: Its arguments by name, in declaration order (positional names ``arg0``... when the ABI has
            none).
        selector: The first four bytes, ``0x``-hex.
        data: The whole revert data, ``0x``-hex.
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    selector: str = ""
    data: str = "0x"

    @property
    def known(self) -> bool:
        return bool(self.name)

    def __str__(self) -> str:
        if not self.name:
            if self.data in ("", "0x"):
                return "revert without data"
            return f"unknown error {self.selector} ({(len(self.data) - 2) // 2} bytes of data)"
        if self.name == "Error":
            return f"Error({self.args.get('message', '')!r})"
        if self.name == "Panic":
            code = int(self.args.get("code", 0))
            return f"Panic(0x{code:02x}: {PANIC_CODES.get(code, 'unknown panic code')})"
        return f"{self.name}(" + ", ".join(f"{k}={_format_value(k, v)}" for k, v in self.args.items()) + ")"


def _format_value(name: str, value: Any) -> str:
    """Addresses checksummed, bytes in hex, packed ids (``requestId = tokenId << 32 | nonce``) in hex."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        if value >= 2**32 and name.lower().endswith("id"):
            return hex(value)
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, str):
        if value.startswith("0x") and len(value) == 42:
            return to_checksum_address(value)
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(name, v) for v in value) + "]"
    return repr(value)


def _abi_type(param: Mapping[str, Any]) -> str:
    """Canonical ABI type of one parameter (tuples expanded)."""
    typ = str(param["type"])
    if typ.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param.get("components", []))
        return f"({inner}){typ[len('tuple') :]}"
    return typ


class ErrorDecoder:
    """Maps 4-byte selectors to the custom errors of one or more ABIs.

    ``Error(string)`` and ``Panic(uint256)`` are always known.
    """

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for abi in abis:
            self.add_abi(abi)

    @classmethod
    def from_abi(cls, abi: Sequence[Mapping[str, Any]]) -> ErrorDecoder:
        return cls([abi])

    def add_abi(self, abi: Sequence[Mapping[str, Any]]) -> None:
        """Learn every ``error`` entry of ``abi``."""
        for item in abi:
            if item.get("type") != "error":
                continue
            inputs = list(item.get("inputs", []))
            types = [_abi_type(p) for p in inputs]
            names = [str(p.get("name") or f"arg{i}") for i, p in enumerate(inputs)]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            self._errors[selector] = (str(item["name"]), types, names)

    def decode(self, data: bytes | str | None) -> DecodedError:
        """Decode revert data; never raises (unknown or malformed data decodes to a nameless error)."""
        raw = _to_bytes(data)
        hexdata = "0x" + raw.hex()
        if len(raw) < 4:
            return DecodedError(name="", selector=hexdata, data=hexdata)
        selector, body = raw[:4], raw[4:]
        sel_hex = "0x" + selector.hex()
        try:
            if selector == _ERROR_STRING:
                (message,) = abi_decode(["string"], body)
                return DecodedError("Error", {"message": message}, sel_hex, hexdata)
            if selector == _PANIC:
                (code,) = abi_decode(["uint256"], body)
                return DecodedError("Panic", {"code": code}, sel_hex, hexdata)
            known = self._errors.get(selector)
            if known is None:
                return DecodedError("", {}, sel_hex, hexdata)
            name, types, names = known
            values = abi_decode(types, body)
            return DecodedError(name, dict(zip(names, values, strict=True)), sel_hex, hexdata)
        except Exception:  # malformed body for a known selector
            return DecodedError("", {}, sel_hex, hexdata)


def _to_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    text = data[2:] if data.startswith(("0x", "0X")) else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


# ------------------------------------------------------------------------------------------------------------
# Exceptions
# ------------------------------------------------------------------------------------------------------------


class RevertError(PermanentError):
    """Execution reverted.

    Attributes:
        error: The decoded revert data.
        label: What was being sent (a contract method name).
    """

    def __init__(self, message: str, *, error: DecodedError, label: str, hint: str | None = None) -> None:
        self.error = error
        self.label = label
        super().__init__(message, hint=hint)


class CallRevertedError(RevertError):
    """An ``eth_call`` or ``eth_estimateGas`` reverted (raised by the RPC wrapper; no label yet)."""

    def __init__(self, error: DecodedError, *, method: str = "eth_call") -> None:
        self.method = method
        super().__init__(f"{method} reverted: {error}", error=error, label="")


class DryRunRevertedError(RevertError):
    """The dry run (``eth_call`` / gas estimate) of a transaction reverted, so it was not sent and cost
    nothing.

    Attributes:
        to: The contract called.
    """

    def __init__(self, error: DecodedError, *, label: str, to: str) -> None:
        self.to = to
        super().__init__(
            f"{label or 'transaction'} to {to} would revert with {error}; not sent",
            error=error,
            label=label,
            hint="the call is invalid in the current chain state: drop or fix it (nothing was spent)",
        )


class TransactionRevertedError(RevertError):
    """A mined transaction reverted. Its gas was spent.

    Attributes:
        tx_hash: The mined transaction.
        block_number: Its block.
        gas_used: Gas it used. gas_limit: Gas it was given.
        out_of_gas: True when it used all its gas (the likely cause when ``error`` has no data).
        confirmation: The confirmation of the reverted transaction.
    """

    def __init__(
        self,
        error: DecodedError,
        *,
        label: str,
        tx_hash: str,
        block_number: int,
        gas_used: int,
        gas_limit: int,
        confirmation: Confirmation | None = None,
    ) -> None:
        self.tx_hash = tx_hash
        self.block_number = block_number
        self.gas_used = gas_used
        self.gas_limit = gas_limit
        self.confirmation = confirmation
        self.out_of_gas = not error.known and gas_used >= gas_limit
        if self.out_of_gas:
            reason = f"ran out of gas (used all {gas_limit})"
            hint = "raise the gas limit (submit.gas_multiplier) or split the batch (submit.batch_max_gas)"
        else:
            reason = str(error)
            hint = "enable the dry run (submit.dry_run) so a revert is caught before any gas is spent"
        super().__init__(
            f"{label or 'transaction'} {tx_hash} reverted in block {block_number}: {reason}",
            error=error,
            label=label,
            hint=hint,
        )


class FeeCapExceededError(RetryableError):
    """The network needs a higher fee per gas than the configured cap, so nothing was sent.

    Attributes:
        required_wei: maxFeePerGas the transaction needs (next base fee + tip, or a replacement's bump).
        cap_wei: The cap (``submit.max_fee_per_gas_gwei``).
    """

    def __init__(self, required_wei: int, cap_wei: int, *, what: str = "sending", detail: str = "") -> None:
        self.required_wei = required_wei
        self.cap_wei = cap_wei
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"{what} needs maxFeePerGas {required_wei / GWEI:.3f} gwei{why}, above the cap "
            f"{cap_wei / GWEI:.3f} gwei; not sent",
            hint="retry later when the base fee drops, or raise submit.max_fee_per_gas_gwei",
        )


class NonceError(RetryableError):
    """The node rejected a transaction's nonce and re-syncing did not help within the allowed attempts.

    Attributes:
        nonce: The nonce last tried. reason: The node's message.
    """

    def __init__(self, nonce: int, reason: str) -> None:
        self.nonce = nonce
        self.reason = reason
        super().__init__(
            f"nonce {nonce} rejected ({reason}) after re-syncing with the chain",
            hint="another process may be sending from the same key; give the agent its own key",
        )


class InsufficientFundsError(PermanentError):
    """The agent account cannot pay for the transaction's gas.

    Attributes:
        address: The agent account.
    """

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        super().__init__(
            f"account {address} has insufficient funds for gas ({detail})", hint=f"send ETH to {address}"
        )


class SendRejectedError(PermanentError):
    """The node refused the transaction for a reason that resending will not fix.

    Attributes:
        reason: The node's message. label: What was being sent.
    """

    def __init__(self, reason: str, *, label: str) -> None:
        self.reason = reason
        self.label = label
        super().__init__(
            f"node rejected {label or 'transaction'}: {reason}",
            hint="check the transaction's fields (gas limit within the block gas limit, chain id)",
        )


class StuckTransactionError(RetryableError):
    """A transaction was not mined in time, even after fee-bumped replacements.

    Attributes:
        nonce: Its nonce. hashes: Every hash broadcast with that nonce, oldest first.
        waited_s: Seconds waited. reason: Why it stopped replacing (cap reached, fee cap, timeout).
    """

    def __init__(self, nonce: int, hashes: Sequence[str], waited_s: float, reason: str) -> None:
        self.nonce = nonce
        self.hashes = tuple(hashes)
        self.waited_s = waited_s
        self.reason = reason
        super().__init__(
            f"transaction with nonce {nonce} not mined after {waited_s:.0f}s ({reason}); hashes: "
            + ", ".join(self.hashes),
            hint="wait again with the same Submission (it may still be mined), or raise "
            "submit.max_fee_per_gas_gwei / submit.max_replacements",
        )


class NonceConsumedError(PermanentError):
    """The chain used this nonce for a transaction that is none of ours (an external send from the same key).

    Attributes:
        nonce: The nonce. hashes: Our hashes with it, none of which was mined.
    """

    def __init__(self, nonce: int, hashes: Sequence[str]) -> None:
        self.nonce = nonce
        self.hashes = tuple(hashes)
        super().__init__(
            f"nonce {nonce} was used by another transaction from the same key; ours ("
            + ", ".join(self.hashes)
            + ") will never be mined",
            hint="check on-chain whether the work is done, then send it again (a new nonce is assigned)",
        )
