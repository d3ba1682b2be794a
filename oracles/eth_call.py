"""An ``eth_call`` oracle for any view function, read at the context's block.

The function is given as a signature with its return types, in the ``cast`` style::

    EthCallOracle(collection, "balanceOf(address)(uint256)", ["$holder"], name="held")
    EthCallOracle(feed, "latestRoundData()(uint80 roundId,int256 answer,uint256 startedAt,uint256 updatedAt,"
                  "uint80 answeredInRound)", name="feed", decimals={"answer": 8})

Readings: ``<name>.<output>`` for every return value, named by the signature (``feed.answer``), else by
``outputs=[...]``, else ``<name>.value`` for a single unnamed output and ``<name>.out0``, ``out1``, ... for several.
Arguments are JSON-like literals, or placeholders filled from the context: ``$holder``, ``$token_id``,
``$collection``, ``$block_number``, ``$block_timestamp``.

Values become plain JSON: integers stay exact ints (a ``decimals`` scale turns one into the nearest float, the raw
integer kept in ``meta["raw"]``), addresses are checksummed, ``bytes`` are ``0x`` hex, tuples and arrays are lists.
The call pins the block by hash (EIP-1898) like every oracle here; a revert or an empty return (no contract, no such
function) raises :class:`~oracles.errors.OracleCallError`, an unreachable node
:class:`~oracles.errors.OracleUnavailableError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi import is_encodable_type
from eth_abi.exceptions import DecodingError, EncodingError
from eth_abi.grammar import normalize
from eth_utils import keccak
from web3 import Web3

from agent.domain import OracleReading
from agent.errors import ConfigError
from oracles.base import Oracle, ReadContext, call_at
from oracles.errors import OracleCallError

PLACEHOLDERS = ("$holder", "$token_id", "$collection", "$block_number", "$block_timestamp")

_NAME = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def split_params(text: str) -> list[str]:
    """Split ``"uint256 a,(address,uint8)[] b"`` at top-level commas."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        raise ValueError("unbalanced '('")
    tail = text[start:].strip()
    if tail or parts:
        parts.append(tail)
    return parts


def _group(text: str, start: int) -> int:
    """Index just past the parenthesised group opening at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced '('")


def parse_signature(signature: str) -> tuple[str, list[str], list[str], list[str | None]]:
    """``"f(uint256)(address owner)"`` -> ``("f", ["uint256"], ["address"], ["owner"])``.

    Raises:
        ConfigError: the signature is malformed, lacks return types, or names an unknown ABI type.
    """
    hint = 'write "name(inputTypes)(outputTypes)", e.g. "balanceOf(address)(uint256)"'
    text = signature.strip() if isinstance(signature, str) else ""
    open_at = text.find("(")
    name = text[:open_at].strip() if open_at > 0 else ""
    if not _NAME.match(name):
        raise ConfigError(f"function signature {signature!r} has no valid name", hint=hint)
    try:
        in_end = _group(text, open_at)
        rest = text[in_end:].strip()
        out_end = _group(rest, 0) if rest.startswith("(") else -1
        inputs = split_params(text[open_at + 1 : in_end - 1])
        outputs = split_params(rest[1 : out_end - 1]) if out_end > 0 else []
    except ValueError as exc:
        raise ConfigError(f"function signature {signature!r}: {exc}", hint=hint) from None
    if out_end < 0:
        raise ConfigError(f"function signature {signature!r} has no return types", hint=hint)
    if rest[out_end:].strip():
        raise ConfigError(f"function signature {signature!r} has text after its return types", hint=hint)
    if not outputs:
        raise ConfigError(
            f"function {name} returns nothing to read", hint="a view function with return values"
        )
    in_types = [_param(p, signature)[0] for p in inputs]
    out_types, out_names = [], []
    for p in outputs:
        typ, param_name = _param(p, signature)
        out_types.append(typ)
        out_names.append(param_name)
    return name, in_types, out_types, out_names


def _param(text: str, signature: str) -> tuple[str, str | None]:
    """``"(uint256, address)[] memory pairs"`` -> ``("(uint256,address)[]", "pairs")``."""
    text = text.strip()
    if text.startswith("("):
        try:
            end = _group(text, 0)
        except ValueError:
            end = len(text)
        suffix = re.match(r"(?:\s*\[\d*\])*", text[end:])
        end += suffix.end() if suffix else 0
        typ, words = text[:end], text[end:].split()
    else:
        typ, *words = text.split() or [""]
    words = [w for w in words if w not in ("memory", "calldata", "storage")]
    if len(words) > 1 or (words and not _NAME.match(words[0])):
        raise ConfigError(
            f"cannot read the parameter {text!r} in {signature!r}", hint="write 'type' or 'type name'"
        )
    return _type(re.sub(r"\s+", "", typ), signature), (words[0] if words else None)


def _type(text: str, signature: str) -> str:
    if not text or not is_encodable_type(text):
        raise ConfigError(
            f"{text!r} in {signature!r} is not an ABI type",
            hint="use Solidity ABI types: uint256, address, bytes32, ...",
        )
    return str(normalize(text))


class EthCallOracle(Oracle):
    """Reads a view function's return values at the context's block (see the module docstring).

    Args:
        address: The contract.
        signature: ``name(inputs)(outputs)``.
        args: Arguments: literals or placeholders (:data:`PLACEHOLDERS`).
        name: Reading prefix.
        outputs: Reading field names (overrides the signature's names).
        decimals: Scale of integer outputs: one int for a single output, or ``{field: decimals}``.
    """

    def __init__(
        self,
        address: str,
        signature: str,
        args: Sequence[Any] = (),
        *,
        name: str = "call",
        outputs: Sequence[str] | None = None,
        decimals: int | Mapping[str, int] | None = None,
    ) -> None:
        if not isinstance(address, str) or not Web3.is_address(address):
            raise ConfigError(
                f"eth_call oracle {name!r}: {address!r} is not an address",
                hint="pass the contract's 0x address",
            )
        self.address = Web3.to_checksum_address(address)
        self.signature = signature
        self.function, self.input_types, self.output_types, names = parse_signature(signature)
        self._name = name
        if len(args) != len(self.input_types):
            raise ConfigError(
                f"{self.function} takes {len(self.input_types)} argument(s) ({', '.join(self.input_types)}), "
                f"{len(args)} given",
                hint=f"pass args=[...] with one value per input; placeholders: {', '.join(PLACEHOLDERS)}",
            )
        self.args = list(args)
        for value, typ in zip(self.args, self.input_types, strict=False):
            if isinstance(value, str) and value.startswith("$"):
                if value not in PLACEHOLDERS:
                    raise ConfigError(
                        f"unknown placeholder {value!r}", hint=f"use one of {', '.join(PLACEHOLDERS)}"
                    )
            else:
                self._check_encodable(typ, value)
        if outputs is not None:
            if len(outputs) != len(self.output_types):
                raise ConfigError(
                    f"outputs names {len(outputs)} fields but {self.function} returns {len(self.output_types)}",
                    hint="give one name per return value",
                )
            fields = list(outputs)
        elif len(self.output_types) == 1:
            fields = [names[0] or "value"]
        else:
            fields = [n or f"out{i}" for i, n in enumerate(names)]
        if len(set(fields)) != len(fields) or not all(_FIELD.match(f) for f in fields):
            raise ConfigError(
                f"eth_call oracle {name!r}: output names {fields} are not distinct identifiers",
                hint="name the outputs with outputs=[...]",
            )
        self.fields = fields
        if isinstance(decimals, int):
            if len(fields) != 1:
                raise ConfigError("decimals=<int> needs a single output", hint="pass decimals={field: n}")
            decimals = {fields[0]: decimals}
        self.decimals = dict(decimals or {})
        for field, d in self.decimals.items():
            if field not in fields:
                raise ConfigError(
                    f"decimals names {field!r}, not an output", hint=f"outputs are {', '.join(fields)}"
                )
            if (
                not self.output_types[fields.index(field)].startswith(("uint", "int"))
                or "[" in self.output_types[fields.index(field)]
            ):
                raise ConfigError(
                    f"decimals given for {field!r}, which is not an integer",
                    hint="scale integer outputs only",
                )
            if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 77:
                raise ConfigError(f"decimals of {field!r} is {d!r}", hint="use 0..77")
        self.selector = keccak(text=f"{self.function}({','.join(self.input_types)})")[:4]

    @property
    def name(self) -> str:
        return self._name

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(f"{self._name}.{f}" for f in self.fields)

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        args = [self._resolve(ctx, a) for a in self.args]
        what = f"{self.function}({', '.join(str(a) for a in args)})"
        try:
            data = self.selector + abi_encode(self.input_types, args)
        except EncodingError as exc:
            raise ConfigError(f"cannot encode {what}: {exc}", hint="fix the oracle's args") from None
        raw = call_at(
            lambda: ctx.web3.eth.call(
                {"to": self.address, "data": data}, block_identifier=ctx.block_identifier
            ),
            oracle=self._name,
            block_number=ctx.block_number,
            address=self.address,
            function=what,
        )
        if not raw:
            raise OracleCallError(
                oracle=self._name,
                block_number=ctx.block_number,
                address=self.address,
                function=what,
                reason="the call returned no data",
                hint="the address has no contract at that block, or the contract has no such function",
            )
        try:
            values = abi_decode(self.output_types, bytes(raw))
        except (DecodingError, OverflowError, ValueError) as exc:
            raise OracleCallError(
                oracle=self._name,
                block_number=ctx.block_number,
                address=self.address,
                function=what,
                reason=f"the return data does not decode as ({', '.join(self.output_types)}): {exc}",
                hint="check the signature's return types against the contract",
            ) from None
        source = f"eth_call:{self.address}.{self.function}"
        readings = []
        for field, typ, value in zip(self.fields, self.output_types, values, strict=False):
            meta: dict[str, Any] = {"signature": self.signature}
            plain = _plain(typ, value)
            if field in self.decimals:
                meta.update(raw=plain, decimals=self.decimals[field])
                plain = float(Fraction(int(value), 10 ** self.decimals[field]))
            readings.append(OracleReading(f"{self._name}.{field}", plain, source, ctx.block_number, meta))
        return readings

    def _resolve(self, ctx: ReadContext, value: Any) -> Any:
        if not isinstance(value, str) or not value.startswith("$"):
            return value
        return {
            "$holder": ctx.holder,
            "$token_id": ctx.token_id,
            "$collection": ctx.collection,
            "$block_number": ctx.block_number,
            "$block_timestamp": ctx.block_timestamp,
        }[value]

    @staticmethod
    def _check_encodable(typ: str, value: Any) -> None:
        try:
            abi_encode([typ], [value])
        except (EncodingError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(
                f"argument {value!r} is not a valid {typ}: {exc}", hint=f"pass a {typ} value"
            ) from None


def _plain(typ: str, value: Any) -> Any:
    """ABI-decoded value -> plain JSON."""
    if isinstance(value, (list, tuple)):
        inner = typ
        if typ.endswith("]"):
            inner = typ[: typ.rindex("[")]
            return [_plain(inner, v) for v in value]
        if typ.startswith("("):
            parts = split_params(typ[1:-1])
            return [_plain(t, v) for t, v in zip(parts, value, strict=False)]
        return [_plain(inner, v) for v in value]
    if typ == "address":
        return Web3.to_checksum_address(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value
