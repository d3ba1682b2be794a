"""Reference CIDs for the IPFS tests: Kubo's CIDs for reproducible inputs (``data/unixfs-cids.json``, made with
``ipfs add`` at Kubo's defaults and cross-checked against an independent IPFS implementation) and Kubo's own
sharding test vectors."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

VECTORS_FILE = Path(__file__).resolve().parent / "data" / "unixfs-cids.json"


@dataclass(frozen=True)
class Vector:
    """One input and the CIDs ``ipfs add`` gives for it (``None`` where the file has none)."""

    name: str
    data: bytes
    cid_v0: str | None
    cid_v1: str | None
    cid_v1_dagpb_leaves: str | None


def load_vectors() -> list[Vector]:
    """The vectors in ``tests/ipfs/data/unixfs-cids.json`` (its ``about`` says how they were made)."""
    out = []
    for raw in json.loads(VECTORS_FILE.read_text())["vectors"]:
        if "literal" in raw:
            data = raw["literal"].encode("utf-8")
        else:
            data = random.Random(raw["seed"]).randbytes(raw["size"])
        out.append(
            Vector(raw["name"], data, raw.get("cid_v0"), raw.get("cid_v1"), raw.get("cid_v1_dagpb_leaves"))
        )
    return out


# Kubo's sharness test test/sharness/t0260-sharding.sh (ipfs/kubo): `ipfs add -r` of directories of small files.
# "testdata": 2000 files named file1..file2000, file i holding f"{i}\n".
SHARNESS_UNSHARDED_V0 = "QmavrTrQG4VhoJmantURAYuw3bowq3E2WcvP36NRQDAC1N"  # sharding forced off
SHARNESS_SHARDED_V0 = "QmSCJD1KYLhVVHqBK3YyXuoEqHt7vggyJhzoFYbT8v1XYL"  # sharding threshold 1B
SHARNESS_SHARDED_V1 = "bafybeibiemewfzzdyhq2l74wrd6qj2oz42usjlktgnlqv4yfawgouaqn4u"  # same, --cid-version=1
SHARNESS_SHARDED_V1_B58 = "zdj7WY8aNcxF49q1ZpFXfchNmbswnUxiVDVjmrHb53xRM8W4C"  # the same CID in an older test
SHARNESS_FILE100_V0 = "QmZ3RfWk1u5LEGYLHA633B5TNJy3Du27K6Fny9wcxpowGS"  # `ipfs resolve $SHARDED/file100`
# "big_dir": 5960 files named file000001..file005960 ("%06d"), file i holding f"{i}\n"; default threshold.
SHARNESS_BIG_DIR_V0 = "QmWfjnRWRvdvYezQWnfbvrvY7JjrpevsE9cato1x76UqGr"  # auto-sharded
SHARNESS_BIG_DIR_MINUS_5_V0 = "QmbVxi5zDdzytrjdufUejM92JsWj8wGVmukk6tiPce3p1m"  # file000001..5 removed: basic
# Well-known empty directory CIDs (`ipfs object new unixfs-dir`).
EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
