#!/usr/bin/env bash
# Release-to-grant latency through the CLI: how long after a holder runs
# `raftlock release` does a waiter's `raftlock acquire --wait` return with the
# lock?
#
# Builds raftlock (release profile) unless --bin is given, starts
# `raftlock dev` on free loopback ports in a temporary directory, then for
# each round:
#   1. a holder takes the lock:        raftlock acquire bench/handoff --json
#   2. a waiter queues for it:         raftlock acquire bench/handoff --wait 20s
#      (in the background; the round goes on once `inspect` shows it queued)
#   3. the holder releases:            raftlock release bench/handoff ...
#   4. handoff = from just before step 3 starts to the moment the waiter's
#      process has exited with the lock; also reported: how long the
#      `release` command itself took.
# Both leases are revoked after each round. Prints median, p90, p99 and max
# in ms. Times come from bash's $EPOCHREALTIME (no forks to read the clock),
# so each figure includes starting and ending one `raftlock` process (the
# release's start, the waiter's exit), as a shell script would see it.
#
# Everything it started is stopped and its directory removed on exit,
# Ctrl-C included; the run is bounded by --time-limit.
#
# Usage: scripts/handoff.sh [--rounds 50] [--bin PATH] [--time-limit SECONDS]
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

ROUNDS=50
BIN=""
TIME_LIMIT=300
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="${2:?--rounds needs a number}"; shift 2 ;;
    --rounds=*) ROUNDS="${1#*=}"; shift ;;
    --bin) BIN="${2:?--bin needs a path}"; shift 2 ;;
    --bin=*) BIN="${1#*=}"; shift ;;
    --time-limit) TIME_LIMIT="${2:?--time-limit needs seconds}"; shift 2 ;;
    --time-limit=*) TIME_LIMIT="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$ROUNDS" "$TIME_LIMIT"; do
  case "$v" in
    ''|*[!0-9]*|0) echo "error: --rounds and --time-limit must be whole numbers above 0, got '$v'" >&2; exit 2 ;;
  esac
done
if [ -z "${EPOCHREALTIME:-}" ]; then
  echo "error: needs bash 5 or later (\$EPOCHREALTIME)" >&2
  exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STARTED=$SECONDS
say() { printf '[handoff %3ds] %s\n' "$(( SECONDS - STARTED ))" "$*" >&2; }
over_time() { [ $(( SECONDS - STARTED )) -ge "$TIME_LIMIT" ]; }

if [ -z "$BIN" ]; then
  say "building raftlock (release)"
  (cd "$ROOT" && cargo build --release --locked -p raftlock >&2)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/raftlock"
fi
[ -x "$BIN" ] || { echo "error: $BIN is not an executable" >&2; exit 2; }

WORK="$(mktemp -d -t raftlock-handoff.XXXXXX)"
DEV_PID=""
WAITER_PID=""
cleanup() {
  [ -n "$WAITER_PID" ] && kill "$WAITER_PID" 2>/dev/null || true
  if [ -n "$DEV_PID" ]; then
    kill -TERM "$DEV_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DEV_PID" 2>/dev/null || true
    wait "$DEV_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Start `raftlock dev` on three free ports and their metrics ports, 10 above
# (retried if one is taken meanwhile).
EPS=""
for attempt in 1 2 3 4 5; do
  base=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
  all_free=1
  for p in 0 1 2 10 11 12; do port_free $((base + p)) || all_free=0; done
  [ "$all_free" = 1 ] || continue
  "$BIN" dev --dir "$WORK/dev$attempt" --base-port "$base" >"$WORK/dev.out" 2>"$WORK/dev.log" &
  DEV_PID=$!
  for _ in $(seq 300); do
    EPS=$(sed -n 's/^export RAFTLOCK_ENDPOINTS=//p' "$WORK/dev.out")
    [ -n "$EPS" ] && break
    kill -0 "$DEV_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$EPS" ] && break
  wait "$DEV_PID" 2>/dev/null || true
  DEV_PID=""
done
[ -n "$EPS" ] || { echo "error: raftlock dev did not start:" >&2; tail -20 "$WORK/dev.log" >&2; exit 1; }
export RAFTLOCK_ENDPOINTS="$EPS"
say "raftlock dev up at $EPS; $ROUNDS rounds"

NAME=bench/handoff
field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" "$2" | head -1; }

: >"$WORK/handoff_ms"
: >"$WORK/release_ms"
for round in $(seq "$ROUNDS"); do
  over_time && { say "time limit reached after $((round - 1)) rounds"; break; }
  "$BIN" acquire "$NAME" --ttl 30s --wait 5s --json >"$WORK/holder.json"
  h_lease=$(field lease_id "$WORK/holder.json")
  h_token=$(field token "$WORK/holder.json")

  rm -f "$WORK/waiter.done"
  ( "$BIN" acquire "$NAME" --ttl 30s --wait 20s --json >"$WORK/waiter.json" 2>"$WORK/waiter.err"
    echo "$? $EPOCHREALTIME" >"$WORK/waiter.done" ) &
  WAITER_PID=$!

  queued=0
  for _ in $(seq 200); do
    case "$("$BIN" inspect "$NAME" --json)" in *'"waiter_id"'*) queued=1; break ;; esac
    sleep 0.02
  done
  [ "$queued" = 1 ] || { echo "error: round $round: the waiter never queued" >&2; cat "$WORK/waiter.err" >&2; exit 1; }

  t0=$EPOCHREALTIME
  "$BIN" release "$NAME" --token "$h_token" --lease "$h_lease" >/dev/null
  t1=$EPOCHREALTIME
  wait "$WAITER_PID" || true
  WAITER_PID=""
  read -r code t2 <"$WORK/waiter.done"
  [ "$code" = 0 ] || { echo "error: round $round: waiter exited $code" >&2; cat "$WORK/waiter.err" >&2; exit 1; }

  awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }' >>"$WORK/handoff_ms"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }' >>"$WORK/release_ms"

  w_lease=$(field lease_id "$WORK/waiter.json")
  "$BIN" lease revoke "$w_lease" >/dev/null
  "$BIN" lease revoke "$h_lease" >/dev/null
done

stats() {
  sort -n "$1" | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "no samples"; exit }
      i50 = int(0.50 * NR + 0.999999); if (i50 < 1) i50 = 1
      i90 = int(0.90 * NR + 0.999999); if (i90 < 1) i90 = 1
      i99 = int(0.99 * NR + 0.999999); if (i99 < 1) i99 = 1
      printf "n=%d median=%.1f p90=%.1f p99=%.1f max=%.1f ms\n", NR, v[i50], v[i90], v[i99], v[NR]
    }'
}
echo "release -> waiter's acquire returned: $(stats "$WORK/handoff_ms")"
echo "raftlock release command alone:       $(stats "$WORK/release_ms")"
