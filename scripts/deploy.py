"""Deploy the collection: ``ape run deploy --network ethereum:local:foundry`` (or any Ape network), from inside the
checkout. Outside it, or without Ape, ``chrysalis deploy --rpc-url URL --from ACCOUNT`` does the same through plain
web3 (both share :func:`agent.deployment.deploy_with`).

Writes ``deployments/<network>.json`` (``deployments/local.json`` on local networks) and ``deployments/abi/``.
Every option can also come from the environment (``CHRYSALIS_DEPLOY_<OPTION>``, e.g.
``CHRYSALIS_DEPLOY_EVOLUTION_FEE=1000000000000000``). The logic lives in :mod:`agent.deployment`.

``ethereum:local:foundry`` starts a private anvil that stops when the command ends. To deploy to a chain
that keeps running for the agent, start one yourself and point Ape at it (Ape's local test accounts sign for
chain id 1337)::

    anvil --chain-id 1337 &
    ape run deploy --network ethereum:local:http://127.0.0.1:8545
"""

from __future__ import annotations

import click
from ape.cli import ConnectedProviderCommand, ape_cli_context

from agent.deployment import DEPLOYMENTS_DIR, DeployParams, deploy_collection

_DEFAULTS = DeployParams()


def _opt(name: str, type_: object, help_: str) -> object:
    """A click option whose default is DeployParams' and whose env var is CHRYSALIS_DEPLOY_<NAME>."""
    field = name.replace("-", "_")
    return click.option(
        f"--{name}",
        field,
        type=type_,
        default=getattr(_DEFAULTS, field),
        show_default=True,
        envvar=f"CHRYSALIS_DEPLOY_{field.upper()}",
        help=help_,
    )


@click.command(cls=ConnectedProviderCommand, short_help="Deploy LivingCollection (and DevPriceFeed locally)")
@ape_cli_context()
@click.option(
    "--account",
    "account_alias",
    envvar="CHRYSALIS_DEPLOY_ACCOUNT",
    default=None,
    help="Ape account alias that deploys; default on local networks: the first test account.",
)
@_opt("name", str, "Collection name.")
@_opt("symbol", str, "Collection symbol.")
@_opt("max-supply", int, "Supply cap.")
@_opt("mint-price", int, "Public mint price, wei per token.")
@_opt("max-per-wallet", int, "Public mint cap per wallet (0 = none).")
@_opt("evolution-fee", int, "Fee per evolution request, wei.")
@_opt(
    "request-timeout",
    int,
    "Seconds (at least 3600) after which a pending request may be cancelled and refunded.",
)
@_opt("base-uri", str, "tokenURI prefix before a token's first metadata digest.")
@_opt("royalty-bps", int, "ERC-2981 default royalty, basis points.")
@_opt("treasury", str, "Fee recipient (default: the deployer).")
@_opt("agent", str, "Address granted AGENT_ROLE and REFRESHER_ROLE (default: the deployer).")
@_opt("model-digest", str, "sha256 (hex) of the initial model's weights: registered and activated if given.")
@_opt("model-manifest", str, "URI of the initial model's manifest.")
@click.option(
    "--price-feed/--no-price-feed",
    default=None,
    envvar="CHRYSALIS_DEPLOY_PRICE_FEED",
    help="Deploy DevPriceFeed (default: only on local networks).",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default=str(DEPLOYMENTS_DIR),
    show_default=True,
    help="Where the deployment record and ABIs go.",
)
def cli(cli_ctx, account_alias, out_dir, **options):
    """Deploy the collection and write its deployment record."""
    from ape import accounts, networks

    network = networks.provider.network
    if account_alias:
        deployer = accounts.load(account_alias)
    elif network.name == "local":
        deployer = accounts.test_accounts[0]
    else:
        raise click.UsageError(f"--account is required on {network.ecosystem.name}:{network.name}")

    params = DeployParams(**options)
    deployment = deploy_collection(params, deployer, out_dir=out_dir)
    for name, record in deployment.contracts.items():
        cli_ctx.logger.success(f"{name} at {record.address}")
    cli_ctx.logger.success(
        f"record written to {out_dir}/ (chain {deployment.chain_id}, block {deployment.deploy_block}, "
        f"agent {deployment.agent})"
    )
