#!/usr/bin/env bash
# The whole suite, as `make test` runs it (setup already done by make).
#  1. contract tests on Ape's in-process EVM (py-evm)
#  2. the same contract tests on anvil (ape-foundry)
#  3. everything else (IPFS, inference, agent), without Ape's pytest plugin
# pytest's exit code 5 ("no tests collected") is a failure here, as it is in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=".venv/bin/pytest"
status=0
run() {
  echo "==> pytest $*"
  "$PYTEST" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    [ $rc -eq 5 ] && echo "!! no tests collected for: $*"
    status=1
  fi
}
run tests/contracts --network ethereum:local:test
run tests/contracts --network ethereum:local:foundry
run tests -p no:ape_test --ignore=tests/contracts
exit $status
