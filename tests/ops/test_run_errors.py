"""``chrysalis run`` refuses to start with one clear message when the setup is wrong, and its status line says
what an operator needs at a glance."""

from __future__ import annotations

import socket
from pathlib import Path

from agent.ops.runner import status_line
from agent.pipeline import AgentStatus
from tests.support.devchain import CollectionChain


def test_run_without_a_deployment_record(workdir: Path, chrysalis) -> None:
    result = chrysalis("run", "--no-metrics")
    assert result.code == 1
    assert "error: no deployment record at deployments/local.json" in result.text
    assert "hint: deploy with `chrysalis deploy --rpc-url URL --from ACCOUNT`" in result.text
    assert "Traceback" not in result.err


def test_run_with_an_unreachable_node(
    workdir: Path, module_devchain: CollectionChain, chrysalis, monkeypatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(module_devchain.record))
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_RETRIES", "0")
    result = chrysalis("run", "--no-metrics")
    assert result.code == 1
    assert f"http://127.0.0.1:{port} unavailable" in result.text
    assert "Connection refused" in result.text
    assert "hint:" in result.text and "chain.rpc_url" in result.text


def test_run_with_a_busy_metrics_port(workdir: Path, chrysalis) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = chrysalis("run", "--metrics-port", str(port))
    assert result.code == 1
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in result.text
    assert "hint: set metrics.port to a free port" in result.text


def test_run_rejects_a_bad_log_level(workdir: Path, chrysalis) -> None:
    result = chrysalis("run", "--log-level", "loud")
    assert result.code == 1
    assert "unknown log level 'loud'" in result.text


def test_status_line_shows_head_cursor_lag_jobs_gas_and_the_error() -> None:
    status = AgentStatus(
        chain_head=120,
        cursor_block=100,
        jobs={"queued": 3, "running": 1, "confirmed": 40, "failed": 2, "cancelled": 0},
        last_error="job 7 (evolve:1:2): RetryableError: pinning service answered 503\n  hint: later",
        gas_spent=1_234_567,
    )
    line = status_line(status)
    assert line.plain == (
        "head 120  cursor 100  lag 20  jobs queued 3 running 1 confirmed 40 failed 2 cancelled 0  gas 1,234,567"
        "  last error: job 7 (evolve:1:2): RetryableError: pinning service answered 503 hint: later"
    )
    assert any(span.style == "bold red" for span in line.spans)  # a lag over 10 blocks stands out
    unknown = status_line(AgentStatus(chain_head=None, cursor_block=None))
    assert unknown.plain.startswith("head ?  cursor ?  lag ?  jobs queued 0")


def test_run_refuses_rules_whose_declared_feature_no_oracle_provides(
    configured: CollectionChain, workdir: Path, chrysalis, monkeypatch
) -> None:
    """A-M9 / row 87: a typo declared in [features] and read by a rule stops the start, not every evolution."""
    from agent.rules import DEFAULT_RULES

    rules = workdir / "typo.toml"
    rules.write_text(DEFAULT_RULES.read_text().replace('"wallet.tx_count"', '"wallet.tx_cuont"'))
    monkeypatch.setenv("CHRYSALIS_AGENT__RULES", str(rules))
    result = chrysalis("run", "--no-metrics", "--no-doctor")
    assert result.code == 1
    assert '[features."wallet.tx_cuont"] is not provided by any configured oracle' in result.text
    assert "did you mean 'wallet.tx_count'?" in result.text
    assert "Traceback" not in result.err
