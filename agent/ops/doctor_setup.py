"""``chrysalis doctor``: the whole setup, one line per check, each with its fix.

The checks, in order (a check whose prerequisite failed is ``SKIP`` with the reason, never a cascade of fails):

* ``config``: the settings load (from which file, which ``CHRYSALIS_*`` variables: names only, never values);
* ``rules``: the rules file against the configured oracles (:func:`agent.ops.rules_check.check_rules`);
* ``chain.*``: the RPC provider checks of :mod:`agent.ops.doctor` (``primary``, ``chain_id``, ``log_range``...);
* ``contract``: the deployment record loads, the node serves its chain and holds code at the address
  (:func:`agent.pipeline.holder.check_deployment`, as ``chrysalis status`` does), the deploy block has the recorded hash
  (the watcher's reset check);
* ``roles``: the agent key's address (read from the keystore JSON's ``address`` field: no password, no
  decryption) holds ``AGENT_ROLE``, and ``REFRESHER_ROLE`` when the ABI has that role;
* ``database``: it opens and its migrations are current; a SQLite file not there yet is created by the first
  ``chrysalis run`` (the doctor never creates it);
* ``ipfs``: the embedded repo opens (never created here), Kubo and each pinning service answer;
* ``models.image`` / ``models.lore``: the model files exist; the embedded image model's files match their
  manifest's sha256, and its weights digest is registered (and active) on the collection; nothing is loaded;
* ``credentials``: the C2PA key and certificate chain (``[credentials]``) load, belong together, chain to the trust
  anchors when given, and sign a test image that reads back valid; ``SKIP`` when none are configured (images are
  then published without Content Credentials);
* ``disk``: free space under ``data_dir`` (:data:`DISK_WARN_BYTES`, :data:`DISK_FAIL_BYTES`).

Nothing here sends a transaction, writes a file, or asks for a password.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import typer
from web3 import Web3

from agent.errors import ChrysalisError
from agent.ops.doctor import (
    Check,
    CheckResults,
    DoctorReport,
    Level,
    connect,
    options_from_settings,
    run_doctor,
)
from agent.redact import redact_text, redact_url

DISK_WARN_BYTES = 1024**3
"""Free space under ``data_dir`` below which ``disk`` is a WARN (1 GiB)."""
DISK_FAIL_BYTES = 100 * 1024**2
"""... and a FAIL (100 MiB): generated images, the IPFS repo and the database grow there."""
HASH_LIMIT_BYTES = 512 * 1024**2
"""Model weights larger than this (all files together) are not hashed by the doctor (too slow to be a check)."""

_WORDS = {Level.OK: "pass", Level.WARN: "warn", Level.FAIL: "fail", Level.SKIP: "skip"}
_COLOURS = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red", Level.SKIP: "bright_black"}


@dataclass(frozen=True)
class SetupReport(CheckResults):
    """Every check of ``chrysalis doctor``; ``rpc`` is the RPC doctor's own report (for its gauges)."""

    checks: tuple[Check, ...]
    rpc: DoctorReport | None = None
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": _WORDS[self.level],
            "elapsed_s": round(self.elapsed_s, 3),
            "counts": {_WORDS[lv]: sum(c.level is lv for c in self.checks) for lv in Level},
            "checks": [
                {
                    **{k: v for k, v in c.data.items() if k not in ("name", "result", "finding", "fix")},
                    "name": c.name,
                    "result": _WORDS[c.level],
                    "finding": c.summary,
                    "fix": c.hint if c.level in (Level.WARN, Level.FAIL) else None,
                    "value": c.value,
                }
                for c in self.checks
            ],
        }


def _ok(name: str, summary: str, **data: Any) -> Check:
    return Check(name, Level.OK, summary, data=data)


def _warn(name: str, summary: str, hint: str, **data: Any) -> Check:
    return Check(name, Level.WARN, summary, hint=hint, data=data)


def _fail(name: str, summary: str, hint: str | None, **data: Any) -> Check:
    return Check(name, Level.FAIL, summary, hint=hint or "see the message", data=data)


def _skip(name: str, why: str) -> Check:
    return Check(name, Level.SKIP, why)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _from_error(name: str, exc: BaseException, *urls: str) -> Check:
    """A check's FAIL from an error: a :class:`ChrysalisError`'s message and hint, else its type and text."""
    if isinstance(exc, ChrysalisError):
        return _fail(name, redact_text(_one_line(exc.message), *urls), exc.hint)
    return _fail(
        name,
        redact_text(_one_line(f"{type(exc).__name__}: {exc}"), *urls),
        "unexpected: run `chrysalis doctor` again, and report it if it persists",
    )


def _guard(name: str, fn: Callable[[], Check], *urls: str) -> Check:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every problem is the check's finding, never a traceback
        return _from_error(name, exc, *urls)


# -- config and rules -------------------------------------------------------------------------------------------


def check_config(
    load: Callable[[], Any], settings_file: Callable[[], Path | None] | None = None
) -> tuple[Check, Any]:
    """Load the settings; say where they came from (the file, and the names of the ``CHRYSALIS_*`` variables).

    Args:
        load: Loads the settings.
        settings_file: The file ``load`` reads (default: :func:`agent.settings.config_path`).
    """
    from agent.settings import config_path

    try:
        settings = load()
        file = (settings_file or config_path)()
    except ChrysalisError as exc:
        return _fail("config", _one_line(exc.message), exc.hint), None
    env = sorted(
        n for n in os.environ if n.upper().startswith("CHRYSALIS_") and n.upper() != "CHRYSALIS_CONFIG"
    )
    summary = f"settings loaded from {file}" if file else "settings loaded (no config file: defaults)"
    if env:
        shown = ", ".join(env[:4]) + (f" and {len(env) - 4} more" if len(env) > 4 else "")
        summary += f", {len(env)} CHRYSALIS_* variable(s): {shown}"
    summary += f"; data_dir {settings.data_dir}"
    return _ok("config", summary, file=str(file) if file else None, env=env), settings


def check_rules_file(settings: Any, deployment: Any | None) -> Check:
    """The rules file against the configured oracles (``chrysalis rules check``)."""
    from agent.ops.rules_check import check_rules
    from agent.rules.errors import RulesConfigError

    try:
        found = check_rules(settings, deployment=deployment)
    except RulesConfigError as exc:
        first = _one_line(str(exc.problems[0])) if exc.problems else _one_line(exc.message)
        more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        return _fail(
            "rules",
            f"rules file {exc.path}: {first}{more}",
            f"{exc.fix or exc.hint}; `chrysalis rules check` lists every problem",
        )
    except ChrysalisError as exc:
        return _fail("rules", _one_line(exc.message), exc.hint)
    spec = found.engine.spec
    summary = f"{found.path}: {len(spec.features)} feature(s), all provided by the configured oracles"
    if found.provided.note:
        return _warn("rules", summary, found.provided.note, path=str(found.path))
    return _ok("rules", summary, path=str(found.path), features=sorted(spec.features))


# -- contract and roles ---------------------------------------------------------------------------------------


def check_contract(settings: Any, deployment: Any, url: str) -> Check:
    """The node serves the record's chain, holds code at the address, and has the recorded deploy block."""
    from agent.pipeline.holder import check_deployment
    from agent.submit.rpc import ChainRpc

    record = str(settings.chain.deployment)
    rpc = ChainRpc.connect(
        url, timeout_s=settings.chain.rpc_timeout_s, retries=min(settings.chain.rpc_retries, 1)
    )
    chain_id = check_deployment(rpc, deployment, url, record)
    client = connect(url, options_from_settings(settings))
    block = client.get_block(deployment.deploy_block)
    address = deployment.address()
    if block is None or block.hash.lower() != deployment.deploy_block_hash.lower():
        got = "missing" if block is None else f"{block.hash[:18]}..."
        return _fail(
            "contract",
            f"the node's block #{deployment.deploy_block} (the deploy block) is {got}, deployment record {record} "
            f"says {deployment.deploy_block_hash[:18]}...: another chain, or one reset since the deployment",
            "deploy again with `chrysalis deploy` (a restarted dev chain), or point chain.deployment at this "
            "chain's record and chain.rpc_url at its node",
            address=address,
        )
    return _ok(
        "contract",
        f"{address} on chain {chain_id}: code there, deploy block #{deployment.deploy_block} as recorded",
        address=address,
        chain_id=chain_id,
    )


def agent_address(signer: Any) -> tuple[str | None, str]:
    """The agent key's address and where it came from, read from the keystore JSON's ``address`` field (no
    password needed); ``(None, why)`` when it cannot be read that way."""
    if signer.keystore is not None:
        path, what = Path(signer.keystore).expanduser(), f"signer.keystore {signer.keystore}"
    elif signer.ape_account:
        folder = Path(os.environ.get("APE_DATA_FOLDER") or Path.home() / ".ape").expanduser()
        path, what = folder / "accounts" / f"{signer.ape_account}.json", f"Ape account {signer.ape_account!r}"
    else:
        return None, "no agent key configured (signer.keystore or signer.ape_account)"
    if not path.is_file():
        return None, f"{what}: {path} does not exist"
    try:
        declared = json.loads(path.read_text()).get("address")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        return None, f"{what}: {path} is not a keystore JSON ({type(exc).__name__})"
    if not isinstance(declared, str) or not Web3.is_address("0x" + declared.removeprefix("0x")):
        return None, f"{what}: {path} has no 'address' field (the doctor never decrypts a key)"
    return Web3.to_checksum_address("0x" + declared.removeprefix("0x")), what


def _view(abi: list[dict[str, Any]], name: str) -> bool:
    """Whether the ABI has a function ``name()`` taking nothing (a role constant, ``activeModel``)."""
    return any(e.get("type") == "function" and e.get("name") == name and not e.get("inputs") for e in abi)


def check_roles(settings: Any, deployment: Any, url: str) -> Check:
    """The agent key holds ``AGENT_ROLE`` (and ``REFRESHER_ROLE`` when the ABI has it), looked up by name."""
    address, source = agent_address(settings.signer)
    if address is None:
        return _fail(
            "roles",
            source,
            "set signer.keystore (a V3 keystore JSON with its address field) or signer.ape_account: "
            "`chrysalis run` needs the agent key",
            deployment_agent=deployment.agent,
        )
    abi = deployment.abi()
    client = connect(url, options_from_settings(settings))
    contract = client.w3.eth.contract(address=deployment.address(), abi=abi)
    held: dict[str, bool] = {}
    for role in ("AGENT_ROLE", "REFRESHER_ROLE"):
        if not _view(abi, role):
            continue
        role_id = client.call("eth_call", getattr(contract.functions, role)().call)
        has = contract.functions.hasRole(role_id, address)
        held[role] = bool(client.call("eth_call", has.call))
    data = {"address": address, "source": source, "roles": held}
    grant = (
        "the admin runs grantRole({role}(), {address}) on the collection, or point signer.keystore at the "
    )
    grant += "key the deployment named as agent ({agent})"
    if "AGENT_ROLE" not in held:
        return _fail("roles", "the collection's ABI has no AGENT_ROLE", "point chain.deployment at the record of "
                     "a LivingCollection deployment", **data)  # fmt: skip
    if not held["AGENT_ROLE"]:
        return _fail(
            "roles",
            f"the agent key {address} ({source}) does not hold AGENT_ROLE",
            grant.format(role="AGENT_ROLE", address=address, agent=deployment.agent),
            **data,
        )
    if held.get("REFRESHER_ROLE") is False:
        return _warn(
            "roles",
            f"the agent key {address} holds AGENT_ROLE but not REFRESHER_ROLE: scheduled refreshes are refused",
            grant.format(role="REFRESHER_ROLE", address=address, agent=deployment.agent),
            **data,
        )
    names = " and ".join(sorted(held))
    return _ok("roles", f"the agent key {address} ({source}) holds {names}", **data)


# -- database ---------------------------------------------------------------------------------------------------


def check_database(settings: Any) -> Check:
    """The database opens and is at the latest migration. A SQLite file not there yet is fine (the first run
    creates it, if its directory can be made); it is never created here."""
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

    from agent.errors import BackendUnavailableError
    from agent.store.db import MIGRATIONS_DIR, Database, corrupt_sqlite_error, create_db_engine

    url = settings.database.url
    try:
        parsed = make_url(url)
    except ArgumentError:
        create_db_engine(url)  # raises the ConfigError that names the URL's problem and the fix
        raise
    shown = parsed.render_as_string(hide_password=True)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database)).expanduser()
        if not path.exists():
            parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
            if not os.access(parent, os.W_OK | os.X_OK):
                return _fail(
                    "database",
                    f"no database at {path} yet, and {parent} is not writable: the first run cannot create it",
                    "make the directory writable for the agent's user, or point database.url "
                    "(CHRYSALIS_DATABASE__URL) elsewhere",
                    url=shown,
                )
            return _ok("database", f"no database at {path} yet: `chrysalis run` creates it", url=shown)
        if not path.is_file():
            return _fail(
                "database",
                f"{path} is not a file",
                "point database.url (CHRYSALIS_DATABASE__URL) at the agent's SQLite file",
                url=shown,
            )
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    db = Database.open(url, migrate=False, busy_timeout_ms=settings.database.busy_timeout_ms)
    try:
        try:
            at = db.current_revision()
        except OperationalError as exc:
            if sqlite:
                raise corrupt_sqlite_error(str(parsed.database), exc.orig) from None
            raise BackendUnavailableError(
                f"cannot connect to the database at {shown}: {_one_line(str(exc.orig))}",
                hint="check database.url (CHRYSALIS_DATABASE__URL) and that the server is running",
            ) from None
        except DatabaseError as exc:
            if not sqlite:
                raise
            raise corrupt_sqlite_error(str(parsed.database), exc.orig) from None
    finally:
        db.close()
    data = {"url": shown, "revision": at, "head": head}
    if at == head:
        return _ok("database", f"{shown}: schema current ({at})", **data)
    known = {s.revision for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if at is not None and at not in known:
        return _fail(
            "database",
            f"{shown} is at schema {at}, which this Chrysalis does not know (a newer version wrote it)",
            "upgrade Chrysalis to the version that wrote it, or point database.url at this version's database",
            **data,
        )
    return _warn(
        "database",
        f"{shown} is at schema {at or 'none'}, the latest is {head}",
        "`chrysalis run` migrates it when it starts (back it up first if it matters)",
        **data,
    )


# -- IPFS -------------------------------------------------------------------------------------------------------


def check_ipfs(settings: Any) -> list[Check]:
    """The embedded repo opens (``ipfs.repo``; never created here), then Kubo and each pinning service answer."""
    from agent.ipfs.backends.kubo import KuboBackend
    from agent.ipfs.backends.pinning_service import PinningServiceBackend
    from agent.ipfs.backends.replicated import backends_from_settings
    from agent.ipfs.backends.retry import RetryPolicy
    from agent.ipfs.cid import CID
    from agent.ipfs.repo import IpfsRepo, is_repo

    cfg = settings.ipfs
    path = settings.ipfs_repo.expanduser()
    checks: list[Check] = []
    if is_repo(path) or (path.exists() and (path.is_file() or any(path.iterdir()))):
        repo = IpfsRepo(path)  # an existing repo, or the error that names what is there instead
        checks.append(
            _ok("ipfs", f"embedded repo {path} opens ({len(repo.pin_ls())} pin(s))", repo=str(path))
        )
    else:
        repo = IpfsRepo(None)
        checks.append(
            _ok("ipfs", f"no embedded repo at {path} yet: `chrysalis run` creates it", repo=str(path))
        )
    quick = cfg.model_copy(update={"pin_timeout_s": min(cfg.pin_timeout_s, 10.0)})
    probe = CID.parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")  # the empty raw block
    for backend in backends_from_settings(quick, repo)[1:]:
        name = f"ipfs.{backend.name}"
        if isinstance(backend, KuboBackend):
            backend.policy = RetryPolicy(attempts=2, deadline=10.0)
            version = backend.version().get("Version", "?")
            checks.append(_ok(name, f"Kubo at {backend.shown_api} answers (version {version})"))
        elif isinstance(backend, PinningServiceBackend):
            backend.is_pinned(probe)  # an authenticated GET /pins: the endpoint answers and takes the token
            checks.append(
                _ok(name, f"pinning service {redact_url(backend.endpoint)} answers and takes the token")
            )
        backend.close()
    return checks


# -- models -----------------------------------------------------------------------------------------------------


def check_models(settings: Any, registry: Callable[[str], tuple[int, int] | None] | None) -> list[Check]:
    """The model files exist (nothing is loaded, nothing runs); the embedded image model's files match its
    manifest, and its weights digest is in the collection's registry (``registry(digest)`` gives the model's id
    and the active id, or None when the ABI has no registry)."""
    return [
        _guard("models.image", lambda: _image_model(settings.models, registry)),
        _guard("models.lore", lambda: _lore_model(settings.models)),
    ]


def _image_model(models: Any, registry: Callable[[str], tuple[int, int] | None] | None) -> Check:
    from agent.generate.factory import image_model_dir
    from agent.generate.runtime import weight_files, weights_digest

    if models.image_backend == "embedded":
        from agent.generate.image.embedded import verify_model_dir

        # the shipped one, a sprite-model directory, or ipfs://<CID> in the model cache
        directory = image_model_dir(models)
        manifest = verify_model_dir(directory)
        digest = str(manifest["weights_sha256"])
        what = f"embedded sprite model {directory.name}: {len(manifest['files'])} file(s) match its manifest"
    else:
        root = image_model_dir(models)
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        if size > HASH_LIMIT_BYTES:
            return _ok(
                "models.image",
                f"diffusers model {root} present ({size / 1024**3:.1f} GiB; not hashed: too large for a check)",
                path=str(root),
            )
        digest = weights_digest(weight_files(root))
        what = f"diffusers model {root}: weights sha256 {digest[:12]}..."
    data = {"weights_sha256": digest}
    found = registry(digest) if registry is not None else None
    if registry is None:
        return _ok("models.image", f"{what} (registry not checked: no contract)", **data)
    if found is None:
        return _ok("models.image", f"{what} (the collection has no model registry)", **data)
    model_id, active = found
    if model_id == 0:
        return _warn(
            "models.image",
            f"{what}, but its weights digest 0x{digest[:12]}... is not in the collection's model registry",
            "the admin publishes and registers it: `chrysalis model publish --activate` (its directory pinned to "
            f'IPFS, then registerModel(0x{digest}, "ipfs://<CID>") and setActiveModel(id)); receipts name weights '
            "the registry does not know until then",
            **data,
        )
    if model_id != active:
        return _warn(
            "models.image",
            f"{what}; registered as model {model_id}, but the active model is {active}",
            f"the admin activates it: setActiveModel({model_id}), or configure the active model's weights",
            **data,
        )
    return _ok("models.image", f"{what}; registered as model {model_id}, the active one", **data)


def _lore_model(models: Any) -> Check:
    from agent.generate.runtime import resolve_model_source

    if models.lore_backend == "embedded":
        from agent.generate.lore.gguf import smollm2_gguf_path

        gguf = smollm2_gguf_path()
        size = gguf.stat().st_size / 1024**2
        return _ok("models.lore", f"embedded lore model {gguf.name} present ({size:.0f} MiB; not loaded)")
    root = resolve_model_source(models.lore_model or "", what="lore model", setting="models.lore_model")
    return _ok("models.lore", f"transformers model {root} present (not loaded)", path=str(root))


# -- disk -------------------------------------------------------------------------------------------------------


def check_credentials(settings: Any) -> Check:
    """The ``[credentials]`` key and chain sign a test image as the generate stage will (SKIP when unset)."""
    from agent.credentials import ContentCredentials

    cfg = settings.credentials
    if cfg.key_file is None and cfg.certificate_chain is None:
        return _skip(
            "credentials",
            "no [credentials]: images are published without C2PA Content Credentials "
            "(`chrysalis init --dev-credentials` makes development ones)",
        )
    signer = ContentCredentials.from_settings(cfg)  # checks the files and signs a test image
    anchored = "chains to credentials.trust_anchors" if cfg.trust_anchors else "no trust anchors given"
    return _ok(
        "credentials",
        f"{cfg.key_file} with {cfg.certificate_chain} signs a test image that reads back valid ({anchored})",
        signer=repr(signer),
    )


def check_disk(data_dir: Path) -> Check:
    """Free space on the filesystem that holds ``data_dir`` (or would: its nearest existing parent)."""
    path = Path(data_dir).expanduser()
    where = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    shown = f"{free / 1024**3:.1f} GiB" if free >= 1024**3 else f"{free / 1024**2:.0f} MiB"
    data = {"path": str(where), "free_bytes": free}
    if free < DISK_FAIL_BYTES:
        return Check(
            "disk",
            Level.FAIL,
            f"{shown} free under {where}, below {DISK_FAIL_BYTES // 1024**2} MiB",
            hint="free space there, or move data_dir (CHRYSALIS_DATA_DIR) to a larger disk: images, the IPFS "
            "repo and the database are written there",
            value=free,
            data=data,
        )
    if free < DISK_WARN_BYTES:
        return Check(
            "disk",
            Level.WARN,
            f"{shown} free under {where}, below {DISK_WARN_BYTES / 1024**3:g} GiB",
            hint="free space there soon, or move data_dir (CHRYSALIS_DATA_DIR) to a larger disk",
            value=free,
            data=data,
        )
    return Check("disk", Level.OK, f"{shown} free under {where}", value=free, data=data)


# -- all of it --------------------------------------------------------------------------------------------------


def run_setup_doctor(
    load: Callable[[], Any],
    *,
    settings_file: Callable[[], Path | None] | None = None,
    rpc_url: str | None = None,
    secondary_url: str | None = None,
    wait: Callable[[float], object] | None = None,
    **rpc_overrides: Any,
) -> SetupReport:
    """Every check, in order; never raises for what it finds (``load`` loads the settings, which
    ``settings_file`` names: default :func:`agent.settings.config_path`)."""
    from agent.deployment import Deployment

    started = time.monotonic()
    checks: list[Check] = []
    config, settings = check_config(load, settings_file)
    checks.append(config)
    names = ("rules", "chain", "contract", "roles", "database", "ipfs", "models", "credentials", "disk")
    if settings is None:
        checks.extend(_skip(n, "the settings did not load") for n in names)
        return SetupReport(tuple(checks), None, time.monotonic() - started)
    url = rpc_url or settings.chain.rpc_url
    deployment: Any = None
    record_error: Check | None = None
    try:
        deployment = Deployment.load(settings.chain.deployment)
    except ChrysalisError as exc:
        record_error = _from_error("contract", exc)
    checks.append(_guard("rules", lambda: check_rules_file(settings, deployment)))

    secondary = secondary_url if secondary_url is not None else settings.chain.rpc_url_secondary
    rpc = run_doctor(url, secondary or None, options_from_settings(settings, **rpc_overrides), wait=wait)
    checks.extend(_renamed(rpc.checks))
    chain_up = rpc.check("primary").level is not Level.FAIL

    contract_ok = False
    if record_error is not None:
        checks.append(record_error)
    elif not chain_up:
        checks.append(_skip("contract", "the node did not answer (chain.primary)"))
    else:
        contract = _guard("contract", lambda: check_contract(settings, deployment, url), url)
        contract_ok = contract.level is Level.OK
        checks.append(contract)
    if contract_ok:
        checks.append(_guard("roles", lambda: check_roles(settings, deployment, url), url))
    else:
        checks.append(_skip("roles", "the contract check did not pass"))

    checks.append(_guard("database", lambda: check_database(settings)))
    ipfs = _guard_many("ipfs", lambda: check_ipfs(settings))
    checks.extend(ipfs)
    registry = _registry(settings, deployment, url) if contract_ok else None
    checks.extend(check_models(settings, registry))
    checks.append(_guard("credentials", lambda: check_credentials(settings)))
    checks.append(_guard("disk", lambda: check_disk(settings.data_dir)))
    return SetupReport(tuple(checks), rpc, time.monotonic() - started)


def _guard_many(name: str, fn: Callable[[], list[Check]]) -> list[Check]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported as the check's finding
        return [_from_error(name, exc)]


def _renamed(checks: Iterable[Check]) -> list[Check]:
    return [replace(c, name=f"chain.{c.name}") for c in checks]


def _registry(settings: Any, deployment: Any, url: str) -> Callable[[str], tuple[int, int] | None]:
    """``lookup(digest)``: (the registry's model id for these weights, 0 if none; the active model's id), or
    None when the collection's ABI has no registry."""

    def lookup(digest: str) -> tuple[int, int] | None:
        abi = deployment.abi()
        if not _view(abi, "activeModel") or not any(e.get("name") == "modelIdOf" for e in abi):
            return None
        client = connect(url, options_from_settings(settings))
        f = client.w3.eth.contract(address=deployment.address(), abi=abi).functions
        model_id = int(client.call("eth_call", f.modelIdOf(bytes.fromhex(digest.removeprefix("0x"))).call))
        active = int(client.call("eth_call", f.activeModel().call))
        return model_id, active

    return lookup


# -- printing ---------------------------------------------------------------------------------------------------


def render_lines(report: SetupReport) -> list[str]:
    """One line per check: ``pass``/``warn``/``fail``/``skip``, the name, the finding, and ``fix: ...``."""
    width = max((len(c.name) for c in report.checks), default=8)
    lines = []
    for c in report.checks:
        word = typer.style(f"{_WORDS[c.level]:<4}", fg=_COLOURS[c.level], bold=c.level is not Level.SKIP)
        line = f"{word}  {c.name:<{width}}  {c.summary}"
        if c.hint and c.level in (Level.WARN, Level.FAIL):
            line += f"  fix: {c.hint}"
        lines.append(line)
    counts = ", ".join(f"{sum(c.level is lv for c in report.checks)} {_WORDS[lv]}" for lv in Level)
    verdict = typer.style(_WORDS[report.level], fg=_COLOURS[report.level], bold=True)
    lines.append(f"verdict: {verdict} ({counts}; {report.elapsed_s:.1f} s)")
    return lines


__all__ = [
    "DISK_FAIL_BYTES",
    "DISK_WARN_BYTES",
    "HASH_LIMIT_BYTES",
    "SetupReport",
    "check_config",
    "check_database",
    "check_disk",
    "render_lines",
    "run_setup_doctor",
]
