"""No provider API key in what the agent shows or logs (audit M6), no secret in a settings error, and no secret
read from the TOML file (audit L6).

The RPC endpoints here carry a key in the path (Infura/Alchemy style) and one in the query; a FaultProxy answers
503 (it ignores the path), and a closed port refuses connections, so no node is needed.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.jsonrpc import RpcFailed, RpcFailure, RpcUnavailableError
from agent.ops.doctor import DoctorOptions, log_report, run_doctor
from agent.ops.doctor_setup import SetupReport, render_lines
from agent.redact import HIDDEN, redact_text, redact_url
from agent.settings import load_settings
from agent.submit.rpc import ChainRpc
from agent.watch.errors import RpcError, RpcRateLimitedError
from agent.watch.rpc import RpcClient
from tests.support.rpc_proxy import FaultProxy

PATH_KEY = "PATHKEY0123456789abcdef0123456789"
QUERY_KEY = "QUERYKEY-s3cr3t"
SECRETS = (PATH_KEY, QUERY_KEY)


def keyed(base: str) -> str:
    """``base`` with a key in the path and another in the query."""
    return f"{base}/v3/{PATH_KEY}?apiKey={QUERY_KEY}"


def assert_clean(*texts: str | None) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in (text or ""), f"{secret} leaked into: {text}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def down() -> Iterator[FaultProxy]:
    """An endpoint that answers HTTP 503 to everything (its upstream is never reached)."""
    proxy = FaultProxy(f"http://127.0.0.1:{closed_port()}")
    proxy.fail_next = [(503, {})] * 1000
    try:
        yield proxy
    finally:
        proxy.close()


# -- the helper ----------------------------------------------------------------------------------------------


def test_a_url_is_shown_as_scheme_and_host_only() -> None:
    assert redact_url("https://mainnet.infura.io/v3/0123456789abcdef") == "https://mainnet.infura.io/…"
    assert redact_url("https://user:pw@rpc.example.org:8443/?apikey=x#f") == "https://rpc.example.org:8443/…"
    assert redact_url("wss://mainnet.infura.io/ws/v3/KEY") == "wss://mainnet.infura.io/…"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"  # nothing to hide: unchanged
    assert redact_url("/ip4/127.0.0.1/tcp/5001") == "/ip4/127.0.0.1/tcp/5001"  # not a URL
    assert redact_url("http://host:notaport/KEY") == "http://…"


def test_text_loses_every_url_and_the_pieces_urllib3_quotes() -> None:
    url = keyed("http://127.0.0.1:9")
    text = (
        f"HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /v3/{PATH_KEY}"
        f"?apiKey={QUERY_KEY} (Caused by ...); see {url}."
    )
    shown = redact_text(text, url)
    assert_clean(shown)
    assert "port=9" in shown and shown.endswith(f"see http://127.0.0.1:9/{HIDDEN}.")
    assert_clean(redact_text(f"stored long ago: https://eth-mainnet.g.alchemy.com/v2/{PATH_KEY} failed"))


# -- errors and logs -----------------------------------------------------------------------------------------


def test_rpc_error_messages_hide_the_key() -> None:
    url = keyed("https://mainnet.infura.io")
    unavailable = RpcUnavailableError(url, "eth_blockNumber", f"cannot connect: {url}", attempts=3)
    assert_clean(str(unavailable), unavailable.message, unavailable.hint)
    assert "https://mainnet.infura.io/…" in unavailable.message
    assert "hidden" in (unavailable.hint or "")  # says why the URL looks cut
    assert unavailable.url == url  # the structured field keeps the endpoint for the code
    error = RpcError(url, "eth_call", 401, f"HTTP 401 for {url}", hint=f"check {url}")
    limited = RpcRateLimitedError(url, "eth_getLogs", 429, "HTTP 429", retry_after=1.0)
    failed = RpcFailed(
        "eth_call",
        RpcFailure("timeout", f"timed out: url: /v3/{PATH_KEY}?apiKey={QUERY_KEY}", True),
        3,
        url=url,
    )
    submit = RpcUnavailableError(url, "eth_chainId", f"cannot reach {url}", attempts=2, hint=f"check {url}")
    assert_clean(str(error), str(limited), str(failed), str(submit))


def test_retries_and_the_final_error_of_a_down_endpoint_hide_the_key(
    down: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chrysalis.rpc")
    rpc = RpcClient(keyed(down.url), retries=2, backoff_s=0.001, max_backoff_s=0.001, timeout_s=5)
    with pytest.raises(RpcUnavailableError) as err:
        rpc.block_number()
    assert down.injected["http_503"] == 3
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and down.url in retries[0]  # the host stays: the log line is still useful
    assert_clean(caplog.text, *retries, str(err.value), err.value.hint)
    assert f"RPC {down.url}/{HIDDEN} unavailable" in err.value.message

    refused = RpcClient(keyed(f"http://127.0.0.1:{closed_port()}"), retries=0, timeout_s=5)
    with pytest.raises(RpcUnavailableError) as err:
        refused.chain_id()
    assert "cannot connect" in err.value.message
    assert_clean(str(err.value), err.value.hint)

    chain = ChainRpc.connect(keyed(down.url), timeout_s=5, retries=1, sleep=lambda _s: None)
    with pytest.raises(RpcUnavailableError) as sent:
        chain.request("eth_blockNumber")
    assert_clean(str(sent.value), caplog.text)


def test_the_doctor_report_hides_the_keys(down: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    secondary = keyed(f"http://127.0.0.1:{closed_port()}")
    report = run_doctor(keyed(down.url), secondary, DoctorOptions(retries=1, timeout_s=5))
    assert report.check("primary").level.value == "FAIL"
    shown = "\n".join(render_lines(SetupReport(checks=tuple(report.checks), rpc=report)))
    log_report(report)
    assert f"{down.url}/{HIDDEN}" in shown and "does not answer" in shown
    assert_clean(shown, json.dumps(report.to_json()), caplog.text)


# -- settings ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    return tmp_path


def test_a_settings_error_does_not_print_secrets(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRYSALIS_IPFS__PINNING_SERVICES", '[{"name": "p", "token": "ENV-SECRET-TOKEN"}]')
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "ENV-SECRET-TOKEN" not in text
    assert "ipfs.pinning_services.0.endpoint: Field required" in text and "'name', 'token'" in text

    monkeypatch.setenv(  # a misspelt key may hold the secret too
        "CHRYSALIS_IPFS__PINNING_SERVICES",
        '[{"name": "p", "endpoint": "https://x.org", "tokn": "TYPO-SECRET"}]',
    )
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "tokn" in str(err.value) and "TYPO-SECRET" not in str(err.value)

    monkeypatch.delenv("CHRYSALIS_IPFS__PINNING_SERVICES")
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", keyed("https://mainnet.infura.io"))
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL_SECONDARY", keyed("https://mainnet.infura.io"))
    with pytest.raises(ConfigError, match="same URL") as err:
        load_settings()
    assert_clean(str(err.value))


TOML = """
[[ipfs.pinning_services]]
name = "pinata"
endpoint = "https://api.pinata.cloud/psa"
"""


def test_a_token_in_the_toml_file_is_refused(no_config: Path) -> None:
    config = no_config / "chrysalis.toml"
    config.write_text(TOML + 'token = "TOML-SECRET-TOKEN"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    text = str(err.value)
    assert "ipfs.pinning_services[0].token" in text and "never read from the TOML file" in text
    assert "$CHRYSALIS_PINNING_PINATA_TOKEN" in (err.value.hint or "")
    assert "TOML-SECRET-TOKEN" not in text

    config.write_text(TOML + 'token_env = "MY_PINATA"\ntoken = "TOML-SECRET-TOKEN"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert "$MY_PINATA" in (err.value.hint or "")


def test_tokens_from_the_environment_still_work(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = no_config / "chrysalis.toml"
    config.write_text(TOML)
    monkeypatch.setenv("CHRYSALIS_PINNING_PINATA_TOKEN", "from-the-token-var")
    service = load_settings(config).ipfs.pinning_services[0]
    assert service.bearer_token() == "from-the-token-var"

    monkeypatch.delenv("CHRYSALIS_PINNING_PINATA_TOKEN")
    monkeypatch.setenv(
        "CHRYSALIS_IPFS__PINNING_SERVICES",
        '[{"name": "p", "endpoint": "https://api.example.org/psa", "token": "from-the-json-var"}]',
    )
    service = load_settings(config).ipfs.pinning_services[0]
    assert service.name == "p" and service.bearer_token() == "from-the-json-var"
