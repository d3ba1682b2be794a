"""Content identifiers (CIDv0 and CIDv1), multihash, varint, base32 and base58btc, hand-written.

A CID is ``<version><codec><multihash>``; CIDv0 is the bare sha2-256 multihash of a dag-pb block, written in
base58btc (``Qm...``). Strings of CIDv1 are multibase base32 (``b...``) as Kubo prints them.

Written here rather than taken from ``multiformats`` or ``py-cid``: both give the same CIDs, but are 2-60x slower
on the paths that make, print and read CIDs by the thousand (``python -m bench cid`` measures them side by side).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache
from typing import Final

from agent.ipfs.errors import InvalidCIDError, UnsupportedCodecError

__all__ = [
    "CID",
    "DAG_CBOR",
    "DAG_PB",
    "IDENTITY",
    "RAW",
    "SHA2_256",
    "b58decode",
    "b58encode",
    "dag_pb_cid",
    "decode_varint",
    "encode_varint",
    "hash_matches",
    "raw_cid",
    "sha256_multihash",
]

RAW: Final = 0x55
DAG_PB: Final = 0x70
DAG_CBOR: Final = 0x71
SHA2_256: Final = 0x12
IDENTITY: Final = 0x00

_CODEC_NAMES: Final = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor", 0x0129: "dag-json"}
_MAX_VARINT_BYTES: Final = 9  # multiformats unsigned-varint: at most 63 bits
_B58_ALPHABET: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}


# -- varint (unsigned LEB128) --


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf use."""
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int = 0, *, strict: bool = True) -> tuple[int, int]:
    """Read one unsigned varint at ``pos``; returns ``(value, next_pos)``.

    Args:
        data: the buffer.
        pos: where the varint starts.
        strict: refuse non-minimal encodings and more than 9 bytes (multiformats rules); protobuf sets False.

    Raises:
        ValueError: truncated, too long, or (strict) not minimal.
    """
    value = 0
    shift = 0
    start = pos
    end = len(data)
    limit = _MAX_VARINT_BYTES if strict else 10
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if strict and byte == 0 and pos - start > 1:
                raise ValueError("varint is not minimally encoded")
            return value, pos
        shift += 7
        if pos - start >= limit:
            raise ValueError(f"varint longer than {limit} bytes")


# -- base58btc --


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (leading zero bytes become '1')."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = bytearray()
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    out.extend(b"1" * zeros)
    out.reverse()
    return out.decode("ascii")


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`. Raises ``ValueError`` on a character outside the alphabet."""
    raw = text.encode("ascii", "replace")
    num = 0
    for ch in raw:
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"{chr(ch)!r} is not a base58btc character") from None
    zeros = len(raw) - len(raw.lstrip(b"1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    upper = text.upper()
    if not upper.isascii() or not upper.isalnum():
        raise ValueError("not base32 (RFC 4648 letters a-z and digits 2-7)")
    return base64.b32decode(upper + "=" * (-len(upper) % 8))


# -- multihash --


def sha256_multihash(digest: bytes) -> bytes:
    """The multihash of a sha2-256 ``digest``."""
    return b"\x12\x20" + digest


def _split_multihash(mh: bytes | memoryview, pos: int = 0) -> tuple[int, int, int]:
    """Parse a multihash at ``pos``; returns ``(code, digest_start, end)``. Raises ``ValueError``."""
    code, pos = decode_varint(mh, pos)
    length, pos = decode_varint(mh, pos)
    end = pos + length
    if end > len(mh):
        raise ValueError(f"multihash digest is truncated ({len(mh) - pos} of {length} bytes)")
    if code == SHA2_256 and length != 32:
        raise ValueError(f"a sha2-256 digest is 32 bytes, this one says {length}")
    return code, pos, end


# -- CID --


class CID:
    """An immutable, hashable CID.

    ``str(cid)`` is base32 (``b...``) for CIDv1 and base58btc (``Qm...``) for CIDv0. Two CIDs are equal when
    version, codec and multihash are; a CIDv0 and the CIDv1 of the same node are different CIDs for the same
    block (see :meth:`to_v1`).
    """

    __slots__ = ("_bytes", "_hash", "_str", "codec", "multihash", "version")

    version: int
    codec: int
    multihash: bytes
    _bytes: bytes
    _str: str | None
    _hash: int

    def __init__(self, version: int, codec: int, multihash: bytes) -> None:
        """Build from parts; validated. Prefer :meth:`parse`, :func:`raw_cid` or :meth:`v1`."""
        if version == 0:
            if codec != DAG_PB:
                raise InvalidCIDError(multihash, f"CIDv0 is always dag-pb, not codec {codec:#x}")
            if len(multihash) != 34 or multihash[:2] != b"\x12\x20":
                raise InvalidCIDError(multihash, "CIDv0 must be a 34-byte sha2-256 multihash")
        elif version == 1:
            if codec < 0:
                raise InvalidCIDError(codec, "codec must be non-negative")
        else:
            raise InvalidCIDError(version, f"CID version {version} does not exist (only 0 and 1)")
        multihash = bytes(multihash)
        try:
            _, _, end = _split_multihash(multihash)
        except ValueError as exc:
            raise InvalidCIDError(multihash, f"bad multihash: {exc}") from None
        if end != len(multihash):
            raise InvalidCIDError(multihash, f"{len(multihash) - end} unexpected bytes after the multihash")
        set_ = object.__setattr__
        set_(self, "version", version)
        set_(self, "codec", codec)
        set_(self, "multihash", multihash)
        set_(
            self, "_bytes", multihash if version == 0 else encode_varint(1) + encode_varint(codec) + multihash
        )
        set_(self, "_str", None)
        set_(self, "_hash", hash((version, codec, multihash)))

    # -- construction --

    @classmethod
    def v1(cls, codec: int, multihash: bytes) -> CID:
        """A CIDv1 with ``codec`` and ``multihash``."""
        return cls(1, codec, multihash)

    @classmethod
    def v0(cls, multihash: bytes) -> CID:
        """A CIDv0 (dag-pb, sha2-256)."""
        return cls(0, DAG_PB, multihash)

    @classmethod
    def parse(cls, value: str | bytes | bytearray | memoryview | CID) -> CID:
        """Read a CID from its string (``Qm...``, ``b...``, ``B...``, ``z...``, ``f...``) or binary form.

        Raises:
            InvalidCIDError: the value is not a CID (the message says why).
        """
        if isinstance(value, CID):
            return value
        if isinstance(value, str):
            return _parse_str_cached(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls._parse_bytes(bytes(value), value)
        raise InvalidCIDError(value, f"expected str or bytes, got {type(value).__name__}")

    @classmethod
    def _parse_str(cls, text: str) -> CID:
        original = text
        text = text.strip()
        if not text:
            raise InvalidCIDError(original, "empty string")
        if text.startswith("/ipfs/"):
            raise InvalidCIDError(
                original,
                "this is a path, not a CID",
                hint="resolve '/ipfs/<cid>/...' paths with resolve(); a CID alone is 'bafy...' or 'Qm...'",
            )
        if len(text) == 46 and text.startswith("Qm"):
            try:
                mh = b58decode(text)
            except ValueError as exc:
                raise InvalidCIDError(original, f"not base58btc: {exc}") from None
            if len(mh) != 34 or mh[:2] != b"\x12\x20":
                raise InvalidCIDError(original, "a 'Qm...' CIDv0 must decode to a 34-byte sha2-256 multihash")
            return cls(0, DAG_PB, mh)
        prefix, body = text[0], text[1:]
        if not body:
            raise InvalidCIDError(original, "nothing after the multibase prefix")
        try:
            if prefix in "bB":
                if prefix == "b" and body != body.lower() or prefix == "B" and body != body.upper():
                    raise ValueError("mixed case in base32")
                raw = _b32decode(body)
            elif prefix == "z":
                raw = b58decode(body)
            elif prefix in "fF":
                raw = binascii.unhexlify(body)
            else:
                raise InvalidCIDError(
                    original,
                    f"unsupported multibase prefix {prefix!r}",
                    hint="use base32 ('b...'), base58btc ('z...' or a 'Qm...' CIDv0) or base16 ('f...')",
                )
        except (ValueError, binascii.Error) as exc:
            if isinstance(exc, InvalidCIDError):
                raise
            raise InvalidCIDError(original, f"bad multibase encoding ({prefix!r}): {exc}") from None
        if raw[:1] == b"\x12":
            raise InvalidCIDError(original, "a CIDv0 must be written in base58btc without a multibase prefix")
        return cls._parse_bytes(raw, original)

    @classmethod
    def _parse_bytes(cls, raw: bytes, original: object) -> CID:
        if not raw:
            raise InvalidCIDError(original, "empty bytes")
        if len(raw) == 34 and raw[:2] == b"\x12\x20":
            return cls(0, DAG_PB, raw)
        try:
            cid, end = cls._read_v1(raw, 0)
        except ValueError as exc:
            raise InvalidCIDError(original, str(exc)) from None
        if end != len(raw):
            raise InvalidCIDError(original, f"{len(raw) - end} unexpected bytes after the CID")
        return cid

    @classmethod
    def read_prefix(cls, data: bytes | memoryview, pos: int = 0) -> tuple[CID, int]:
        """Read the CID that starts at ``data[pos]`` (CAR sections, dag-pb); returns ``(cid, next_pos)``.

        Raises:
            InvalidCIDError: no valid CID there.
        """
        try:
            if data[pos : pos + 2] == b"\x12\x20":
                end = pos + 34
                if end > len(data):
                    raise ValueError("truncated CIDv0")
                return cls(0, DAG_PB, bytes(data[pos:end])), end
            return cls._read_v1(data, pos)
        except ValueError as exc:
            raise InvalidCIDError(bytes(data[pos : pos + 40]), str(exc)) from None

    @classmethod
    def _read_v1(cls, data: bytes | memoryview, pos: int) -> tuple[CID, int]:
        version, pos = decode_varint(data, pos)
        if version == 0:
            raise ValueError("CIDv0 cannot carry an explicit version byte")
        if version != 1:
            raise ValueError(f"CID version {version} does not exist (only 0 and 1)")
        codec, pos = decode_varint(data, pos)
        _, _, end = _split_multihash(data, pos)
        return cls(1, codec, bytes(data[pos:end])), end

    # -- views --

    @property
    def hash_code(self) -> int:
        """The multihash function code (0x12 for sha2-256)."""
        return decode_varint(self.multihash)[0]

    @property
    def digest(self) -> bytes:
        """The hash digest (the sha256 digest for every CID this project makes)."""
        _, start, end = _split_multihash(self.multihash)
        return self.multihash[start:end]

    @property
    def codec_name(self) -> str:
        """``"raw"``, ``"dag-pb"``..., or the hex code for codecs without a name here."""
        return _CODEC_NAMES.get(self.codec, f"{self.codec:#x}")

    def to_bytes(self) -> bytes:
        """The binary CID (for CIDv0, the bare multihash)."""
        return self._bytes

    def to_v1(self) -> CID:
        """The CIDv1 naming the same block."""
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def to_v0(self) -> CID:
        """The CIDv0 naming the same block (dag-pb with sha2-256 only).

        Raises:
            InvalidCIDError: the CID cannot be written as CIDv0.
        """
        if self.version == 0:
            return self
        return CID(0, self.codec, self.multihash)

    def __str__(self) -> str:
        text = self._str
        if text is None:
            text = b58encode(self.multihash) if self.version == 0 else "b" + _b32encode(self._bytes)
            object.__setattr__(self, "_str", text)
        return text

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self._bytes == other._bytes and self.version == other.version

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: CID) -> bool:
        return self._bytes < other._bytes

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CID is immutable")

    def __reduce__(self) -> tuple[object, ...]:
        return (CID, (self.version, self.codec, self.multihash))


@lru_cache(maxsize=8192)
def _parse_str_cached(text: str) -> CID:
    """CIDs are immutable, so parsing the same string twice can return the same object."""
    return CID._parse_str(text)


# -- helpers --


def raw_cid(data: bytes | bytearray | memoryview) -> CID:
    """The CIDv1 (raw codec, sha2-256) of ``data`` as one block: its digest is ``sha256(data)``."""
    return CID(1, RAW, sha256_multihash(hashlib.sha256(data).digest()))


def dag_pb_cid(block: bytes | bytearray | memoryview, version: int = 1) -> CID:
    """The CID (dag-pb, sha2-256) of an encoded dag-pb ``block``."""
    return CID(version, DAG_PB, sha256_multihash(hashlib.sha256(block).digest()))


def hash_matches(cid: CID, data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` hashes to ``cid``'s multihash.

    Raises:
        UnsupportedCodecError: the multihash function is neither sha2-256 nor identity.
    """
    code = cid.hash_code
    if code == SHA2_256:
        return hashlib.sha256(data).digest() == cid.digest
    if code == IDENTITY:
        return bytes(data) == cid.digest
    raise UnsupportedCodecError(cid, f"multihash function {code:#x}")
