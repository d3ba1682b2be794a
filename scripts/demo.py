"""The Chrysalis demo: ``make demo`` (``ape run demo --network ethereum:local:foundry``).

Foundation issue: deploy the collection on a throwaway local chain, mint to a few holders, open an evolution
request, fuse two tokens, and print the collection's state. Later issues add the agent that fulfils the
requests.
Ape starts anvil for the run and stops it on exit; the deployment record goes to ``demo-out/`` (git-ignored),
never to ``deployments/``.
"""

from __future__ import annotations

import time

import click
from ape.cli import ConnectedProviderCommand, ape_cli_context

from agent.deployment import DeployParams, deploy_collection

OUT_DIR = "demo-out/deployments"


@click.command(cls=ConnectedProviderCommand, short_help="Run the Chrysalis demo on a local chain")
@ape_cli_context()
def cli(cli_ctx, network):
    """Deploy, mint, request an evolution, fuse, and show the collection."""
    from ape import accounts, chain
    from rich.console import Console

    started = time.monotonic()
    cli_ctx.logger.set_level("WARNING")  # the demo narrates; Ape's per-transaction lines would drown it
    console = Console()
    if chain.provider.network.name != "local":
        raise click.UsageError("the demo runs on a local network only (it spends test accounts' ether)")

    admin, agent, alice, bob, carol = accounts.test_accounts[:5]
    params = DeployParams(agent=agent.address)
    console.rule("[bold]Chrysalis demo: a living collection on a local chain")
    deployment = deploy_collection(params, admin, out_dir=OUT_DIR)
    from ape import project

    lc = project.LivingCollection.at(deployment.address())
    console.print(
        f"LivingCollection at [cyan]{lc.address}[/] "
        f"(chain {deployment.chain_id}, block {deployment.deploy_block}); record in {OUT_DIR}/"
    )

    price, fee = lc.mintPrice(), lc.evolutionFee()
    for holder, quantity in ((alice, 2), (bob, 3), (carol, 1)):
        lc.mint(quantity, value=price * quantity, sender=holder)
    console.print(f"minted {lc.totalMinted()} tokens to 3 holders at {price / 1e18:g} ETH each")

    tx = lc.requestEvolution(1, value=fee, sender=alice)
    (requested,) = tx.events.filter(lc.EvolutionRequested)
    console.print(
        f"alice requested an evolution of token 1: request {requested.requestId:#x}, seed "
        f"{bytes(requested.seed).hex()[:16]}..."
    )

    tx = lc.fuse(3, 4, value=fee, sender=bob)
    (fused,) = tx.events.filter(lc.Fused)
    console.print(f"bob fused token {fused.burnId} into token {fused.keepId}: request {fused.requestId:#x}")

    _print_state(
        console,
        lc,
        {
            admin.address: "admin",
            agent.address: "agent",
            alice.address: "alice",
            bob.address: "bob",
            carol.address: "carol",
        },
    )
    console.print(
        f"[dim]done in {time.monotonic() - started:.1f} s; the agent that fulfils requests comes next.[/]"
    )


def _print_state(console, lc, names: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(title="Collection state")
    for column in ("token", "owner", "stage", "pending request", "tokenURI"):
        table.add_column(column)
    for token_id in range(1, lc.totalMinted() + 1):
        if not lc.exists(token_id):
            table.add_row(str(token_id), "[red]burnt[/]", "", "", "")
            continue
        owner = lc.ownerOf(token_id)
        request_id, requester, _fee, requested_at = lc.pendingRequestOf(token_id)
        pending = f"{request_id:#x} by {names.get(requester, requester)}" if requested_at else ""
        uri = lc.tokenURI(token_id) or "(genesis: no base URI set)"
        table.add_row(str(token_id), names.get(owner, owner), str(lc.stageOf(token_id)), pending, uri)
    console.print(table)
    escrowed, withdrawable = lc.escrowedFees(), lc.withdrawableFees()
    console.print(
        f"fees escrowed {escrowed / 1e18:g} ETH, withdrawable {withdrawable / 1e18:g} ETH, "
        f"contract balance {lc.balance / 1e18:g} ETH "
        f"({'matches' if lc.balance == escrowed + withdrawable else 'DOES NOT MATCH'} "
        "escrowed + withdrawable); "
        f"supply {lc.totalSupply()} of {lc.maxSupply()}"
    )
