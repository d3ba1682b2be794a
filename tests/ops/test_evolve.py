"""``chrysalis evolve`` / ``fuse`` on anvil: the holder action works from a development account or a keystore,
and each way it can go wrong is one clear message and a hint, never a traceback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from eth_account import Account

from agent.deployment import Deployment
from agent.errors import ConfigError
from agent.ops.accounts import dev_address, dev_key, load_account
from agent.store import open_job_store
from tests.ops.conftest import HOLDER, OTHER
from tests.support.devchain import FEE, CollectionChain


def _pending(chain: CollectionChain, token_id: int) -> int | None:
    request_id, _requester, _fee, requested_at = chain.collection.functions.pendingRequestOf(token_id).call()
    return request_id if requested_at else None


def test_evolve_opens_a_request_with_the_configured_fee(configured: CollectionChain, chrysalis) -> None:
    before = configured.w3.eth.get_balance(configured.collection.address)
    result = chrysalis("evolve", "2", "--from", str(HOLDER))
    assert result.code == 0, result.text
    request_id = _pending(configured, 2)
    assert request_id is not None and request_id >> 32 == 2
    assert f"request {request_id:#x}" in result.text
    assert f"from {dev_address(HOLDER)} (development account {HOLDER})" in result.text
    assert "fee 0.0005 ETH" in result.text
    assert configured.w3.eth.get_balance(configured.collection.address) - before == FEE
    tx_hash = result.text.split(" tx ", 1)[1].split()[0]
    receipt = configured.w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1 and receipt["from"] == dev_address(HOLDER)


def test_evolve_json_output(configured: CollectionChain, chrysalis) -> None:
    result = chrysalis("evolve", "5", "--from", f"dev:{OTHER}", "--json")
    assert result.code == 0, result.text
    request = json.loads(result.out)["request"]
    assert int(request["request_id"], 16) == _pending(configured, 5)
    assert request["token_id"] == 5 and request["fee_wei"] == str(FEE)
    assert request["requester"] == dev_address(OTHER)


def test_evolve_from_a_keystore(configured: CollectionChain, chrysalis, workdir: Path, monkeypatch) -> None:
    keystore = workdir / "holder.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(HOLDER), "correct horse", iterations=2)))
    monkeypatch.setenv("CHRYSALIS_KEYSTORE_PASSWORD", "wrong")
    wrong = chrysalis("evolve", "3", "--from", str(keystore))
    assert wrong.code == 1
    assert f"cannot decrypt keystore {keystore}: wrong password" in wrong.text
    assert "correct horse" not in wrong.text
    monkeypatch.setenv("CHRYSALIS_KEYSTORE_PASSWORD", "correct horse")
    result = chrysalis("evolve", "3", "--from", str(keystore))
    assert result.code == 0, result.text
    assert _pending(configured, 3) is not None


def test_unknown_token(configured: CollectionChain, chrysalis) -> None:
    result = chrysalis("evolve", "99", "--from", str(HOLDER))
    assert result.code == 1
    assert "error: token 99 does not exist: it was never minted (ids 1..6 exist)" in result.text
    assert "Traceback" not in result.err


def test_not_the_holder(configured: CollectionChain, chrysalis) -> None:
    result = chrysalis("evolve", "5", "--from", str(HOLDER))
    assert result.code == 1
    assert (
        f"account {dev_address(HOLDER)} does not hold token 5 (its owner is {dev_address(OTHER)})"
        in result.text
    )
    assert "hint: send from the owner's account (--from)" in result.text
    assert _pending(configured, 5) is None


def test_an_approved_operator_may_request(configured: CollectionChain, chrysalis) -> None:
    configured.transact(configured.collection.functions.approve(dev_address(HOLDER), 6), dev_address(OTHER))
    result = chrysalis("evolve", "6", "--from", str(HOLDER))
    assert result.code == 0, result.text
    assert _pending(configured, 6) is not None


def test_a_pending_request(configured: CollectionChain, chrysalis) -> None:
    assert chrysalis("evolve", "1", "--from", str(HOLDER)).code == 0
    request_id = _pending(configured, 1)
    result = chrysalis("evolve", "1", "--from", str(HOLDER))
    assert result.code == 1
    assert f"token 1 already has a pending evolution request {request_id:#x}" in result.text
    assert "cancel it for a refund after" in result.text


def test_without_the_precheck_the_dry_run_decodes_the_contract_error(
    configured: CollectionChain, chrysalis
) -> None:
    nonce = configured.w3.eth.get_transaction_count(dev_address(HOLDER))
    result = chrysalis("evolve", "5", "--from", str(HOLDER), "--no-precheck")
    assert result.code == 1
    assert (
        f"requestEvolution would revert (nothing was sent): LivingCollectionNotHolder(tokenId=5, "
        f"caller={dev_address(HOLDER)})" in result.text
    )
    assert configured.w3.eth.get_transaction_count(dev_address(HOLDER)) == nonce


def test_a_mined_revert_is_decoded(configured: CollectionChain, chrysalis) -> None:
    assert chrysalis("evolve", "4", "--from", str(HOLDER)).code == 0
    request_id = _pending(configured, 4)
    result = chrysalis(
        "evolve", "4", "--from", str(HOLDER), "--no-precheck", "--no-simulate", "--gas", "300000"
    )
    assert result.code == 1
    assert "requestEvolution transaction 0x" in result.text
    assert f"reverted: LivingCollectionRequestPending(tokenId=4, requestId={request_id:#x})" in result.text
    tx_hash = result.text.split("requestEvolution transaction ", 1)[1].split()[0]
    assert configured.w3.eth.get_transaction_receipt(tx_hash)["status"] == 0


def test_no_simulate_needs_a_gas_limit(configured: CollectionChain, chrysalis) -> None:
    result = chrysalis("evolve", "1", "--from", str(HOLDER), "--no-simulate")
    assert result.code == 1
    assert "sending without simulating first needs a gas limit" in result.text
    assert "hint: pass --gas N with --no-simulate" in result.text
    # the old name still works, as a deprecated alias that says so
    legacy = chrysalis("evolve", "1", "--from", str(HOLDER), "--no-dry-run")
    assert legacy.code == 1
    assert "--dry-run/--no-dry-run is now --simulate/--no-simulate" in legacy.err
    assert "hint: pass --gas N with --no-simulate" in legacy.text


def test_fuse_burns_one_token_and_opens_a_request_for_the_other(
    configured: CollectionChain, chrysalis
) -> None:
    result = chrysalis("fuse", "1", "2", "--from", str(HOLDER), "--json")
    assert result.code == 0, result.text
    request = json.loads(result.out)["request"]
    assert request["token_id"] == 1 and request["burn_id"] == 2
    assert not configured.collection.functions.exists(2).call()
    assert _pending(configured, 1) == int(request["request_id"], 16)
    burnt = chrysalis("evolve", "2", "--from", str(HOLDER))
    assert "token 2 does not exist: it was burnt" in burnt.text


def test_fuse_with_itself(configured: CollectionChain, chrysalis) -> None:
    result = chrysalis("fuse", "1", "1", "--from", str(HOLDER))
    assert result.code == 1
    assert "a token cannot be fused with itself" in result.text


# -- the account and the chain ---------------------------------------------------------------------------------


def test_account_specs_that_cannot_sign() -> None:
    with pytest.raises(ConfigError, match="is an address, and an address cannot sign"):
        load_account(dev_address(1), chain_id=31337)
    with pytest.raises(ConfigError, match="refusing to use it on chain 1") as info:
        load_account("3", chain_id=1)
    assert "keystore" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="keystore file missing.json does not exist"):
        load_account("missing.json", chain_id=31337)
    with pytest.raises(ConfigError, match="no Ape account 'nobody-here'"):
        load_account("ape:nobody-here", chain_id=31337)
    assert load_account("dev:1", chain_id=1337).address == dev_address(1)


def test_an_unreachable_node(workdir: Path, module_devchain: CollectionChain, chrysalis, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CHRYSALIS_CHAIN__RPC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(module_devchain.record))
    monkeypatch.setenv("CHRYSALIS_SUBMIT__RPC_RETRIES", "0")
    result = chrysalis("evolve", "1", "--from", "1")
    assert result.code == 1
    assert f"http://127.0.0.1:{port}" in result.text
    assert "connection refused" in result.text
    assert "hint: start it" in result.text and "chain.rpc_url" in result.text
    assert "Traceback" not in result.err


def test_a_missing_deployment_record(workdir: Path, chrysalis, monkeypatch) -> None:
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", "deployments/none.json")
    result = chrysalis("evolve", "1", "--from", "1")
    assert result.code == 1
    assert "no deployment record at deployments/none.json" in result.text
    assert "hint: deploy with `chrysalis deploy --rpc-url URL --from ACCOUNT`" in result.text


def test_a_record_from_another_chain_or_an_old_anvil(
    configured: CollectionChain, chrysalis, workdir: Path, monkeypatch
) -> None:
    data = json.loads(configured.record.read_text())
    other_chain = configured.record.parent / "other-chain.json"
    other_chain.write_text(json.dumps({**data, "chain_id": 5}))
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(other_chain))
    result = chrysalis("evolve", "1", "--from", "1")
    assert result.code == 1
    assert f"serves chain 31337, but deployment record {other_chain} is for chain 5" in result.text

    stale = configured.record.parent / "stale.json"
    record = Deployment.load(configured.record)
    moved = {**data, "contracts": {"LivingCollection": {**data["contracts"]["LivingCollection"],
                                                         "address": "0x" + "42" * 20}}}  # fmt: skip
    stale.write_text(json.dumps(moved))
    monkeypatch.setenv("CHRYSALIS_CHAIN__DEPLOYMENT", str(stale))
    result = chrysalis("evolve", "1", "--from", "1")
    assert result.code == 1
    assert f"no contract at 0x{'42' * 20} on chain {record.chain_id}" in result.text
    assert "a restarted anvil?" in result.text


def test_evolve_wait_stops_as_soon_as_the_agents_job_fails(
    configured: CollectionChain, workdir: Path, chrysalis
) -> None:
    """A-M8 / row 52: `--wait` follows the agent's job and reports its permanent failure at once, instead of
    waiting out the timeout and asking whether the agent runs."""
    import threading
    import time

    from agent.jobs import JobKind
    from agent.pipeline.request import job_key

    url = f"sqlite:///{workdir / 'agent.db'}"
    reason = "[traits.element]: feature 'wallet.tx_cuont' is missing from the inputs"
    failed: list[int] = []
    stop = threading.Event()

    def agent_fails_the_job() -> None:  # plays the agent: the request's job fails permanently
        with open_job_store(url) as store:
            while not stop.is_set() and (request_id := _pending(configured, 3)) is None:
                stop.wait(0.05)
            if request_id is None:
                return
            job, _ = store.enqueue(JobKind.EVOLVE, job_key(configured.deployment.chain_id, request_id))
            claimed = store.claim("test-agent")
            assert claimed is not None and claimed.id == job.id
            failed.append(store.report_error(job.id, "test-agent", reason).id)

    open_job_store(url).close()  # the agent's database exists (the agent has run)
    agent = threading.Thread(target=agent_fails_the_job, daemon=True)
    agent.start()
    started = time.monotonic()
    try:
        result = chrysalis("evolve", "3", "--from", str(HOLDER), "--wait", "--timeout", "60")
    finally:
        stop.set()
        agent.join(10)
    assert time.monotonic() - started < 30  # not the 60 s timeout
    assert result.code == 1
    (job_id,) = failed
    assert f"error: job {job_id} failed: " in result.text and reason in result.text, result.text
    assert f"hint: fix it, then `chrysalis retry {job_id}`" in result.text
    assert "is the agent running" not in result.text


def test_evolve_wait_timeout_says_where_the_job_stands(
    configured: CollectionChain, workdir: Path, chrysalis
) -> None:

    open_job_store(f"sqlite:///{workdir / 'agent.db'}").close()
    result = chrysalis("evolve", "4", "--from", str(HOLDER), "--wait", "--timeout", "1")
    assert result.code == 1
    assert "is still pending after 1 s: the agent's database has no job for it yet" in result.text
    assert "hint: is the agent running (`chrysalis run`)?" in result.text
