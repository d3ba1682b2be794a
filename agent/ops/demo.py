"""The Chrysalis demo (``make demo``): a living collection evolving on a throwaway local chain.

It runs inside ``ape run demo --network ethereum:local:foundry`` (Ape starts anvil and deploys with
:func:`agent.deployment.deploy_collection`), and everything after the deployment goes the way an operator and
holders would do it:

1. deploy LivingCollection and a DevPriceFeed, register the shipped image model, grant the agent its role; the
   collection's ERC-7572 metadata (``contractURI``) is pinned in the agent's repo;
2. mint tokens to three holders; give the price feed a day of history (+5 %);
3. write the agent's encrypted keystore, development C2PA credentials (a local CA and an ES256 signing
   certificate in ``data/credentials``) and a ``chrysalis.toml``, and start ``chrysalis run`` as a subprocess
   (it serves the embedded IPFS gateway and /metrics, and logs JSON lines to ``agent.log``);
4. round 1: holders request evolutions and fuse two tokens (the same code as ``chrysalis evolve`` / ``fuse``);
5. the price drops 14 % a day later; round 2: more evolutions, one token for the second time (img2img from
   its previous image);
6. wait until every request is fulfilled (stopping at once, with the job's error, if the agent's job for one fails
   permanently: such a request would stay pending until the timeout), record each evolved token's version for
   ERC-7007 (``chrysalis aigc record``: ``addAigcData`` beside the running agent), read each token's metadata
   history through the gateway from its on-chain tokenURI (every block checked against its CID), save the images,
   and read each image's Content Credentials back: signed, bound to its pixels, trusted by the demo's CA, naming
   its token, stage, receipt and model;
7. stop the agent with SIGTERM (it exits 0), print each token and write ``index.html`` (relative paths).

Everything runs offline with the shipped models; the output directory is recreated on each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

from agent.deployment import Deployment
from agent.errors import (
    BackendUnavailableError,
    ChrysalisError,
    ConfigError,
    IntegrityError,
    PermanentError,
    RetryableError,
)
from agent.fsutil import write_private

if TYPE_CHECKING:  # pragma: no cover
    from agent.ops.models import PinnedModel

MARKER = ".chrysalis-demo"
#: What the demo writes in its output directory (an older demo wrote only deployments/).
_OURS = {MARKER, "deployments", "data", "keys", "images", "index.html", "agent.log", "chrysalis.toml"}
PASSWORD_FILE = "keys/agent.password"
DAY = 86_400
WALLET_HISTORY = (1_500, 40, 150)
"""Transactions alice, bob and carol have sent before the demo (their nonces): fire, water and air under the
default rules."""


@dataclass(frozen=True)
class Holder:
    name: str
    address: str
    signer: Any


@dataclass
class Version:
    """One stage of a token, as its metadata (read through the gateway) describes it."""

    stage: int
    cid: str
    description: str
    traits: dict[str, str]
    image_cid: str
    image_path: str  # relative to the output directory
    animation_url: str | None = (
        None  # the token viewer on this version (images made under the portable scheme)
    )

    @property
    def lore(self) -> str:
        """The lore: the description's last paragraph (the first one names the token, stage and traits)."""
        return self.description.rsplit("\n\n", 1)[-1].strip()


@dataclass(frozen=True)
class SignedImage:
    """What one image's Content Credentials say (read back by :func:`agent.credentials.inspect_png`)."""

    token_id: int
    stage: int
    path: str
    signer: str
    model_id: str
    ingredients: tuple[str, ...]


@dataclass
class TokenResult:
    token_id: int
    owner: str
    stage: int
    token_uri: str
    versions: list[Version] = field(default_factory=list)  # newest first
    burnt: bool = False


@dataclass
class DemoResult:
    tokens: list[TokenResult]
    requests: int
    page: Path
    seconds: float
    agent_exit: int
    metrics: dict[str, float]
    signed: list[SignedImage] = field(default_factory=list)

    @property
    def viewers(self) -> dict[int, str]:
        """Token id -> its current version's ``animation_url`` (``ipfs://<viewer site>/?token=...``), for the
        tokens that have one."""
        return {
            t.token_id: t.versions[0].animation_url
            for t in self.tokens
            if t.versions and t.versions[0].animation_url is not None
        }


def gateway_url(gateway: str, animation_url: str) -> str:
    """``ipfs://<CID>/<rest>`` as a path-style gateway URL on ``gateway`` (``http://host:port``)."""
    return f"{gateway.rstrip('/')}/ipfs/{animation_url.removeprefix('ipfs://')}"


# -- small helpers ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_dir(out: Path) -> None:
    """Recreate ``out``, refusing to delete a non-empty directory the demo did not make."""
    if out.exists():
        foreign = {p.name for p in out.iterdir()} - _OURS
        if foreign and not (out / MARKER).exists():
            raise ConfigError(
                f"{out} exists and was not made by the demo; not deleting it",
                hint="move it away, or pass another --out directory",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by `make demo`; deleted and recreated on the next run\n")


def _toml(tables: dict[str, Any]) -> str:
    """Settings as TOML: top-level keys first, then one table per section (empty ones and None values left out)."""
    from agent.ops.config_template import toml_value

    lines = ["# written by `make demo`: the settings its agent (`chrysalis run`) ran with"]
    lines += [f"{key} = {toml_value(value)}" for key, value in tables.items() if not isinstance(value, dict)]
    for key, value in tables.items():
        items = {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else {}
        if items:
            lines += ["", f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in items.items())]
    return "\n".join(lines) + "\n"


# -- the agent process ------------------------------------------------------------------------------------------


class AgentProcess:
    """``chrysalis --config FILE run`` as a subprocess, logging JSON lines to ``log_path``."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHRYSALIS_")}
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from agent.cli import main; main()",
                "--config",
                str(config),
                "run",
                "--no-live",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"message": line, "level": "raw"})
        return out

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BackendUnavailableError(
                f"the agent exited with code {self.proc.returncode}:\n{self.tail()}",
                hint=f"its whole log is in {self.log_path}",
            )

    def tail(self, n: int = 15) -> str:
        lines = []
        for record in self.messages()[-n:]:
            text = record.get("message", "")
            if record.get("exc"):
                text += "\n" + str(record["exc"]).splitlines()[-1]
            lines.append(f"  {record.get('level', '')}: {text}")
        return "\n".join(lines)

    def wait_until_running(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any("running: chain head" in m.get("message", "") for m in self.messages()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RetryableError(
                    f"the agent did not start within {timeout_s:g} s:\n{self.tail()}",
                    hint=f"see {self.log_path}",
                )
            time.sleep(0.25)

    def stop(self, timeout_s: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


# -- the demo ---------------------------------------------------------------------------------------------------


class Demo:
    """One run of the demo; :meth:`run` does everything (see the module docstring)."""

    def __init__(
        self,
        out: Path,
        *,
        console: Console | None = None,
        timeout_s: float = 900.0,
        models: dict[str, Any] | None = None,
    ) -> None:
        self.out = out.resolve()
        self.console = console or Console()
        self.timeout_s = timeout_s
        self.models = dict(models or {})
        self.started = time.monotonic()
        self.agent: AgentProcess | None = None
        self.request_count = 0
        self.gateway_port = 0
        self.metrics_port = 0
        self.agent_cpu_s = 0.0
        self.signed: list[SignedImage] = []

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/]  {text}", highlight=False)

    def run(self) -> DemoResult:
        from ape import accounts, networks, project

        from agent.deployment import PRICE_FEED, DeployParams, deploy_collection
        from agent.pipeline.holder import Collection
        from agent.settings import ChainSettings, Settings, SubmitSettings
        from agent.submit.signer import KeystoreSigner

        provider = networks.provider
        if provider.network.name != "local":
            raise ConfigError(
                "the demo runs on a local network only", hint="ape run demo --network ethereum:local:foundry"
            )
        url = provider.http_uri
        _fresh_dir(self.out)
        self.console.rule("[bold]Chrysalis demo: a living collection on a local chain")

        admin, agent_account, *test_holders = accounts.test_accounts[:5]
        holders = [
            Holder(name, a.address, KeystoreSigner.from_private_key(a.private_key, source=name))
            for name, a in zip(("alice", "bob", "carol"), test_holders, strict=True)
        ]
        names = {
            admin.address: "admin",
            agent_account.address: "agent",
            **{h.address: h.name for h in holders},
        }

        # the image model pinned in the agent's repo; the deployment registers its digest with its ipfs:// URI
        model = self._publish_image_model()
        digest, model_id = model.model.weights_sha256, model.model.model_id
        params = DeployParams(agent=agent_account.address, model_digest=digest, model_manifest=model.uri)
        deployment = deploy_collection(
            params, admin, out_dir=self.out / "deployments", pin=self._pin_collection_metadata()
        )
        record = self.out / "deployments" / "local.json"
        lc = project.LivingCollection.at(deployment.address())
        feed = project.DevPriceFeed.at(deployment.address(PRICE_FEED))
        self.say(
            f"deployed LivingCollection [cyan]{lc.address}[/] and DevPriceFeed on chain {deployment.chain_id} "
            f"(anvil at {url}); model {model_id} sha256 {digest[:12]}... registered and active, its whole "
            f"directory pinned as {model.uri}"
        )

        # Busier wallets grow other elements (default rules: fewer than 10 transactions is earth, 10-99 water,
        # 100-999 air, 1,000 or more fire). A fresh anvil account has sent nothing, so give each holder a history.
        rpc = provider.web3.provider
        for holder, sent in zip(holders, WALLET_HISTORY, strict=True):
            rpc.make_request("anvil_setNonce", [holder.address, hex(sent)])
        self.say(
            "holders' wallets: "
            + ", ".join(
                f"{h.name} has sent {n:,} transactions" for h, n in zip(holders, WALLET_HISTORY, strict=True)
            )
        )

        price = lc.mintPrice()
        minted: dict[str, list[int]] = {}
        for holder, quantity in zip(holders, (3, 3, 2), strict=True):
            first = lc.totalMinted() + 1
            lc.mint(quantity, value=price * quantity, sender=_ape(test_holders, holder))
            minted[holder.name] = list(range(first, first + quantity))
        self.say("minted " + ", ".join(f"{n}: tokens {ids[0]}-{ids[-1]}" for n, ids in minted.items()))

        self._advance_time(rpc, DAY)
        feed.updateAnswer(3_150 * 10**8, sender=admin)
        self.say("ETH/USD moved from 3,000 to 3,150 over a day (+5 %): the market is bright")

        config = self._write_config(url, record, agent_account.private_key)
        self.agent = AgentProcess(config, self.out / "agent.log")
        try:
            shown = config.relative_to(Path.cwd()) if config.is_relative_to(Path.cwd()) else config
            self.say(f"starting the agent: chrysalis --config {shown} run  (loading the shipped models)")
            self.agent.wait_until_running(timeout_s=600)
            self.say(
                f"agent running (pid {self.agent.proc.pid}); gateway {self.gateway}/ipfs/..., metrics "
                f"{self.metrics_url}, log {self.agent.log_path.name}"
            )
            self._fetch_model_from_the_chain(lc)
            collection = Collection.connect(
                Settings(
                    chain=ChainSettings(rpc_url=url, deployment=record),
                    submit=SubmitSettings(poll_interval_s=0.1),
                )
            )
            a, b, c = holders
            round1 = [
                self._evolve(collection, a, 1),
                self._evolve(collection, b, 4),
                self._evolve(collection, c, 7),
                self._fuse(collection, b, 5, 6),
            ]
            self._wait(collection, round1, "round 1")

            self._advance_time(rpc, DAY)
            feed.updateAnswer(2_700 * 10**8, sender=admin)
            self.say("a day later ETH/USD fell from 3,150 to 2,700 (-14 %): the mood darkens")
            round2 = [
                self._evolve(collection, a, 1),
                self._evolve(collection, c, 8),
                self._evolve(collection, b, 5),
            ]
            self._wait(collection, round2, "round 2")
            self._record_aigc(config, sorted({r >> 32 for r in round1 + round2}))

            tokens = self._collect(lc, names, deployment)
            metrics = self._metrics()
        finally:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            exit_code = self.agent.stop()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.agent_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.say(
            f"agent stopped with SIGTERM: exit code {exit_code}"
            + ("" if exit_code == 0 else " [red](expected 0)[/]")
        )
        page = self._write_page(tokens, deployment)
        result = DemoResult(
            tokens, self.request_count, page, time.monotonic() - self.started, exit_code, metrics, self.signed
        )
        self._print(result)
        return result

    # -- steps ----------------------------------------------------------------------------------------------------

    def _publish_image_model(self) -> PinnedModel:
        """The image model the agent runs (the shipped one unless ``models`` says otherwise), its whole directory
        pinned in the agent's repo as ``chrysalis model publish`` pins it; the deployment registers its weights
        digest with the directory's ``ipfs://`` URI, and the agent's gateway serves it to anyone."""
        from agent.generate.factory import publishable_image_model
        from agent.ipfs.repo import IpfsRepo
        from agent.ops.models import pin_model
        from agent.settings import ModelSettings

        settings = ModelSettings.model_validate({k: v for k, v in self.models.items() if v is not None})
        return pin_model(IpfsRepo(self.out / "data" / "ipfs"), publishable_image_model(settings))

    def _pin_collection_metadata(self) -> Callable[[bytes], str]:
        """Pins the collection's ERC-7572 metadata (``contractURI``) into the agent's repo, as ``chrysalis deploy``
        pins it into ``ipfs.repo``: the agent's gateway serves it."""
        from agent.ipfs.repo import IpfsRepo

        repo = IpfsRepo(self.out / "data" / "ipfs")
        return lambda data: str(repo.add_raw_block(data))

    def _record_aigc(self, config: Path, tokens: list[int]) -> None:
        """What the operator runs after evolutions (``chrysalis aigc record``): each evolved token's current
        version recorded with ``addAigcData``, so the collection's ERC-7007 ``verify`` is true for it."""
        from agent.ops.aigc import record_aigc
        from agent.settings import load_settings

        report = record_aigc(load_settings(config), tokens)
        self.say(
            f"ERC-7007: chrysalis aigc record recorded {report.count('recorded')} versions (tokens "
            f"{', '.join(str(t.token_id) for t in report.tokens)}; {report.gas_used:,} gas in all): the "
            "collection's verify(prompt, aigcData, proof) is true for each"
        )

    def _fetch_model_from_the_chain(self, lc: Any) -> None:
        """What anyone can do: read the active model's record on-chain and fetch that directory through the
        agent's gateway alone (every block checked against its CID, every file against the manifest, the weights
        against the record's digest), into a model cache of its own."""
        from agent.generate.published import load_model_from_cid
        from agent.ipfs.fetch import make_fetcher
        from agent.ops.models import FileByFile

        started = time.monotonic()
        model_id = lc.activeModel()
        digest, uri, _registered_at = lc.modelRecord(model_id)
        with make_fetcher(gateways=[self.gateway]) as fetcher:
            path = load_model_from_cid(
                uri, FileByFile(fetcher), self.out / "data" / "fetched-models", weights_sha256=bytes(digest)
            )
            fetched = fetcher.stats.bytes
        self.say(
            f"anyone can fetch the model: modelRecord({model_id}) names {uri}; its {fetched:,} bytes came through "
            f"the gateway, every file matches its sha256 and the weights the record's digest "
            f"({time.monotonic() - started:.1f} s, into {path.relative_to(self.out)})"
        )

    @staticmethod
    def _advance_time(rpc: Any, seconds: int) -> None:
        for method, params in (("evm_increaseTime", [seconds]), ("evm_mine", [])):
            reply = rpc.make_request(method, params)
            if "error" in reply:
                raise BackendUnavailableError(f"anvil refused {method}: {reply['error']}")

    def _write_config(self, url: str, record: Path, agent_key: str) -> Path:
        from eth_account import Account
        from eth_typing import HexStr

        from agent.credentials import create_dev_credentials

        keys = self.out / "keys"
        keys.mkdir()
        password = secrets.token_urlsafe(18)
        password_file = self.out / PASSWORD_FILE
        write_private(password_file, password)
        keystore = keys / "agent.json"
        write_private(keystore, json.dumps(Account.encrypt(HexStr(agent_key), password, iterations=2**14)))
        self.gateway_port, self.metrics_port = _free_port(), _free_port()
        data = self.out / "data"
        credentials = create_dev_credentials(data / "credentials", common_name="Chrysalis demo signer")
        config = self.out / "chrysalis.toml"
        config.write_text(
            _toml(
                {
                    "data_dir": str(data),
                    "chain": {"rpc_url": url, "deployment": str(record), "poll_interval_s": 0.5},
                    "database": {"url": self.database_url},
                    "ipfs": {"repo": str(data / "ipfs"), "gateway_port": self.gateway_port},
                    "models": self.models,
                    "signer": {"keystore": str(keystore), "password_file": str(password_file)},
                    "credentials": credentials.settings(),
                    "submit": {"poll_interval_s": 0.2},
                    "agent": {"serve_gateway": True, "batch_wait_s": 1.0},
                    "metrics": {"port": self.metrics_port},
                    "log": {"format": "json"},
                }
            )
        )
        return config

    @property
    def database_url(self) -> str:
        """The agent's database (its job store), under the output directory."""
        return f"sqlite:///{self.out / 'data' / 'chrysalis.db'}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _evolve(self, collection: Any, holder: Holder, token_id: int) -> int:
        opened = collection.request_evolution(holder.signer, token_id)
        self.request_count += 1
        self.say(
            f"{holder.name} requested an evolution of token {token_id} (stage {opened.stage} -> "
            f"{opened.stage + 1}): request {opened.request_id:#x}"
        )
        return opened.request_id

    def _fuse(self, collection: Any, holder: Holder, keep: int, burn: int) -> int:
        opened = collection.fuse(holder.signer, keep, burn)
        self.request_count += 1
        self.say(f"{holder.name} fused token {burn} into token {keep}: request {opened.request_id:#x}")
        return opened.request_id

    def _wait(self, collection: Any, request_ids: Sequence[int], label: str) -> None:
        """Returns once every request is fulfilled on-chain.

        Raises:
            BackendUnavailableError: the agent exited.
            PermanentError: the agent's job for a pending request failed permanently (read from its job store on
                every poll): the request would never be fulfilled, so the wait stops at once, naming the token,
                the job's error and what to do.
            RetryableError: requests still pending after ``timeout_s``.
        """
        from agent.ops.follow import JobFailedError, JobFollower
        from agent.store import open_job_store

        assert self.agent is not None
        deadline = time.monotonic() + self.timeout_s
        pending = set(request_ids)
        last_note = 0.0
        with (
            open_job_store(self.database_url, migrate=False) as store,
            self.console.status(f"{label}: waiting for the agent") as status,
        ):
            jobs = {r: JobFollower(store, collection.chain_id, r) for r in request_ids}
            while pending:
                self.agent.check_alive()
                pending = {r for r in pending if collection.view("isPending", r)}
                for r in sorted(pending):
                    try:
                        jobs[r]()
                    except JobFailedError as exc:
                        raise PermanentError(
                            f"{label}: the agent's job {exc.job_id} for token {r >> 32} (request {r:#x}) failed "
                            f"permanently: {exc.reason}",
                            hint=f"the agent will not fulfil it by itself; see {self.agent.log_path}, fix what the "
                            "error names (e.g. the model given with --image-model or --lore-model), and run the "
                            "demo again",
                        ) from None
                done = len(request_ids) - len(pending)
                note = f"{label}: {done}/{len(request_ids)} fulfilled; {self._jobs_line()}"
                status.update(note)
                if not self.console.is_terminal and time.monotonic() - last_note > 15:
                    self.say(note)
                    last_note = time.monotonic()
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise RetryableError(
                        f"{label}: {len(pending)} request(s) still pending after {self.timeout_s:g} s "
                        f"({', '.join(hex(r) for r in sorted(pending))}); agent log tail:\n{self.agent.tail()}",
                        hint=f"see {self.agent.log_path}; raise --timeout on a slow machine",
                    )
                time.sleep(0.5)
        self.say(f"{label}: all {len(request_ids)} requests fulfilled; {self._jobs_line()}")

    def _jobs_line(self) -> str:
        try:
            samples = _scrape(self.metrics_url)
        except httpx.HTTPError:
            return "agent metrics not available yet"
        jobs = {labels.get("state"): int(v) for (name, labels), v in samples if name == "chrysalis_jobs"}
        order = ("queued", "running", "confirmed", "failed")
        return "jobs " + " ".join(f"{s} {jobs.get(s, 0)}" for s in order)

    def _collect(self, lc: Any, names: dict[str, str], deployment: Any) -> list[TokenResult]:
        """Every token's on-chain state and, through the gateway, its whole metadata history and images (each
        image's Content Credentials checked: :meth:`_check_credentials`)."""
        from agent.metadata import history

        images = self.out / "images"
        images.mkdir()
        client = httpx.Client(base_url=self.gateway, timeout=30)

        def fetch(cid: str) -> bytes:
            reply = client.get(f"/ipfs/{cid}")
            reply.raise_for_status()
            return reply.content

        tokens = []
        for token_id in range(1, lc.totalMinted() + 1):
            if not lc.exists(token_id):
                tokens.append(TokenResult(token_id, "", 0, "", burnt=True))
                continue
            uri = lc.tokenURI(token_id)
            result = TokenResult(
                token_id, names.get(lc.ownerOf(token_id), lc.ownerOf(token_id)), lc.stageOf(token_id), uri
            )
            if uri.startswith("ipfs://"):
                for entry in history(fetch, uri.removeprefix("ipfs://")):
                    md = entry.metadata
                    png = fetch(md.image_cid)
                    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
                        raise ChrysalisError(
                            f"token {token_id} stage {md.stage}: image {md.image_cid} is not a PNG"
                        )
                    path = images / f"token-{token_id}-stage-{md.stage}.png"
                    path.write_bytes(png)
                    self._check_credentials(png, token_id, md, deployment, str(path.relative_to(self.out)))
                    result.versions.append(
                        Version(md.stage, entry.cid, md.description, dict(md.traits), md.image_cid,
                                str(path.relative_to(self.out)), md.animation_url)
                    )  # fmt: skip
            tokens.append(result)
        client.close()
        return tokens

    def _check_credentials(self, png: bytes, token_id: int, md: Any, deployment: Any, path: str) -> None:
        """The image carries valid Content Credentials that name this token, stage, receipt and model.

        Raises:
            IntegrityError: they are missing, do not validate, or name something else.
        """
        from agent.credentials import CredentialClaim, inspect_png
        from agent.generate.receipt import InferenceReceipt

        report = inspect_png(png, trust_anchors=self.out / "data" / "credentials" / "ca.pem")
        receipt = InferenceReceipt.from_json(dict(md.receipt))
        image_model = receipt.image.model if receipt.image is not None else None
        problems = list(report.problems)
        if not (report.valid and report.trusted):
            problems.append(
                f"valid={report.valid} trusted={report.trusted} bound_to_pixels={report.bound_to_pixels}"
            )
        elif image_model is not None:
            expected = CredentialClaim(
                chain_id=deployment.chain_id,
                contract=deployment.address(),
                token_id=token_id,
                stage=md.stage,
                receipt_sha256=receipt.sha256(),
                weights_sha256=image_model.weights_sha256,
                model_id=image_model.model_id,
            )
            assert report.claim is not None
            problems += report.claim.differences(expected)
        if problems:
            raise IntegrityError(
                f"token {token_id} stage {md.stage}: the image {md.image_cid} lacks valid Content Credentials: "
                + "; ".join(problems),
                hint=f"see {self.out / 'agent.log'}; the agent signs with the files in data/credentials",
            )
        self.signed.append(
            SignedImage(
                token_id,
                md.stage,
                path,
                report.signer or "",
                report.claim.model_id if report.claim else "",
                report.ingredients,
            )
        )

    def _metrics(self) -> dict[str, float]:
        samples = _scrape(self.metrics_url)

        def total(name: str, **labels: str) -> float:
            return sum(
                v for (n, ls), v in samples if n == name and all(ls.get(k) == x for k, x in labels.items())
            )

        generate_n = total("chrysalis_stage_latency_seconds_count", stage="generate")
        return {
            "events_seen": total("chrysalis_events_seen_total"),
            "gas_spent": total("chrysalis_gas_spent_total"),
            "fulfilment_txs": total("chrysalis_tx_confirmed_total"),
            "generate_batches": generate_n,
            "generate_mean_s": total("chrysalis_stage_latency_seconds_sum", stage="generate") / generate_n
            if generate_n
            else 0.0,
            "rpc_errors": total("chrysalis_rpc_errors_total"),
        }

    # -- output ---------------------------------------------------------------------------------------------------

    def _write_page(self, tokens: list[TokenResult], deployment: Any) -> Path:
        from agent.ops.gallery import render_gallery

        page = self.out / "index.html"
        page.write_text(render_gallery(tokens, deployment=deployment, title="Chrysalis demo"))
        return page

    def _print(self, result: DemoResult) -> None:
        table = Table(title="The collection after the demo")
        for column in ("token", "owner", "stage", "tokenURI", "image"):
            table.add_column(column, overflow="fold")
        for token in result.tokens:
            if token.burnt:
                table.add_row(str(token.token_id), "[red]burnt (fused)[/]", "", "", "")
                continue
            latest = token.versions[0] if token.versions else None
            table.add_row(
                str(token.token_id),
                token.owner,
                str(token.stage),
                token.token_uri or "(genesis: no base URI)",
                latest.image_path if latest else "",
            )
        self.console.print(table)
        for token in result.tokens:
            for version in token.versions[:1]:
                traits = ", ".join(f"{k} {v}" for k, v in sorted(version.traits.items()))
                self.console.print(
                    f"[bold]token {token.token_id}[/], stage {version.stage} ({traits})", highlight=False
                )
                self.console.print(f"  {version.lore}", highlight=False, style="italic")
        if result.signed:
            evolved = sum(1 for s in result.signed if s.ingredients)
            self.console.print(
                f"content credentials: all {len(result.signed)} images carry a signed C2PA manifest (AI-made: "
                f"trainedAlgorithmicMedia), bound to their pixels and trusted by the demo's development CA; each "
                f"names its token, stage, receipt and model {result.signed[0].model_id}, and {evolved} evolutions "
                f"list their previous image as an ingredient (signer: {result.signed[0].signer}; public validators "
                "show development credentials as untrusted)",
                highlight=False,
            )
        viewers = result.viewers
        if viewers:
            first = min(viewers)
            self.console.print(
                f"token viewer: {len(viewers)} tokens' metadata set animation_url to the viewer on IPFS, which "
                f"re-renders the image in the browser from the model on IPFS; token {first}'s:",
                highlight=False,
            )
            self.console.print(f"  {viewers[first]}", soft_wrap=True, highlight=False)
        m = result.metrics
        self.console.print(
            f"agent: {int(m['events_seen'])} events seen, {result.requests} requests fulfilled in "
            f"{int(m['fulfilment_txs'])} transaction(s), {int(m['gas_spent']):,} gas; "
            f"{int(m['generate_batches'])} generation batch(es) of {m['generate_mean_s']:.1f} s on average; "
            f"{int(m['rpc_errors'])} RPC errors; {self.agent_cpu_s:.0f} CPU-seconds in all",
            highlight=False,
        )
        self.console.print(
            f"[bold green]done in {result.seconds:.0f} s.[/] Browse the results: {result.page}\n"
            f"(images in {self.out / 'images'}, the agent's log in {self.out / 'agent.log'})",
            highlight=False,
        )


def _ape(test_accounts: Sequence[Any], holder: Holder) -> Any:
    return next(a for a in test_accounts if a.address == holder.address)


def _scrape(url: str) -> list[tuple[tuple[str, dict[str, str]], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=5).text
    return [
        ((s.name, dict(s.labels)), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def run_demo(
    out: Path,
    *,
    timeout_s: float = 900.0,
    console: Console | None = None,
    models: dict[str, Any] | None = None,
) -> DemoResult:
    """Run the demo inside an Ape network context (see ``scripts/demo.py``). ``models`` overrides the agent's
    ``[models]`` settings (default: the shipped models)."""
    return Demo(out, console=console, timeout_s=timeout_s, models=models).run()


def serve_studio(
    out: Path,
    *,
    port: int = 8090,
    seconds: float | None = None,
    console: Console | None = None,
    viewers: dict[int, str] | None = None,
) -> None:
    """Serve the studio over the demo's collection (its ``chrysalis.toml``) until Ctrl-C or ``seconds`` pass.

    The demo's chain is Ape's anvil, alive while ``ape run demo`` runs, so the studio runs inside the demo. A random
    admin password is set for this session so the review and refresh actions can be tried.

    With ``viewers`` (token id -> ``animation_url``, :attr:`DemoResult.viewers`), the embedded IPFS gateway serves
    too, on an origin of its own (the studio's serves only images and JSON), with the viewer site allowed to run
    its scripts: each URL printed opens a token regenerating its art in the browser.
    """
    import threading

    from agent.settings import load_settings
    from agent.studio.app import StudioServer
    from agent.studio.auth import Credentials
    from agent.studio.service import Studio

    console = console or Console()
    settings = load_settings(out / "chrysalis.toml")
    password = secrets.token_urlsafe(9)
    if port and not _port_free(port):
        console.print(f"port {port} is busy; the studio takes a free one", highlight=False)
        port = 0
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    roots = {url.removeprefix("ipfs://").split("/", 1)[0] for url in (viewers or {}).values()}
    studio = None
    try:
        with contextlib.ExitStack() as stack:
            lines = ""
            if roots:  # the gateway first: the studio's token pages embed the viewer from its origin
                from agent.ipfs.repo import IpfsRepo
                from agent.ipfs.server import NodeServer

                gateway = stack.enter_context(
                    NodeServer(IpfsRepo(settings.ipfs.repo), rpc=False, script_roots=sorted(roots))
                )
                lines = f"ipfs gateway [cyan]{gateway.url}/ipfs/[/]  (its own origin; the token viewer runs here)\n"
                studio_settings = settings.studio.model_copy(update={"viewer_gateway": gateway.url})
                settings = settings.model_copy(update={"studio": studio_settings})
            credentials = Credentials(settings.studio, admin_password=password)
            studio = Studio.from_settings(settings, credentials=credentials)
            server = stack.enter_context(StudioServer(studio, host="127.0.0.1", port=port or _free_port()))
            console.rule("[bold]Chrysalis Studio")
            if roots:  # one line each, never wrapped: they are for copying into a browser
                console.print("the token viewer (animation_url), regenerating each token's art in your browser:",
                              highlight=False)  # fmt: skip
                for token_id, url in sorted((viewers or {}).items()):
                    console.print(f"  token {token_id:<4} {gateway_url(gateway.url, url)}", soft_wrap=True,
                                  highlight=False)  # fmt: skip
            console.print(
                f"gallery      [cyan]{server.url}/[/]\n"
                f"token 1      [cyan]{server.url}/tokens/1[/]\n"
                + lines
                + f"log in as    {settings.studio.admin_user} / {password}  (review, regenerate, refresh)\n"
                f"keep going   chrysalis --config {out / 'chrysalis.toml'} evolve 2 --from 2   (with the agent: "
                f"chrysalis --config {out / 'chrysalis.toml'} run)\n"
                f"verify       {stranger_verify(settings, server.url)}   (from any folder, as a stranger)\n"
                + (
                    "Ctrl-C stops the studio and the local chain."
                    if seconds is None
                    else f"serving for {seconds:g} s"
                ),
                highlight=False,
            )
            try:
                stop.wait(seconds)
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if studio is not None:
            studio.close()
    console.print("studio stopped", highlight=False)


def stranger_verify(settings: Any, gateway: str, token: int = 1) -> str:
    """The ``chrysalis verify`` line that checks ``token`` from public sources only: the demo's chain, its
    collection's address and chain id, and a gateway (the studio's ``/ipfs/``)."""
    deployment = Deployment.load(settings.chain.deployment)
    return (
        f"chrysalis verify {token} --rpc {settings.chain.rpc_url} --contract {deployment.address()} "
        f"--chain-id {deployment.chain_id} --gateway {gateway}"
    )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
