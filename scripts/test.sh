#!/usr/bin/env bash
# Runs every test: the Rust workspace's, then the Python client's against
# real clusters of the release binary. README.md and .ci/run name this
# command.
#
#   scripts/test.sh [ARGS...]                 everything; ARGS go to cargo test
#   scripts/test.sh --rust-only [ARGS...]     cargo test --workspace --locked ARGS
#   scripts/test.sh --python-only [ARGS...]   the Python stages only; ARGS go to pytest
#   scripts/test.sh --help
#
# Stages, in order (each prints its name and command first):
#   0. scripts/build-previous.sh             (the previous release, built once
#                                            into target/previous/: the rolling-
#                                            upgrade test's old nodes; sets
#                                            RAFTLOCK_BIN_PREVIOUS unless set)
#   1. cargo test --workspace --locked ARGS
#   2. cargo build --release --locked -p raftlock  (the binary the Python
#      tests run as `raftlock serve` nodes)
#   3. scripts/python-env.sh                 (the venv, target/python-venv)
#   4. scripts/gen-python.sh --check         (committed stubs = proto/)
#   5. pytest clients/python/tests           (RAFTLOCK_BIN set to stage 2's binary)
# Each Python test has a time limit (clients/python/tests/conftest.py).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

RUST=1
PYTHON=1
case "${1:-}" in
  --rust-only)
    PYTHON=0
    shift
    ;;
  --python-only)
    RUST=0
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in
  /*) ;;
  *) TARGET_DIR="$ROOT/$TARGET_DIR" ;;
esac

stage() {
  echo
  echo "=== scripts/test.sh: $* ==="
}

if [ "$RUST" = 1 ]; then
  if [ -z "${RAFTLOCK_BIN_PREVIOUS:-}" ]; then
    stage "previous release: scripts/build-previous.sh"
    set +e
    PREVIOUS="$(scripts/build-previous.sh)"
    rc=$?
    set -e
    case "$rc" in
      0) export RAFTLOCK_BIN_PREVIOUS="$PREVIOUS" ;;
      3) echo "warning: no previous release in this clone: the rolling-upgrade test will be skipped" >&2 ;;
      *) exit "$rc" ;;
    esac
  fi
  stage "Rust tests: cargo test --workspace --locked $*"
  cargo test --workspace --locked "$@"
fi

if [ "$PYTHON" = 1 ]; then
  stage "release binary: cargo build --release --locked -p raftlock"
  cargo build --release --locked -p raftlock
  stage "Python venv: scripts/python-env.sh"
  VENV="$(scripts/python-env.sh)"
  stage "Python stubs: scripts/gen-python.sh --check"
  scripts/gen-python.sh --check
  PYTEST_ARGS=()
  [ "$RUST" = 1 ] || PYTEST_ARGS=("$@")
  stage "Python client tests: pytest clients/python/tests ${PYTEST_ARGS[*]:-}"
  RAFTLOCK_BIN="$TARGET_DIR/release/raftlock" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider --strict-markers -ra \
    --rootdir clients/python clients/python/tests "${PYTEST_ARGS[@]}"
fi
echo
echo "=== scripts/test.sh: all stages passed ==="
