"""The ``chrysalis deploy`` and ``chrysalis mint`` commands (their work is in :mod:`agent.ops.deploy`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.clicontext import current_settings
from agent.deployment import DeployParams

_D = DeployParams()


def deploy_command(
    account: Annotated[
        str,
        typer.Option(
            "--from",
            help="The deployer: a development account index on a local chain (0, dev:2), a V3 keystore file, or an "
            "Ape account alias (ape:alice). It becomes the admin.",
            show_default=False,
        ),
    ] = "0",
    rpc_url: Annotated[
        str | None,
        typer.Option("--rpc-url", help="JSON-RPC URL (default: chain.rpc_url).", show_default=False),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Address granted AGENT_ROLE and REFRESHER_ROLE (default: the deployer).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The deployment record to write (default: deployments/local.json on a local chain, "
            "deployments/chain-<id>.json elsewhere); its ABIs go beside it.",
            show_default=False,
        ),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(
            "--artifacts",
            help="Compiled contracts (default: the checkout's .build/__local__.json).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Collection name.")] = _D.name,
    symbol: Annotated[str, typer.Option("--symbol", help="Collection symbol.")] = _D.symbol,
    max_supply: Annotated[int, typer.Option("--max-supply", help="Supply cap.")] = _D.max_supply,
    mint_price: Annotated[
        int, typer.Option("--mint-price", help="Wei per publicly minted token.")
    ] = _D.mint_price,
    max_per_wallet: Annotated[
        int, typer.Option("--max-per-wallet", help="Public mint cap per wallet (0: none).")
    ] = (_D.max_per_wallet),
    evolution_fee: Annotated[int, typer.Option("--evolution-fee", help="Wei per evolution request.")] = (
        _D.evolution_fee
    ),
    request_timeout: Annotated[
        int, typer.Option("--request-timeout", help="Seconds before a pending request may be cancelled.")
    ] = _D.request_timeout,
    model_digest: Annotated[
        str | None,
        typer.Option(
            "--model-digest",
            help="sha256 (hex) of the initial model's weights: registered and activated.",
            show_default=False,
        ),
    ] = None,
    publish_model: Annotated[
        bool,
        typer.Option(
            "--publish-model",
            help="Pin the configured image model's whole directory to IPFS (as `chrysalis model publish` does) and "
            "register it as the initial model: its weights digest with its ipfs:// URI, activated.",
        ),
    ] = False,
    price_feed: Annotated[
        bool | None,
        typer.Option("--price-feed/--no-price-feed", help="Deploy DevPriceFeed (default: on a local chain)."),
    ] = None,
    description: Annotated[
        str, typer.Option("--description", help="Collection description (contract-level metadata, ERC-7572).")
    ] = "",
    image: Annotated[
        str,
        typer.Option(
            "--image",
            help="Collection image: a URI (ipfs://..., https://...), or a local file, pinned to the IPFS repo.",
        ),
    ] = "",
    external_link: Annotated[
        str, typer.Option("--external-link", help="Collection website (contract-level metadata).")
    ] = "",
    contract_uri: Annotated[
        str | None,
        typer.Option(
            "--contract-uri",
            help="contractURI to set as is (default: ipfs:// of the collection metadata JSON, pinned to the IPFS "
            "repo).",
            show_default=False,
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="File holding the keystore password.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Deploy LivingCollection (and DevPriceFeed on a local chain) and write the deployment record the agent
    reads. No Ape and no checkout scripts needed. The collection's metadata JSON (name, description, image,
    external link) is pinned to the embedded IPFS repo and becomes its contractURI (ERC-7572)."""
    from pydantic import ValidationError

    from agent.errors import ConfigError
    from agent.ops.cli import out as console
    from agent.ops.deploy import deploy

    settings = current_settings()
    model_manifest = ""
    if publish_model:
        if model_digest:
            raise ConfigError(
                "--publish-model and --model-digest both name the initial model",
                hint="--publish-model registers the configured image model's digest itself; drop --model-digest",
            )
        from agent.ops.models import pin_for_deploy

        pinned = pin_for_deploy(settings)
        model_digest, model_manifest = pinned.model.weights_sha256, pinned.uri
    image_file = Path(image) if image and "://" not in image and not image.startswith("data:") else None
    try:
        params = DeployParams(
            name=name, symbol=symbol, max_supply=max_supply, mint_price=mint_price, max_per_wallet=max_per_wallet,
            evolution_fee=evolution_fee, request_timeout=request_timeout, agent=agent, model_digest=model_digest,
            model_manifest=model_manifest,
            price_feed=price_feed, description=description, image="" if image_file else image,
            external_link=external_link, contract_uri=contract_uri,
        )  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"invalid deploy option(s): {problems}", hint="see `chrysalis deploy --help`"
        ) from None
    done = deploy(
        rpc_url or settings.chain.rpc_url, account, params, out=out, artifacts=artifacts,
        password_file=password_file or settings.signer.password_file, password_env=settings.signer.password_env,
        ipfs_repo=settings.ipfs_repo, image_file=image_file,
    )  # fmt: skip
    d = done.deployment
    if as_json:
        typer.echo(json.dumps({"record": str(done.record), **d.model_dump(mode="json")}, indent=2))
        return
    for contract, record in d.contracts.items():
        console.print(f"{contract} at {record.address}")
    if d.contract_uri:
        console.print(f"contractURI {d.contract_uri}", highlight=False)
    console.print(
        f"record written to {done.record} (chain {d.chain_id}, deploy block {d.deploy_block}, agent {d.agent})"
    )
    default = Path(settings.chain.deployment)
    if done.record.resolve() != default.resolve():
        console.print(f"[dim]point the agent at it: chain.deployment = \"{done.record}\" "
                      f"(CHRYSALIS_CHAIN__DEPLOYMENT={done.record})[/]")  # fmt: skip


def mint_command(
    quantity: Annotated[int, typer.Argument(help="How many tokens.", min=1)],
    account: Annotated[
        str,
        typer.Option(
            "--from", help="The minting account (0, dev:2, a keystore file, ape:alice).", show_default=False
        ),
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Airdrop to this address instead (needs MINTER_ROLE; free).", show_default=False
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="File holding the keystore password.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Mint tokens of the collection in chain.deployment: a public mint paying the price, or --to an airdrop."""
    from agent.ops.cli import out as console
    from agent.ops.deploy import mint
    from agent.pipeline.holder import format_eth
    from agent.tokens import format_tokens

    result = mint(current_settings(), account, quantity, to=to, password_file=password_file)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    paid = f", paid {format_eth(result['paid_wei'])}" if result["paid_wei"] else ""
    console.print(
        f"minted token(s) {format_tokens(result['tokens'])} to {result['to']}{paid} "
        f"(tx {result['tx_hash']}, block {result['block_number']})"
    )
