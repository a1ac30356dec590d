#!/usr/bin/env bash
# Makes the Python venv for the Python client's tests and stub generator,
# then installs the client into it as a user would (a normal, non-editable
# install of clients/python). Prints the venv's path, and only that, on
# stdout (pip's output goes to stderr): VENV="$(scripts/python-env.sh)".
#
#   scripts/python-env.sh           create or reuse the venv, reinstall the client
#   scripts/python-env.sh --help
#
# The venv is ${RAFTLOCK_VENV:-target/python-venv} (a relative path is taken
# from the repository's root); the interpreter that makes it is ${PYTHON:-python3}
# (3.9 or newer). It holds exactly clients/python/requirements-dev.txt:
# every package is pinned there, dependencies included, and installed with
# --no-deps, so `pip check` fails if a pin is missing and nothing unpinned is
# ever fetched. A venv made from the same requirements file by the same
# interpreter is reused (the file's sha256 and the interpreter's version are
# stored in the venv); any other is made anew. The client itself is
# reinstalled every time (--force-reinstall: its version does not change
# when its code does).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "python-env.sh: $*" >&2
  exit 1
}

case "${1:-}" in
  "") ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REQUIREMENTS=clients/python/requirements-dev.txt
VENV="${RAFTLOCK_VENV:-target/python-venv}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.raftlock-requirements"

command -v "$PYTHON" > /dev/null || die "no $PYTHON on PATH: install Python 3.9 or newer (Debian: apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); the client needs 3.9 or newer"

# What the venv was made from: the pins and the interpreter.
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.implementation.cache_tag)')"

pip_in_venv() {
  "$VENV/bin/python" -m pip --disable-pip-version-check --no-input "$@"
}

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "python-env.sh: reusing $VENV (same requirements, same interpreter)" >&2
else
  echo "python-env.sh: making $VENV from $REQUIREMENTS with $("$PYTHON" -V 2>&1)" >&2
  if [ -e "$VENV" ]; then
    # Only ever delete a venv (RAFTLOCK_VENV could name anything).
    [ -f "$VENV/pyvenv.cfg" ] || die "$VENV exists and is not a venv (no pyvenv.cfg): not touching it"
    rm -rf "$VENV"
  fi
  mkdir -p "$(dirname "$VENV")"
  if ! "$PYTHON" -c 'import ensurepip' 2> /dev/null; then
    die "$PYTHON has no ensurepip, so it cannot make a venv with pip in it.
On Debian/Ubuntu: apt-get install python3-venv (or python3.X-venv for your version)."
  fi
  "$PYTHON" -m venv "$VENV" >&2 || die "python -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv)"
  pip_in_venv install --no-deps --requirement "$REQUIREMENTS" >&2
  pip_in_venv check >&2 || die "$REQUIREMENTS is incomplete: pin what pip check says is missing"
  # Exactly the pins: nothing more, nothing else (pip itself aside, the
  # venv's own installer, whose version comes with the interpreter).
  pins="$(grep -v '^[[:space:]]*\(#\|$\)' "$REQUIREMENTS" | sed 's/[[:space:]]*#.*//' \
    | tr '[:upper:]_' '[:lower:]-' | sort)"
  frozen="$(pip_in_venv freeze --all | grep -iv '^pip==' | tr '[:upper:]_' '[:lower:]-' | sort)"
  if [ "$pins" != "$frozen" ]; then
    diff <(echo "$pins") <(echo "$frozen") >&2 || true
    die "the venv ($VENV) differs from $REQUIREMENTS (< pinned, > installed)"
  fi
  echo "$want" > "$STAMP"
fi

# The client, built from clients/python with the pinned setuptools (no
# build isolation: nothing more is fetched) and installed as a wheel.
# setuptools builds inside the source tree (build/, src/*.egg-info,
# ignored by git); those are removed so a stale file never reaches a wheel.
rm -rf clients/python/build clients/python/src/raftlock.egg-info
pip_in_venv install --quiet --no-deps --no-build-isolation --force-reinstall ./clients/python >&2
rm -rf clients/python/build clients/python/src/raftlock.egg-info
echo "$VENV"
