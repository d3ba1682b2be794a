"""``chrysalis ipfs ...``: the embedded node from the command line.

Every command works on the repo at ``--repo``, else ``ipfs.repo`` from the settings (``<data_dir>/ipfs`` unless set).
Only the commands that store (``add``, ``import``, ``serve``) create a missing repo; the others refuse it, so a
mistyped ``--repo`` is an error, not a new empty repo. ``add`` prints ``added <cid> <name>`` per input as Kubo
does (``-q``: the CIDs alone); a directory is added recursively as a UnixFS directory (symlinks to files
are followed, symlinked directories are refused so a loop cannot recurse forever) and its root CID is printed.
CIDv1 with raw leaves is the default here (Kubo's ``--cid-version=1``); ``--cid-version 0`` gives ``Qm...``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.clicontext import current_settings
from agent.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from agent.ipfs.cid import CID
    from agent.ipfs.reader import DagLimits
    from agent.ipfs.repo import AddResult, IpfsRepo

ipfs_app = typer.Typer(
    name="ipfs",
    help="The embedded IPFS node: add, cat, serve, CAR export/import, pins.",
    no_args_is_help=True,
)
pin_app = typer.Typer(name="pin", help="List, add and remove pins in the repo.", no_args_is_help=True)
ipfs_app.add_typer(pin_app, name="pin")

GatewaysOption = Annotated[
    list[str] | None,
    typer.Option(
        "--gateway",
        metavar="URL",
        help="An IPFS HTTP gateway to fetch from (repeat for several; e.g. https://ipfs.io). Every block is checked "
        "against its CID: a gateway is never trusted.",
        show_default=False,
    ),
]
"""``--gateway``, for every command that fetches through :func:`agent.ipfs.fetch.make_fetcher`."""
IpfsApisOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ipfs-api",
        metavar="URL",
        help="A Kubo RPC API to fetch from (repeat for several; a URL or /ip4/127.0.0.1/tcp/5001; token from "
        "$CHRYSALIS_KUBO_API_TOKEN).",
        show_default=False,
    ),
]
"""``--ipfs-api``, for every command that fetches through :func:`agent.ipfs.fetch.make_fetcher`."""

RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        help="Repo directory (default: ipfs.repo from the settings, else <data_dir>/ipfs).",
        show_default=False,
    ),
]


def _open_repo(repo: Path | None, *, create: bool = False, limits: DagLimits | None = None) -> IpfsRepo:
    """The repo at ``repo`` (default ``ipfs.repo``); without ``create``, a missing one is an error."""
    from agent.ipfs.repo import IpfsRepo, is_repo

    option = repo is not None
    if repo is None:
        repo = current_settings().ipfs_repo
    if not create and not is_repo(repo):
        where = "--repo" if option else "ipfs.repo (from the settings)"
        raise NotFoundError(
            f"there is no IPFS repo at {repo} ({where})",
            hint="check the path; `chrysalis ipfs add` or `chrysalis ipfs import` create a repo there",
        )
    return IpfsRepo(repo, limits=limits)


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


def add_path(repo: IpfsRepo, path: Path, *, cid_version: int, raw_leaves: bool | None) -> AddResult | CID:
    if path.is_dir():
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symlinked directory", hint="add the directory it points to instead"
            )
        entries: dict[str, AddResult | CID] = {}
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            entries[child.name] = add_path(repo, child, cid_version=cid_version, raw_leaves=raw_leaves)
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the CIDs alone, one per line.")] = False,
    repo: RepoOption = None,
) -> None:
    """Add files (or directories, recursively); prints 'added <cid> <name>' per input, as Kubo does."""
    from agent.ipfs.repo import IpfsRepo

    for value in paths:  # every input checked before the repo is opened (or created)
        if value != "-" and not Path(value).exists():
            raise NotFoundError(f"{value} does not exist", hint="check the path")
    store = IpfsRepo(None) if only_hash else _open_repo(repo, create=True)
    for value in paths:
        if value == "-":
            result: AddResult | CID = store.add(
                sys.stdin.buffer, cid_version=cid_version, raw_leaves=raw_leaves, pin=False
            )
        else:
            result = add_path(store, Path(value), cid_version=cid_version, raw_leaves=raw_leaves)
        cid = result if not hasattr(result, "cid") else result.cid
        if pin and not only_hash:
            store.pin_add(cid)
        name = str(cid) if value == "-" else Path(value).name or value
        typer.echo(str(cid) if quiet else f"added {cid} {name}")


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
    host: Annotated[str | None, typer.Option(help="Gateway address (default: ipfs.gateway_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Gateway port (default: ipfs.gateway_port).")] = None,
    rpc_port: Annotated[
        int | None, typer.Option("--rpc-port", help="RPC port on ipfs.rpc_host (default: ipfs.rpc_port).")
    ] = None,
    repo: RepoOption = None,
    script_root: Annotated[
        list[str] | None,
        typer.Option(
            "--script-root",
            help="A directory CID whose pages may run their own scripts (the token viewer's site, as `chrysalis "
            "renderer publish` prints it); repeatable, added to ipfs.script_roots.",
        ),
    ] = None,
) -> None:
    """Serve the read-only gateway (/ipfs/...) and, on loopback with a token, the Kubo RPC subset (/api/v0/...)."""
    from agent.ipfs.reader import DagLimits
    from agent.ipfs.rpc_auth import RPC_TOKEN_ENV, check_loopback, rpc_token, token_path
    from agent.ipfs.server import serve_forever

    settings = current_settings().ipfs
    default_repo = current_settings().ipfs_repo
    for flag, value in (("--port", port), ("--rpc-port", rpc_port)):
        if value is not None and not 0 <= value <= 65535:
            raise ConfigError(f"{flag} {value} is not a TCP port", hint="use 0..65535 (0 picks a free one)")
    from agent.ipfs.cid import CID
    from agent.ipfs.errors import InvalidCIDError

    roots = [*settings.script_roots, *(script_root or [])]
    for text in roots:
        try:
            CID.parse(text)
        except InvalidCIDError:
            raise ConfigError(
                f"--script-root {text!r} is not a CID",
                hint="give the viewer site's directory CID, as `chrysalis renderer publish` prints it",
            ) from None
    rpc_host = check_loopback(settings.rpc_host)
    store = _open_repo(repo or default_repo, create=True, limits=DagLimits.from_settings(settings))
    assert store.path is not None
    token = rpc_token(store.path)
    host = host or settings.gateway_host
    port = port if port is not None else settings.gateway_port
    rpc_port = rpc_port if rpc_port is not None else settings.rpc_port
    where = f"${RPC_TOKEN_ENV}" if os.environ.get(RPC_TOKEN_ENV) else str(token_path(store.path))

    def ready(gateway_port: int, bound_rpc_port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        rpc_shown = f"[{rpc_host}]" if ":" in rpc_host else rpc_host
        typer.echo(f"gateway  http://{shown}:{gateway_port}/ipfs/<cid>  (read-only)", err=True)
        for root in roots:
            typer.echo(f"scripts  http://{shown}:{gateway_port}/ipfs/{root}/  (its pages run their own scripts)",
                       err=True)  # fmt: skip
        typer.echo(
            f"rpc      http://{rpc_shown}:{bound_rpc_port}/api/v0/...  "
            f"(Authorization: Bearer <token from {where}>)",
            err=True,
        )

    serve_forever(
        store,
        host=host,
        port=port,
        rpc_host=rpc_host,
        rpc_port=rpc_port,
        token=token,
        max_request_bytes=settings.max_request_bytes,
        on_ready=ready,
        script_roots=roots,
    )


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
    if output.is_dir():
        raise ConfigError(f"{output} is a directory", hint=f"name the CAR file, e.g. -o {output / 'dag.car'}")
    if not output.parent.is_dir():
        raise NotFoundError(
            f"cannot write {output}: the directory {output.parent} does not exist",
            hint=f"create it first (mkdir -p {output.parent}), or pick another -o path",
        )
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as f:
            store.export_car(root, f)
        os.replace(partial, output)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {output}: {exc.strerror or exc}",
            hint="check the -o path: its directory must be writable and have room",
        ) from None
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
    if car != "-" and not Path(car).is_file():
        raise NotFoundError(f"{car} does not exist", hint="check the path")
    store = _open_repo(repo, create=True)
    if car == "-":
        roots = store.import_car(sys.stdin.buffer, pin=pin)
    else:
        with Path(car).open("rb") as f:
            roots = store.import_car(f, pin=pin)
    for root in roots:
        typer.echo(str(root))


@ipfs_app.command()
def ls(
    cid: Annotated[str, typer.Argument(help="CID, CID/path or /ipfs/CID/path of a directory.")],
    repo: RepoOption = None,
) -> None:
    """List a directory as '<cid> <size> <name>' lines (directories end in '/'), as `ipfs ls` does."""
    store = _open_repo(repo)
    target = _parse_path(store, cid)
    if store.stat(target).kind != "directory":
        raise ConfigError(
            f"{cid} is a file, not a directory", hint="`chrysalis ipfs cat` writes a file's bytes"
        )
    for entry in store.ls(target):
        stat = store.stat(entry.cid)
        suffix = "/" if stat.kind == "directory" else ""
        typer.echo(f"{entry.cid} {stat.size} {entry.name}{suffix}")


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
