"""``chrysalis doctor`` against real anvil nodes, with the fault-injecting proxy playing the bad provider: a lagging
node, a capped eth_getLogs range in two wordings, "pending" answered as "latest", another chain, no node at all.

The module's anvil starts at block 10,000 (a genesis file), so that eth_getLogs spans of thousands of blocks exist
without mining them one by one (``anvil_mine`` of 2,500 blocks takes about 6 s on two busy cores).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.devnet import free_port, start_anvil
from agent.errors import ConfigError
from agent.jsonrpc import RpcUnavailableError
from agent.metrics import REGISTRY
from agent.ops.accounts import dev_address
from agent.ops.doctor import (
    CHECKS,
    DoctorOptions,
    Level,
    check_log_range,
    check_pending,
    connect,
    publish,
    redact_url,
    run_doctor,
    start_background,
)
from agent.settings import load_settings
from tests.ops.conftest import HOLDER
from tests.support.devchain import CollectionChain
from tests.support.rpc_proxy import FaultProxy

pytestmark = pytest.mark.anvil

GENESIS_BLOCK = 10_000


def _genesis(path: Path) -> Path:
    forks = ("homestead", "eip150", "eip155", "eip158", "byzantium", "constantinople", "petersburg", "istanbul",
             "berlin", "london")  # fmt: skip
    config: dict[str, object] = {"chainId": 31337, **{f"{fork}Block": 0 for fork in forks}}
    config.update(shanghaiTime=0, cancunTime=0, terminalTotalDifficulty=0, terminalTotalDifficultyPassed=True)
    genesis = {
        "config": config,
        "number": hex(GENESIS_BLOCK),
        "gasLimit": hex(30_000_000),
        "baseFeePerGas": hex(10**9),
        "difficulty": "0x0",
        "timestamp": hex(int(time.time()) - 86_400),
        "alloc": {dev_address(i): {"balance": hex(10_000 * 10**18)} for i in range(10)},
    }
    path.write_text(json.dumps(genesis))
    return path


@pytest.fixture(scope="module")
def anvil_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's anvil (overrides the ops conftest's): chain 31337, the dev accounts funded, head 10,000."""
    genesis = _genesis(tmp_path_factory.mktemp("genesis") / "genesis.json")
    with start_anvil("--init", str(genesis)) as node:
        yield node.url


@pytest.fixture
def proxies() -> Iterator[Callable[..., FaultProxy]]:
    made: list[FaultProxy] = []

    def make(upstream: str, **kwargs: object) -> FaultProxy:
        proxy = FaultProxy(upstream, **kwargs)  # type: ignore[arg-type]
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def _options(chain: CollectionChain, **kwargs: object) -> DoctorOptions:
    base = DoctorOptions(
        interval_s=0.0,
        poll_s=0.02,
        address=chain.deployment.address(),
        expected_chain_id=chain.deployment.chain_id,
        pending_address=chain.deployment.agent,
        retries=0,
    )
    return replace(base, **kwargs)  # type: ignore[arg-type]


def _mine(chain: CollectionChain) -> Callable[[float], bool]:
    """A ``wait`` for the head check that mines a block instead of sleeping (a dev chain with traffic)."""

    def wait(_seconds: float) -> bool:
        chain.rpc("evm_mine")
        return False

    return wait


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_healthy_node_passes_every_check(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy]
) -> None:
    second = proxies(devchain.url)  # another URL onto the same node: same chain, same head
    report = run_doctor(devchain.url, second.url, _options(devchain, interval_s=10.0), wait=_mine(devchain))

    assert [c.name for c in report.checks] == list(CHECKS)
    assert {c.name: c.level for c in report.checks} == dict.fromkeys(CHECKS, Level.OK), report.to_json()
    assert report.level is Level.OK and not report.failed
    assert "moved" in report.check("head_moving").summary
    assert report.check("head_lag").value == 0
    assert "same genesis block" in report.check("chain_id").summary
    head = report.check("primary").data["head"]
    # a chain shorter than the probe: every block was accepted, a lower bound
    assert report.check("log_range").value == head + 1
    assert report.check("log_range").data["lower_bound"] is True
    assert report.check("pending").value == 1
    assert report.elapsed_s < 10  # the head check ended as soon as a block came

    publish(report)
    for name in CHECKS:
        assert _gauge("chrysalis_rpc_doctor_ok", check=name) == 1
        assert _gauge("chrysalis_rpc_doctor_level", check=name) == 0
    assert _gauge("chrysalis_rpc_head_lag_blocks") == 0
    assert _gauge("chrysalis_rpc_max_log_range_blocks") == head + 1
    assert _gauge("chrysalis_rpc_pending_supported") == 1


def test_an_idle_dev_chain_is_a_warning_that_says_why(devchain: CollectionChain) -> None:
    report = run_doctor(devchain.url, None, _options(devchain, interval_s=0.3))
    head = report.check("head_moving")
    assert head.level is Level.WARN and "stayed at" in head.summary
    assert head.hint is not None and "dev chain with no traffic" in head.hint
    assert report.check("secondary").level is Level.SKIP and report.check("head_lag").level is Level.SKIP
    assert report.check("chain_id").level is Level.OK  # against the deployment record
    assert report.level is Level.WARN and not report.failed


@pytest.mark.parametrize("behind", ["primary", "secondary"])
def test_a_lagging_node_is_reported_in_blocks(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy], behind: str
) -> None:
    lagging = proxies(devchain.url)
    lagging.lag = 5
    primary, secondary = (lagging.url, devchain.url) if behind == "primary" else (devchain.url, lagging.url)
    report = run_doctor(primary, secondary, _options(devchain))

    lag = report.check("head_lag")
    assert lag.level is Level.WARN
    assert lag.value == (5 if behind == "primary" else -5)
    assert f"the {behind} is 5 block(s) behind" in lag.summary
    assert lag.hint
    publish(report)
    assert _gauge("chrysalis_rpc_head_lag_blocks") == lag.value
    assert _gauge("chrysalis_rpc_doctor_ok", check="head_lag") == 0


def test_a_primary_behind_by_more_than_the_finality_depth_fails(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy]
) -> None:
    lagging = proxies(devchain.url)
    lagging.lag = 80
    report = run_doctor(lagging.url, devchain.url, _options(devchain, fail_lag=64))
    assert report.check("head_lag").level is Level.FAIL
    assert report.check("head_lag").value == 80
    assert "chain.finality_depth" in (report.check("head_lag").hint or "")
    assert report.failed


@pytest.mark.parametrize("style", ["alchemy", "unknown"])
def test_the_largest_accepted_log_range_of_a_capped_provider_is_found(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy], style: str
) -> None:
    capped = proxies(devchain.url, max_span=2000, style=style)
    report = run_doctor(capped.url, None, _options(devchain, configured_range=5000))

    found = report.check("log_range")
    assert found.value == 2000, found  # halved from the whole chain (10,000+ blocks), then bisected
    assert found.data["refused"] == 2001
    assert capped.refused and capped.injected["range_refused"] >= 1
    assert (capped.refused[0][1] - capped.refused[0][0] + 1) > GENESIS_BLOCK  # the probe started wide
    assert found.level is Level.WARN  # below chain.max_block_range (5000 here)
    assert "chain.max_block_range = 2000" in (found.hint or "")
    publish(report)
    assert _gauge("chrysalis_rpc_max_log_range_blocks") == 2000

    fits = run_doctor(capped.url, None, _options(devchain, configured_range=2000)).check("log_range")
    assert fits.level is Level.OK and fits.value == 2000


def test_a_node_that_stops_answering_mid_probe_fails_it_instead_of_faking_a_cap(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy]
) -> None:
    flaky = proxies(devchain.url)
    rpc = connect(flaky.url, DoctorOptions(retries=0))
    head = rpc.block_number()
    flaky.fail_next = [
        (503, {}),
        (503, {}),
    ]  # the wide eth_getLogs, then the liveness check: the node is down
    with pytest.raises(RpcUnavailableError):
        check_log_range(rpc, head, address=devchain.deployment.address())
    assert flaky.injected["http_503"] == 2

    flaky.fail_next = [
        (503, {})
    ]  # one span timed out, and the node still answers: that span counts as refused
    found = check_log_range(rpc, head, address=devchain.deployment.address())
    assert found.level is Level.OK and found.value == head  # head + 1 refused, bisected down to head
    assert found.data["refused"] == head + 1


def test_pending_answered_as_latest_is_detected(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy]
) -> None:
    liar = proxies(devchain.url, pending_as_latest=True)
    report = run_doctor(liar.url, None, _options(devchain))
    pending = report.check("pending")
    assert pending.level is Level.WARN and pending.value == 0
    assert 'evaluated as "latest"' in pending.summary
    assert pending.hint is not None and "nonce" in pending.hint
    assert liar.injected["pending_as_latest"] > 0
    publish(report)
    assert _gauge("chrysalis_rpc_pending_supported") == 0
    assert _gauge("chrysalis_rpc_doctor_ok", check="pending") == 0
    assert _gauge("chrysalis_rpc_doctor_level", check="pending") == 1


def test_a_pooled_transaction_makes_the_nonce_probe_conclusive(
    devchain: CollectionChain, proxies: Callable[..., FaultProxy]
) -> None:
    holder = dev_address(HOLDER)
    devchain.rpc("evm_setAutomine", False)  # the devchain fixture turns it back on and empties the pool
    devchain.w3.eth.send_transaction({"from": holder, "to": holder, "value": 1})
    options = DoctorOptions(retries=0)

    honest = check_pending(connect(devchain.url, options), address=holder)
    assert honest.level is Level.OK and honest.value == 1
    assert "counts 1 pooled transaction(s)" in honest.summary

    liar = proxies(devchain.url, pending_as_latest=True)
    lied = check_pending(connect(liar.url, options), address=holder)
    assert lied.level is Level.WARN and lied.value == 0
    assert lied.data["nonce_pending"] == lied.data["nonce_latest"]  # the pooled transaction is invisible


def test_two_chains_behind_the_two_urls_fail(devchain: CollectionChain) -> None:
    with start_anvil("--chain-id", "4242") as other:
        report = run_doctor(devchain.url, other.url, _options(devchain))
    chain = report.check("chain_id")
    assert chain.level is Level.FAIL
    assert "chain 31337, the secondary chain 4242" in chain.summary
    assert report.check("head_lag").level is Level.SKIP
    assert report.failed

    with start_anvil() as same_id:  # chain 31337 too, but its own genesis block
        report = run_doctor(devchain.url, same_id.url, _options(devchain))
    assert report.check("chain_id").level is Level.FAIL
    assert "genesis blocks differ" in report.check("chain_id").summary


def _chain_checks(out: str) -> dict[str, dict]:
    """The ``chain.*`` checks of ``chrysalis doctor --json``, by their RPC doctor name."""
    checks = json.loads(out)["checks"]
    return {c["name"].removeprefix("chain."): c for c in checks if c["name"].startswith("chain.")}


def test_the_cli_prints_a_line_per_check_and_json(
    configured: CollectionChain, chrysalis, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore = workdir / "agent.json"  # the agent's key (the doctor reads only its address)
    keystore.write_text(json.dumps({"address": configured.deployment.agent[2:].lower(), "crypto": {}}))
    monkeypatch.setenv("CHRYSALIS_SIGNER__KEYSTORE", str(keystore))
    table = chrysalis("doctor", "--interval", "0")
    assert table.code == 0, table.text  # WARN (an idle dev chain) is not a failure
    for name in CHECKS:
        assert f"chain.{name}" in table.text
    assert "head stayed at" in table.out
    assert "fix: expected on a dev chain with no traffic" in table.out
    assert "verdict: warn" in table.text

    result = chrysalis("doctor", "--json", "--interval", "0")
    assert result.code == 0, result.text
    assert json.loads(result.out)["verdict"] == "warn"
    checks = _chain_checks(result.out)
    assert list(checks) == list(CHECKS)
    assert checks["chain_id"]["result"] == "pass"
    assert checks["chain_id"]["deployment"] == configured.deployment.chain_id
    assert checks["head_moving"]["result"] == "warn"
    assert checks["log_range"]["result"] == "pass"
    assert checks["pending"]["value"] == 1
    assert checks["log_range"]["address"] == configured.deployment.address()


def test_the_cli_fails_clearly_on_a_wrong_chain(configured: CollectionChain, chrysalis) -> None:
    with start_anvil("--chain-id", "4242") as other:
        result = chrysalis("doctor", "--interval", "0", "--secondary", other.url, "--json")
    assert result.code == 1
    assert _chain_checks(result.out)["chain_id"]["result"] == "fail"


def test_an_unreachable_url_is_a_clear_failure(configured: CollectionChain, chrysalis, monkeypatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v2/abcdefghijklmnopqrstuvwxyz012345"
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_RETRIES", "0")
    result = chrysalis("doctor", "--rpc-url", dead, "--interval", "0")
    assert result.code == 1
    assert "does not answer" in result.text and "Connection refused" in result.text
    assert "check chain.rpc_url" in result.text
    assert "abcdefghijklmnopqrstuvwxyz012345" not in result.text  # an API key in the URL is not printed
    assert "Traceback" not in result.err
    contract = next(line for line in result.out.splitlines() if line.split()[1:2] == ["contract"])
    assert contract.startswith("skip") and "the node did not answer" in contract  # no cascade of fails

    result = chrysalis("doctor", "--secondary", dead, "--interval", "0", "--json")
    assert result.code == 1
    checks = _chain_checks(result.out)
    assert checks["primary"]["result"] == "pass"
    assert checks["secondary"]["result"] == "fail" and "chain.rpc_url_secondary" in checks["secondary"]["fix"]
    assert checks["head_lag"]["result"] == "skip"


def test_the_secondary_url_setting_is_validated(workdir: Path, chrysalis, monkeypatch) -> None:
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL_SECONDARY", "ws://127.0.0.1:8546")
    result = chrysalis("doctor", "--interval", "0")
    assert result.code == 1
    assert "chain.rpc_url_secondary must be an http:// or https:// JSON-RPC URL" in result.text
    assert "Traceback" not in result.err

    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL_SECONDARY", "http://127.0.0.1:8545/")
    with pytest.raises(ConfigError, match="same URL as chain.rpc_url"):
        load_settings()
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL_SECONDARY", "")
    assert load_settings().chain.rpc_url_secondary is None
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL_SECONDARY", "https://eth.example.org/v2/key")
    assert load_settings().chain.rpc_url_secondary == "https://eth.example.org/v2/key"


def test_the_agent_runs_the_doctor_in_the_background_and_sets_the_gauges(configured: CollectionChain) -> None:
    before = _gauge("chrysalis_rpc_doctor_timestamp_seconds") or 0.0
    settings = load_settings()
    stop = threading.Event()
    thread = start_background(settings, stop, interval_s=0.2)
    thread.join(30)
    assert not thread.is_alive()
    assert (_gauge("chrysalis_rpc_doctor_timestamp_seconds") or 0.0) > before
    assert _gauge("chrysalis_rpc_doctor_ok", check="primary") == 1
    assert _gauge("chrysalis_rpc_pending_supported") == 1

    stop.set()  # a stopping agent: the doctor ends without waiting out its interval
    started = time.monotonic()
    start_background(settings, stop, interval_s=60).join(30)
    assert time.monotonic() - started < 30


def test_urls_are_shown_without_credentials() -> None:
    assert redact_url("https://eth-mainnet.g.alchemy.com/v2/AbCdEfGhIjKlMnOpQrStUvWx") == (
        "https://eth-mainnet.g.alchemy.com/…"
    )
    assert redact_url("https://user:secret@rpc.example.org/?apikey=s3cret") == "https://rpc.example.org/…"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
