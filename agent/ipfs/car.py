"""CAR v1 (Content Addressable aRchive), as ``ipfs dag export`` writes and ``ipfs dag import`` reads.

Layout: ``varint(len(header)) ‖ header`` then, per block, ``varint(len(cid) + len(data)) ‖ cid ‖ data``. The
header is dag-cbor ``{"roots": [cid, ...], "version": 1}``; the tiny CBOR needed is written and read by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO, Final

from agent.ipfs.cid import CID, SHA2_256, encode_varint, hash_matches
from agent.ipfs.errors import CarFormatError, CorruptBlockError, InvalidCIDError, UnsupportedCodecError

__all__ = [
    "MAX_HEADER",
    "MAX_SECTION",
    "CarReader",
    "car_chunks",
    "car_length",
    "decode_header",
    "encode_header",
    "write_car",
]

MAX_HEADER: Final = 8 << 20
MAX_SECTION: Final = 8 << 20  # go-car's MaxAllowedSectionSize
CARV2_PRAGMA: Final = bytes.fromhex("0aa16776657273696f6e02")
_CID_TAG: Final = 42


# -- dag-cbor, the little that a header needs --


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes(((major << 5) | value,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes(((major << 5) | info,)) + value.to_bytes(width, "big")
    raise ValueError("CBOR argument too large")


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def encode_header(roots: Sequence[CID]) -> bytes:
    """The dag-cbor header (map keys in dag-cbor order: ``roots`` before ``version``)."""
    out = _cbor_head(5, 2) + _cbor_text("roots") + _cbor_head(4, len(roots))
    for root in roots:
        link = b"\x00" + root.to_bytes()
        out += _cbor_head(6, _CID_TAG) + _cbor_head(2, len(link)) + link
    return out + _cbor_text("version") + _cbor_head(0, 1)


class _Cbor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("CBOR item runs past the end of the header")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def item(self, depth: int = 0) -> object:
        if depth > 16:
            raise ValueError("CBOR nested too deeply")
        first = self._take(1)[0]
        major, info = first >> 5, first & 31
        if info < 24:
            arg = info
        elif info <= 27:
            arg = int.from_bytes(self._take(1 << (info - 24)), "big")
        else:
            raise ValueError("indefinite-length CBOR is not dag-cbor")
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self._take(arg)
        if major == 3:
            return self._take(arg).decode("utf-8")
        if major == 4:
            return [self.item(depth + 1) for _ in range(arg)]
        if major == 5:
            out: dict[object, object] = {}
            for _ in range(arg):
                key = self.item(depth + 1)
                if not isinstance(key, str):
                    raise ValueError("dag-cbor map keys are strings")  # noqa: TRY004 - a malformed header
                out[key] = self.item(depth + 1)
            return out
        if major == 6:
            value = self.item(depth + 1)
            if arg != _CID_TAG:
                raise ValueError(f"unexpected CBOR tag {arg}")
            if not isinstance(value, bytes) or value[:1] != b"\x00":
                raise ValueError("a CID link (tag 42) must be bytes starting with 0x00")
            return CID.parse(value[1:])
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        raise ValueError(f"unsupported CBOR simple value {info}")


def decode_header(data: bytes) -> list[CID]:
    """The roots of a CARv1 header.

    Raises:
        CarFormatError: not a CARv1 header.
    """
    if data.startswith(CARV2_PRAGMA[1:]):
        raise CarFormatError(
            "this is a CARv2 file; only CARv1 is read here",
            offset=0,
            hint="export it as CARv1 (`ipfs dag export` writes CARv1; `car convert` turns v2 into v1)",
        )
    try:
        reader = _Cbor(data)
        header = reader.item()
        if reader.pos != len(data):
            raise ValueError(f"{len(data) - reader.pos} stray bytes after the header")
    except (ValueError, InvalidCIDError, UnicodeDecodeError) as exc:
        raise CarFormatError(f"unreadable header: {getattr(exc, 'message', exc)}", offset=0) from None
    if not isinstance(header, dict):
        raise CarFormatError("header is not a map", offset=0)
    version = header.get("version")
    if version != 1:
        raise CarFormatError(f"header version is {version!r}; only CARv1 is read here", offset=0)
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise CarFormatError("header 'roots' is not a list of CIDs", offset=0)
    if not roots:
        raise CarFormatError("header has no roots (empty CAR)", offset=0)
    return list(roots)


# -- writing --


def car_chunks(roots: Sequence[CID], blocks: Iterable[tuple[CID, bytes]]) -> Iterator[bytes]:
    """A CARv1 as a stream of byte strings (the header, then a prefix and the data of each block), lazily.

    A CARv1 header carries no length or count, so a CAR can go out while ``blocks`` is still being walked; the
    caller must give each block once (CARv1 readers such as go-car refuse nothing, but Kubo's gateway spec asks
    for no duplicates, and a walk with a seen-set gives exactly that).
    """
    header = encode_header(roots)
    yield encode_varint(len(header)) + header
    for cid, data in blocks:
        raw = cid.to_bytes()
        yield encode_varint(len(raw) + len(data)) + raw
        if data:
            yield data


def car_length(roots: Sequence[CID], blocks: Iterable[tuple[CID, int]]) -> int:
    """The byte length of the CARv1 that :func:`car_chunks` writes for blocks of these ``(cid, size)``."""
    header = encode_header(roots)
    total = len(encode_varint(len(header))) + len(header)
    for cid, size in blocks:
        section = len(cid.to_bytes()) + size
        total += len(encode_varint(section)) + section
    return total


def write_car(out: BinaryIO, roots: Sequence[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CARv1 to ``out``; returns the bytes written."""
    written = 0
    for chunk in car_chunks(roots, blocks):
        out.write(chunk)
        written += len(chunk)
    return written


# -- reading --


def _not_a_car(why: str) -> CarFormatError:
    return CarFormatError(
        f"not a CAR file: {why}",
        offset=0,
        hint="import takes a CARv1 (`chrysalis ipfs export` or `ipfs dag export` writes one); "
        "to store a plain file, use `chrysalis ipfs add`",
    )


class CarReader:
    """Reads a CARv1 from a stream: :attr:`roots` at once, then :meth:`blocks`, each verified against its CID.

    Raises (from the constructor and :meth:`blocks`):
        CarFormatError: malformed or truncated.
        CorruptBlockError: a block does not hash to its CID.
    """

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.offset = 0
        length = self._varint(at_start=True)
        if length is None:
            raise CarFormatError("the file is empty", offset=0)
        if length == 0 or length > MAX_HEADER:
            raise _not_a_car(f"its first bytes give a header length of {length}")
        first = self._src.read(1)  # a CAR header is a dag-cbor map: major type 5
        if first and not 0xA0 <= first[0] <= 0xBF:
            raise _not_a_car("it does not start with a CAR header (a length, then a dag-cbor map)")
        if first:
            self.offset += 1
            self.roots: list[CID] = decode_header(first + self._exact(length - 1, "header"))
        else:
            self.roots = decode_header(self._exact(length, "header"))  # raises: truncated

    def _exact(self, n: int, what: str) -> bytes:
        parts = []
        left = n
        while left:
            piece = self._src.read(left)
            if not piece:
                raise CarFormatError(
                    f"truncated CAR: the {what} needs {n} bytes, only {n - left} remain",
                    offset=self.offset + n - left,
                    hint="the CAR was cut short (interrupted download or upload); send the whole file again",
                )
            parts.append(piece)
            left -= len(piece)
        self.offset += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _varint(self, *, at_start: bool) -> int | None:
        """A varint from the stream; ``None`` at a clean end of stream (only where a section may start)."""
        value = shift = 0
        for count in range(10):
            byte = self._src.read(1)
            if not byte:
                if count == 0 and at_start:
                    return None
                raise CarFormatError("truncated CAR: a length prefix is cut short", offset=self.offset)
            self.offset += 1
            value |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return value
            shift += 7
        raise CarFormatError("length prefix longer than 9 bytes", offset=self.offset)

    def blocks(self) -> Iterator[tuple[CID, bytes]]:
        """``(cid, data)`` for every block, in file order, each verified."""
        while True:
            start = self.offset
            length = self._varint(at_start=True)
            if length is None:
                return
            if length == 0:
                raise CarFormatError("zero-length section", offset=start)
            if length > MAX_SECTION:
                raise CarFormatError(
                    f"section of {length} bytes is over the {MAX_SECTION}-byte limit", offset=start
                )
            section = self._exact(length, "block section")
            try:
                cid, pos = CID.read_prefix(section)
            except InvalidCIDError as exc:
                raise CarFormatError(
                    f"section does not start with a CID: {exc.reason}", offset=start
                ) from None
            data = section[pos:]
            try:
                ok = (
                    hashlib.sha256(data).digest() == cid.digest
                    if cid.hash_code == SHA2_256
                    else hash_matches(cid, data)
                )
            except UnsupportedCodecError as exc:
                raise CarFormatError(f"block {cid}: {exc.what}", offset=start) from None
            if not ok:
                raise CorruptBlockError(cid, None, detail=f"in the CAR at byte {start}")
            yield cid, data
