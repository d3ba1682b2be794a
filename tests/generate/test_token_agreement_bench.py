"""bench/token_agreement.py's core on a few tokens, in real headless Chromium through the project's own gateway:
portable tokens (made in batches, published with the agent's animation_url into an IpfsRepo) re-render bit for bit
in the token viewer and their hashes do not depend on the batch; torch-scheme receipts are replayed from IPFS with
torch's noise given to the browser's sampler, and the given-noise loop matches the sampler itself."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.generate.image.embedded import EmbeddedSpriteGenerator
from agent.generate.portable.browser import find_chromium
from agent.ipfs.repo import IpfsRepo

STEPS = 8


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make setup`")
    try:
        find_chromium()
    except ConfigError as exc:
        pytest.skip(f"{exc.message}: {exc.hint}")
    from bench.token_agreement import run

    workdir = tmp_path_factory.mktemp("token-agreement")
    return workdir, run(workdir, tokens=2, stages=2, steps=STEPS, torch_steps=(STEPS,))


def test_portable_tokens_are_bit_identical_in_the_viewer_whatever_their_batch(report):
    _, r = report
    assert len(r.portable) == 4 and [v.version.stage for v in r.portable] == [0, 0, 1, 1]
    for rendered in r.portable:
        v = rendered.version
        assert v.animation_url is not None and v.animation_url.startswith("ipfs://")
        assert v.batch == 2 and v.same_alone is True
        assert rendered.viewer_identical is True
        assert (rendered.pixels == rendered.published).all()
        assert rendered.page_s is not None and rendered.page_s > rendered.render_s > 0
    assert not [f for f in r.failures if f.startswith("portable")], r.failures
    rows = [row for row in r.rows if str(row[0]).startswith("portable")]
    assert [row[2] for row in rows] == ["fresh", "img2img 0.6"]
    assert all(row[5] == "100%" and row[6] == "100.0%" and row[8] == 0 for row in rows)


def test_torch_receipts_are_replayed_and_reported_against_the_tolerance(report):
    _, r = report
    assert len(r.torch) == 4 and {v.version.mode for v in r.torch} == {"fresh", "img2img"}
    rows = [row for row in r.rows if str(row[0]).startswith("torch")]
    assert len(rows) == 2
    for row in rows:
        assert row[5] == "-" and "within <= 4 values off by <= 1" in str(row[11])  # the tolerance is stated
    for rendered in r.torch:  # whatever the share, every difference is small: the same model, the same noise
        diff = abs(rendered.pixels.astype(int) - rendered.published.astype(int))
        assert diff.max() <= 2


def test_a_portable_receipt_is_not_replayed_as_a_torch_one(report):
    from bench.token_agreement import torch_replay_request

    workdir, r = report
    repo = IpfsRepo(workdir / "ipfs", sync=False)
    with pytest.raises(ConfigError, match="is not a torch-scheme receipt"):
        torch_replay_request(repo, EmbeddedSpriteGenerator(num_inference_steps=STEPS), r.portable[0].version)


def test_bad_options_are_named(capsys):
    from bench.token_agreement import main

    with pytest.raises(SystemExit) as exc:
        main(["--tokens", "0"])
    assert exc.value.code == 2 and "--tokens and --stages must be at least 1" in capsys.readouterr().err
