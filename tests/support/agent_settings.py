"""Settings for a real agent on a test chain, and the encrypted keystore it signs with.

:func:`agent_settings` gives quick test timings (polls every 0.1 s or less, short back-offs and leases), the shipped
sprite model and a tiny lore model on one CPU thread (canonical receipts; and two torch threads on a busy 2-core
machine are ten times slower), and no block-based "stuck" detection.

The model cache is one per test process (:func:`shared_model_cache`): the agent's default image runtime exports the
sprite model to ONNX on first use (about 10 CPU-seconds), and the cache is content-addressed and written atomically,
so every agent of the process reuses one export instead of making its own.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account

from agent.settings import Settings
from tests.support.devchain import CollectionChain

PASSWORD = "chrysalis-test-password"


@cache
def shared_model_cache() -> Path:
    """This test process's model cache (removed when the process exits)."""
    path = Path(tempfile.mkdtemp(prefix="chrysalis-test-models-"))
    atexit.register(shutil.rmtree, path, True)
    return path


Keystore = tuple[Path, Path]
"""An encrypted V3 keystore and the file that holds its password."""


def write_keystore(directory: Path, key: bytes, password: str = PASSWORD) -> Keystore:
    """Encrypt ``key`` into ``directory/agent.json`` (cheap key derivation) beside its password file.

    Args:
        directory: Where both files go (made if missing).
        key: The private key.
        password: The keystore's password.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.json"
    path.write_text(json.dumps(Account.encrypt(key, password, iterations=2)))
    secret = directory / "password"
    secret.write_text(password)
    return path, secret


def agent_settings(
    chain: CollectionChain,
    keystore: Keystore,
    data_dir: Path,
    db_url: str,
    lm: Path,
    **agent: Any,
) -> Settings:
    """Settings for an agent on ``chain``.

    Args:
        chain: The chain and the collection's record.
        keystore: The agent's keystore and password file.
        data_dir: The agent's data directory (its IPFS repo, model cache).
        db_url: Its database.
        lm: The lore model's directory.
        **agent: Overrides of the ``[agent]`` section.
    """
    return Settings(
        data_dir=data_dir,
        chain={"rpc_url": chain.url, "deployment": chain.record, "poll_interval_s": 0.1},
        database={"url": db_url},
        models={
            "lore_backend": "transformers",
            "lore_model": str(lm),
            "lore_max_new_tokens": 12,
            "device": "cpu",
            "threads": 1,
            "cache_dir": shared_model_cache(),
        },
        signer={"keystore": keystore[0], "password_file": keystore[1]},
        submit={
            "poll_interval_s": 0.02,
            "receipt_timeout_s": 60,
            "rpc_retries": 1,
            "stuck_after_blocks": None,
        },
        agent={
            "lease_s": 5.0,
            "role_lease_s": 2.0,  # a killed agent's roles lapse quickly
            "retry_base_s": 0.2,
            "retry_cap_s": 1.0,
            "price_window_s": 3_600,
            **agent,
        },
    )
