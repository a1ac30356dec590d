#!/usr/bin/env bash
# Builds the previous release of raftlock, the one the rolling-upgrade test
# starts its nodes on (the commit named in cluster-tests/previous-release),
# and prints the path of its `raftlock` binary. Built once, from the commit's
# files (git archive), into target/previous/<commit>/; later runs reuse it.
#
#   scripts/build-previous.sh            build if needed, print the binary's path
#   scripts/build-previous.sh --commit   print the commit only
#   scripts/build-previous.sh --help
#
# Exits 3 when the commit is not in this clone (a shallow clone: fetch the
# history, e.g. `git fetch --unshallow`); other failures exit 1.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REV="$(grep -v '^#' "$ROOT/cluster-tests/previous-release" | awk 'NF { print $1; exit }')"
case "${1:-}" in
  --commit)
    echo "$REV"
    exit 0
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    echo "error: unknown argument $1 (see --help)" >&2
    exit 2
    ;;
esac

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in
  /*) ;;
  *) TARGET_DIR="$ROOT/$TARGET_DIR" ;;
esac
OUT="$TARGET_DIR/previous/$REV"
BIN="$OUT/target/debug/raftlock"
if [ -x "$BIN" ] && [ -f "$OUT/built" ]; then
  echo "$BIN"
  exit 0
fi
if ! git -C "$ROOT" cat-file -e "$REV^{commit}" 2> /dev/null; then
  echo "error: the previous release $REV (cluster-tests/previous-release) is not in this clone; fetch the history (git fetch --unshallow)" >&2
  exit 3
fi
rm -rf "$OUT"
mkdir -p "$OUT/src"
git -C "$ROOT" archive --format=tar "$REV" | tar -x -C "$OUT/src"
echo "building the previous release $REV in $OUT" >&2
(cd "$OUT/src" && CARGO_INCREMENTAL=0 cargo build --locked -p raftlock --target-dir "$OUT/target" >&2)
touch "$OUT/built"
echo "$BIN"
