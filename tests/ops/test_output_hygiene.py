"""Output hygiene: one log record per line off a terminal, no third-party chatter, help text without noise, one
request-id format, state under ``data_dir``, and the small CLI fixes (ux.md Part A "Minor")."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from rich.logging import RichHandler

from agent.ops.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]
TX = "0x" + "ab12" * 16  # a transaction hash: 66 characters that must never be broken


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with stdout and stderr on pipes (not terminals), as under nohup."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- 1. logs --------------------------------------------------------------------------------------------------


def test_off_a_terminal_every_record_is_one_unwrapped_line() -> None:
    """stderr is a pipe here (as under nohup or systemd): no 80-column wrapping, a traceback on the same line."""
    done = _python(
        f"""
        import logging
        from agent.ops.logs import configure_logging
        configure_logging("INFO", "text")
        log = logging.getLogger("chrysalis.submit")
        log.info("job 7: fulfilment %s sent for requests 0x300000001, 0x400000002 and 0x500000003 (gas 123,456)",
                 "{TX}")
        try:
            raise ValueError("boom\\nsecond line")
        except ValueError:
            log.exception("stage failed for job %d", 8)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    first, second = lines
    assert f"fulfilment {TX} sent" in first and len(first) > 120
    assert " INFO    chrysalis.submit: job 7" in first
    assert first[:4].isdigit() and "T" in first.split()[0]  # an ISO 8601 UTC timestamp leads
    assert " ERROR   chrysalis.submit: stage failed for job 8\\nTraceback" in second
    assert "ValueError: boom\\nsecond line" in second


def test_on_a_terminal_text_logs_still_go_through_rich() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    handler = configure_logging("INFO", "text", console=terminal)
    try:
        assert isinstance(handler, RichHandler)
    finally:
        logging.getLogger().removeHandler(handler)
    piped = configure_logging("INFO", "text", stream=io.StringIO())
    try:
        assert not isinstance(piped, RichHandler)
    finally:
        logging.getLogger().removeHandler(piped)


# -- 2. third-party chatter -----------------------------------------------------------------------------------


def test_library_warnings_and_bars_stay_out_of_the_output_but_reach_debug() -> None:
    done = _python(
        """
        import logging, sys, warnings
        from agent.generate.quiet import gguf_bars_off, quiet_libraries
        quiet_libraries()
        from transformers.utils import logging as tlog
        tlog.get_logger("transformers.tokenization_utils_base").warning("Ignoring clean_up_tokenization_spaces")
        for _ in tlog.tqdm(range(3), desc="Loading weights"):
            pass
        import transformers.modeling_gguf_pytorch_utils as gguf
        with gguf_bars_off():
            for _ in gguf.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
                pass
        assert gguf.tqdm.__module__.startswith("tqdm")  # put back after the block
        warnings.warn_explicit("Siglip2ImageProcessorFast is deprecated", FutureWarning, "x.py", 1,
                               module="transformers.models.siglip2")
        print("quiet so far", file=sys.stderr)
        from agent.ops.logs import configure_logging
        configure_logging("DEBUG", "text")
        tlog.get_logger("transformers.modeling_utils").warning("a library warning at DEBUG")
        """
    )
    assert done.returncode == 0, done.stderr
    before, _, after = done.stderr.partition("quiet so far\n")
    assert before == "", before
    assert "DEBUG   transformers.modeling_utils: a library warning at DEBUG" in after


# -- 4. request ids in hex ------------------------------------------------------------------------------------


def test_request_ids_read_in_hex_in_messages() -> None:
    from agent.pipeline.request import EvolutionRequest, job_key
    from agent.pipeline.submit import RequestReminedError

    rid = 3 << 32 | 1
    request = EvolutionRequest(rid, 3, "0x" + "11" * 20, 0, "0x1234", 10, "0x" + "aa" * 32, TX, 0)
    with pytest.raises(ValueError, match="request 0x300000001: seed"):
        _ = request.seed_bytes
    assert "request 0x300000001 is pending with another seed" in str(RequestReminedError(request))
    assert job_key(31337, rid) == f"evolve:31337:{rid}"  # the stored idempotency key keeps its format


# -- 5. state under data_dir ----------------------------------------------------------------------------------


def test_the_model_cache_lives_under_data_dir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.settings import load_settings

    monkeypatch.setenv("CHRYSALIS_DATA_DIR", str(workdir / "state"))
    assert load_settings().models.cache_dir == workdir / "state" / "models"
    monkeypatch.setenv("CHRYSALIS_MODELS__CACHE_DIR", str(workdir / "elsewhere"))
    assert load_settings().models.cache_dir == workdir / "elsewhere"


# -- 6. ipfs:// links nothing serves --------------------------------------------------------------------------


def test_run_warns_when_nothing_serves_what_it_publishes(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.ops.runner import unserved_ipfs
    from agent.settings import load_settings

    warning = unserved_ipfs(load_settings())
    assert warning is not None
    assert "the ipfs:// token URIs written on-chain resolve for no one else" in warning
    assert "ipfs.kubo_api" in warning and "agent.serve_gateway = true" in warning
    monkeypatch.setenv("CHRYSALIS_AGENT__SERVE_GATEWAY", "true")
    assert unserved_ipfs(load_settings()) is None
    monkeypatch.delenv("CHRYSALIS_AGENT__SERVE_GATEWAY")
    monkeypatch.setenv("CHRYSALIS_IPFS__KUBO_API", "/ip4/127.0.0.1/tcp/5001")
    assert unserved_ipfs(load_settings()) is None


# -- 7, 10. help text and small CLI fixes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["evolve", "--help"],
        ["jobs", "--help"],
        ["genesis", "--help"],
        ["model", "info", "--help"],
    ],
)
def test_help_shows_no_type_for_flags(args: list[str], chrysalis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    result = chrysalis(*args)
    assert result.code == 0
    assert "<bool>" not in result.out
    assert "--help" in result.out and "Show this message and exit." in result.out


def test_help_texts(chrysalis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    evolve = chrysalis("evolve", "--help").text
    assert "--simulate --no-simulate" in evolve and "--dry-run" not in evolve
    workers = chrysalis("genesis", "--help").text
    assert workers.count("default: one per CPU core") == 1 and "(default 1)" not in workers
    model = chrysalis("model", "info", "--help").text
    assert "--config" not in model  # the global `chrysalis -c FILE` names the settings file


def test_review_list_refuses_a_bad_limit_and_creates_no_database(workdir: Path, chrysalis) -> None:
    bad = chrysalis("review", "list", "--limit", "-5")
    assert bad.code == 2 and "Invalid value" in bad.text and "--limit" in bad.text
    missing = chrysalis("review", "list")
    assert missing.code == 1
    assert "error: no agent database at .chrysalis/chrysalis.db" in missing.text
    assert "hint: the agent has not run with this configuration" in missing.text
    assert not (workdir / ".chrysalis").exists()


def test_a_confirmed_job_shows_its_transaction_not_an_error_it_recovered_from() -> None:
    from agent.ops.cli import _job_detail

    confirmed = {"state": "confirmed", "reason": None, "last_error": "RPC timed out", "tx_hash": TX}
    assert _job_detail(confirmed) == TX
    queued = {**confirmed, "state": "queued", "tx_hash": None}
    assert _job_detail(queued) == "RPC timed out"
    failed = {**confirmed, "state": "failed", "reason": "gave up after 5 attempts"}
    assert _job_detail(failed) == "gave up after 5 attempts"


def test_model_errors_name_the_token_not_a_batch_index() -> None:
    from agent.generate.base import ImageRequest, LoreRequest, request_label

    assert request_label(
        ImageRequest({"mood": "serene"}, 1, label="token 7 (request 0x700000001)"), 0, 8
    ) == ("token 7 (request 0x700000001)")
    assert request_label(ImageRequest({"mood": "serene"}, 1), 0, 1) == "the image request"
    assert request_label(LoreRequest("X", 0, {}, {}, 1), 2, 8) == "lore request 3 of 8"
    # a label is not part of what a request is
    assert ImageRequest({"mood": "serene"}, 1, label="a") == ImageRequest({"mood": "serene"}, 1, label="b")


def test_model_info_shows_each_full_weights_digest_on_one_line(
    workdir: Path, chrysalis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest is what one compares with the on-chain model registry: never cut to the table's width."""
    from types import SimpleNamespace

    from agent.domain import ModelRef
    from agent.generate import factory

    digests = {"image": "9178ee7d" * 8, "lore": "b179c952" * 8}

    def stub(kind: str) -> object:
        extra = {"backend": "embedded", "device": "cpu", "dtype": "float32"}
        ref = ModelRef(f"chrysalis/{kind}@1", digests[kind], kind=kind, backend="embedded", extra=extra)
        return SimpleNamespace(model_ref=ref)

    monkeypatch.setattr(factory, "load_image_generator", lambda _s: stub("image"))
    monkeypatch.setattr(factory, "load_lore_writer", lambda _s: stub("lore"))
    result = chrysalis("model", "info")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert f"image weights sha256: {digests['image']}" in lines
    assert f"lore weights sha256: {digests['lore']}" in lines
