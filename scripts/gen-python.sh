#!/usr/bin/env bash
# Regenerates the Python client's gRPC stubs (clients/python/src/raftlock/v1/:
# *_pb2.py, *_pb2.pyi, *_pb2_grpc.py) from proto/raftlock/v1/*.proto with the
# grpcio-tools pinned in clients/python/requirements-dev.txt, in the venv
# of scripts/python-env.sh. The hand-written v1/__init__.py is kept.
#
#   scripts/gen-python.sh           regenerate the committed stubs
#   scripts/gen-python.sh --check   generate into a temp dir and fail (exit 1),
#                                   naming the stale files, if the committed
#                                   stubs differ from it (CI, scripts/test.sh)
#   scripts/gen-python.sh --help
#
# The stubs are committed so that the package installs without grpcio-tools;
# this check keeps them equal to what proto/ generates now.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "gen-python.sh: $*" >&2
  exit 1
}

CHECK=0
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT=clients/python/src
STUBS="$OUT/raftlock/v1"
PROTOS=(proto/raftlock/v1/*.proto)

VENV="$(scripts/python-env.sh)"
PY="$VENV/bin/python"

generate() {
  # Relative paths only, as the committed files were made: protoc writes
  # the include-relative source path into the stubs.
  "$PY" -m grpc_tools.protoc -Iproto \
    --python_out="$1" --pyi_out="$1" --grpc_python_out="$1" "${PROTOS[@]}"
}

# The generated files of a directory tree's raftlock/v1, sorted.
generated_files() {
  (cd "$1/raftlock/v1" 2> /dev/null && ls -1 -- *_pb2.py *_pb2.pyi *_pb2_grpc.py 2> /dev/null) | sort || true
}

if [ "$CHECK" = 0 ]; then
  # Stubs of a proto file that no longer exists go too.
  find "$STUBS" -maxdepth 1 \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -delete
  generate "$OUT"
  echo "gen-python.sh: regenerated $(generated_files "$OUT" | sed "s|^|$STUBS/|" | tr '\n' ' ')"
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
generate "$TMP"
stale=()
while read -r f; do
  [ -n "$f" ] || continue
  if [ ! -f "$TMP/raftlock/v1/$f" ]; then
    stale+=("$STUBS/$f (no proto generates it any more)")
  elif [ ! -f "$STUBS/$f" ]; then
    stale+=("$STUBS/$f (missing)")
  elif ! cmp -s "$TMP/raftlock/v1/$f" "$STUBS/$f"; then
    stale+=("$STUBS/$f")
    diff -u "$STUBS/$f" "$TMP/raftlock/v1/$f" | head -n 40 >&2 || true
  fi
done < <({
  generated_files "$OUT"
  generated_files "$TMP"
} | sort -u)

if [ "${#stale[@]}" -gt 0 ]; then
  echo "gen-python.sh: the Python stubs are stale (they differ from what proto/ generates now):" >&2
  printf '  %s\n' "${stale[@]}" >&2
  echo "Regenerate and commit them: scripts/gen-python.sh" >&2
  exit 1
fi
echo "gen-python.sh: the Python stubs match proto/ ($(generated_files "$OUT" | wc -l) files)"
