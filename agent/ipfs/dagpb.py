"""dag-pb (PBNode/PBLink) and the UnixFS ``Data`` message, hand-encoded byte for byte as Kubo writes them.

Encoding follows go-codec-dagpb: Links (field 2) come before Data (field 1); every link carries Hash, Name (even
when empty) and Tsize; links are sorted by name (stable), as go-merkledag does before encoding. UnixFS ``Data``
fields are written in field-number order and only when set (proto2 optional), ``blocksizes`` unpacked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from agent.ipfs.cid import CID, decode_varint, encode_varint
from agent.ipfs.errors import InvalidBlockError, InvalidCIDError

__all__ = [
    "HAMT_FANOUT",
    "HAMT_HASH_MURMUR3",
    "DataType",
    "PBLink",
    "PBNode",
    "UnixFSData",
    "decode_node",
    "decode_unixfs",
    "encode_node",
    "encode_unixfs",
    "file_leaf_parts",
]

HAMT_HASH_MURMUR3: Final = 0x22
HAMT_FANOUT: Final = 256

_VARINT, _LEN = 0, 2


class DataType(IntEnum):
    """UnixFS node types (unixfs.proto ``Data.DataType``)."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    """A dag-pb link: target CID, name (``""`` for file chunks) and Tsize (cumulative size of the target DAG)."""

    cid: CID
    name: str = ""
    tsize: int = 0


@dataclass(frozen=True, slots=True)
class PBNode:
    """A dag-pb node: links and opaque data (for UnixFS, an encoded :class:`UnixFSData`)."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The UnixFS ``Data`` protobuf. ``None`` / empty means the optional field is absent."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: bytes | None = None  # kept encoded: we never write it, only carry it

    def file_size(self) -> int:
        """Bytes of file content under this node: own data plus the children's block sizes."""
        if self.filesize is not None:
            return self.filesize
        return len(self.data or b"") + sum(self.blocksizes)


# -- encoding --


def _key(number: int, wire: int) -> bytes:
    return encode_varint((number << 3) | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + encode_varint(len(payload)) + payload


def _encode_link(link: PBLink) -> bytes:
    name = link.name.encode("utf-8")
    body = (
        _len_field(1, link.cid.to_bytes())
        + _len_field(2, name)
        + _key(3, _VARINT)
        + encode_varint(link.tsize)
    )
    return _len_field(2, body)


def encode_node(node: PBNode, *, sort_links: bool = True) -> bytes:
    """Encode ``node`` as Kubo does (links sorted by UTF-8 name, stable; Links before Data)."""
    links: Iterable[PBLink] = node.links
    if sort_links:
        links = sorted(node.links, key=lambda link: link.name.encode("utf-8"))
    out = b"".join(_encode_link(link) for link in links)
    if node.data is not None:
        out += _len_field(1, node.data)
    return out


def encode_unixfs(data: UnixFSData) -> bytes:
    """Encode the UnixFS ``Data`` message (fields in number order, absent fields omitted)."""
    out = _key(1, _VARINT) + encode_varint(int(data.type))
    if data.data is not None:
        out += _len_field(2, data.data)
    if data.filesize is not None:
        out += _key(3, _VARINT) + encode_varint(data.filesize)
    for size in data.blocksizes:
        out += _key(4, _VARINT) + encode_varint(size)
    if data.hash_type is not None:
        out += _key(5, _VARINT) + encode_varint(data.hash_type)
    if data.fanout is not None:
        out += _key(6, _VARINT) + encode_varint(data.fanout)
    if data.mode is not None:
        out += _key(7, _VARINT) + encode_varint(data.mode)
    if data.mtime is not None:
        out += _len_field(8, data.mtime)
    return out


def file_leaf_parts(chunk_len: int) -> tuple[bytes, bytes]:
    """The bytes before and after a chunk in a dag-pb UnixFS file leaf (``ipfs add --raw-leaves=false``).

    The block is ``prefix + chunk + suffix``; hashing the three parts avoids copying the chunk. An empty chunk
    has no ``Data`` field at all (Kubo's empty file ``QmbFMke1...``).
    """
    size = encode_varint(chunk_len)
    inner_head = b"\x08\x02" + (b"\x12" + size if chunk_len else b"")
    inner_tail = b"\x18" + size
    inner_len = len(inner_head) + chunk_len + len(inner_tail)
    return b"\x0a" + encode_varint(inner_len) + inner_head, inner_tail


# -- decoding --


def _fields(buf: bytes | memoryview, what: str) -> Iterable[tuple[int, int, int | memoryview]]:
    """Yield ``(field_number, wire_type, value)``; length-delimited values as memoryviews."""
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = decode_varint(view, pos, strict=False)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"{what}: field number 0")
        if wire == _VARINT:
            value, pos = decode_varint(view, pos, strict=False)
            yield number, wire, value
        elif wire == _LEN:
            length, pos = decode_varint(view, pos, strict=False)
            if pos + length > end:
                raise ValueError(f"{what}: field {number} runs past the end")
            yield number, wire, view[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"{what}: field {number} has unsupported wire type {wire}")


def _decode_link(buf: memoryview) -> PBLink:
    cid: CID | None = None
    name = ""
    tsize = 0
    for number, wire, value in _fields(buf, "PBLink"):
        if number == 1 and wire == _LEN:
            assert isinstance(value, memoryview)
            cid = CID.parse(bytes(value))
        elif number == 2 and wire == _LEN:
            assert isinstance(value, memoryview)
            name = bytes(value).decode("utf-8")
        elif number == 3 and wire == _VARINT:
            assert isinstance(value, int)
            tsize = value
        else:
            raise ValueError(f"PBLink: unexpected field {number} (wire type {wire})")
    if cid is None:
        raise ValueError("PBLink without Hash")
    return PBLink(cid, name, tsize)


def decode_node(block: bytes | memoryview, *, cid: CID | None = None) -> PBNode:
    """Decode a dag-pb block.

    Raises:
        InvalidBlockError: the bytes are not dag-pb (names ``cid`` when given).
    """
    links: list[PBLink] = []
    data: bytes | None = None
    try:
        for number, wire, value in _fields(block, "PBNode"):
            if number == 2 and wire == _LEN:
                assert isinstance(value, memoryview)
                links.append(_decode_link(value))
            elif number == 1 and wire == _LEN:
                if data is not None:
                    raise ValueError("PBNode has Data twice")
                assert isinstance(value, memoryview)
                data = bytes(value)
            else:
                raise ValueError(f"PBNode: unexpected field {number} (wire type {wire})")
    except (ValueError, InvalidCIDError, UnicodeDecodeError) as exc:
        raise InvalidBlockError(str(getattr(exc, "message", exc)), cid=cid) from None
    return PBNode(tuple(links), data)


def decode_unixfs(payload: bytes | memoryview | None, *, cid: CID | None = None) -> UnixFSData:
    """Decode the UnixFS ``Data`` message carried in a dag-pb node's data.

    Raises:
        InvalidBlockError: absent or malformed.
    """
    if payload is None:
        raise InvalidBlockError("dag-pb node has no UnixFS Data", cid=cid)
    kind: int | None = None
    data: bytes | None = None
    filesize = hash_type = fanout = mode = None
    mtime: bytes | None = None
    blocksizes: list[int] = []
    try:
        for number, wire, value in _fields(payload, "UnixFS Data"):
            if wire == _VARINT:
                assert isinstance(value, int)
                if number == 1:
                    kind = value
                elif number == 3:
                    filesize = value
                elif number == 4:
                    blocksizes.append(value)
                elif number == 5:
                    hash_type = value
                elif number == 6:
                    fanout = value
                elif number == 7:
                    mode = value
                else:
                    raise ValueError(f"UnixFS Data: unexpected field {number}")
            else:
                assert isinstance(value, memoryview)
                if number == 2:
                    data = bytes(value)
                elif number == 4:  # packed blocksizes (written by some other importers)
                    pos = 0
                    while pos < len(value):
                        size, pos = decode_varint(value, pos, strict=False)
                        blocksizes.append(size)
                elif number == 8:
                    mtime = bytes(value)
                else:
                    raise ValueError(f"UnixFS Data: unexpected field {number}")
    except ValueError as exc:
        raise InvalidBlockError(str(exc), cid=cid) from None
    if kind is None:
        raise InvalidBlockError("UnixFS Data has no Type", cid=cid)
    try:
        dtype = DataType(kind)
    except ValueError:
        raise InvalidBlockError(f"unknown UnixFS type {kind}", cid=cid) from None
    return UnixFSData(dtype, data, filesize, tuple(blocksizes), hash_type, fanout, mode, mtime)


def cumulative_size(block_len: int, links: Sequence[PBLink]) -> int:
    """A dag-pb node's Tsize as its parent records it: its own bytes plus its links' Tsizes."""
    return block_len + sum(link.tsize for link in links)
