#!/usr/bin/env bash
# The whole suite, as `make test` runs it (setup already done by make).
#  1. contract tests on Ape's in-process EVM (py-evm) and, at the same time, the same tests on anvil (ape-foundry):
#     two independent processes (anvil on a port of its own), so the two passes share the two cores
#  2. everything else (IPFS, inference, agent), without Ape's pytest plugin, over $TEST_WORKERS pytest-xdist workers
#     (default 2: most of these tests wait on anvil, servers and subprocesses, so two workers nearly halve the time)
# pytest's exit code 5 ("no tests collected") is a failure here, as it is in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=".venv/bin/pytest"
status=0
logs=$(mktemp -d "${TMPDIR:-/tmp}/chrysalis-test.XXXXXX")
trap 'rm -rf "$logs"' EXIT

check() {  # check RC ARGS...: record a failure for the pass that ran with ARGS
  local rc=$1
  shift
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 5 ] && echo "!! no tests collected for: $*"
    status=1
  fi
}
run() {
  echo "==> pytest $*"
  "$PYTEST" "$@"
  check $? "$@"
}

networks=(ethereum:local:test ethereum:local:foundry)
pids=()
for i in "${!networks[@]}"; do
  "$PYTEST" tests/contracts --network "${networks[$i]}" >"$logs/$i.log" 2>&1 &
  pids+=($!)
done
for i in "${!networks[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  echo "==> pytest tests/contracts --network ${networks[$i]}"
  cat "$logs/$i.log"
  check $rc tests/contracts --network "${networks[$i]}"
done
run tests -p no:ape_test --ignore=tests/contracts -n "${TEST_WORKERS:-2}" --durations=15
exit $status
