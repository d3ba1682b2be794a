"""``chrysalis refresh``: queue a refresh for the running agent, run one here with --now, and read its status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.jobs import JobKind
from agent.store import open_job_store
from tests.support.agent_settings import Keystore
from tests.support.cli import invoke_cli
from tests.support.devchain import CollectionChain


@pytest.fixture
def cli(
    chain: CollectionChain,
    keystore: Keystore,
    tiny_lm: Path,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """Run ``chrysalis`` in-process with its settings in ``CHRYSALIS_*`` env vars; returns (code, out, err)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "CHAIN__RPC_URL": chain.url,
        "CHAIN__DEPLOYMENT": str(chain.record),
        "CHAIN__POLL_INTERVAL_S": "0.1",
        "DATABASE__URL": db_url,
        "SIGNER__KEYSTORE": str(keystore[0]),
        "SIGNER__PASSWORD_FILE": str(keystore[1]),
        "MODELS__LORE_BACKEND": "transformers",
        "MODELS__LORE_MODEL": str(tiny_lm),
        "MODELS__LORE_MAX_NEW_TOKENS": "12",
        "MODELS__DEVICE": "cpu",
        "MODELS__THREADS": "1",
        "SUBMIT__POLL_INTERVAL_S": "0.02",
        "AGENT__PRICE_WINDOW_S": "3600",
        "REFRESH__FIRST_RENDER": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"CHRYSALIS_{key}", value)

    def run(*args: str) -> tuple[int, str, str]:
        r = invoke_cli(capsys, *args)
        return r.code, r.out, r.err

    return run


def test_refresh_queues_a_job_for_the_agent_with_the_tokens_asked_for(cli: Any, db_url: str) -> None:
    code, out, err = cli("refresh", "--tokens", "1,2,5-9")
    assert code == 0, err
    assert "queued refresh job" in out and "tokens 1-2,5-9" in out
    with open_job_store(db_url) as store:
        (job,) = store.list_jobs(kind=JobKind.REFRESH)
    assert job.payload["tokens"] == "1-2,5-9" and job.payload["trigger"] == "manual"
    assert "@" in job.payload["requested_by"]

    code, out, _ = cli("refresh", "status", "--json")
    report = json.loads(out)
    assert (
        code == 0
        and report["refreshes"][0]["job_id"] == job.id
        and report["refreshes"][0]["state"] == "queued"
    )
    assert report["budget"]["gas_today"] == 0 and report["budget"]["max_gas_per_day"] == 200_000_000


def test_a_bad_token_selection_is_an_error_that_says_how_to_write_one(cli: Any) -> None:
    code, _out, err = cli("refresh", "--tokens", "3-x")
    assert code == 1
    assert "error: token selection '3-x': 'x' is not a token id" in err
    assert "hint: write token ids and ranges separated by commas, e.g. 1,2,5-9" in err


def test_a_token_that_does_not_exist_is_refused_and_nothing_is_queued(
    cli: Any, chain: CollectionChain, db_url: str
) -> None:
    """``refresh --tokens 999`` was queued and ended "confirmed, 1 skipped"; the studio answers 404 for it."""
    minted = chain.collection.functions.totalMinted().call()
    code, out, err = cli("refresh", "--tokens", f"1,{minted + 1},999")
    text = " ".join((out + err).split())
    assert code == 1
    assert (
        f"error: tokens {minted + 1},999 do not exist: {minted + 1},999 never minted (ids 1..{minted} were "
        "minted); nothing was queued" in text
    )
    assert f"hint: list only existing tokens in --tokens (e.g. 1-{minted})" in text
    with open_job_store(db_url) as store:
        assert store.list_jobs(kind=JobKind.REFRESH) == []


def test_burnt_tokens_are_named_as_burnt() -> None:
    from agent.tokens import UnknownTokensError, require_existing

    require_existing([1, 2], 4, lambda i: True)
    with pytest.raises(
        UnknownTokensError, match=r"token 3 does not exist: 3 burnt \(fused into another token\)"
    ):
        require_existing([1, 3], 4, lambda i: i != 3)
    with pytest.raises(UnknownTokensError, match="nothing is minted yet"):
        require_existing([1], 0, lambda i: False)


def test_refresh_now_runs_it_here_and_status_shows_what_it_did(cli: Any, chain: CollectionChain) -> None:
    code, out, err = cli("refresh", "--tokens", "4", "--now")
    assert code == 0, err
    assert "done" in out and "1 confirmed" in out
    assert chain.collection.functions.metadataDigestOf(4).call() != bytes(32)

    code, out, _ = cli("refresh", "status")
    assert code == 0
    assert "manual" in out and "confirmed" in out and "1 confirmed" in out
    assert "gas today (UTC):" in out
