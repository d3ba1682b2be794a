"""The bad-input catalogue, run as a user would: every wrong setting, file, deployment, key or database gives one
``error:`` line and a ``hint:``, a non-zero exit, no traceback, and changes nothing on disk.

Each :class:`Case` is a row of the catalogue (``id`` = the row's number in the UX review's Part B table; ``a``,
``b``... when one row lists several inputs). Add a row by adding a case: ``files`` are written into the working
directory, ``env`` are ``CHRYSALIS_*`` settings on top of the defaults below, and ``{name}`` in any string is one of
:class:`World`'s paths. One anvil serves the whole module; nothing here loads a model. The HTTP rows (the IPFS
gateway and RPC) are :class:`HttpCase` s against the real servers. Rows that are not one command's bad input, or
that need a generated run or a running agent, name the tests that cover them in a comment where they would be.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import socketserver
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from agent.devnet import free_port
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import rpc_token
from agent.ipfs.server import NodeServer
from agent.ops.accounts import dev_address, dev_key
from agent.rules import DEFAULT_RULES
from agent.store import open_job_store
from tests.ops.conftest import HOLDER
from tests.support.cli import CliResult
from tests.support.devchain import CollectionChain

PASSWORD = "holder-pw"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: str
    env: dict[str, str | None] = field(default_factory=dict)
    """``CHRYSALIS_<KEY>`` values (``None``: unset one of the defaults, e.g. to let the file's value count)."""
    files: dict[str, str] = field(default_factory=dict)
    code: int = 1
    hint: str = ""
    """A phrase the hint must hold (besides being there)."""
    absent: tuple[str, ...] = ()
    """Paths that must still not exist afterwards (a bad input creates no state, not even a directory)."""
    needs: str = ""
    """``"postgres"``: the case needs the local PostgreSQL server (skipped where there is none)."""


@dataclass(frozen=True)
class World:
    """Everything the cases point at (``{name}`` in a case): the chain, deployment records good and bad, keys,
    receipts and databases, made once per module in a directory of their own."""

    url: str
    record: Path
    chain1: Path
    nocode: Path
    badjson: Path
    badshape: Path
    shortaddr: Path
    noabi: Path
    keystore: Path
    nocrypto: Path
    notjson: Path
    wrongpw: Path
    emptypw: Path
    goodpw: Path
    db: Path
    textdb: Path
    randomdb: Path
    damageddb: Path
    receipt_cut: Path
    receipt_v99: Path
    pgport: int
    refused: str
    """URLs of a port nobody listens on, a node that never answers, one that answers a web page, one not HTTP."""
    hang: str
    html: str
    garbage: str
    repo: Path
    """An IPFS repo holding ``hello`` (a file) and ``folder`` (a directory holding it as a.txt)."""
    badrepo: Path
    """A copy of ``repo`` with one byte of ``hello``'s block flipped."""
    hello: str
    folder: str
    cutcar: Path
    corruptcar: Path
    busyport: int
    """A port this module holds bound and listening."""

    def fill(self, text: str) -> str:
        return text.format(**{k: str(v) for k, v in self.__dict__.items()})


def _toml(body: str) -> dict[str, str]:
    return {"chrysalis.toml": body}


STATUS = ("status",)
EVOLVE = ("evolve", "2", "--from", "1")
RUN = ("run", "--no-metrics", "--no-doctor")
USAGE = 2
"""typer's exit code for an option of the wrong type or range (its own box and "Try ... --help", no hint)."""
PG_HOST, PG_PORT = "127.0.0.1", 5432
UNKNOWN_V1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
UNKNOWN_V0 = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u"
FAST_RPC = {"CHAIN__RPC_TIMEOUT_S": "0.3", "DATABASE__URL": "sqlite:///{db}"}
"""A node that never answers is given up on after 0.3 s (the CLI's own timeout setting), not 5 s."""


def _ipfs(*args: str, repo: str = "{repo}") -> tuple[str, ...]:
    return ("ipfs", *args, "--repo", repo)


def _genesis(size: int, *more: str, traits: str = "t.toml") -> tuple[str, ...]:
    return ("genesis", "--seed", "x", "--out", "g", "--size", str(size), "--traits", traits, *more)


def _traits(body: str, unique: str = "") -> dict[str, str]:
    """A trait table for the embedded model (image traits mood and element) with ``body`` after its header."""
    return {"t.toml": f'version = 1\nname = "T"\n{unique}\n{body}'}


MOOD = "[traits.mood]\nweights = { serene = 1, radiant = 1, fierce = 1, gloomy = 1 }\n"
ELEMENT = "[traits.element]\nweights = { fire = 1, water = 1, earth = 1, air = 1 }\n"
RULES = DEFAULT_RULES.read_text()


def _rules(old: str, new: str, count: int = 1) -> dict[str, str]:
    assert RULES.count(old) >= count, old
    return {"rules.toml": RULES.replace(old, new, count)}


CASES = [
    # -- the config file ------------------------------------------------------------------------------------
    Case("1", STATUS, "chrysalis.toml is not valid TOML", files=_toml("[chain\n"), hint="fix the line"),
    Case("2", STATUS, "is not valid TOML", files=_toml("[chain]\nrpc_url = http://127.0.0.1:8545\n")),
    Case("3", STATUS, "chain.rpc_ur: Extra inputs are not permitted", files=_toml('[chain]\nrpc_ur = "x"\n')),
    Case("4", STATUS, "chian: Extra inputs are not permitted", files=_toml("[chian]\nx = 1\n")),
    Case("5", STATUS, "chain.confirmations: Input should be a valid integer",
         files=_toml('[chain]\nconfirmations = "three"\n')),
    Case("6", STATUS, "models.image_steps: Input should be greater than or equal to 1 (got -5)",
         files=_toml("[models]\nimage_steps = -5\n")),
    Case("7", STATUS, "models.image_batch_size: Input should be greater than or equal to 1",
         files=_toml("[models]\nimage_batch_size = 0\nthreads = -1\n")),
    Case("8", STATUS, "Input should be 'embedded' or 'diffusers'",
         files=_toml('[models]\nimage_backend = "difusers"\n')),
    Case("9", STATUS, "submit.max_fee_per_gas_gwei: Input should be greater than 0",
         files=_toml("[submit]\nmax_fee_per_gas_gwei = -1\n")),
    Case("10", STATUS, "submit.fee_bump_percent: Input should be greater than or equal to 12.5",
         files=_toml("[submit]\nbatch_max_count = -10\nfee_bump_percent = 5\n")),
    Case("11", STATUS, "refresh.pause_s: Input should be greater than 0",
         files=_toml("[refresh]\nmax_tokens = -1\nmax_gas_per_day = 0\npause_s = -60\n")),
    Case("12", STATUS, "is not an IANA time zone name", files=_toml('[refresh]\ntimezone = "Mars/Olympus"\n')),
    Case("13", STATUS, "is not a crontab expression",
         files=_toml('[[refresh.policies]]\nname = "x"\ncron = "61 * * * *"\n')),
    Case("14a", STATUS, "needs exactly one of cron", files=_toml('[[refresh.policies]]\nname = "x"\n')),
    Case("14b", STATUS, "refresh policy names must be unique",
         files=_toml('[[refresh.policies]]\nname = "x"\ncron = "0 0 * * *"\n'
                     '[[refresh.policies]]\nname = "x"\ncron = "0 1 * * *"\n')),
    Case("15", STATUS, "ipfs.pinning_services[0].token (p) is a secret",
         files=_toml('[[ipfs.pinning_services]]\nname = "p"\nendpoint = "https://x"\ntoken = "abc"\n'),
         hint="CHRYSALIS_PINNING_P_TOKEN"),
    Case("16", STATUS, "chain.rpc_url must be an http:// or https:// JSON-RPC URL, not 'ftp://127.0.0.1:8545'",
         env={"CHAIN__RPC_URL": None}, files=_toml('[chain]\nrpc_url = "ftp://127.0.0.1:8545"\n')),
    Case("16b", STATUS, "chain.ws_url must be a ws:// or wss:// WebSocket URL, not 'http://127.0.0.1:8545'",
         env={"CHAIN__WS_URL": "http://127.0.0.1:8545"}),
    Case("17a", STATUS, "metrics.port: Input should be less than or equal to 65535",
         files=_toml("[metrics]\nport = 70000\n")),
    Case("17b", STATUS, "log.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
         files=_toml('[log]\nlevel = "VERBOSE"\n')),
    Case("18", STATUS, "models.image_guidance: Input should be greater than or equal to 1",
         files=_toml("[models]\nimage_guidance = 0.0\n")),
    Case("19", STATUS, "unsupported database backend 'mysql'", env={"DATABASE__URL": "mysql://x"}),
    # -- the environment ------------------------------------------------------------------------------------
    Case("20a", STATUS, "models.image_steps: Input should be a valid integer, unable to parse string as an "
         "integer (got 'abc') (from $CHRYSALIS_MODELS__IMAGE_STEPS)",
         env={"MODELS__IMAGE_STEPS": "abc"}, hint="fix or unset the variables above"),
    Case("20b", STATUS, "invalid configuration in the environment: chain.confirmations: Input should be "
         "greater than or equal to 0 (got '-1') (from $CHRYSALIS_CHAIN__CONFIRMATIONS)",
         env={"CHAIN__CONFIRMATIONS": "-1"}),
    Case("20c", STATUS, "invalid configuration in chrysalis.toml and the environment",
         env={"CHAIN__CONFIRMATIONS": "-1"}, files=_toml("[models]\nimage_steps = 0\n")),
    Case("21", STATUS, "environment variable CHRYSALIS_REFRESH__POLICIES is not valid JSON",
         env={"REFRESH__POLICIES": "[{{name: x}}]"}, hint='[{{"name": "daily"'),
    Case("22", STATUS, "config file {record}.missing.toml (from $CHRYSALIS_CONFIG) does not exist",
         env={"CONFIG": "{record}.missing.toml"}, hint="unset it"),
    Case("23", ("-c", "nope.toml", "status"), "config file nope.toml does not exist", hint="chrysalis init"),
    Case("24", STATUS, "chain.rpc_ulr: Extra inputs are not permitted (from $CHRYSALIS_CHAIN__RPC_ULR)",
         env={"CHAIN__RPC_ULR": "http://x"}),
    # -- the node (29-30, a node killed or reset under a running agent, are not one command's bad input: see
    # tests/pipeline/test_chain_reset.py, tests/pipeline/test_faulty_provider.py and tests/ops/test_run_errors.py)
    Case("25a", STATUS, "cannot reach the node at {refused}: connection refused",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{refused}"}, hint="start it"),
    Case("25b", RUN, "RPC {refused} unavailable: eth_chainId failed 1 time(s): cannot connect",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{refused}"}, hint="is the node running"),
    Case("26a", STATUS, "the node at {hang} accepted the connection but did not answer in time",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{hang}"}, hint="stuck or overloaded"),
    Case("26b", EVOLVE, "the node at {hang} accepted the connection but did not answer in time",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{hang}"}, hint="stuck or overloaded"),
    Case("26c", RUN, "RPC {hang} unavailable: eth_chainId failed 1 time(s): timed out",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{hang}"}),
    Case("27a", STATUS, "the node at {html} did not answer JSON-RPC (got HTTP 200 text/html",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{html}"}, hint="must be the node's JSON-RPC endpoint"),
    Case("27b", EVOLVE, "the node at {html} did not answer JSON-RPC (got HTTP 200 text/html",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{html}"}),
    Case("28a", STATUS, "the node at {garbage} did not answer JSON-RPC (got a reply that is not HTTP",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{garbage}"}, hint="must be the node's JSON-RPC endpoint"),
    Case("28b", EVOLVE, "the node at {garbage} did not answer JSON-RPC (got a reply that is not HTTP",
         env={**FAST_RPC, "CHAIN__RPC_URL": "{garbage}"}),
    # -- the deployment record ------------------------------------------------------------------------------
    Case("31", EVOLVE, "no deployment record at {record}.gone", env={"CHAIN__DEPLOYMENT": "{record}.gone"},
         hint="deploy"),
    Case("32", EVOLVE, "is not valid JSON", env={"CHAIN__DEPLOYMENT": "{badjson}"}),
    Case("33", EVOLVE, "deployment record {badshape} is malformed", env={"CHAIN__DEPLOYMENT": "{badshape}"}),
    Case("34a", EVOLVE, "serves chain 31337, but deployment record {chain1} is for chain 1",
         env={"CHAIN__DEPLOYMENT": "{chain1}"}),
    Case("34b", STATUS, "serves chain 31337, but deployment record {chain1} is for chain 1",
         env={"CHAIN__DEPLOYMENT": "{chain1}", "DATABASE__URL": "sqlite:///{db}"}),
    Case("34c", ("run", "--no-metrics", "--no-doctor"), "serves chain 31337, but deployment record",
         env={"CHAIN__DEPLOYMENT": "{chain1}"}),
    Case("35", ("verify", "1"), "serves chain 31337, but deployment record {chain1} is for chain 1",
         env={"CHAIN__DEPLOYMENT": "{chain1}"}, code=3),
    Case("36a", EVOLVE, "no contract at 0x000000000000000000000000000000000000dEaD on chain 31337",
         env={"CHAIN__DEPLOYMENT": "{nocode}"}, hint="the chain was reset"),
    Case("36b", STATUS, "no contract at 0x000000000000000000000000000000000000dEaD",
         env={"CHAIN__DEPLOYMENT": "{nocode}", "DATABASE__URL": "sqlite:///{db}"}),
    Case("37", ("run", "--no-metrics", "--no-doctor"), "no contract at 0x000000000000000000000000000000000000dEaD",
         env={"CHAIN__DEPLOYMENT": "{nocode}"}, hint="the chain was reset"),
    Case("38", ("verify", "1"), "no contract at 0x000000000000000000000000000000000000dEaD",
         env={"CHAIN__DEPLOYMENT": "{nocode}"}, code=3),
    Case("39a", EVOLVE, "is malformed", env={"CHAIN__DEPLOYMENT": "{shortaddr}"}),
    Case("39b", EVOLVE, "ABI file", env={"CHAIN__DEPLOYMENT": "{noabi}"}),
    # -- keystores ------------------------------------------------------------------------------------------
    Case("40", ("evolve", "2", "--from", "{keystore}", "--password-file", "{wrongpw}"),
         "cannot decrypt keystore {keystore}: wrong password (from password file {wrongpw})",
         hint="--password-file"),
    Case("41a", ("evolve", "2", "--from", "{keystore}", "--password-file", "{emptypw}"),
         "cannot decrypt keystore {keystore}: no password given (password file {emptypw} is empty)",
         hint="--password-file"),
    Case("41b", ("evolve", "2", "--from", "{keystore}"),
         "no password for keystore {keystore}: $CHRYSALIS_KEYSTORE_PASSWORD is not set", hint="--password-file"),
    Case("41c", ("evolve", "2", "--from", "{keystore}"), "no password given ($CHRYSALIS_KEYSTORE_PASSWORD is empty)",
         env={"KEYSTORE_PASSWORD": ""}),
    Case("42a", ("evolve", "2", "--from", "{nocrypto}", "--password-file", "{goodpw}"),
         "is malformed (no 'crypto' section)", hint="re-export"),
    Case("42b", ("evolve", "2", "--from", "{notjson}", "--password-file", "{goodpw}"), "is malformed (not JSON"),
    Case("43", RUN, "cannot decrypt keystore {keystore}: wrong password (from password file {wrongpw})",
         env={"SIGNER__KEYSTORE": "{keystore}", "SIGNER__PASSWORD_FILE": "{wrongpw}",  # an agent that ran before
              "DATABASE__URL": "sqlite:///{db}", "IPFS__REPO": "{repo}"}, hint="password"),
    # -- evolve and fuse against the chain (52, --wait on a job that fails: tests/ops/test_evolve.py::
    # test_evolve_wait_stops_as_soon_as_the_agents_job_fails, as it needs a running agent) --------------------
    Case("44a", ("evolve", "999", "--from", "1"), "token 999 does not exist: it was never minted (ids 1..6 exist)",
         hint="check the token id"),
    Case("44b", ("evolve", "0", "--from", "1"), "token 0 does not exist: it was never minted"),
    Case("45", ("evolve", "4", "--from", "1"), "token 4 does not exist: it was burnt"),
    Case("46", ("evolve", "5", "--from", "1"), "does not hold token 5 (its owner is", hint="--from"),
    Case("47", ("evolve", "3", "--from", "1"), "already has a pending evolution request"),
    Case("48", ("fuse", "2", "2", "--from", "1"), "LivingCollectionSelfFuse(tokenId=2)",
         hint="two different tokens"),
    Case("49", ("evolve", "5", "--from", "1", "--no-precheck"),
         "requestEvolution would revert (nothing was sent): LivingCollectionNotHolder(tokenId=5"),
    Case("50", ("evolve", "2", "--from", "1", "--no-precheck", "--no-simulate"),
         "sending without simulating first needs a gas limit", hint="--gas"),
    Case("51", ("evolve", "2", "--from", "ape:nobody-has-this-alias"), "no Ape account 'nobody-has-this-alias'",
         hint="ape accounts generate"),
    # -- the IPFS node's commands ---------------------------------------------------------------------------
    Case("53a", _ipfs("cat", "notacid"), "'notacid' is not a valid CID: unsupported multibase prefix 'n'",
         hint="bafy"),
    Case("53b", _ipfs("cat", ""), "'' is not a valid CID"),
    Case("54a", _ipfs("cat", UNKNOWN_V1), f"block {UNKNOWN_V1} is not in the repo", hint="chrysalis ipfs add"),
    Case("54b", _ipfs("cat", UNKNOWN_V0), f"block {UNKNOWN_V0} is not in the repo"),
    Case("55", _ipfs("cat", "{folder}/nope.txt"), "no link named 'nope.txt'", hint="chrysalis ipfs ls {folder}"),
    Case("56", _ipfs("cat", "{folder}/../a.txt"), "'..' segments are not allowed"),
    Case("57", _ipfs("cat", "{hello}", repo="{badrepo}"), "is corrupt"),
    Case("59", _ipfs("export", "{folder}", "-o", "x.car", repo="{badrepo}"), "is corrupt",
         absent=("x.car", "x.car.partial")),
    Case("60a", _ipfs("import", "{cutcar}"), "invalid CAR at byte"),
    Case("60b", _ipfs("import", "empty.car"), "invalid CAR at byte 0: the file is empty",
         files={"empty.car": ""}),
    Case("61", _ipfs("import", "hello.txt"), "not a CAR file", files={"hello.txt": "hello\n"},
         hint="chrysalis ipfs add"),
    Case("62", _ipfs("import", "{corruptcar}"), "is corrupt"),
    Case("63", _ipfs("export", "{hello}", "-o", "missing/dir/x.car"), "the directory missing/dir does not exist",
         hint="mkdir -p", absent=("missing",)),
    Case("64", _ipfs("cat", "{hello}", repo="{repo}.typo"), "there is no IPFS repo at {repo}.typo",
         absent=("{repo}.typo",)),
    Case("65a", _ipfs("add", "nope.png"), "nope.png does not exist"),
    Case("65b", _ipfs("add", "hello.txt", "--cid-version", "2"), "Invalid value for '--cid-version'",
         files={"hello.txt": "hello\n"}, code=USAGE),
    Case("65c", _ipfs("cat", "{hello}", "--offset", "-1"), "Invalid value for '--offset'", code=USAGE),
    Case("66a", _ipfs("pin", "add", UNKNOWN_V1), "is not in the repo"),
    Case("66b", _ipfs("pin", "rm", UNKNOWN_V1), f"{UNKNOWN_V1} is not pinned", hint="chrysalis ipfs pin ls"),
    # -- genesis: the trait table and the options, refused before any model loads (78, a rerun on an --out of
    # another size, needs a generated run: tests/genesis/test_resume.py; so does 81, a --reveal-hash that is not
    # the node's: tests/genesis/test_reveal.py::test_a_reveal_hash_is_checked_against_the_node) ----------------
    Case("69", _genesis(4), "traits.mood.weights are all 0", absent=("g",), hint="positive weight",
         files=_traits("[traits.mood]\nweights = { serene = 0, radiant = 0 }\n" + ELEMENT)),
    Case("70a", _genesis(4), "traits.mood.counts.serene is -2", absent=("g",),
         files=_traits("[traits.mood]\ncounts = { serene = -2, radiant = 6 }\n" + ELEMENT)),
    Case("70b", _genesis(4), "traits.mood.counts.serene is 1.5", absent=("g",),
         files=_traits("[traits.mood]\ncounts = { serene = 1.5, radiant = 2.5 }\n" + ELEMENT)),
    Case("70c", _genesis(4), "traits.mood.weights.serene is nan, not a finite number", absent=("g",),
         files=_traits("[traits.mood]\nweights = { serene = nan, radiant = 1 }\n" + ELEMENT)),
    Case("70d", _genesis(4), "traits.mood.weights.serene is inf, not a finite number", absent=("g",),
         files=_traits("[traits.mood]\nweights = { serene = inf, radiant = 1 }\n" + ELEMENT)),
    Case("70e", _genesis(4), "traits.mood.weights.serene is negative (-1)", absent=("g",),
         files=_traits("[traits.mood]\nweights = { serene = -1, radiant = 1 }\n" + ELEMENT)),
    Case("70f", _genesis(4), "traits.mood.weights.serene", absent=("g",),
         files=_traits('[traits.mood]\nweights = { serene = "lots", radiant = 1 }\n' + ELEMENT)),
    Case("71", _genesis(13), "trait 'mood': its counts add up to 12, but the collection has 13 tokens",
         files=_traits("[traits.mood]\ncounts = { serene = 6, radiant = 6 }\n" + ELEMENT), absent=("g",),
         hint="--size 12"),
    Case("72", _genesis(4), "traits.mood.weights.furious is not a value the image model knows for 'mood'",
         files=_traits("[traits.mood]\nweights = { furious = 1, radiant = 1 }\n" + ELEMENT), absent=("g",),
         hint="serene"),
    Case("73", _genesis(20), "--size 20 exceeds the 16 unique combinations of mood (4) x element (4)",
         files=_traits(MOOD + ELEMENT, unique='unique = ["mood", "element"]'), absent=("g",)),
    Case("74", _genesis(16), "mood = 'serene' has 13 tokens, but only 4 unique combinations", absent=("g",),
         files=_traits(MOOD.replace("serene = 1", "serene = 100") + ELEMENT, unique='unique = ["mood", "element"]')),
    Case("75a", _genesis(4), "[traits.mod] is not a trait the image model is conditioned on", absent=("g",),
         files=_traits(MOOD.replace("mood", "mod") + ELEMENT), hint="image = false"),
    Case("75b", _genesis(4), "[traits.hat] is not a trait the image model is conditioned on", absent=("g",),
         files=_traits(MOOD + ELEMENT + "[traits.hat]\nweights = { cap = 1 }\n")),
    Case("75c", _genesis(4), "traits.mood.wieghts is not a key of a trait table", absent=("g",),
         files=_traits(MOOD.replace("weights", "wieghts") + ELEMENT)),
    Case("75d", _genesis(4), "bogus is not a key of a trait table", absent=("g",),
         files=_traits(MOOD + ELEMENT, unique="bogus = 1")),
    Case("75e", _genesis(4), "version is 2", files={"t.toml": f'version = 2\nname = "T"\n{MOOD}{ELEMENT}'},
         absent=("g",), hint="version = 1"),
    Case("75f", _genesis(4), "unique names 'hat', which is not a trait of the table", absent=("g",),
         files=_traits(MOOD + ELEMENT, unique='unique = ["mood", "hat"]')),
    Case("76", _genesis(10), "trait 'charm': 12 values have a positive weight but the collection has only 10",
         files=_traits(MOOD + ELEMENT + "[traits.charm]\nimage = false\nweights = { "
                       + ", ".join(f"{c} = 1" for c in "abcdefghijkl") + " }\n"),
         absent=("g",), hint="raise --size to at least 12"),
    Case("77a", _genesis(0), "Invalid value for '--size'", files=_traits(MOOD + ELEMENT), code=USAGE),
    Case("77b", _genesis(-5), "Invalid value for '--size'", files=_traits(MOOD + ELEMENT), code=USAGE),
    Case("77d", ("genesis", "--sise", "4"), "No such option: --sise", code=USAGE),
    Case("77e", ("genesys",), "No such command 'genesys'", code=USAGE),
    Case("77c", _genesis(4, traits="missing.toml"), "trait table missing.toml does not exist", absent=("g",),
         hint="example_traits.toml"),
    Case("79a", _genesis(4, "--publish"), "--publish needs the reveal block whose hash decides the offset",
         env={"CHAIN__DEPLOYMENT": "{record}.gone"}, files=_traits(MOOD + ELEMENT), absent=("g",),
         hint="--reveal-block"),
    Case("79b", _genesis(4, "--set-base-uri"), "--set-base-uri needs a published genesis",
         files=_traits(MOOD + ELEMENT), absent=("g",), hint="--publish"),
    Case("79c", _genesis(4, "--commit"), "--commit needs the collection's deployment record",
         env={"CHAIN__DEPLOYMENT": "{record}.gone"}, files=_traits(MOOD + ELEMENT), absent=("g",)),
    Case("79d", _genesis(4, "--wait"), "--wait waits for the committed reveal block",
         files=_traits(MOOD + ELEMENT), absent=("g",)),
    Case("79e", _genesis(4, "--publish", "--reveal-block", "99999999"), "reveal block 99999999 is not mined yet",
         env={"CHAIN__DEPLOYMENT": "{record}.gone"}, files=_traits(MOOD + ELEMENT), absent=("g",), hint="wait"),
    Case("79f", _genesis(4, "--publish"), "has no reveal commitment", files=_traits(MOOD + ELEMENT),
         absent=("g",), hint="--commit"),
    Case("80", _genesis(4, "--publish", "--reveal-block", "1", "--reveal-hash", "0xzz"),
         "--reveal-hash '0xzz' is not a block hash", env={"CHAIN__DEPLOYMENT": "{record}.gone"},
         files=_traits(MOOD + ELEMENT), absent=("g",), hint="64 hex digits"),
    # -- verify (83-84, a tampered receipt, need a real inference run to replay:
    # tests/generate/ and tests/studio/test_routes.py::test_verify_replays_a_stage_and_reports_match) ---------
    Case("82a", ("verify", "999"), "token 999 does not exist", code=3),
    Case("82b", ("verify", "4"), "was burnt", code=3),
    Case("82c", ("verify", "2"), "has no metadata yet", code=3),
    # -- receipts (model verify: 3 = could not verify, 1 is kept for a mismatch) ----------------------------
    Case("85a", ("model", "verify", "{receipt_cut}"), "is not JSON", code=3),
    Case("85b", ("model", "verify", "{receipt_v99}"), "not a Chrysalis inference receipt", code=3),
    Case("85c", ("model", "verify", "{record}.receipt.json"), "does not exist", code=3),
    # -- rules ----------------------------------------------------------------------------------------------
    Case("86a", ("rules", "check", "rules.toml"), "reads unknown feature",
         files=_rules('feature = "wallet.tx_count"', 'feature = "wallet.tx_cuont"'), hint="default_rules.toml"),
    Case("86b", RUN, "unknown feature", env={"AGENT__RULES": "rules.toml"},
         files=_rules('feature = "wallet.tx_count"', 'feature = "wallet.tx_cuont"')),
    Case("87a", ("rules", "check", "rules.toml"), "did you mean 'wallet.tx_count'?",
         files=_rules('"wallet.tx_count"', '"wallet.tx_cuont"', count=-1)),
    Case("87b", RUN, "did you mean 'wallet.tx_count'?", env={"AGENT__RULES": "rules.toml"},
         files=_rules('"wallet.tx_count"', '"wallet.tx_cuont"', count=-1)),
    Case("88a", ("rules", "check", "rules.toml"), "change it to one of: fire, water, earth, air",
         files=_rules('value = "water"', 'value = "watr"')),
    Case("88b", ("rules", "check", "rules.toml"), "start band 2 where band 1 ends",
         files=_rules('{ min = 10, max = 100, value = "water" }', '{ min = 20, max = 100, value = "water" }')),
    Case("88c", ("rules", "check", "rules.toml"), "fix the TOML syntax at that line", files={"rules.toml": "[a\n"}),
    Case("88d", ("rules", "check", "nope.toml"), "rules file nope.toml does not exist", hint="default_rules.toml"),
    Case("88e", RUN, "rules file nope.toml does not exist", env={"AGENT__RULES": "nope.toml"}),
    # -- databases ------------------------------------------------------------------------------------------
    Case("89", ("jobs",), "cannot connect to the database at postgresql+psycopg2://postgres@127.0.0.1:{pgport}/x",
         env={"DATABASE__URL": "postgresql+psycopg2://postgres@127.0.0.1:{pgport}/x"}),
    Case("91a", ("jobs",), "cannot connect to the database at postgresql+psycopg2://postgres@127.0.0.1:{pgport}/x",
         env={"DATABASE__URL": "postgresql://postgres@127.0.0.1:{pgport}/x"}),
    Case("91b", ("jobs",), "the PostgreSQL driver 'psycopg' of database.url",
         env={"DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:{pgport}/x"}, hint="psycopg2"),
    Case("90a", ("jobs",), 'database "chrysalis_catalogue_nodb" does not exist', needs="postgres",
         env={"DATABASE__URL": f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/chrysalis_catalogue_nodb"}),
    Case("90b", ("jobs",), 'role "chrysalis_catalogue_nobody" does not exist', needs="postgres",
         env={"DATABASE__URL": f"postgresql+psycopg2://chrysalis_catalogue_nobody@{PG_HOST}:{PG_PORT}/postgres"}),
    # (92, a working PostgreSQL setup: tests/jobs/ with CHRYSALIS_TEST_POSTGRES_URL)
    Case("93", ("run", "--no-doctor"), "cannot serve /metrics", env={"METRICS__PORT": "{busyport}"},
         hint="port"),
    Case("94a", STATUS, "text.db is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///text.db"}, files={"text.db": "hello, not a database\n"},
         hint="has not changed the file"),
    Case("94b", ("jobs",), "random.db is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///random.db"}, files={"random.db": "@randomdb"}),
    Case("94c", ("jobs",), "is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///damaged.db"}, files={"damaged.db": "@damageddb"}),
    Case("94d", ("run", "--no-metrics", "--no-doctor"), "text.db is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///text.db"}, files={"text.db": "hello, not a database\n"}),
    # -- the smaller argument checks under the table ------------------------------------------------------
    Case("tokens-backwards", ("refresh", "--tokens", "5-1"), "the range 5-1 runs backwards", hint="1,2,5-9"),
    Case("tokens-abc", ("refresh", "--tokens", "abc"), "'abc' is not a token id"),
    Case("tokens-0", ("refresh", "--tokens", "0"), "token ids start at 1 (got 0)"),
    Case("tokens-empty", ("refresh", "--tokens", "1,,2"), "an empty item between commas"),
    Case("tokens-negative", ("refresh", "--tokens=-3"), "token selection '-3'"),
    Case("tokens-huge", ("refresh", "--tokens", "1-100000000"), "more than 1,000,000 ids"),
    Case("tokens-999", ("refresh", "--tokens", "999"), "token 999 does not exist", hint="--tokens"),
    Case("aigc-backwards", ("aigc", "record", "--tokens", "5-1"), "the range 5-1 runs backwards", hint="1,2,5-9"),
    Case("aigc-not-agent", ("aigc", "record"), "does not hold AGENT_ROLE on the collection",
         env={"SIGNER__KEYSTORE": "{keystore}", "SIGNER__PASSWORD_FILE": "{goodpw}"}, hint="signer.keystore"),
    Case("aigc-nocode", ("aigc", "record"), "no contract at", env={"CHAIN__DEPLOYMENT": "{nocode}"},
         hint="the chain was reset"),
    Case("jobs-state", ("jobs", "-s", "bogus"), "unknown job state 'bogus'", hint="queued"),
    Case("review-state", ("review", "list", "-s", "bogus"), "unknown state 'bogus'", hint="open"),
    Case("review-limit", ("review", "list", "--limit", "-5"), "Invalid value for '--limit'", code=USAGE),
    Case("retry-999", ("retry", "999"), "999", env={"DATABASE__URL": "sqlite:///{db}"}),
    Case("log-level", ("run", "--log-level", "VERBOSE"), "unknown log level 'VERBOSE'", hint="DEBUG"),
    Case("metrics-port", ("run", "--metrics-port", "-1"), "--metrics-port -1 is not a TCP port", hint="65535"),
    Case("studio-busy", ("studio", "--port", "{busyport}"), "{busyport}", hint="port"),
    Case("ipfs-serve-busy", _ipfs("serve", "--port", "{busyport}"), "{busyport}", hint="port"),
    Case("ipfs-serve-rpc-busy", _ipfs("serve", "--port", "0", "--rpc-port", "{busyport}"), "{busyport}",
         hint="port"),
]  # fmt: skip


class _Node(socketserver.ThreadingTCPServer):
    """A "node" on 127.0.0.1 that never answers (``hang``), answers a web page (``html``) or speaks no HTTP."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _NodeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _NodeHandler(socketserver.BaseRequestHandler):
    server: _Node

    def handle(self) -> None:
        self.request.recv(65536)
        if self.server.mode == "hang":
            self.server.release.wait(30)
        elif self.server.mode == "html":
            page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(page)}\r\n\r\n"
            self.request.sendall(head.encode() + page)
        else:
            self.request.sendall(b"garbage-not-http\r\n")


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, _Node]]:
    servers = {mode: _Node(mode) for mode in ("hang", "html", "garbage")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.release.set()
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def busy() -> Iterator[socket.socket]:
    """A port held bound and listening for the whole module (what a second agent or another server holds)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


HELLO = b"hello, catalogue\n"


@pytest.fixture(scope="module")
def world(
    module_devchain: CollectionChain,
    nodes: dict[str, _Node],
    busy: socket.socket,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    root = tmp_path_factory.mktemp("catalogue")
    # the chain the evolve/fuse rows meet: dev 1 fused 4 into 3 (4 is burnt, 3 has a pending request); dev 2
    # holds 5 and 6; 1 and 2 are dev 1's, free to evolve
    chain = module_devchain
    fee = chain.collection.functions.evolutionFee().call()
    chain.transact(chain.collection.functions.fuse(3, 4), dev_address(HOLDER), fee)
    repo = IpfsRepo(root / "repo")
    hello = repo.add(HELLO).cid
    folder = repo.add_directory({"a.txt": hello})
    rpc_token(root / "repo")  # made by the repo's first `ipfs serve`: a serve on a busy port must keep it
    shutil.copytree(root / "repo", root / "badrepo")
    (block,) = [f for f in (root / "badrepo" / "blocks").rglob("*.data") if f.read_bytes() == HELLO]
    block.write_bytes(HELLO.replace(b"hello", b"jello"))
    car = io.BytesIO()
    repo.export_car(folder, car)
    (root / "cut.car").write_bytes(car.getvalue()[:60])
    (root / "corrupt.car").write_bytes(car.getvalue().replace(HELLO, HELLO.replace(b"hello", b"jello")))
    base = json.loads(module_devchain.record.read_text())
    abi_dir = module_devchain.record.parent

    def record(name: str, change: Callable[[dict[str, Any]], object]) -> Path:
        data = json.loads(json.dumps(base))
        # ABI paths are relative to the record: make them absolute
        for contract in data["contracts"].values():
            contract["abi"] = str(abi_dir / contract["abi"])
        change(data)
        path = root / name
        path.write_text(json.dumps(data))
        return path

    keystore = root / "holder.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(HOLDER), PASSWORD, iterations=2)))
    keystore.chmod(0o600)
    secrets = {"wrong.pw": "not-it\n", "empty.pw": "", "good.pw": PASSWORD + "\n"}
    for name, text in secrets.items():
        (root / name).write_text(text)
        (root / name).chmod(0o600)
    db = root / "agent.db"
    open_job_store(f"sqlite:///{db}").close()
    damaged = root / "damaged.db"
    shutil.copy(db, damaged)
    with damaged.open("r+b") as f:  # keep the 100-byte header, overwrite the schema page
        f.seek(100)
        f.write(b"\xa5" * 3000)
    (root / "text.db").write_text("hello, not a database\n")
    (root / "random.db").write_bytes(bytes(range(256)) * 16)
    (root / "cut.json").write_text('{"schema": "chrysalis.inference-rec')
    (root / "v99.json").write_text(json.dumps({"schema": "chrysalis.inference-receipt/99"}))
    (root / "notjson.json").write_text("{not json")
    (root / "nocrypto.json").write_text(json.dumps({"version": 3}))
    return World(
        url=module_devchain.url,
        record=module_devchain.record,
        chain1=record("chain1.json", lambda d: d.update(chain_id=1)),
        nocode=record("nocode.json", lambda d: d["contracts"]["LivingCollection"].update(
            address="0x000000000000000000000000000000000000dEaD")),
        badjson=_write(root / "bad.json", '{"chain_id": 31337,\n'),
        badshape=_write(root / "shape.json", json.dumps({"chain_id": "x", "contracts": []})),
        shortaddr=record("short.json", lambda d: d["contracts"]["LivingCollection"].update(address="0x1234")),
        noabi=record("noabi.json", lambda d: d["contracts"]["LivingCollection"].update(abi=str(root / "no.json"))),
        keystore=keystore,
        nocrypto=root / "nocrypto.json",
        notjson=root / "notjson.json",
        wrongpw=root / "wrong.pw",
        emptypw=root / "empty.pw",
        goodpw=root / "good.pw",
        db=db,
        textdb=root / "text.db",
        randomdb=root / "random.db",
        damageddb=damaged,
        receipt_cut=root / "cut.json",
        receipt_v99=root / "v99.json",
        pgport=free_port(),
        refused=f"http://127.0.0.1:{free_port()}",
        hang=nodes["hang"].url,
        html=nodes["html"].url,
        garbage=nodes["garbage"].url,
        repo=root / "repo",
        badrepo=root / "badrepo",
        hello=str(hello),
        folder=str(folder),
        cutcar=root / "cut.car",
        corruptcar=root / "corrupt.car",
        busyport=busy.getsockname()[1],
    )  # fmt: skip


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _squeezed(text: str) -> str:
    """Without whitespace: rich folds long paths anywhere at the terminal's width."""
    return "".join(text.split())


def _snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[f"row{c.id}" for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(
    case: Case,
    world: World,
    workdir: Path,
    chrysalis: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.needs == "postgres" and not _listening(PG_HOST, PG_PORT):
        pytest.skip(f"no PostgreSQL server at {PG_HOST}:{PG_PORT}")
    env: dict[str, str | None] = {
        "CHAIN__RPC_URL": world.url,
        "CHAIN__DEPLOYMENT": str(world.record),
        "CHAIN__RPC_RETRIES": "0",
        "SUBMIT__RPC_RETRIES": "0",
        "DATABASE__URL": f"sqlite:///{workdir / 'agent.db'}",
        "DATA_DIR": str(workdir / "data"),
        **case.env,
    }
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(f"CHRYSALIS_{key}", world.fill(value))
    for name, text in case.files.items():
        if text.startswith("@"):  # a copy of one of the world's files
            shutil.copy(getattr(world, text[1:]), workdir / name)
        else:
            (workdir / name).write_text(text)
    shared = (world.record.parent, world.keystore.parent)
    before = _snapshot(workdir, *shared)
    result = chrysalis(*(world.fill(a) for a in case.args))
    assert "Traceback" not in result.err, result.err
    assert result.code == case.code, result.text
    assert _squeezed(world.fill(case.expect)) in _squeezed(result.text), result.text
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert "hint: " in result.err, result.err
    hint = "--help" if case.code == USAGE else case.hint  # typer's check of a type or range: where to look
    assert _squeezed(world.fill(hint)) in _squeezed(result.text.split("hint: ", 1)[1]), result.text
    after = _snapshot(workdir, *shared)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a bad input changed files: {changed}"
    for path in case.absent:
        assert not Path(world.fill(path)).exists(), f"a bad input created {world.fill(path)}"


# -- the last-resort handler and the root options ---------------------------------------------------------


def test_version_flag_prints_what_the_version_command_prints(chrysalis: Callable[..., CliResult]) -> None:
    flag, command = chrysalis("--version"), chrysalis("version")
    assert flag.code == command.code == 0
    assert flag.out == command.out and flag.out.strip()


def _boom(message: str) -> Callable[..., Any]:
    def load_settings(*_: Any, **__: Any) -> Any:
        raise RuntimeError(message)

    return load_settings


def test_an_unexpected_error_is_one_line_and_a_hint_not_a_traceback(
    workdir: Path, chrysalis: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "agent.clicontext.load_settings", _boom("went wrong at https://rpc.example.org/v3/SECRET")
    )
    result = chrysalis("status")
    assert result.code == 1
    assert "Traceback" not in result.err and "SECRET" not in result.err
    assert "error: RuntimeError: went wrong at https://rpc.example.org/…" in result.text
    assert "hint: this is a bug in Chrysalis: rerun with --debug (or CHRYSALIS_DEBUG=1)" in result.text


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(
    how: str, workdir: Path, chrysalis: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.clicontext.load_settings", _boom("kaput"))
    if how == "env":
        monkeypatch.setenv("CHRYSALIS_DEBUG", "1")
    result = chrysalis(*(["--debug"] if how == "flag" else []), "status")
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err and "RuntimeError: kaput" in result.err
    assert "error: RuntimeError: kaput" in result.err


def test_ctrl_c_exits_130_quietly(
    workdir: Path, chrysalis: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("agent.clicontext.load_settings", interrupted)
    result = chrysalis("status")
    assert result.code == 130
    assert "Traceback" not in result.err and "error:" not in result.err


def test_an_unreadable_sqlite_page_that_reaches_the_top_is_explained(
    workdir: Path, chrysalis: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corruption found after the database opened (a damaged data page) is not a bug report either."""
    import sqlalchemy.exc

    def corrupt(*_: Any, **__: Any) -> Any:
        raise sqlalchemy.exc.DatabaseError(
            "SELECT 1", {}, sqlite3.DatabaseError("database disk image is malformed")
        )

    monkeypatch.setattr("agent.clicontext.load_settings", corrupt)
    result = chrysalis("jobs")
    assert result.code == 1
    assert "is not a SQLite database (or is corrupt): database disk image is malformed" in result.text
    assert "hint: point database.url" in result.text


def test_status_json_prints_a_json_error(workdir: Path, chrysalis: Callable[..., CliResult]) -> None:
    result = chrysalis("status", "--json")
    assert result.code == 1
    error = json.loads(result.out)
    assert error["error"].startswith("no agent database at") and "chrysalis run" in error["hint"]
    assert "error: no agent database" in result.err


# -- the HTTP rows: the gateway and the RPC of `chrysalis ipfs serve`, through the real servers -------------------


@dataclass(frozen=True)
class HttpCase:
    id: str
    method: str
    path: str
    status: int
    expect: str
    """Text the reply's body holds (the RPC's JSON ``Message``, or the gateway's error text)."""
    body: bytes | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    repo: str = "repo"


HTTP_CASES = [
    HttpCase("56", "GET", "/ipfs/{folder}/..%2f..%2fetc", 400, "encoded '/'"),
    HttpCase("58a", "GET", "/ipfs/{hello}", 500, "is corrupt", repo="badrepo"),
    HttpCase("58b", "POST", "/api/v0/cat?arg={hello}", 500, "is corrupt", repo="badrepo"),
    HttpCase("58c", "POST", "/api/v0/block/get?arg={hello}", 500, "is corrupt", repo="badrepo"),
    HttpCase("67", "POST", "/api/v0/add", 413, "exceeds the node's limit of 65536 bytes; nothing was stored",
             files={"file": ("big.bin", b"x" * 100_000)}),
    HttpCase("68a", "GET", "/api/v0/add", 405, ""),
    HttpCase("68b", "POST", "/api/v0/add", 400, "multipart", body=b"not multipart"),
    HttpCase("68c", "POST", "/api/v0/dag/import", 500, "not a CAR file",
             files={"file": ("hello.txt", b"hello, not a CAR\n")}),
    HttpCase("68d", "POST", "/api/v0/cat?arg=zzz", 500, "invalid path 'zzz'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def servers(world: World) -> Iterator[dict[str, NodeServer]]:
    """`chrysalis ipfs serve`'s two listeners (gateway and RPC) over the good repo and over the damaged one."""
    with (
        NodeServer(IpfsRepo(world.repo), max_request_bytes=64 * 1024) as good,
        NodeServer(IpfsRepo(world.badrepo), max_request_bytes=64 * 1024) as bad,
    ):
        yield {"repo": good, "badrepo": bad}


@pytest.mark.parametrize("case", HTTP_CASES, ids=[f"row{c.id}" for c in HTTP_CASES])
def test_bad_http_request_is_a_clear_status_and_changes_nothing(
    case: HttpCase, world: World, servers: dict[str, NodeServer]
) -> None:
    node = servers[case.repo]
    rpc = case.path.startswith("/api/")
    base = node.rpc_url if rpc else f"http://127.0.0.1:{node.port}"
    before = _snapshot(world.repo.parent)
    with httpx.Client(base_url=base, headers=node.auth_headers if rpc else {}, timeout=10) as http:
        reply = http.request(case.method, world.fill(case.path), content=case.body, files=case.files)
    assert reply.status_code == case.status, reply.text
    text = reply.json()["Message"] if rpc and reply.status_code != 405 else reply.text
    assert case.expect in text, text
    assert "Traceback" not in reply.text and str(world.repo.parent) not in reply.text  # no server paths
    assert _snapshot(world.repo.parent) == before, "a bad request changed files"
