"""``chrysalis doctor`` over the whole setup, on one anvil per module (the ops conftest's chain, deployed with the
shipped sprite model's weights digest registered and active, so that a healthy setup passes every check), each
failure giving its fail line and fix: a record for another chain, no code at the address, an agent key without
the role, a corrupt SQLite file, a missing model path, too little disk, a missing config file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account

from agent.ipfs.repo import IpfsRepo
from agent.ops import doctor_setup
from agent.ops.accounts import dev_address, dev_key
from agent.ops.doctor import Level
from agent.ops.doctor_setup import SetupReport, run_setup_doctor
from agent.settings import load_settings
from agent.store import Database
from tests.ops.conftest import AGENT, OTHER, deploy
from tests.support.devchain import CollectionChain

pytestmark = pytest.mark.anvil

ROOT = Path(__file__).resolve().parents[2]
SPRITES_MANIFEST = ROOT / "agent" / "generate" / "shipped" / "sprites32" / "manifest.json"


@pytest.fixture(scope="module")
def module_devchain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> CollectionChain:
    """The collection with the shipped image model registered and active (the conftest's, another digest)."""
    digest = json.loads(SPRITES_MANIFEST.read_text())["weights_sha256"]
    return deploy(anvil_url, tmp_path_factory.mktemp("deployments"), model_digest="0x" + digest)


def _keystore(path: Path, index: int) -> Path:
    """A V3 keystore for development account ``index`` (cheap pbkdf2: the doctor only reads its address)."""
    path.write_text(json.dumps(Account.encrypt(dev_key(index), "pw", kdf="pbkdf2", iterations=2)))
    return path


@pytest.fixture
def healthy(configured: CollectionChain, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> CollectionChain:
    """The configured devchain, plus the agent's keystore, a migrated database and an embedded IPFS repo."""
    monkeypatch.setenv("CHRYSALIS_SIGNER__KEYSTORE", str(_keystore(workdir / "agent.json", AGENT)))
    Database.open(f"sqlite:///{workdir / 'agent.db'}").close()
    IpfsRepo(workdir / ".chrysalis" / "ipfs")
    return configured


def _mine(chain: CollectionChain) -> Callable[[float], bool]:
    def wait(_seconds: float) -> bool:
        chain.rpc("evm_mine")
        return False

    return wait


def _levels(report: SetupReport) -> dict[str, Level]:
    return {c.name: c.level for c in report.checks}


def test_a_healthy_setup_passes_every_check(healthy: CollectionChain) -> None:
    report = run_setup_doctor(load_settings, wait=_mine(healthy), interval_s=10.0, poll_s=0.02, retries=0)
    skipped = {
        "chain.secondary",
        "chain.head_lag",
        "credentials",
    }  # no second RPC, no [credentials] configured
    assert {n: lv for n, lv in _levels(report).items() if n not in skipped} == dict.fromkeys(
        [
            "config", "rules", "chain.primary", "chain.chain_id", "chain.head_moving", "chain.log_range",
            "chain.pending", "contract", "roles", "database", "ipfs", "models.image", "models.lore", "disk",
        ],
        Level.OK,
    ), report.to_json()  # fmt: skip
    assert all(_levels(report)[n] is Level.SKIP for n in skipped)
    assert not report.failed and report.level is Level.OK
    assert "CHRYSALIS_CHAIN__RPC_URL" in report.check("config").summary  # names only, never values
    assert healthy.url not in report.check("config").summary
    assert "holds AGENT_ROLE and REFRESHER_ROLE" in report.check("roles").summary
    assert dev_address(AGENT) in report.check("roles").summary
    assert "deploy block" in report.check("contract").summary
    assert "schema current" in report.check("database").summary
    assert "the active one" in report.check("models.image").summary
    assert "not loaded" in report.check("models.lore").summary


def test_the_cli_prints_a_line_per_check_and_json(healthy: CollectionChain, chrysalis) -> None:
    result = chrysalis("doctor", "--interval", "0")
    assert result.code == 0, result.text  # warns (an idle dev chain) are not failures
    lines = result.out.splitlines()
    assert lines[0].split()[:2] == ["pass", "config"]
    assert any(line.split()[:2] == ["warn", "chain.head_moving"] and "fix:" in line for line in lines)
    assert any(line.split()[:2] == ["skip", "chain.secondary"] for line in lines)
    assert lines[-1].startswith("verdict: warn")

    report = json.loads(chrysalis("doctor", "--json", "--interval", "0").out)
    assert report["verdict"] == "warn"
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["roles"]["result"] == "pass" and by_name["roles"]["fix"] is None
    assert by_name["chain.head_moving"]["result"] == "warn" and by_name["chain.head_moving"]["fix"]
    assert by_name["chain.log_range"]["address"] == healthy.deployment.address()
    assert by_name["disk"]["free_bytes"] > 0


def _json(chrysalis, *args: str) -> tuple[int, dict[str, dict]]:
    result = chrysalis("doctor", "--json", "--interval", "0", *args)
    assert "Traceback" not in result.err
    return result.code, {c["name"]: c for c in json.loads(result.out)["checks"]}


def _record(chain: CollectionChain, tmp: Path, **changes: object) -> Path:
    data = json.loads(chain.record.read_text())
    data.update(changes)
    tmp.mkdir(exist_ok=True)
    path = tmp / "other.json"
    path.write_text(json.dumps(data))
    for contract in data["contracts"].values():
        (tmp / contract["abi"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp / contract["abi"]).write_text((chain.record.parent / contract["abi"]).read_text())
    return path


def test_a_record_for_another_chain_fails_the_contract(
    healthy: CollectionChain, chrysalis, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(_record(healthy, workdir / "rec", chain_id=5)))
    code, checks = _json(chrysalis)
    assert code == 1
    assert checks["contract"]["result"] == "fail"
    assert "serves chain 31337, but deployment record" in checks["contract"]["finding"]
    assert "point chain.rpc_url at the deployment's chain" in checks["contract"]["fix"]
    assert checks["roles"]["result"] == "skip"  # its prerequisite failed: no cascade
    assert checks["models.image"]["result"] == "pass"  # the registry is not checked without a contract
    assert checks["database"]["result"] == "pass"


def test_no_code_at_the_address_fails_the_contract(
    healthy: CollectionChain, chrysalis, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(healthy.record.read_text())
    data["contracts"]["LivingCollection"]["address"] = dev_address(OTHER)
    record = _record(healthy, workdir / "rec", contracts=data["contracts"])
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(record))
    code, checks = _json(chrysalis)
    assert code == 1
    assert f"no contract at {dev_address(OTHER)}" in checks["contract"]["finding"]
    assert "chrysalis deploy" in checks["contract"]["fix"]
    assert checks["roles"]["result"] == "skip"


def test_an_agent_key_without_the_role_fails(
    healthy: CollectionChain, chrysalis, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_SIGNER__KEYSTORE", str(_keystore(workdir / "other.json", OTHER)))
    code, checks = _json(chrysalis)
    assert code == 1
    assert checks["roles"]["result"] == "fail"
    assert f"{dev_address(OTHER)}" in checks["roles"]["finding"]
    assert "does not hold AGENT_ROLE" in checks["roles"]["finding"]
    assert "grantRole(AGENT_ROLE()" in checks["roles"]["fix"] and dev_address(AGENT) in checks["roles"]["fix"]

    monkeypatch.delenv("CHRYSALIS_SIGNER__KEYSTORE")
    code, checks = _json(chrysalis)
    assert code == 1 and "no agent key configured" in checks["roles"]["finding"]


def test_a_corrupt_sqlite_file_fails_and_is_left_alone(
    healthy: CollectionChain, chrysalis, workdir: Path
) -> None:
    db = workdir / "agent.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"not a database, " * 512)
    code, checks = _json(chrysalis)
    assert code == 1
    assert checks["database"]["result"] == "fail"
    assert "is not a SQLite database (or is corrupt)" in checks["database"]["finding"]
    assert "restore it from a backup" in checks["database"]["fix"]
    assert db.read_bytes() == b"not a database, " * 512


def test_a_missing_database_is_not_created(configured: CollectionChain, workdir: Path) -> None:
    check = doctor_setup.check_database(load_settings())
    assert check.level is Level.OK and "`chrysalis run` creates it" in check.summary
    assert not (workdir / "agent.db").exists()
    ipfs = doctor_setup.check_ipfs(load_settings())
    assert ipfs[0].level is Level.OK and "creates it" in ipfs[0].summary
    assert not (workdir / ".chrysalis").exists()


def test_a_missing_model_path_fails(
    healthy: CollectionChain, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_MODELS__IMAGE_BACKEND", "diffusers")
    monkeypatch.setenv("CHRYSALIS_MODELS__IMAGE_MODEL", "/nonexistent/pipeline")
    code, checks = _json(chrysalis)
    assert code == 1
    assert checks["models.image"]["result"] == "fail"
    assert "image model path /nonexistent/pipeline does not exist" in checks["models.image"]["finding"]
    assert "models.image_model" in checks["models.image"]["fix"]
    assert checks["models.lore"]["result"] == "pass"


def test_low_disk_space_warns_then_fails(
    healthy: CollectionChain, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor_setup, "DISK_WARN_BYTES", 1 << 62)
    assert doctor_setup.check_disk(Path(".chrysalis")).level is Level.WARN
    monkeypatch.setattr(doctor_setup, "DISK_FAIL_BYTES", 1 << 61)
    result = chrysalis("doctor", "--interval", "0")
    assert result.code == 1
    line = next(line for line in result.out.splitlines() if line.split()[1:2] == ["disk"])
    assert line.startswith("fail") and "free under" in line and "fix: free space there" in line


def test_a_missing_config_file_fails_and_skips_the_rest(
    workdir: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRYSALIS_CONFIG", str(workdir / "missing.toml"))
    result = chrysalis("doctor", "--interval", "0")
    assert result.code == 1 and "Traceback" not in result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("fail") and "missing.toml (from $CHRYSALIS_CONFIG) does not exist" in lines[0]
    assert "fix: point CHRYSALIS_CONFIG at your chrysalis.toml" in lines[0]
    assert all(line.startswith("skip") and "the settings did not load" in line for line in lines[1:-1])
    assert lines[-1].startswith("verdict: fail")


def test_credentials_are_checked_by_signing_a_test_image(tmp_path: Path) -> None:
    """``[credentials]``: SKIP when unset; development credentials sign and read back; a broken chain is a FAIL
    with the fix."""
    from agent.credentials import create_dev_credentials
    from agent.ops.doctor_setup import check_credentials
    from agent.settings import CredentialsSettings, Settings

    unset = check_credentials(Settings())
    assert unset.level is Level.SKIP and "--dev-credentials" in unset.summary
    dev = create_dev_credentials(tmp_path / "credentials")
    good = check_credentials(Settings(credentials=CredentialsSettings(**dev.settings())))
    assert good.level is Level.OK and "reads back valid" in good.summary and "trust_anchors" in good.summary
    broken = tmp_path / "chain.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    bad = CredentialsSettings(key_file=dev.key_file, certificate_chain=broken)
    report = run_setup_doctor(lambda: Settings(credentials=bad), rpc_url="http://127.0.0.1:9", retries=0)
    check = report.check("credentials")
    assert check.level is Level.FAIL and str(broken) in check.summary and check.hint
