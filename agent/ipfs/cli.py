"""``chrysalis ipfs ...``: the embedded node from the command line.

Every command works on the repo at ``--repo``, else ``ipfs.repo`` from the settings (``.chrysalis/ipfs``).
``add`` prints one CID per input; a directory is added recursively as a UnixFS directory (symlinks to files
are followed, symlinked directories are refused so a loop cannot recurse forever) and its root CID is printed.
CIDv1 with raw leaves is the default here (Kubo's ``--cid-version=1``); ``--cid-version 0`` gives ``Qm...``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from agent.ipfs.cid import CID
    from agent.ipfs.repo import AddResult, IpfsRepo

ipfs_app = typer.Typer(
    name="ipfs",
    help="The embedded IPFS node: add, cat, serve, CAR export/import, pins.",
    no_args_is_help=True,
)
pin_app = typer.Typer(name="pin", help="List, add and remove pins in the repo.", no_args_is_help=True)
ipfs_app.add_typer(pin_app, name="pin")

RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        help="Repo directory (default: ipfs.repo from the settings, .chrysalis/ipfs).",
        show_default=False,
    ),
]


def _open_repo(repo: Path | None) -> IpfsRepo:
    from agent.ipfs.repo import IpfsRepo

    if repo is None:
        from agent.settings import load_settings

        repo = load_settings().ipfs.repo
    return IpfsRepo(repo)


def _parse_path(repo: IpfsRepo, value: str) -> CID:
    """``<cid>``, ``<cid>/a/b``, ``/ipfs/<cid>/...`` or ``ipfs://<cid>/...`` as the CID it names."""
    from agent.ipfs.cid import CID

    path = value.strip()
    for prefix in ("/ipfs/", "ipfs://"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    path = path.strip("/")
    from agent.ipfs.errors import InvalidCIDError

    try:
        return repo.resolve(path) if "/" in path else CID.parse(path)
    except InvalidCIDError as exc:
        raise ConfigError(
            f"{value!r} is not a valid CID: {exc.reason}",
            hint="pass a CID such as bafy... / Qm..., optionally followed by /path",
        ) from None


def _add_path(repo: IpfsRepo, path: Path, *, cid_version: int, raw_leaves: bool | None) -> AddResult | CID:
    if path.is_dir():
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symlinked directory", hint="add the directory it points to instead"
            )
        entries: dict[str, AddResult | CID] = {}
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            entries[child.name] = _add_path(repo, child, cid_version=cid_version, raw_leaves=raw_leaves)
        return repo.add_directory(entries, pin=False, cid_version=cid_version)
    if not path.is_file():
        raise NotFoundError(f"{path} is not a file or directory", hint="check the path")
    with path.open("rb") as f:
        return repo.add(f, cid_version=cid_version, raw_leaves=raw_leaves, pin=False)


@ipfs_app.command()
def add(
    paths: Annotated[list[str], typer.Argument(help="Files or directories to add; '-' reads stdin.")],
    cid_version: Annotated[
        int, typer.Option("--cid-version", min=0, max=1, help="0 (Qm...) or 1 (b...).")
    ] = 1,
    raw_leaves: Annotated[
        bool | None,
        typer.Option(
            "--raw-leaves/--no-raw-leaves",
            help="Raw leaf blocks (default: yes for CIDv1, no for v0).",
            show_default=False,
        ),
    ] = None,
    pin: Annotated[bool, typer.Option("--pin/--no-pin", help="Pin what is added.")] = True,
    only_hash: Annotated[
        bool, typer.Option("--only-hash", "-n", help="Print CIDs without storing anything.")
    ] = False,
    repo: RepoOption = None,
) -> None:
    """Add files (or directories, recursively) and print one CID per input."""
    from agent.ipfs.repo import IpfsRepo

    store = IpfsRepo(None) if only_hash else _open_repo(repo)
    for value in paths:
        if value == "-":
            result: AddResult | CID = store.add(
                sys.stdin.buffer, cid_version=cid_version, raw_leaves=raw_leaves, pin=False
            )
        else:
            path = Path(value)
            if not path.exists():
                raise NotFoundError(f"{path} does not exist", hint="check the path")
            result = _add_path(store, path, cid_version=cid_version, raw_leaves=raw_leaves)
        cid = result if not hasattr(result, "cid") else result.cid
        if pin and not only_hash:
            store.pin_add(cid)
        typer.echo(str(cid))


@ipfs_app.command()
def cat(
    cid: Annotated[str, typer.Argument(help="CID, CID/path or /ipfs/CID/path of a file.")],
    offset: Annotated[int, typer.Option(min=0, help="First byte to write.")] = 0,
    length: Annotated[int | None, typer.Option(min=0, help="Bytes to write (default: to the end).")] = None,
    repo: RepoOption = None,
) -> None:
    """Write a file's bytes to stdout (binary-safe)."""
    store = _open_repo(repo)
    target = _parse_path(store, cid)
    if store.stat(target).kind == "directory":
        raise ConfigError(
            f"{cid} is a directory", hint="`chrysalis ipfs cat` takes a file; name one inside it"
        )
    out = sys.stdout.buffer
    for chunk in store.cat(target, offset=offset, length=length):
        out.write(chunk)
    out.flush()


@ipfs_app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: ipfs.gateway_host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: ipfs.gateway_port).")] = None,
    repo: RepoOption = None,
) -> None:
    """Serve the gateway (/ipfs/...) and the Kubo RPC subset (/api/v0/...) until Ctrl-C."""
    from agent.ipfs.server import serve_forever
    from agent.settings import load_settings

    settings = load_settings().ipfs
    store = _open_repo(repo or settings.repo)
    host = host or settings.gateway_host
    port = port if port is not None else settings.gateway_port
    typer.echo(f"gateway  http://{host}:{port}/ipfs/<cid>", err=True)
    typer.echo(f"rpc      /ip4/{host}/tcp/{port}/http  (POST /api/v0/...)", err=True)
    serve_forever(store, host=host, port=port, max_request_bytes=settings.max_request_bytes)


@ipfs_app.command("export")
def export_car(
    cid: Annotated[str, typer.Argument(help="Root CID (or CID/path) of the DAG.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CAR file to write ('-' for stdout).")],
    repo: RepoOption = None,
) -> None:
    """Write the DAG under CID as a CARv1 file."""
    store = _open_repo(repo)
    root = _parse_path(store, cid)
    if str(output) == "-":
        store.export_car(root, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as f:
            store.export_car(root, f)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    typer.echo(f"{root} -> {output} ({output.stat().st_size} bytes)", err=True)


@ipfs_app.command("import")
def import_car(
    car: Annotated[str, typer.Argument(help="CAR file to import ('-' for stdin).")],
    pin: Annotated[bool, typer.Option("--pin/--no-pin", help="Pin the CAR's roots.")] = True,
    repo: RepoOption = None,
) -> None:
    """Import a CAR file; prints its root CIDs."""
    store = _open_repo(repo)
    if car == "-":
        roots = store.import_car(sys.stdin.buffer, pin=pin)
    else:
        path = Path(car)
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist", hint="check the path")
        with path.open("rb") as f:
            roots = store.import_car(f, pin=pin)
    for root in roots:
        typer.echo(str(root))


@ipfs_app.command()
def gc(repo: RepoOption = None) -> None:
    """Delete blocks no pin reaches; prints how many."""
    typer.echo(f"removed {_open_repo(repo).gc()} blocks")


@pin_app.command("ls")
def pin_ls(repo: RepoOption = None) -> None:
    """List pins as '<cid> <type>'."""
    for cid, kind in sorted(_open_repo(repo).pin_ls().items(), key=lambda item: str(item[0])):
        typer.echo(f"{cid} {kind}")


@pin_app.command("add")
def pin_add(
    cids: Annotated[
        list[str], typer.Argument(help="CIDs (or paths) to pin; their DAGs must be in the repo.")
    ],
    recursive: Annotated[bool, typer.Option("--recursive/--direct", help="Pin the whole DAG.")] = True,
    repo: RepoOption = None,
) -> None:
    """Pin CIDs already in the repo."""
    store = _open_repo(repo)
    for value in cids:
        cid = _parse_path(store, value)
        store.pin_add(cid, recursive=recursive)
        typer.echo(f"pinned {cid}")


@pin_app.command("rm")
def pin_rm(
    cids: Annotated[list[str], typer.Argument(help="CIDs to unpin.")],
    repo: RepoOption = None,
) -> None:
    """Remove pins (the blocks stay until `chrysalis ipfs gc`)."""
    store = _open_repo(repo)
    for value in cids:
        cid = _parse_path(store, value)
        if not store.is_pinned(cid):
            raise NotFoundError(f"{cid} is not pinned", hint="`chrysalis ipfs pin ls` lists the pins")
        store.pin_rm(cid)
        typer.echo(f"unpinned {cid}")
