"""``chrysalis ipfs ...``: typer's CliRunner for most commands, the real console script for the rest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.ipfs.repo import IpfsRepo
from tests.ipfs.conftest import HELLO, HELLO_V0, HELLO_V1
from tests.support.cli import invoke_cli

CHRYSALIS = str(Path(sys.executable).parent / "chrysalis")
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def ipfs(*args: str) -> bytes:
    result = runner.invoke(app, ["ipfs", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes(HELLO)
    art = tmp_path / "art"
    (art / "meta").mkdir(parents=True)
    (art / "meta" / "1.json").write_bytes(b'{"id": 1}')
    (art / "sprite.bin").write_bytes(bytes(range(256)) * 40)
    return tmp_path


def test_add_prints_one_line_per_input_like_kubo(files: Path) -> None:
    repo = str(files / "repo")
    out = ipfs("add", "--repo", repo, str(files / "hello.txt"), str(files / "art")).decode()
    first, second = out.splitlines()
    assert first == f"added {HELLO_V1} hello.txt"
    assert second.startswith("added ") and second.endswith(" art")
    lines = [first.split()[1], second.split()[1]]
    assert ipfs("add", "-q", "--repo", repo, str(files / "hello.txt")).decode() == f"{HELLO_V1}\n"
    store = IpfsRepo(files / "repo")
    top = store.resolve(lines[1])
    assert store.stat(top).kind == "directory"
    assert b"".join(store.cat(store.resolve(f"{lines[1]}/meta/1.json"))) == b'{"id": 1}'
    assert store.is_pinned(top)
    assert (
        ipfs("add", "-q", "--repo", repo, "--cid-version", "0", str(files / "hello.txt")).decode().strip()
        == HELLO_V0
    )
    dagpb = ipfs("add", "-q", "--repo", repo, "--no-raw-leaves", str(files / "hello.txt")).decode().strip()
    assert dagpb == str(IpfsRepo(None).add(HELLO, cid_version=1, raw_leaves=False).cid)


def test_cat_is_binary_safe(files: Path) -> None:
    repo = str(files / "repo")
    data = bytes(range(256)) * 1000 + b"\r\n\x00\x1a"
    (files / "blob").write_bytes(data)
    cid = ipfs("add", "-q", "--repo", repo, str(files / "blob")).decode().strip()
    assert ipfs("cat", "--repo", repo, cid) == data
    assert ipfs("cat", "--repo", repo, "--offset", "10", "--length", "5", cid) == data[10:15]


def test_export_import_round_trip(files: Path) -> None:
    cid = ipfs("add", "-q", "--repo", str(files / "a"), str(files / "art")).decode().strip()
    car = files / "art.car"
    ipfs("export", "--repo", str(files / "a"), cid, "-o", str(car))
    assert car.stat().st_size > 10_000
    assert ipfs("import", "--repo", str(files / "b"), str(car)).decode().split() == [cid]
    assert ipfs("cat", "--repo", str(files / "b"), f"/ipfs/{cid}/meta/1.json") == b'{"id": 1}'


def test_pin_ls_add_rm(files: Path) -> None:
    repo = str(files / "repo")
    cid = ipfs("add", "-q", "--repo", repo, "--no-pin", str(files / "hello.txt")).decode().strip()
    assert cid not in ipfs("pin", "ls", "--repo", repo).decode()
    ipfs("pin", "add", "--repo", repo, cid)
    assert f"{cid} recursive" in ipfs("pin", "ls", "--repo", repo).decode()
    ipfs("pin", "rm", "--repo", repo, cid)
    assert cid not in ipfs("pin", "ls", "--repo", repo).decode()


def _env() -> dict[str, str]:
    """The environment without CHRYSALIS_* settings, importing this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRYSALIS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _chrysalis(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = _env()
    return subprocess.run([CHRYSALIS, *args], cwd=cwd, env=env, capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload]


def test_console_script_add_cat_and_repo_from_settings(files: Path) -> None:
    added = _chrysalis("ipfs", "add", "hello.txt", cwd=files)
    assert added.returncode == 0, added.stderr
    assert added.stdout.decode().strip() == f"added {HELLO_V1} hello.txt"
    assert (files / ".chrysalis" / "ipfs").is_dir()  # ipfs.repo's default, relative to the working directory
    cat = _chrysalis("ipfs", "cat", HELLO_V1, cwd=files)
    assert cat.stdout == HELLO


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("ipfs", "add", "no-such-file"), "no-such-file does not exist"),
        (("ipfs", "cat", "not-a-cid"), "not-a-cid"),
        (("ipfs", "cat", HELLO_V0), HELLO_V0),  # valid but absent
    ],
)
def test_console_script_errors_are_one_clear_line(files: Path, args: tuple[str, ...], needle: str) -> None:
    IpfsRepo(files / ".chrysalis" / "ipfs")  # the default repo exists: the errors are about the arguments
    result = _chrysalis(*args, cwd=files)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.startswith("error:")
    assert needle in stderr
    assert "Traceback" not in stderr


def test_console_script_serve(files: Path) -> None:
    """`ipfs serve`: a read-only gateway, and the RPC on loopback behind the token it writes into the repo."""
    assert _chrysalis("ipfs", "add", "hello.txt", cwd=files).returncode == 0
    server = subprocess.Popen(
        [CHRYSALIS, "ipfs", "serve", "--port", "0", "--rpc-port", "0"],
        cwd=files,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        lines = [server.stderr.readline(), server.stderr.readline()]  # printed once both ports listen
        gateway_line, rpc_line = lines
        assert gateway_line.startswith("gateway  http://127.0.0.1:"), lines
        assert rpc_line.startswith("rpc      http://127.0.0.1:"), lines
        gateway = gateway_line.split()[1].removesuffix("/ipfs/<cid>")
        rpc = rpc_line.split()[1].removesuffix("/api/v0/...")
        token_file = files / ".chrysalis" / "ipfs" / "rpc.token"
        assert str(token_file.relative_to(files)) in rpc_line
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()

        reply = httpx.get(f"{gateway}/ipfs/{HELLO_V1}", timeout=10)
        assert reply.content == HELLO
        assert reply.headers["etag"] == f'"{HELLO_V1}"'
        assert httpx.post(f"{gateway}/api/v0/add", files={"f": ("x", b"x")}, timeout=10).status_code == 404
        assert httpx.post(f"{rpc}/api/v0/version", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{rpc}/api/v0/version", headers=auth, timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(10)


# -- bad inputs: one `error:` line and a `hint:`, no traceback, nothing created or half-written --


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``chrysalis`` in-process in ``tmp_path`` without CHRYSALIS_* settings; returns (code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("CHRYSALIS_")]:
        monkeypatch.delenv(key)

    def run(*args: str) -> tuple[int, str, str]:
        r = invoke_cli(capsys, *args)
        return r.code, r.out, " ".join(r.err.split())

    return run


def _refused(result: tuple[int, str, str], *needles: str) -> str:
    code, _, err = result
    assert code == 1, result
    assert err.startswith("error:") and "hint:" in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_export_to_a_missing_directory_is_an_error_and_writes_nothing(
    cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    (tmp_path / "hello.txt").write_bytes(HELLO)
    assert cli("ipfs", "add", "hello.txt")[0] == 0
    target = tmp_path / "missing" / "dir" / "x.car"
    err = _refused(cli("ipfs", "export", HELLO_V1, "-o", str(target)), "does not exist", "mkdir -p")
    assert "x.car.partial" not in err
    assert not (tmp_path / "missing").exists()
    _refused(cli("ipfs", "export", HELLO_V1, "-o", str(tmp_path)), "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".chrysalis", "hello.txt"]


@pytest.mark.parametrize(
    "args",
    [
        ("ipfs", "cat", HELLO_V1),
        ("ipfs", "ls", HELLO_V1),
        ("ipfs", "export", HELLO_V1, "-o", "x.car"),
        ("ipfs", "gc"),
        ("ipfs", "pin", "ls"),
        ("ipfs", "pin", "add", HELLO_V1),
        ("ipfs", "pin", "rm", HELLO_V1),
    ],
)
def test_reading_commands_refuse_a_missing_repo_and_create_nothing(
    cli: Callable[..., tuple[int, str, str]], tmp_path: Path, args: tuple[str, ...]
) -> None:
    typo = tmp_path / "repo-typo"
    _refused(cli(*args, "--repo", str(typo)), "no IPFS repo at", "repo-typo", "ipfs add")
    assert not typo.exists()
    _refused(cli(*args), "no IPFS repo at .chrysalis/ipfs")  # ipfs.repo's default
    assert list(tmp_path.iterdir()) == []


def test_import_of_a_file_that_is_not_a_car(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(HELLO)
    err = _refused(cli("ipfs", "import", "hello.txt"), "not a CAR file", "chrysalis ipfs add")
    assert "truncated" not in err
    _refused(cli("ipfs", "import", "nope.car"), "nope.car does not exist")


def test_ls_lists_names_sizes_and_cids_and_hints_name_real_commands(
    cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    art = tmp_path / "art"
    (art / "meta").mkdir(parents=True)
    (art / "meta" / "1.json").write_bytes(b'{"id": 1}')
    (art / "cover.txt").write_bytes(b"cover")
    code, out, _ = cli("ipfs", "add", "-q", "art")
    assert code == 0
    root = out.strip()
    code, out, _ = cli("ipfs", "ls", root)
    assert code == 0
    store = IpfsRepo(tmp_path / ".chrysalis" / "ipfs")
    assert out.splitlines() == [
        f"{store.resolve(f'{root}/cover.txt')} 5 cover.txt",
        f"{store.resolve(f'{root}/meta')} {store.stat(store.resolve(f'{root}/meta')).size} meta/",
    ]
    err = _refused(cli("ipfs", "cat", f"{root}/nope.txt"), "nope.txt", f"chrysalis ipfs ls {root}")
    assert "`ls " not in err
    err = _refused(cli("ipfs", "cat", HELLO_V0), HELLO_V0, "chrysalis ipfs import")
    assert "import_car" not in err
    _refused(cli("ipfs", "ls", f"{root}/cover.txt"), "is a file, not a directory")


def test_serve_on_a_busy_port_is_a_clean_error(cli: Callable[..., tuple[int, str, str]]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        err = _refused(cli("ipfs", "serve", "--port", str(port), "--rpc-port", "0"), f"127.0.0.1:{port}")
        assert "--port" in err
        err = _refused(cli("ipfs", "serve", "--port", "0", "--rpc-port", str(port)), "RPC API", str(port))
        assert "--rpc-port" in err


def test_serve_refuses_a_non_loopback_rpc_host(
    cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_IPFS__RPC_HOST", "0.0.0.0")
    _refused(cli("ipfs", "serve", "--port", "0", "--rpc-port", "0"), "ipfs.rpc_host", "loopback")


def test_serve_lets_a_script_root_run_its_pages_and_keeps_the_rest_sandboxed(files: Path) -> None:
    """`ipfs serve --script-root CID` (and ipfs.script_roots): that directory's pages get the app policy (the token
    viewer runs), every other path keeps the sandbox."""
    from agent.ipfs.gateway import APP_CSP, GATEWAY_CSP

    site = files / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><script type=module src=viewer.js></script>")
    added = _chrysalis("ipfs", "add", "-q", "--cid-version", "1", "site", cwd=files)
    assert added.returncode == 0, added.stderr
    root = added.stdout.decode().split()[-1]
    assert _chrysalis("ipfs", "add", "hello.txt", cwd=files).returncode == 0
    server = subprocess.Popen(
        [CHRYSALIS, "ipfs", "serve", "--port", "0", "--rpc-port", "0", "--script-root", root],
        cwd=files, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        lines = [server.stderr.readline() for _ in range(3)]
        assert lines[1].startswith("scripts  http://127.0.0.1:") and f"/ipfs/{root}/" in lines[1], lines
        gateway = lines[0].split()[1].removesuffix("/ipfs/<cid>")
        assert httpx.get(f"{gateway}/ipfs/{root}/", timeout=10).headers["content-security-policy"] == APP_CSP
        other = httpx.get(f"{gateway}/ipfs/{HELLO_V1}", timeout=10).headers["content-security-policy"]
        assert other == GATEWAY_CSP
    finally:
        server.terminate()
        server.wait(10)


def test_serve_refuses_a_script_root_that_is_not_a_cid(cli: Callable[..., tuple[int, str, str]]) -> None:
    _refused(
        cli("ipfs", "serve", "--port", "0", "--rpc-port", "0", "--script-root", "viewer"),
        "'viewer' is not a CID",
    )
