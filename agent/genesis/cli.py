"""``chrysalis genesis``: prepare a collection before mint, and optionally reveal, publish and set its base URI.

::

    chrysalis genesis --size 1000 --seed launch-1                  # assign, generate, report (provenance hash)
    chrysalis genesis --size 1000 --seed launch-1 --commit \\
        --keystore admin.json                                      # commitReveal(provenance, future block)
    chrysalis genesis --size 1000 --seed launch-1 --publish --wait \\
        --set-base-uri --keystore admin.json                       # reveal(), publish, pin, setBaseURI

With a deployment record (``--deployment``, or ``chain.deployment`` when that file exists) the reveal is bound
on-chain: ``--commit`` commits the provenance hash and a reveal block ``REVEAL_DELAY`` + a margin blocks ahead,
and ``--publish`` has the contract record that block's hash and uses its ``revealOffset(N)``. Without one (a
genesis before its contract exists) ``--publish --reveal-block N`` reveals from an announced block, with a
warning that nothing binds it.

Rerunning the same command resumes an interrupted generation (finished batches are skipped) and repeats no
finished step: the commit is made once, the reveal is recorded once, the directory CID is the same, setting the
base URI again is harmless.
Models come from the settings (``[models]``, ``CHRYSALIS_MODELS__*``). ``--ray auto|HOST:PORT`` makes the
batches on a Ray cluster's actors instead of local worker processes (:mod:`agent.genesis.ray_engine`), with the
same files.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.clicontext import current_settings
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
            help="Processes making batches (default: one per CPU core, up to 4; 1 on a GPU; never more than there "
            "are batches), each with models.threads torch threads. Outputs do not depend on it.",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|HOST:PORT",
            help="Make the batches on a Ray cluster: auto (the running one this machine knows, else a local one "
            "with every CPU, stopped at the end) or the head's HOST:PORT. --workers is then the number of actors "
            "(default: one per GPU when the models use them, else one per models.threads CPUs of the cluster), "
            "each with models.threads torch threads (1 unless set). Outputs do not depend on it. Needs ray\\[data] "
            "(requirements.lock).",
            show_default=False,
        ),
    ] = None,
    sheet: Annotated[int, typer.Option("--sheet", min=0, help="Images on the contact sheet (0: none).")] = 64,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="Reveal, then publish the metadata directory on IPFS and pin it."),
    ] = False,
    commit: Annotated[
        bool,
        typer.Option(
            "--commit",
            help="Commit the provenance hash and a future reveal block on the collection (admin key, once).",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="With --publish: wait for the committed reveal block to be mined.")
    ] = False,
    reveal_block: Annotated[
        int | None,
        typer.Option(
            "--reveal-block",
            help="Without a deployment: the announced block whose hash decides the offset. With one: must be the "
            "committed block.",
        ),
    ] = None,
    reveal_hash: Annotated[
        str | None,
        typer.Option("--reveal-hash", help="That block's hash as announced; checked against the node's."),
    ] = None,
    rpc_url: Annotated[
        str | None, typer.Option("--rpc-url", help="Node of the collection's chain (chain.rpc_url).")
    ] = None,
    ipfs_repo: Annotated[
        Path | None, typer.Option("--ipfs-repo", help="IPFS repo (default: ipfs.repo).")
    ] = None,
    set_base_uri: Annotated[
        bool, typer.Option("--set-base-uri", help="Call the collection's setBaseURI(ipfs://<dirCID>/).")
    ] = False,
    deployment: Annotated[
        Path | None,
        typer.Option(
            "--deployment", help="Deployment record (default: chain.deployment, when that file exists)."
        ),
    ] = None,
    keystore: Annotated[
        Path | None,
        typer.Option(
            "--keystore", help="Admin keystore for --commit / --set-base-uri; any key sends reveal()."
        ),
    ] = None,
    ape_account: Annotated[str | None, typer.Option("--ape-account", help="Admin Ape account alias.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Genesis of N assets with exact rarity: assign traits, generate images and lore, commit, reveal, publish."""
    from agent.genesis.ledger import LEDGER_NAME, Ledger
    from agent.genesis.run import DEFAULT_BATCH_SIZE, run_genesis
    from agent.genesis.traits import load_table

    settings = current_settings()
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
    deployment_path = deployment or settings.chain.deployment
    on_chain = deployment is not None or deployment_path.is_file()  # the commitment binds the reveal
    if set_base_uri and not publish and not (out_dir / "published.json").is_file():
        raise ConfigError(
            "--set-base-uri needs a published genesis",
            hint="add --publish" + ("" if on_chain else " --reveal-block N"),
        )
    if commit and not on_chain:
        raise ConfigError(
            f"--commit needs the collection's deployment record, and there is none at {deployment_path}",
            hint="deploy the collection first (`chrysalis deploy`), or pass its record with --deployment PATH",
        )
    if publish and not on_chain and reveal_block is None:
        raise ConfigError(
            "--publish needs the reveal block whose hash decides the offset",
            hint="deploy the collection and commit the reveal on-chain (--commit), or, before any deployment, "
            "announce the provenance hash, pick a block after that announcement and pass --reveal-block N",
        )
    if wait and not (publish and on_chain):
        raise ConfigError(
            "--wait waits for the committed reveal block, so it needs --publish and a deployment",
            hint="add --publish (with --deployment PATH, or chain.deployment set), or leave --wait out",
        )

    from agent.deployment import Deployment
    from agent.submit.signer import KeystoreSigner

    chain_url = rpc_url or settings.chain.rpc_url
    signer_settings = settings.signer.model_copy(
        update={k: v for k, v in {"keystore": keystore, "ape_account": ape_account}.items() if v is not None}
    )

    def signer() -> KeystoreSigner:
        return KeystoreSigner.from_settings(signer_settings)

    def load_deployment() -> Deployment:
        return Deployment.load(deployment_path)

    table = load_table(traits)
    if publish:  # what can be refused without the generation is refused before it (it may take hours)
        from agent.genesis.reveal import block_hash_at, parse_block_hash, read_commitment

        if reveal_hash is not None:
            reveal_hash = parse_block_hash(reveal_hash)
        if (
            on_chain
            and not commit
            and not read_commitment(load_deployment(), chain_url, settings.submit).committed
        ):
            raise ConfigError(
                f"the collection in {deployment_path} has no reveal commitment: the reveal block must be committed "
                "on-chain before the reveal",
                hint="commit first with the admin key: add --commit (then --publish once the block it names is "
                "mined)",
            )
        if not on_chain and reveal_block is not None:
            console.print(
                f"[yellow]warning:[/] no deployment record at {escape(str(deployment_path))}: reveal block "
                f"{reveal_block} is only announced off-chain, not bound by the contract (deploy first and use "
                "--commit to bind it)"
            )
            block_hash_at(chain_url, reveal_block)  # a block not mined yet, or no node: said now

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
        gates=settings.gates,
        ray=ray,
    )
    _print_rarity(table, result.assignment)
    if result.gates is not None:
        gate_view = Table(title=f"quality gates (gates.md): {out_dir}")
        for col in ("gate", "failed first try", "rerolled and passed", "still failing", "rerolls"):
            gate_view.add_column(col)
        for row in result.gates:
            gate_view.add_row(
                row.gate,
                str(row.failed_first_try),
                str(row.passed_after_reroll),
                str(row.flagged),
                str(row.rerolls),
            )
        console.print(gate_view)
    how = f"{result.timings.workers} worker(s) x {result.timings.threads} torch thread(s)"
    if result.timings.engine == "ray":
        how = (
            f"Ray cluster {result.timings.cluster or ray}: {result.timings.workers} actor(s) x "
            f"{result.timings.threads} torch thread(s)"
        )
    console.print(
        f"generated {result.generated}, already done {result.resumed}, in {result.elapsed_s:.1f} s ({how}) "
        f"-> {out_dir}\n"
        f"provenance hash [bold]{result.provenance_sha256}[/] "
        + ("(commit it with --commit before the reveal)" if on_chain else "(publish it before the reveal)")
    )

    if commit:
        from agent.genesis.reveal import commit_reveal

        commitment, confirmation = commit_reveal(
            out_dir, load_deployment(), signer(), rpc_url=chain_url, settings=settings.submit
        )
        done = (
            "already committed"
            if confirmation is None
            else f"committed in block {confirmation.block_number} ({confirmation.tx_hash})"
        )
        console.print(
            f"reveal {done} on {commitment.contract}: provenance [bold]{commitment.provenance_sha256}[/], reveal "
            f"block [bold]{commitment.reveal_block}[/] (chain at {commitment.head}); run with --publish once it is "
            "mined"
        )

    if publish:
        from agent.genesis.reveal import Commitment, publish_genesis, reveal_genesis, reveal_on_chain
        from agent.ipfs.backends.replicated import Replicator
        from agent.ipfs.repo import IpfsRepo

        if on_chain:

            def waiting(c: Commitment) -> None:
                console.print(
                    f"waiting for reveal block {c.reveal_block}: chain at {c.head}, {c.blocks_to_wait} block(s) "
                    "to go"
                )

            reveal = reveal_on_chain(
                out_dir,
                load_deployment(),
                rpc_url=chain_url,
                signer=signer,
                settings=settings.submit,
                block_number=reveal_block,
                block_hash=reveal_hash,
                wait=wait,
                on_wait=waiting,
            )
            console.print(
                f"revealed on-chain by {reveal.contract} with block {reveal.block_number} ({reveal.block_hash}): "
                f"offset {reveal.offset}"
            )
        else:
            assert reveal_block is not None
            reveal = reveal_genesis(
                out_dir, block_number=reveal_block, block_hash=reveal_hash, rpc_url=chain_url
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
        from agent.genesis.reveal import published_record
        from agent.genesis.reveal import set_base_uri as send_base_uri

        record = published_record(out_dir)
        confirmation = send_base_uri(
            load_deployment(), record["base_uri"], signer(), rpc_url=chain_url, settings=settings.submit
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
