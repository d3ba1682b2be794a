"""``chrysalis genesis``: prepare a collection before mint, and optionally reveal, publish and set its base URI.

::

    chrysalis genesis --size 1000 --seed launch-1                  # assign, generate, report, commit
    chrysalis genesis --size 1000 --seed launch-1 \\
        --publish --reveal-block 21000000                          # reveal, publish the directory, pin it
    chrysalis genesis --size 1000 --seed launch-1 --publish --reveal-block 21000000 \\
        --set-base-uri --deployment deployments/local.json --keystore admin.json

Rerunning the same command resumes an interrupted generation (finished batches are skipped) and repeats no
finished step: the reveal is recorded once, the directory CID is the same, setting the base URI again is harmless.
Models come from the settings (``[models]``, ``CHRYSALIS_MODELS__*``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.errors import ConfigError

console = Console()


def genesis_command(
    size: Annotated[int, typer.Option("--size", min=1, help="Number of tokens in the collection.")],
    traits: Annotated[
        Path | None, typer.Option("--traits", help="Trait table (TOML); default: the shipped example.")
    ] = None,
    seed: Annotated[
        str | None,
        typer.Option(
            "--seed",
            help="Any text; decides the assignment and every image. Default: reuse --out's, or random.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output and state directory (default: <data_dir>/genesis).")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Items per batch and per resume step (default 64)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes making batches, each with models.threads torch threads (default 1) "
            "(default: one per CPU core, up to 4; 1 on a GPU). Outputs do not depend on it.",
        ),
    ] = None,
    sheet: Annotated[int, typer.Option("--sheet", min=0, help="Images on the contact sheet (0: none).")] = 64,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="Reveal, then publish the metadata directory on IPFS and pin it."),
    ] = False,
    reveal_block: Annotated[
        int | None,
        typer.Option("--reveal-block", help="Block whose hash decides the offset (announced beforehand)."),
    ] = None,
    reveal_hash: Annotated[
        str | None, typer.Option("--reveal-hash", help="That block's hash, when the node is not reachable.")
    ] = None,
    rpc_url: Annotated[
        str | None, typer.Option("--rpc-url", help="Node to read the reveal block from (chain.rpc_url).")
    ] = None,
    ipfs_repo: Annotated[
        Path | None, typer.Option("--ipfs-repo", help="IPFS repo (default: ipfs.repo).")
    ] = None,
    set_base_uri: Annotated[
        bool, typer.Option("--set-base-uri", help="Call the collection's setBaseURI(ipfs://<dirCID>/).")
    ] = False,
    deployment: Annotated[
        Path | None, typer.Option("--deployment", help="Deployment record (default: chain.deployment).")
    ] = None,
    keystore: Annotated[
        Path | None, typer.Option("--keystore", help="Admin keystore (default: signer.*).")
    ] = None,
    ape_account: Annotated[str | None, typer.Option("--ape-account", help="Admin Ape account alias.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Genesis of N assets with exact rarity: assign traits, generate images and lore, commit, reveal, publish."""
    from agent.genesis.generate import DEFAULT_BATCH_SIZE, run_genesis
    from agent.genesis.ledger import LEDGER_NAME, Ledger
    from agent.genesis.traits import load_table
    from agent.settings import load_settings

    settings = load_settings()
    out_dir = out if out is not None else settings.data_dir / "genesis"
    if (out_dir / LEDGER_NAME).is_file():  # resuming: what was not given is the run's own
        with Ledger.read(out_dir) as ledger:
            params = ledger.params()
        batch_size = batch_size or int(params.get("batch_size", DEFAULT_BATCH_SIZE))
        if seed is None:
            seed = str(params["seed"])
            console.print(f"resuming {out_dir} with its seed [bold]{escape(seed)}[/]")
    if seed is None:
        seed = secrets.token_hex(16)
        console.print(f"seed [bold]{seed}[/] (random; pass --seed {seed} to reproduce this genesis)")
    if set_base_uri and not publish and not (out_dir / "published.json").is_file():
        raise ConfigError("--set-base-uri needs a published genesis", hint="add --publish --reveal-block N")
    if publish and reveal_block is None:
        raise ConfigError(
            "--publish needs the reveal block whose hash decides the offset",
            hint="announce the provenance hash, pick a block after that announcement and pass --reveal-block N",
        )

    table = load_table(traits)
    result = run_genesis(
        table,
        size,
        seed,
        out_dir,
        models=settings.models,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        workers=workers,
        sheet_size=sheet,
        progress=progress,
        console=console,
    )
    _print_rarity(table, result.assignment)
    how = f"{result.timings.workers} worker(s) x {result.timings.threads} torch thread(s)"
    console.print(
        f"generated {result.generated}, already done {result.resumed}, in {result.elapsed_s:.1f} s ({how}) "
        f"-> {out_dir}\n"
        f"provenance hash [bold]{result.provenance_sha256}[/] (publish it before the reveal)"
    )

    if publish:
        from agent.genesis.publish import publish_genesis, reveal_genesis
        from agent.ipfs.backends.replicated import Replicator
        from agent.ipfs.repo import IpfsRepo

        assert reveal_block is not None
        reveal = reveal_genesis(
            out_dir,
            block_number=reveal_block,
            block_hash=reveal_hash,
            rpc_url=None if reveal_hash else (rpc_url or settings.chain.rpc_url),
        )
        console.print(
            f"revealed with block {reveal.block_number} ({reveal.block_hash}): offset {reveal.offset}"
        )
        repo = IpfsRepo(ipfs_repo or settings.ipfs.repo)
        with Replicator.from_settings(settings.ipfs, repo) as replicator:
            published = publish_genesis(out_dir, repo, reveal=reveal, replicator=replicator)
        console.print(
            f"directory [bold]{published.dir_cid}[/] ({'HAMT-sharded' if published.sharded else 'basic'}, "
            f"{published.size} tokens), base URI [bold]{published.base_uri}[/]"
        )

    if set_base_uri:
        from agent.deployment import Deployment
        from agent.genesis.publish import published_record
        from agent.genesis.publish import set_base_uri as send_base_uri
        from agent.submit.signer import KeystoreSigner

        record = published_record(out_dir)
        signer_settings = settings.signer.model_copy(
            update={
                k: v for k, v in {"keystore": keystore, "ape_account": ape_account}.items() if v is not None
            }
        )
        signer = KeystoreSigner.from_settings(signer_settings)
        confirmation = send_base_uri(
            Deployment.load(deployment or settings.chain.deployment),
            record["base_uri"],
            signer,
            rpc_url=rpc_url or settings.chain.rpc_url,
            settings=settings.submit,
        )
        console.print(
            f"setBaseURI({record['base_uri']}) mined in block {confirmation.block_number}: {confirmation.tx_hash}"
        )


def _print_rarity(table, assignment) -> None:
    from agent.genesis.report import rarity_rows

    view = Table(title=f"rarity: {table.name}, {assignment.size} tokens (rarity.md)")
    for col in ("trait", "value", "target", "count", "off by"):
        view.add_column(col)
    for row in rarity_rows(table, assignment):
        view.add_row(
            row.trait, row.value, f"{row.target_share:.2%}", str(row.actual_count), f"{row.off_by:+d}"
        )
    console.print(view)
