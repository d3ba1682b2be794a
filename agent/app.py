"""The composition root: every part of the agent built from typed :class:`~agent.settings.Settings`.

This is the one place that decides which parts exist and wires them: the pipeline's stages, the refreshes, the
review gate and the gateway get what they need through their constructors (the optional ones through the small
Protocols in :mod:`agent.pipeline.ports`), and nothing below builds its own collaborators from settings. The CLI
(``chrysalis run``, ``evolve --wait``...), ``make demo``, the benchmarks and the tests build the agent here::

    from agent.app import build_agent

    with build_agent(load_settings()) as agent:
        agent.run(stop)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from agent.credentials import ContentCredentials
from agent.deployment import Deployment
from agent.errors import ChrysalisError, ConfigError
from agent.gates import Gates
from agent.generate.base import ImageGenerator, LoreWriter
from agent.generate.factory import load_image_generator, load_lore_writer
from agent.ipfs.backends.replicated import Replicator
from agent.ipfs.fetch import RemoteBlocks
from agent.ipfs.reader import DagLimits
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.jobs import JobState, RetryPolicy
from agent.pipeline.agent import Activity, Agent
from agent.pipeline.assets import AssetStore
from agent.pipeline.collection import CollectionReader
from agent.pipeline.events import WATCHED_EVENTS, EventRouter
from agent.pipeline.generate import GenerateStage, ImageSigning
from agent.pipeline.inputs import InputsStage, build_oracles
from agent.pipeline.publish import PublishStage, TokenViewer
from agent.pipeline.reconcile import Reconciler
from agent.pipeline.submit import Settler, Submitter
from agent.pipeline.worker import Worker, in_flight
from agent.refresh.service import RefreshService
from agent.review import ReviewGate
from agent.rules import DEFAULT_RULES, RuleEngine, load_rules
from agent.settings import Settings
from agent.store import Database, SqlJobStore
from agent.store.roles import RoleLeases
from agent.submit import FulfilmentBatcher, KeystoreSigner, Web3TxSender
from agent.submit.journal_sql import SqlBroadcastJournal
from agent.watch import SqlCursorStore, WatchConfig, Watcher
from agent.watch.rpc import RpcClient

log = logging.getLogger("chrysalis.pipeline")


def build_agent(
    settings: Settings,
    *,
    worker_id: str | None = None,
    image: ImageGenerator | None = None,
    lore: LoreWriter | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Agent:
    """Open everything the agent needs from ``settings``.

    The database (``database.url``, migrated) and the job store on it, the watcher (``chain``, the deployment
    record's address, ABI and deploy block), the embedded IPFS repo (``ipfs.repo``) and its replicating
    backends, the oracles and their guard (wallet; price feed: ``agent.price_feed`` or the deployment's
    DevPriceFeed; the ``[oracles]`` section: :func:`~agent.pipeline.inputs.build_oracles`), the rules
    (``agent.rules``), the models (``models``, unless ``image``/``lore`` are given), the signer and sender
    (``signer``, ``submit``), the Content Credentials signer (``credentials``), the review gate
    (``studio.review``), the quality gates (``[gates]``), the refreshes (``[refresh]``) and the read-only gateway
    (``agent.serve_gateway``).

    Args:
        settings: The configuration.
        worker_id: This worker's id in the job store (default ``agent.worker_id``, else ``<host>:<pid>``).
        image: An :class:`~agent.generate.base.ImageGenerator` to use instead of the configured one
            (e.g. a null generator to measure the pipeline's own overhead).
        lore: A :class:`~agent.generate.base.LoreWriter` to use instead of the configured one.
        clock: UTC now for the job store and the refresh budgets (tests move it; default: the system's).

    Raises:
        NotFoundError: no deployment record, rules file or model.
        ConfigError: a setting is wrong, or the signer does not hold ``AGENT_ROLE`` on the collection.
        BackendUnavailableError: the database or the node cannot be reached.
    """
    s = settings
    cfg = s.agent
    deployment = Deployment.load(s.chain.deployment)
    abi = deployment.abi()
    address = deployment.address()
    worker_id = worker_id or cfg.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    # what only needs the settings first: bad rules or oracles fail before the database, the IPFS repo and
    # the data directory are created
    oracles, guard = build_oracles(s, deployment)
    # every declared feature must come from a configured oracle: a feature misspelt the same way in
    # [features] and in its rule is refused here, not by every evolution at runtime
    rules = load_rules(cfg.rules or DEFAULT_RULES, features=[n for o in oracles for n in o.provides])
    data_dir = Path(s.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        policy = RetryPolicy(max_attempts=cfg.max_attempts, base_s=cfg.retry_base_s, cap_s=cfg.retry_cap_s)
        db = Database.open(s.database.url, busy_timeout_ms=s.database.busy_timeout_ms)
        stack.callback(db.close)
        store = SqlJobStore(db, policy=policy, clock=clock)
        activity = Activity(store)
        wake = threading.Event()  # set by whatever queues a job: the run loop stops waiting
        rpc = RpcClient.from_settings(s.chain)
        watcher = Watcher(
            rpc,
            SqlCursorStore(db),
            WatchConfig.from_settings(
                s.chain,
                address=address,
                abi=abi,
                start_block=deployment.deploy_block,
                chain_id=deployment.chain_id,
                events=WATCHED_EVENTS,
                start_block_hash=deployment.deploy_block_hash,
            ),
        )
        _ = watcher.chain_id  # checks the node serves the deployment's chain
        reader = CollectionReader(
            RpcClient.from_settings(s.chain), address, max_range=s.chain.max_block_range
        )

        repo = IpfsRepo(s.ipfs_repo, limits=DagLimits.from_settings(s.ipfs))
        replicator = Replicator.from_settings(s.ipfs, repo)
        stack.callback(replicator.close)
        gateway = None
        serve = cfg.serve_gateway
        if serve is None:
            serve = any(p.mode == "origins" for p in s.ipfs.pinning_services)
        if serve:  # read-only: what a pinning service fetches from; the RPC (writes) is never served here
            gateway = NodeServer(
                repo,
                rpc=False,
                host=s.ipfs.gateway_host,
                port=s.ipfs.gateway_port,
                script_roots=s.ipfs.script_roots,
            ).start()
            stack.callback(gateway.stop)

        # the key before the models: a wrong password or role fails in a second, not after a model load
        signer = KeystoreSigner.from_settings(s.signer)
        if not reader.is_agent(signer.address):
            raise ConfigError(
                f"the agent key {signer.address} does not hold AGENT_ROLE on the collection {address}",
                hint="grant it (the admin calls grantRole(AGENT_ROLE, address)), or point signer.keystore at "
                "the key the deployment named as agent",
            )
        # one agent per key (each key has its own nonces): refused here, before anything is signed or settled
        roles = RoleLeases(
            db, worker_id, signer=signer.address, lease_s=cfg.role_lease_s,
            scope=f"{deployment.chain_id}:{address.lower()}:",
        )  # fmt: skip
        roles.register_exclusive(window_s=cfg.lease_s)  # listed by `chrysalis status` from now on
        stack.callback(roles.stopped)  # a start that fails after this leaves no live-looking agent behind
        # the C2PA key and chain too: checked, and proven by signing a test image, before a model loads
        signing = None
        if s.credentials.enabled:
            credentials = ContentCredentials.from_settings(s.credentials)
            signing = ImageSigning(credentials, chain_id=deployment.chain_id, contract=address)
        else:
            log.info("no [credentials] configured: generated images carry no Content Credentials")
        image = image or load_image_generator(s.models)
        lore = lore or load_lore_writer(s.models)
        unfinished = store.list_jobs(state=JobState.QUEUED, limit=10_000) + store.list_jobs(
            state=JobState.RUNNING, limit=10_000
        )
        sender = Web3TxSender.connect(
            s.chain.rpc_url,
            signer,
            s.submit,
            abis=[abi],
            in_flight=in_flight(unfinished),
            journal=SqlBroadcastJournal(db),
        )
        # Before anything new is signed: every recorded broadcast's nonce is settled from the chain
        # (mined, and by which hash?), and what is still open stays taken (re-broadcast if forgotten).
        sender.settle_recorded()
        batcher = FulfilmentBatcher(sender, sender.rpc, address, s.submit)

        # the stages, shared by the holders' evolutions and the refreshes
        assets = AssetStore(data_dir / "assets")
        inputs = InputsStage(
            reader,
            oracles,
            rules,
            repo,
            token_name=cfg.token_name,
            collection_name=reader.name(),
            guard=guard,
            remote=_remote_blocks(s, repo),
        )
        # the quality gates, with the near-duplicate index of this collection's images loaded from the database
        gates = Gates.from_settings(s.gates, db=db, collection=address)
        generate = GenerateStage(image, lore, repo, assets, signing=signing, gates=gates)
        publish = PublishStage(
            repo,
            replicator,
            assets,
            {"image": image.model_ref, "lore": lore.model_ref},
            external_url=cfg.external_url,
            viewer=_token_viewer(image, repo, gateway, rules),
        )
        review = ReviewGate.for_database(db) if s.studio.review else None
        refresh = RefreshService.build(
            settings=s, deployment=deployment, db=db, jobs=store, reader=reader, repo=repo, inputs=inputs,
            generate=generate, publish=publish, sender=sender, review=review, on_job=wake.set, clock=clock,
        )  # fmt: skip
        worker = Worker(
            store,
            worker_id,
            inputs=inputs,
            generate=generate,
            publish=publish,
            submitter=Submitter(
                batcher, sender, wait_chunk_s=cfg.wait_chunk_s, receipt_timeout_s=s.submit.receipt_timeout_s
            ),
            settler=Settler(reader, signer.address),
            lease_s=cfg.lease_s,
            batch_size=cfg.batch_size,
            batch_wait_s=cfg.batch_wait_s,
            on_error=activity.error,
            on_gas=activity.add_gas,
            review=review,
            review_poll_s=max(1.0, s.chain.poll_interval_s),
            refresher=refresh.runner,
            watched=partial(watcher.cursors.load, watcher.stream),
        )
        router = EventRouter(
            store, reader, deployment.chain_id, max_attempts=cfg.max_attempts, on_job=wake.set
        )
        router.reconciler = Reconciler(
            reader.rpc, address, abi, watcher.decoder, store, deployment.chain_id, router,
            start_block=deployment.deploy_block, interval_s=cfg.reconcile_interval_s, stream=watcher.stream,
        )  # fmt: skip
        agent = Agent(
            settings=s,
            deployment=deployment,
            db=db,
            store=store,
            watcher=watcher,
            reader=reader,
            repo=repo,
            replicator=replicator,
            worker=worker,
            router=router,
            activity=activity,
            wake=wake,
            gateway=gateway,
            closers=[
                c
                for c in (refresh.stop, gateway.stop if gateway else None, replicator.close, store.close)
                if c
            ],
            refresh=refresh,
            roles=roles,
        )
        stack.pop_all()
    log.info(
        "agent %s watching %s on chain %d from block %d (agent key %s)",
        worker_id, address, deployment.chain_id, deployment.deploy_block, signer.address,
    )  # fmt: skip
    return agent


def _remote_blocks(s: Settings, repo: IpfsRepo) -> RemoteBlocks | None:
    """Where a token's previous version the embedded repo lacks is fetched from: the Kubo node the agent
    replicates to and ``ipfs.fetch_gateways`` (None when neither is set: the repo only)."""
    apis = [s.ipfs.kubo_api] if s.ipfs.kubo_api else []
    if not apis and not s.ipfs.fetch_gateways:
        return None
    return RemoteBlocks(
        repo, ipfs_apis=apis, gateways=s.ipfs.fetch_gateways, limits=DagLimits.from_settings(s.ipfs)
    )


def _token_viewer(
    image: object, repo: IpfsRepo, gateway: NodeServer | None, rules: RuleEngine
) -> TokenViewer | None:
    """For images made under the portable scheme: pin the token viewer, the model's ONNX export and the rules as
    data into the embedded repo (the same CIDs every start; the other backends get them with the first metadata that
    links to them), let the agent's gateway run the viewer's scripts, and return the viewer (``animation_url``
    ``...&rules=<CID>``: the viewer's "what would I become" preview evaluates them); None for other image runtimes
    (the viewer re-renders only portable receipts)."""
    export_dir = getattr(image, "export_dir", None)
    if export_dir is None:
        return None
    from agent.ops.renderer import publish_renderer
    from agent.rules.rules_data import rules_json_bytes

    release = publish_renderer(repo, export_dir)
    pins = [(release.site_cid, "token viewer site"), (release.model_cid, "token viewer model export")]
    rules_query = ""
    try:
        rules_cid = repo.add_raw_block(rules_json_bytes(rules))
    except (
        ChrysalisError
    ) as exc:  # a rule the data format cannot say: the viewer works, its preview asks for rules
        log.warning("the rules cannot be published as data, so the viewer's preview has none: %s", exc)
    else:
        pins.append((rules_cid, "the collection's rules (chrysalis-rules/1)"))
        rules_query = f"&rules={rules_cid}"
    if gateway is not None:
        gateway.allow_scripts(release.site_cid)
    log.info("token viewer %s with model export %s%s: every version's animation_url opens it",
             release.site_cid, release.model_cid, rules_query.replace("&rules=", " and rules "))  # fmt: skip
    return TokenViewer(lambda core: f"{release.animation_url(core)}{rules_query}", tuple(pins))
