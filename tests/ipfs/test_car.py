"""CAR v1 export and import: round trips, the header bytes, and all-or-nothing imports of bad CARs."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from agent.ipfs.car import CarReader, encode_header, write_car
from agent.ipfs.cid import CID, encode_varint
from agent.ipfs.errors import BlockNotFoundError, CarFormatError, CorruptBlockError
from agent.ipfs.repo import IpfsRepo


def _collection(repo: IpfsRepo, cid_version: int = 1) -> CID:
    art = repo.add(random.Random(11).randbytes(700_000), cid_version=cid_version)
    meta = repo.add(b'{"name": "Chrysalis #1"}', cid_version=cid_version)
    images = repo.add_directory({"1.png": art}, cid_version=cid_version)
    return repo.add_directory({"1": meta, "images": images}, cid_version=cid_version)


def _export(repo: IpfsRepo, cid: CID) -> bytes:
    out = io.BytesIO()
    repo.export_car(cid, out)
    return out.getvalue()


def _stored(repo: IpfsRepo) -> list[CID]:
    return list(repo.blockstore.iterate())


@pytest.mark.parametrize("cid_version", [0, 1])
def test_round_trip_between_disk_repos(cid_version: int, tmp_path: Path) -> None:
    source = IpfsRepo(tmp_path / "a")
    root = _collection(source, cid_version)
    car = _export(source, root)
    target = IpfsRepo(tmp_path / "b")
    assert target.import_car(io.BytesIO(car)) == [root]
    assert target.pin_ls() == {root: "recursive"}
    assert b"".join(target.cat(target.resolve(f"{root}/images/1.png"))) == random.Random(11).randbytes(
        700_000
    )
    assert sorted(c.multihash for c in _stored(target)) == sorted(c.multihash for c in _stored(source))
    assert _export(target, root) == car  # deterministic: the same DAG gives the same bytes


def test_header_is_dag_cbor_roots_and_version() -> None:
    root = CID.parse("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354")
    header = encode_header([root])
    assert header == (
        b"\xa2eroots\x81\xd8\x2a\x58\x25\x00" + root.to_bytes() + b"gversion\x01"
    )  # {"roots": [tag 42: 0x00 ‖ cid], "version": 1}
    repo = IpfsRepo(None)
    empty = repo.add_directory({})
    car = _export(repo, empty)
    assert car[: 1 + len(header)] == encode_varint(len(header)) + header
    block = repo.block_get(empty)
    assert car[1 + len(header) :] == encode_varint(36 + len(block)) + empty.to_bytes() + block


def test_each_block_is_written_once_even_when_linked_twice() -> None:
    repo = IpfsRepo(None)
    same = repo.add(b"shared")
    root = repo.add_directory({"a": same, "b": same})
    reader = CarReader(io.BytesIO(_export(repo, root)))
    assert [cid for cid, _ in reader.blocks()] == [root, same.cid]


def _cut_points(car: bytes) -> list[int]:
    return [0, 1, 5, len(car) // 3, len(car) // 2, len(car) - 1000, len(car) - 1]


def test_truncated_cars_are_refused_and_store_nothing(tmp_path: Path) -> None:
    source = IpfsRepo(None)
    car = _export(source, _collection(source))
    target = IpfsRepo(tmp_path / "repo")
    for cut in _cut_points(car):
        with pytest.raises(CarFormatError) as caught:
            target.import_car(io.BytesIO(car[:cut]))
        assert "truncated" in str(caught.value) or "empty" in str(caught.value)
        assert isinstance(caught.value, ValueError)
    assert _stored(target) == [] and target.pin_ls() == {}


def test_a_corrupt_block_in_a_car_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    source = IpfsRepo(None)
    root = _collection(source)
    car = bytearray(_export(source, root))
    car[len(car) // 2] ^= 0x40  # inside the 700 kB file's leaves
    target = IpfsRepo(tmp_path / "repo")
    with pytest.raises(CorruptBlockError, match="in the CAR at byte"):
        target.import_car(io.BytesIO(bytes(car)))
    assert _stored(target) == [] and target.pin_ls() == {}


def test_a_car_missing_blocks_cannot_be_pinned_and_stores_nothing(tmp_path: Path) -> None:
    source = IpfsRepo(None)
    root = _collection(source)
    partial = io.BytesIO()
    write_car(partial, [root], [(root, source.block_get(root))])  # the root alone
    target = IpfsRepo(tmp_path / "repo")
    with pytest.raises(BlockNotFoundError, match="nothing was stored"):
        target.import_car(io.BytesIO(partial.getvalue()))
    assert _stored(target) == []
    assert target.import_car(io.BytesIO(partial.getvalue()), pin=False) == [root]  # unpinned: accepted
    assert target.block_get(root) == source.block_get(root)
    with pytest.raises(BlockNotFoundError):
        target.pin_add(root)


def test_a_car_completing_a_dag_partly_held_here_can_be_pinned(tmp_path: Path) -> None:
    source = IpfsRepo(None)
    art = source.add(random.Random(2).randbytes(600_000))
    root = source.add_directory({"art.bin": art, "b.txt": source.add(b"b")})
    target = IpfsRepo(tmp_path / "repo")
    target.add(random.Random(2).randbytes(600_000))  # already has the file (pinned)
    only_new = io.BytesIO()
    write_car(only_new, [root], [(root, source.block_get(root)), (source.resolve(f"{root}/b.txt"), b"b")])
    assert target.import_car(io.BytesIO(only_new.getvalue())) == [root]
    assert target.is_pinned(root)


@pytest.mark.parametrize(
    ("car", "reason"),
    [
        (b"", "empty"),
        (bytes.fromhex("0aa16776657273696f6e02") + b"\0" * 40, "CARv2"),
        (encode_varint(3) + b"\xa1\x61x", "unreadable header"),
        (encode_varint(10) + b"\xa1gversion\x01", "'roots' is not a list"),
        (encode_varint(17) + b"\xa2eroots\x80gversion\x01", "no roots"),
        (encode_varint(10) + b"\xa1gversion\x03", "version is 3"),
        (encode_varint(0), "header length"),
    ],
)
def test_malformed_headers_say_what_is_wrong(car: bytes, reason: str) -> None:
    with pytest.raises(CarFormatError, match=reason):
        IpfsRepo(None).import_car(io.BytesIO(car))


def test_a_section_that_is_not_a_cid_is_refused() -> None:
    repo = IpfsRepo(None)
    header = encode_header([repo.add(b"x").cid])
    car = encode_varint(len(header)) + header + encode_varint(5) + b"\x05abcd"
    with pytest.raises(CarFormatError, match="does not start with a CID"):
        repo.import_car(io.BytesIO(car), pin=False)
