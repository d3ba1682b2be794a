"""``chrysalis ipfs ...``: typer's CliRunner for most commands, the real console script for the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.ipfs.repo import IpfsRepo
from tests.ipfs.conftest import HELLO, HELLO_V0, HELLO_V1

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


def test_add_prints_one_cid_per_input(files: Path) -> None:
    repo = str(files / "repo")
    lines = ipfs("add", "--repo", repo, str(files / "hello.txt"), str(files / "art")).decode().split()
    assert len(lines) == 2
    assert lines[0] == HELLO_V1
    store = IpfsRepo(files / "repo")
    top = store.resolve(lines[1])
    assert store.stat(top).kind == "directory"
    assert b"".join(store.cat(store.resolve(f"{lines[1]}/meta/1.json"))) == b'{"id": 1}'
    assert store.is_pinned(top)
    assert (
        ipfs("add", "--repo", repo, "--cid-version", "0", str(files / "hello.txt")).decode().strip()
        == HELLO_V0
    )
    dagpb = ipfs("add", "--repo", repo, "--no-raw-leaves", str(files / "hello.txt")).decode().strip()
    assert dagpb == str(IpfsRepo(None).add(HELLO, cid_version=1, raw_leaves=False).cid)


def test_cat_is_binary_safe(files: Path) -> None:
    repo = str(files / "repo")
    data = bytes(range(256)) * 1000 + b"\r\n\x00\x1a"
    (files / "blob").write_bytes(data)
    cid = ipfs("add", "--repo", repo, str(files / "blob")).decode().strip()
    assert ipfs("cat", "--repo", repo, cid) == data
    assert ipfs("cat", "--repo", repo, "--offset", "10", "--length", "5", cid) == data[10:15]


def test_export_import_round_trip(files: Path) -> None:
    cid = ipfs("add", "--repo", str(files / "a"), str(files / "art")).decode().strip()
    car = files / "art.car"
    ipfs("export", "--repo", str(files / "a"), cid, "-o", str(car))
    assert car.stat().st_size > 10_000
    assert ipfs("import", "--repo", str(files / "b"), str(car)).decode().split() == [cid]
    assert ipfs("cat", "--repo", str(files / "b"), f"/ipfs/{cid}/meta/1.json") == b'{"id": 1}'


def test_pin_ls_add_rm(files: Path) -> None:
    repo = str(files / "repo")
    cid = ipfs("add", "--repo", repo, "--no-pin", str(files / "hello.txt")).decode().strip()
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
    assert added.stdout.decode().strip() == HELLO_V1
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
    result = _chrysalis(*args, cwd=files)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.startswith("error:")
    assert needle in stderr
    assert "Traceback" not in stderr


def test_console_script_serve(files: Path, closed_port: int) -> None:
    _chrysalis("ipfs", "add", "hello.txt", cwd=files)
    env = _env()
    server = subprocess.Popen(
        [CHRYSALIS, "ipfs", "serve", "--port", str(closed_port)],
        cwd=files,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{closed_port}/ipfs/{HELLO_V1}", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        assert reply.content == HELLO
        assert reply.headers["etag"] == f'"{HELLO_V1}"'
    finally:
        server.terminate()
        server.wait(10)
