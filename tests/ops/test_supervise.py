"""``python -m agent.ops.supervise --free-port VAR``: the command gets a URL on a port nothing listens on, never
ape-foundry's 8545 (two demos at once started two anvils on 8545, and one waited 20 s for a node that could not
bind); a value the user set is kept; a bad variable name is refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOW = "import os; print(os.environ['APE_FOUNDRY_HOST'])"


def _supervise(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.ops.supervise", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False, env={**{k: v for k, v in os.environ.items() if k != "APE_FOUNDRY_HOST"},
                                      **(env or {})},
    )  # fmt: skip


def test_free_port_gives_the_command_a_port_nothing_listens_on() -> None:
    urls = set()
    for _ in range(3):
        p = _supervise("--free-port", "APE_FOUNDRY_HOST", "--", sys.executable, "-c", SHOW)
        assert p.returncode == 0, p.stderr
        url = p.stdout.strip()
        assert url.startswith("http://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        assert port != 8545
        with socket.socket() as sock:  # free: it can be bound
            sock.bind(("127.0.0.1", port))
        urls.add(url)
    assert len(urls) == 3  # the kernel's pick, not a fixed port


def test_free_port_keeps_a_value_the_user_set() -> None:
    p = _supervise("--free-port", "APE_FOUNDRY_HOST", "--", sys.executable, "-c", SHOW,
                   env={"APE_FOUNDRY_HOST": "http://127.0.0.1:9999"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "http://127.0.0.1:9999"


def test_free_port_without_a_variable_name_is_refused() -> None:
    p = _supervise("--free-port", "--", sys.executable, "-c", "pass")
    assert p.returncode == 2
    assert "--free-port needs an environment variable name" in p.stderr
    assert "Traceback" not in p.stderr
