#!/usr/bin/env bash
# `make check-fresh`: what a new user gets from the committed tree.
#
# Clones HEAD into a new temporary folder (nothing beside it, no .venv, no build outputs), points every
# home-level cache the project touches at new empty folders (Ape's data folder, Hugging Face, ~/.cache, npm's cache),
# then runs `make setup`, `make demo` with no terminal (it prints its results and exits) and the contract test that
# checks every contract is reachable. Prints how long each step took. KEEP=1 keeps the folder for a post-mortem.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "note: uncommitted changes are not part of this check (it clones HEAD $(git rev-parse --short HEAD))"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/chrysalis-fresh.XXXXXX")
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Nothing from this checkout, this shell's configuration or its caches may help the clone: not this checkout's
# .venv on PATH or its compiler wrapper (exported by an outer `make`), nor any CHRYSALIS_* setting.
here=$(pwd)
for var in $(env | grep -o '^CHRYSALIS_[A-Z0-9_]*' || true); do unset "$var"; done
unset SOLCX_BINARY_PATH VIRTUAL_ENV MAKEFLAGS MAKELEVEL MFLAGS
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -x -F "$here/.venv/bin" | paste -sd: -)
export PATH
export APE_DATA_FOLDER="$work/home/ape" HF_HOME="$work/home/huggingface" XDG_CACHE_HOME="$work/home/cache"
export npm_config_cache="$work/home/npm"
mkdir -p "$APE_DATA_FOLDER" "$HF_HOME" "$XDG_CACHE_HOME" "$npm_config_cache"

git clone --quiet --no-local . "$work/clone"
cd "$work/clone"

timings=()
step() {
  local name=$1
  shift
  echo "==> [check-fresh] $name"
  local start=$SECONDS
  if ! "$@"; then
    echo "!! [check-fresh] '$name' failed in a fresh clone of $(git rev-parse --short HEAD) ($work/clone)"
    KEEP=1
    exit 1
  fi
  timings+=("$(printf '%-28s %4d s' "$name" $((SECONDS - start)))")
}

step "make setup" make setup
step "make demo (no terminal)" make demo </dev/null
step "contract test" .venv/bin/pytest -q tests/contracts/test_project.py --network ethereum:local:test -p no:cacheprovider

echo "==> [check-fresh] a fresh clone of $(git rev-parse --short HEAD) works:"
printf '    %s\n' "${timings[@]}"
