#!/usr/bin/env bash
# One Jepsen-style fault test of raftlock (cluster-tests/).
#
# Builds raftlock and the harness (release), starts N `raftlock serve`
# processes on free loopback ports with every peer link and client link
# through a fault proxy, runs clients (mutex + fenced register) while a
# seeded nemesis injects faults for --time-limit seconds, heals everything,
# lets the clients recover, and checks the history: mutual exclusion,
# fencing tokens, the fenced register, linearizability, liveness.
#
# Writes history.jsonl, results.json, report.html and the nodes' data and
# logs (cluster/) to --out (default target/jepsen/<seed>). Every process it
# started is killed on exit.
#
# Exit code: 0 only when every checker passes; 1 a violation; 2 a usage or
# setup error; 3 a checker could not decide.
#
# JEPSEN_PROFILE=debug uses (and builds) the debug binaries instead of
# release ones: quicker to build, slower to run.
#
# Clock faults (--nemesis clock or skew) run the nodes under libfaketime;
# when it is missing the script installs Debian's libfaketime package
# (apt-get, as root) or tells you how.
#
# Power faults (--nemesis power) put each node's data on its own powerfs
# mount (FUSE; needs root and /dev/fuse) and throw away every write a node
# had not fsynced when its power is cut; kill-all kills every node at once.
#
# --secure runs the cluster with TLS and auth on: a CA, node certificates and
# an auth file in <out>/cluster/certs; every node serves TLS on its client
# and peer ports (mutual TLS between peers, through the fault proxies) and
# checks every call against the auth file; the harness connects with TLS as
# identity `jepsen` (inspect, lock, watch, admin on every name). Before the
# clients start, each node must refuse a plaintext call and a TLS call
# without a client certificate (else a setup error, exit 2).
#
# A rolling upgrade (--nemesis upgrade --upgrade-from OLD_BINARY): the nodes
# start on OLD_BINARY (scripts/build-previous.sh builds the previous
# release) and are moved one at a time to the build under test.
#
# Usage: scripts/jepsen.sh [--nodes 5] [--time-limit 600]
#          [--nemesis partition,kill,pause,link,clock,member,kill-all,power,upgrade | ...,skew]
#          [--seed S] [--clients 10] [--skew-percent 3] [--secure]
#          [--target raftlock|unsafe] [--out DIR] [any other `jepsen` flag]
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

ARGS=()
SEED=""
OUT=""
NEMESIS=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --nemesis) NEMESIS="${2:?--nemesis needs a list}"; ARGS+=("$1" "$2"); shift 2 ;;
    --seed) SEED="${2:?--seed needs a number}"; ARGS+=("$1" "$2"); shift 2 ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --secure) ARGS+=("$1"); shift ;;
    --*) ARGS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    *) echo "error: unexpected argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ -z "$SEED" ]; then
  SEED="$(date +%s)"
  ARGS+=(--seed "$SEED")
fi
OUT="${OUT:-$ROOT/target/jepsen/$SEED}"

FAKETIME_LIB="${RAFTLOCK_FAKETIME_LIB:-/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1}"
case ",$NEMESIS," in
  *,clock,*|*,skew,*)
    if [ ! -f "$FAKETIME_LIB" ]; then
      if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing libfaketime (clock faults need it)" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime; } >&2 \
          || { echo "error: could not install libfaketime" >&2; exit 2; }
      else
        echo "error: clock faults need libfaketime: apt-get install libfaketime (as root), or set RAFTLOCK_FAKETIME_LIB" >&2
        exit 2
      fi
    fi
    export RAFTLOCK_FAKETIME_LIB="$FAKETIME_LIB"
    ;;
esac

PROFILE="${JEPSEN_PROFILE:-release}"
case "$PROFILE" in
  release) cargo build --release --locked -p raftlock -p cluster-tests --bins >&2 ;;
  debug) cargo build --locked -p raftlock -p cluster-tests --bins >&2 ;;
  *) echo "error: JEPSEN_PROFILE must be release or debug" >&2; exit 2 ;;
esac
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
exec "$TARGET_DIR/$PROFILE/jepsen" --raftlock-bin "$TARGET_DIR/$PROFILE/raftlock" --out "$OUT" "${ARGS[@]}"
