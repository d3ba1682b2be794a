"""``chrysalis genesis`` end to end (generate, reveal from anvil, publish, set the base URI) and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from agent.ipfs.repo import IpfsRepo
from agent.ipfs.server import NodeServer
from agent.metadata import parse_metadata
from agent.ops.accounts import dev_key
from tests.genesis.conftest import model_env
from tests.support.cli import invoke_cli
from tests.support.devchain import BARE_DEPLOY, DevChain

TABLE = """
name = "Clitling"
unique = ["mood", "element"]
[traits.mood]
weights = { serene = 1, radiant = 1, fierce = 1, gloomy = 1 }
[traits.element]
weights = { fire = 1, water = 1, earth = 1, air = 1 }
[traits.hat]
image = false
counts = { cap = 6, crown = 2 }
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch, models, capsys):
    """Run ``chrysalis`` in-process in an empty directory with the test models; returns (exit code, output)."""
    monkeypatch.chdir(tmp_path)
    for key, value in model_env(models).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    (tmp_path / "traits.toml").write_text(TABLE)

    def run(*args: str) -> tuple[int, str]:
        r = invoke_cli(capsys, *args)
        return r.code, r.text

    return run


@pytest.mark.slow
@pytest.mark.anvil
def test_generate_reveal_publish_and_set_base_uri(cli, chain: DevChain, tmp_path: Path, monkeypatch) -> None:
    url = chain.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    collection = chain.contract(chain.deploy(BARE_DEPLOY, tmp_path / "deployments"))
    chain.transact(collection.functions.airdrop(chain.admin, 8))
    keystore = tmp_path / "admin.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(0), "pw", kdf="pbkdf2", iterations=1000)))
    monkeypatch.setenv("CHRYSALIS_KEYSTORE_PASSWORD", "pw")

    code, text = cli(
        "genesis",
        "--size",
        "8",
        "--traits",
        "traits.toml",
        "--seed",
        "cli",
        "--out",
        "g",
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert code == 0, text
    assert "generated 8, already done 0" in text and "| hat | cap |" not in text
    provenance = json.loads((tmp_path / "g" / "provenance.json").read_text())["provenance_sha256"]
    assert f"provenance hash {provenance} (commit it with --commit before the reveal)" in text

    # the deployment record is at chain.deployment's default path (deployments/local.json): the reveal is on-chain
    common = (
        "genesis",
        "--size",
        "8",
        "--traits",
        "traits.toml",
        "--out",
        "g",
        "--no-progress",
        "--rpc-url",
        url,
    )
    code, text = cli(*common, "--publish", "--ipfs-repo", "repo")
    assert code == 1 and "has no reveal commitment" in text and "hint: commit first" in text
    code, text = cli(*common, "--commit", "--keystore", str(keystore))
    assert code == 0, text
    block = collection.functions.revealCommitment().call()[1]
    assert "committed in block" in text and f"provenance {provenance}, reveal block {block}" in text
    code, text = cli(*common, "--commit", "--keystore", str(keystore))
    assert code == 0 and "reveal already committed" in text
    code, text = cli(*common, "--publish", "--ipfs-repo", "repo")
    waits = block + 1 - chain.w3.eth.block_number
    assert (
        code == 1
        and f"reveal block {block} is not mined yet" in text
        and f"wait {waits} more block(s)" in text
    )
    chain.rpc("anvil_mine", hex(waits))

    code, text = cli(
        *common,
        "--publish",
        "--ipfs-repo",
        "repo",
        "--set-base-uri",
        "--deployment",
        str(tmp_path / "deployments" / "local.json"),
        "--keystore",
        str(keystore),
    )
    assert code == 0, text
    assert "resuming g with its seed cli" in text and "generated 0, already done 8" in text
    offset = collection.functions.revealOffset(8).call()
    assert (
        f"revealed on-chain by {collection.address} with block {block}" in text and f"offset {offset}" in text
    )
    published = json.loads((tmp_path / "g" / "published.json").read_text())
    assert f"base URI {published['base_uri']}" in text and "setBaseURI(" in text
    assert collection.functions.tokenURI(5).call() == f"ipfs://{published['dir_cid']}/5"

    repo = IpfsRepo(tmp_path / "repo")
    with NodeServer(repo) as node:
        metadata = parse_metadata(httpx.get(f"{node.url}/ipfs/{published['dir_cid']}/5", timeout=30).content)
    assert metadata.name == "Clitling #5" and set(metadata.traits) == {"mood", "element", "hat"}


def test_errors_are_one_clear_message(cli, tmp_path: Path) -> None:
    code, text = cli(
        "genesis", "--size", "8", "--traits", "traits.toml", "--seed", "x", "--out", "g", "--publish"
    )
    assert code == 1
    assert "error: --publish needs the reveal block whose hash decides the offset" in text
    assert "hint: deploy the collection and commit the reveal on-chain (--commit)" in text
    assert "announce the provenance hash" in text and "Traceback" not in text

    code, text = cli("genesis", "--size", "8", "--traits", "traits.toml", "--out", "g", "--commit")
    assert code == 1 and "error: --commit needs the collection's deployment record" in text
    assert "hint: deploy the collection first" in text
    code, text = cli("genesis", "--size", "8", "--traits", "traits.toml", "--out", "g", "--wait")
    assert code == 1 and "error: --wait waits for the committed reveal block" in text

    code, text = cli("genesis", "--size", "9", "--traits", "traits.toml", "--seed", "x", "--out", "g3")
    assert code == 1 and "trait 'hat': its counts add up to 8, but the collection has 9 tokens" in text
    assert (
        "hint: make [traits.hat].counts add up to 9, run with --size 8" in text
    )  # TOML keys survive the markup

    (tmp_path / "weights.toml").write_text(
        TABLE.replace("counts = { cap = 6, crown = 2 }", "weights = { cap = 3 }")
    )
    code, text = cli("genesis", "--size", "17", "--traits", "weights.toml", "--seed", "x", "--out", "g2")
    assert code == 1
    assert "error: --size 17 exceeds the 16 unique combinations of mood (4) x element (4)" in text
    assert "hint: lower --size to at most 16" in text

    (tmp_path / "typo.toml").write_text(TABLE.replace("[traits.element]", "[traits.elemnt]"))
    code, text = cli("genesis", "--size", "8", "--traits", "typo.toml", "--out", "g6")
    assert code == 1 and "[traits.elemnt] is not a trait the image model is conditioned on" in text

    code, text = cli("genesis", "--size", "8", "--traits", "nope.toml", "--out", "g4")
    assert code == 1 and "error: trait table nope.toml does not exist" in text

    code, text = cli("genesis", "--size", "8", "--traits", "traits.toml", "--out", "g5", "--set-base-uri")
    assert code == 1 and "error: --set-base-uri needs a published genesis" in text


@pytest.mark.slow
def test_a_random_seed_is_printed_and_reused(cli, tmp_path: Path) -> None:
    code, text = cli(
        "genesis",
        "--size",
        "4",
        "--traits",
        "traits.toml",
        "--out",
        "g",
        "--batch-size",
        "4",
        "--sheet",
        "0",
        "--no-progress",
    )
    assert code == 1
    # hat's counts add up to 8, not 4: a clear error, and nothing is generated
    assert "its counts add up to 8" in text and not (tmp_path / "g" / "provenance.json").exists()
    (tmp_path / "traits.toml").write_text(
        TABLE.replace("counts = { cap = 6, crown = 2 }", "weights = { cap = 3, crown = 1 }")
    )
    code, text = cli(
        "genesis",
        "--size",
        "4",
        "--traits",
        "traits.toml",
        "--out",
        "g",
        "--batch-size",
        "4",
        "--sheet",
        "0",
        "--no-progress",
    )
    assert code == 0, text
    seed = text.split("seed ", 1)[1].split(" ", 1)[0]
    assert len(seed) == 32 and f"pass --seed {seed} to reproduce" in text
    code, text = cli(
        "genesis",
        "--size",
        "4",
        "--traits",
        "traits.toml",
        "--out",
        "g",
        "--batch-size",
        "4",
        "--sheet",
        "0",
        "--no-progress",
    )
    assert code == 0 and f"resuming g with its seed {seed}" in text and "generated 0, already done 4" in text
    # no deployment record: the off-chain reveal still works, with a warning that nothing binds its block
    code, text = cli(
        "genesis", "--size", "4", "--traits", "traits.toml", "--out", "g", "--no-progress", "--publish",
        "--reveal-block", "7", "--rpc-url", "http://127.0.0.1:9",
    )  # fmt: skip
    assert "warning: no deployment record at deployments/local.json: reveal block 7 is only announced" in text
    assert code == 1 and "error: cannot read block 7 from http://127.0.0.1:9" in text
    assert not (tmp_path / "g" / "reveal.json").exists()
