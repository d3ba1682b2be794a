"""The bad-input catalogue, run as a user would: every wrong setting, file, deployment, key or database gives one
``error:`` line and a ``hint:``, a non-zero exit, no traceback, and changes nothing on disk.

Each :class:`Case` is a row of the catalogue (``id`` = the row's number in the UX review's Part B table; ``a``,
``b``... when one row lists several inputs). Add a row by adding a case: ``files`` are written into the working
directory, ``env`` are ``CHRYSALIS_*`` settings on top of the defaults below, and ``{name}`` in any string is one of
:class:`World`'s paths. One anvil serves the whole module; nothing here loads a model.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from agent.jobs import JobStore
from agent.ops.accounts import dev_key
from tests.ops.conftest import HOLDER, CliResult, Devchain, _free_port

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

    def fill(self, text: str) -> str:
        return text.format(**{k: str(v) for k, v in self.__dict__.items()})


def _toml(body: str) -> dict[str, str]:
    return {"chrysalis.toml": body}


STATUS = ("status",)
EVOLVE = ("evolve", "2", "--from", "1")

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
         env={"REFRESH__POLICIES": "[{{name: x}}]"}, hint='[{"name": "daily"'),
    Case("22", STATUS, "config file {record}.missing.toml (from $CHRYSALIS_CONFIG) does not exist",
         env={"CONFIG": "{record}.missing.toml"}, hint="unset it"),
    Case("23", ("-c", "nope.toml", "status"), "config file nope.toml does not exist", hint="chrysalis init"),
    Case("24", STATUS, "chain.rpc_ulr: Extra inputs are not permitted (from $CHRYSALIS_CHAIN__RPC_ULR)",
         env={"CHAIN__RPC_ULR": "http://x"}),
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
    # -- receipts (model verify: 3 = could not verify, 1 is kept for a mismatch) ----------------------------
    Case("85a", ("model", "verify", "{receipt_cut}"), "is not JSON", code=3),
    Case("85b", ("model", "verify", "{receipt_v99}"), "not a Chrysalis inference receipt", code=3),
    Case("85c", ("model", "verify", "{record}.receipt.json"), "does not exist", code=3),
    # -- databases ------------------------------------------------------------------------------------------
    Case("89", ("jobs",), "cannot connect to the database at postgresql+psycopg2://postgres@127.0.0.1:{pgport}/x",
         env={"DATABASE__URL": "postgresql+psycopg2://postgres@127.0.0.1:{pgport}/x"}),
    Case("91a", ("jobs",), "cannot connect to the database at postgresql+psycopg2://postgres@127.0.0.1:{pgport}/x",
         env={"DATABASE__URL": "postgresql://postgres@127.0.0.1:{pgport}/x"}),
    Case("91b", ("jobs",), "the PostgreSQL driver 'psycopg' of database.url",
         env={"DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:{pgport}/x"}, hint="psycopg2"),
    Case("94a", STATUS, "text.db is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///text.db"}, files={"text.db": "hello, not a database\n"},
         hint="has not changed the file"),
    Case("94b", ("jobs",), "random.db is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///random.db"}, files={"random.db": "@randomdb"}),
    Case("94c", ("jobs",), "is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///damaged.db"}, files={"damaged.db": "@damageddb"}),
    Case("94d", ("run", "--no-metrics", "--no-doctor"), "text.db is not a SQLite database (or is corrupt)",
         env={"DATABASE__URL": "sqlite:///text.db"}, files={"text.db": "hello, not a database\n"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(module_devchain: Devchain, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("catalogue")
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
    JobStore.open(f"sqlite:///{db}").close()
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
        pgport=_free_port(),
    )  # fmt: skip


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
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert _squeezed(world.fill(case.expect)) in _squeezed(result.text), result.text
    assert "hint: " in result.err, result.err
    assert _squeezed(case.hint) in _squeezed(result.text.split("hint: ", 1)[1]), result.text
    assert _snapshot(workdir, *shared) == before, "a bad input changed files"


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
        "agent.settings.load_settings", _boom("went wrong at https://rpc.example.org/v3/SECRET")
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
    monkeypatch.setattr("agent.settings.load_settings", _boom("kaput"))
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

    monkeypatch.setattr("agent.settings.load_settings", interrupted)
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

    monkeypatch.setattr("agent.settings.load_settings", corrupt)
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
