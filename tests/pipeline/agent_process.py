"""Run an agent until idle in its own process (for the restart tests): ``python -m tests.pipeline.agent_process
SETTINGS.json TIMEOUT``. Prints the final status as JSON. ``CHRYSALIS_TEST_KILL_AFTER`` may SIGKILL it midway."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from agent.app import build_agent
from agent.settings import Settings


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    settings = Settings(**json.loads(Path(argv[0]).read_text()))
    with build_agent(settings) as agent:
        status = agent.run_until_idle(timeout_s=float(argv[1]))
    print(json.dumps(dataclasses.asdict(status)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
