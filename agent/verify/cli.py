"""``chrysalis verify TOKEN``: with the operator's config, or from public sources only.

With ``--contract`` (and ``--rpc``, ``--gateway``) nothing of the operator is needed: no config, no deployment
record, no database, no repo; it works in an empty folder. Without it, the node, the address, the chain id and the
first block come from ``chain.rpc_url`` and the deployment record, and the agent's IPFS repo is a source too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.errors import ConfigError
from agent.ipfs.cli import GatewaysOption, IpfsApisOption

if TYPE_CHECKING:  # the command imports what it uses when it runs (torch: a fast `chrysalis --help`)
    from agent.verify.report import StageCheck

_PUBLIC_HINT = (
    "to verify a token of a collection you don't operate, name it: chrysalis verify TOKEN --rpc URL "
    "--contract ADDRESS --gateway URL"
)


def verify_command(
    token: Annotated[str, typer.Argument(help="Token id.", metavar="TOKEN", show_default=False)],
    stage: Annotated[
        str | None,
        typer.Option("--stage", "-s", metavar="N", help="Stage to verify (default: the current one)."),
    ] = None,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc",
            metavar="URL",
            help="The chain's JSON-RPC URL (default: chain.rpc_url).",
            show_default=False,
        ),
    ] = None,
    contract: Annotated[
        str | None,
        typer.Option(
            "--contract",
            metavar="ADDRESS",
            help="The collection's address (default: the deployment record's). With it, no deployment record, "
            "database or repo is needed.",
            show_default=False,
        ),
    ] = None,
    chain_id: Annotated[
        str | None,
        typer.Option(
            "--chain-id",
            metavar="ID",
            help="The chain the node must serve (default: the deployment record's; unchecked without either).",
            show_default=False,
        ),
    ] = None,
    from_block: Annotated[
        str | None,
        typer.Option(
            "--from-block",
            metavar="BLOCK",
            help="First block of the collection's logs (default: the deployment record's, else found on-chain).",
            show_default=False,
        ),
    ] = None,
    gateway: GatewaysOption = None,
    ipfs_api: IpfsApisOption = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", help="Seconds each IPFS source may take for one block."),
    ] = 30.0,
    trust_anchors: Annotated[
        Path | None,
        typer.Option(
            "--trust-anchors",
            metavar="PEM",
            help="PEM root certificates the images' Content Credentials may chain to (default: "
            "credentials.trust_anchors).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    image_model: Annotated[
        str | None,
        typer.Option(
            metavar="PATH", help="Where this machine keeps the receipt's image model, if not where recorded."
        ),
    ] = None,
    lore_model: Annotated[
        str | None,
        typer.Option(
            metavar="PATH", help="Where this machine keeps the receipt's lore model, if not where recorded."
        ),
    ] = None,
) -> None:
    """Verify a token from its chain and IPFS: every link checked, its inference re-run canonically.

    Reads the token on its chain, fetches its metadata, parent chain and images by CID (every block checked against
    its CID), checks every link and re-runs the inference. With --contract nothing of the operator is needed.
    Exit 0 match, 1 mismatch (each field named), 2 cannot reproduce here, 3 bad input or unreachable source.
    """
    from agent.errors import error_exit_code
    from agent.generate.verify import EXIT_ERROR

    with error_exit_code(EXIT_ERROR):
        result = _run(
            token, stage, rpc, contract, chain_id, from_block, gateway or [], ipfs_api or [], timeout,
            image_model, lore_model, trust_anchors,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
    else:
        typer.echo(result.report())
    raise typer.Exit(result.exit_code)


def _int(value: str | None, what: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip(), 0)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(
            f"{what} {value!r} is not a whole number >= {minimum}", hint=f"pass {what} as e.g. 1"
        )
    return number


def _run(
    token_text: str,
    stage_text: str | None,
    rpc: str | None,
    contract: str | None,
    chain_id_text: str | None,
    from_block_text: str | None,
    gateways: list[str],
    ipfs_apis: list[str],
    timeout: float,
    image_model: str | None,
    lore_model: str | None,
    trust_anchors: Path | None,
) -> StageCheck:
    from agent.clicontext import current_settings
    from agent.deployment import Deployment
    from agent.ipfs.fetch import make_fetcher
    from agent.ipfs.reader import DagLimits
    from agent.ipfs.repo import IpfsRepo, is_repo
    from agent.verify.chain import ChainTarget, CollectionReader
    from agent.verify.core import verify_token

    token = _int(token_text, "TOKEN", minimum=0)
    stage = _int(stage_text, "--stage", minimum=0)
    chain_id = _int(chain_id_text, "--chain-id", minimum=1)
    from_block = _int(from_block_text, "--from-block", minimum=0)
    assert token is not None
    if not timeout > 0:
        raise ConfigError(
            f"--timeout {timeout} is not a positive number of seconds", hint="pass --timeout 30"
        )
    settings = current_settings()
    if contract is not None:
        target = ChainTarget(rpc or settings.chain.rpc_url, contract, chain_id, from_block)
    else:
        record = Path(settings.chain.deployment)
        if not record.is_file():
            raise ConfigError(f"no deployment record at {record}, and no --contract", hint=_PUBLIC_HINT)
        deployment = Deployment.load(record)
        if chain_id is not None and chain_id != deployment.chain_id:
            raise ConfigError(
                f"--chain-id {chain_id}, but deployment record {record} is for chain {deployment.chain_id}",
                hint="drop --chain-id, or point chain.deployment at that chain's record",
            )
        target = ChainTarget(
            rpc or settings.chain.rpc_url,
            deployment.address(),
            deployment.chain_id,
            deployment.deploy_block if from_block is None else from_block,
            record=str(record),
        )
    apis = list(ipfs_apis)
    if contract is None and settings.ipfs.kubo_api and settings.ipfs.kubo_api not in apis:
        apis.append(settings.ipfs.kubo_api)
    repo_dir = settings.ipfs_repo
    # only read: a repo that is not there is not created (verify leaves no state behind)
    repo = IpfsRepo(repo_dir, limits=DagLimits.from_settings(settings.ipfs)) if is_repo(repo_dir) else None
    reader = CollectionReader(target)
    with make_fetcher(
        gateways=gateways,
        ipfs_apis=apis,
        repo=repo,
        timeout_s=timeout,
        limits=DagLimits.from_settings(settings.ipfs),
    ) as fetcher:
        return verify_token(
            reader,
            fetcher,
            token,
            stage,
            cache_dir=settings.models.cache_dir,
            image_model=image_model,
            lore_model=lore_model,
            trust_anchors=trust_anchors or settings.credentials.trust_anchors,
        )
