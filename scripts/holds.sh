#!/usr/bin/env bash
# Memory per hold of a 3-process raftlock cluster, measured as a user would
# (issue 18): loads N exclusive holds (1,000 leases x N/1,000 names, 64
# names per acquire, 8 acquires in flight) with `raftlock-bench --workload
# holds`, which prints the load rate, each node's RSS before and after
# (VmRSS of /proc/PID/status: this script passes the nodes' pids), bytes
# per hold = (RSS after - RSS before) / N, and the time to build a snapshot
# (Admin.Snapshot on the leader) with each node's RSS after it and its
# peak (VmHWM, reset just before) while it was built. Then it kills one
# follower with SIGKILL, restarts it on its data directory and reports
# its catch-up time: restart -> its applied index reaches the leader's
# (polled every 100 ms with `raftlock status`; includes the process
# start, opening the store and replaying the log since its last saved
# state). Last it measures a snapshot being sent:
# the leader's peak (VmHWM) is reset (`5 > /proc/PID/clear_refs`), a
# fourth node with an empty data directory is added as a learner
# (`raftlock cluster add-learner`, which waits until it has caught up: the
# log before the snapshot is purged, so it gets the snapshot), and the
# leader's peak while it sent the snapshot and the learner's peak while it
# received and installed it are printed.
#
# Builds raftlock and raftlock-bench (release profile) unless --bin and
# --bench are given; starts three `raftlock serve` processes on free
# loopback ports (and the learner, a fourth) in a temporary directory (default Raft timing, default
# --cache-mb). Everything it started is stopped and its directory removed
# on exit, Ctrl-C included; the run is bounded by --time-limit (the load
# itself is stopped with the rest when the limit is reached).
#
# --cache-mb MiB is passed to every `raftlock serve` (sled's page cache;
# the default is the server's, 64).
#
# Usage: scripts/holds.sh [--holds 100000] [--time-limit SECONDS] [--bin PATH]
#                         [--bench PATH] [--cache-mb MIB] [--no-catch-up]
#                         [--no-send]
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

HOLDS=100000
TIME_LIMIT=600
BIN=""
BENCH=""
CATCH_UP=1
SEND=1
CACHE_MB=""
while [ $# -gt 0 ]; do
  case "$1" in
    --holds) HOLDS="${2:?--holds needs a number}"; shift 2 ;;
    --holds=*) HOLDS="${1#*=}"; shift ;;
    --time-limit) TIME_LIMIT="${2:?--time-limit needs seconds}"; shift 2 ;;
    --time-limit=*) TIME_LIMIT="${1#*=}"; shift ;;
    --bin) BIN="${2:?--bin needs a path}"; shift 2 ;;
    --bin=*) BIN="${1#*=}"; shift ;;
    --bench) BENCH="${2:?--bench needs a path}"; shift 2 ;;
    --bench=*) BENCH="${1#*=}"; shift ;;
    --cache-mb) CACHE_MB="${2:?--cache-mb needs a number}"; shift 2 ;;
    --cache-mb=*) CACHE_MB="${1#*=}"; shift ;;
    --no-catch-up) CATCH_UP=0; shift ;;
    --no-send) SEND=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$HOLDS" "$TIME_LIMIT"; do
  case "$v" in
    ''|*[!0-9]*|0) echo "error: --holds and --time-limit must be whole numbers above 0, got '$v'" >&2; exit 2 ;;
  esac
done
case "$CACHE_MB" in
  *[!0-9]*) echo "error: --cache-mb must be a whole number, got '$CACHE_MB'" >&2; exit 2 ;;
esac
[ $(( HOLDS % 1000 )) -eq 0 ] || { echo "error: --holds must be a multiple of 1000 (1,000 leases hold as many names each), got $HOLDS" >&2; exit 2; }
if [ -z "${EPOCHREALTIME:-}" ]; then
  echo "error: needs bash 5 or later (\$EPOCHREALTIME)" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "error: python3 is needed to find free ports and read JSON" >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STARTED=$SECONDS
say() { printf '[holds %3ds] %s\n' "$(( SECONDS - STARTED ))" "$*" >&2; }
left() { echo $(( TIME_LIMIT - (SECONDS - STARTED) )); }

if [ -z "$BIN" ] || [ -z "$BENCH" ]; then
  say "building raftlock and raftlock-bench (release)"
  (cd "$ROOT" && cargo build --release --locked -p raftlock -p raftlock-bench >&2)
  [ -n "$BIN" ] || BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/raftlock"
  [ -n "$BENCH" ] || BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/raftlock-bench"
fi
[ -x "$BIN" ] || { echo "error: $BIN is not an executable" >&2; exit 2; }
[ -x "$BENCH" ] || { echo "error: $BENCH is not an executable" >&2; exit 2; }

WORK="$(mktemp -d -t raftlock-holds.XXXXXX)"
declare -A PID=()
cleanup() {
  local p
  for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
declare -A PORT=() PEER_PORT=()
for i in 1 2 3 4; do PORT[$i]=$(free_port); PEER_PORT[$i]=$(free_port); done
PEERS="1=127.0.0.1:${PEER_PORT[1]},2=127.0.0.1:${PEER_PORT[2]},3=127.0.0.1:${PEER_PORT[3]}"
ENDPOINTS="127.0.0.1:${PORT[1]},127.0.0.1:${PORT[2]},127.0.0.1:${PORT[3]}"

SERVE_EXTRA=()
[ -n "$CACHE_MB" ] && SERVE_EXTRA=(--cache-mb "$CACHE_MB")
start_node() {
  local i=$1
  # Node 4 joins later as a learner: it must not bootstrap, so no --peers.
  local peers=(--peers "$PEERS")
  [ "$i" = 4 ] && peers=()
  RUST_LOG=warn "$BIN" serve --insecure --id "$i" --data-dir "$WORK/node$i" \
    --listen "127.0.0.1:${PORT[$i]}" --peer-listen "127.0.0.1:${PEER_PORT[$i]}" "${peers[@]}" \
    "${SERVE_EXTRA[@]}" </dev/null >>"$WORK/node$i.log" 2>&1 &
  PID[$i]=$!
}

# VmRSS and VmHWM of pid $1 in MiB, as "RSS PEAK".
rss_peak() {
  awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {printf "%.1f %.1f", r / 1024, h / 1024}' "/proc/$1/status"
}

# A field of node $1's `raftlock status --json`, or nothing.
status_field() {
  "$BIN" status --json --timeout-ms 1000 --endpoints "127.0.0.1:${PORT[$1]}" 2>/dev/null \
    | python3 -c 'import json,sys
try:
    v=json.load(sys.stdin).get(sys.argv[1])
    print(v if v is not None else "")
except Exception:
    pass' "$2" || true
}

for i in 1 2 3; do start_node "$i"; done
say "cluster on $ENDPOINTS (pids ${PID[1]},${PID[2]},${PID[3]}); waiting for a leader"
LEADER=""
for _ in $(seq 150); do
  LEADER=$(status_field 1 leader_id)
  [ -n "$LEADER" ] && break
  sleep 0.2
done
[ -n "$LEADER" ] || { echo "error: no leader within 30 s" >&2; tail -n 20 "$WORK"/node*.log >&2; exit 1; }
# Let the nodes' memory settle after start (allocator pools, first
# connections) before the "before" figure is read.
sleep 2

say "loading $HOLDS holds (time left: $(left) s)"
KEEP=()
{ [ "$CATCH_UP" = 1 ] || [ "$SEND" = 1 ]; } && KEEP=(--keep)
# Bounded by the time limit: `timeout` kills the bench when it runs out.
if ! timeout --signal=KILL "$(left)" "$BENCH" --workload holds --holds "$HOLDS" \
    --endpoints "$ENDPOINTS" --pids "${PID[1]},${PID[2]},${PID[3]}" "${KEEP[@]}" --json \
    >"$WORK/holds.json"; then
  echo "error: raftlock-bench failed or hit --time-limit $TIME_LIMIT s" >&2
  tail -n 5 "$WORK"/node*.log >&2
  exit 1
fi

python3 - "$WORK/holds.json" "${PID[1]}" "${PID[2]}" "${PID[3]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
node_of = {int(p): i + 1 for i, p in enumerate(sys.argv[2:])}
print(f"holds {r['holds']} ({r['leases']} leases, {r['batch']} names per acquire, {r['clients']} in flight); leader {r['leader']}")
print(f"load: {r['load_s']} s, {r['holds_per_s']:.0f} holds/s; snapshot build on the leader: {r['snapshot_s']} s")
print("node  RSS before  RSS after  B/hold  peak       | snapshot: RSS after  peak during  B/hold at peak")
for n in r["nodes"]:
    at_peak = (n['peak_after_snapshot_mib'] - n['rss_before_mib']) * 1048576 / r['holds']
    print(f"{node_of[n['pid']]:>4}  {n['rss_before_mib']:>6.1f} MiB {n['rss_after_mib']:>6.1f} MiB {n['bytes_per_hold']:>6.0f}  {n['peak_after_mib']:>6.1f} MiB"
          f" | {n['rss_after_snapshot_mib']:>6.1f} MiB {n['peak_after_snapshot_mib']:>6.1f} MiB {at_peak:>6.0f}")
PY

LEADER=$(status_field 1 leader_id)
[ -n "$LEADER" ] || { echo "error: no leader known after the load" >&2; exit 1; }
LEADER_BEFORE_MIB=$(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
print(next(n["rss_before_mib"] for n in r["nodes"] if n["pid"] == int(sys.argv[2])))' "$WORK/holds.json" "${PID[$LEADER]}")

if [ "$CATCH_UP" = 1 ]; then
FOLLOWER=1; [ "$LEADER" = 1 ] && FOLLOWER=2
TARGET=$(status_field "$LEADER" applied_index)
[ -n "$TARGET" ] || { echo "error: cannot read the leader's applied index" >&2; exit 1; }
kill -KILL "${PID[$FOLLOWER]}"
wait "${PID[$FOLLOWER]}" 2>/dev/null || true
T0=$EPOCHREALTIME
start_node "$FOLLOWER"
CAUGHT=""
while [ "$(left)" -gt 0 ]; do
  a=$(status_field "$FOLLOWER" applied_index)
  if [ -n "$a" ] && [ "$a" -ge "$TARGET" ]; then CAUGHT=$EPOCHREALTIME; break; fi
  sleep 0.1
done
[ -n "$CAUGHT" ] || { echo "error: node $FOLLOWER did not catch up to index $TARGET within --time-limit" >&2; exit 1; }
RSS=$(awk '/^VmRSS:/ {printf "%.1f MiB", $2 / 1024}' "/proc/${PID[$FOLLOWER]}/status")
python3 -c "print(f'follower $FOLLOWER killed and restarted: caught up to index $TARGET in {($CAUGHT - $T0) * 1000:.0f} ms; its RSS then $RSS')"
fi

[ "$SEND" = 1 ] || exit 0
# The leader's peak from here on is the send's.
echo 5 > "/proc/${PID[$LEADER]}/clear_refs"
start_node 4
T0=$EPOCHREALTIME
if ! timeout --signal=KILL "$(left)" "$BIN" cluster add-learner 4 "127.0.0.1:${PEER_PORT[4]}" \
    --endpoints "$ENDPOINTS" >"$WORK/add-learner.log" 2>&1; then
  echo "error: adding node 4 as a learner failed or hit --time-limit" >&2
  cat "$WORK/add-learner.log" >&2
  tail -n 20 "$WORK/node4.log" >&2
  exit 1
fi
T1=$EPOCHREALTIME
read -r LEADER_RSS LEADER_PEAK <<<"$(rss_peak "${PID[$LEADER]}")"
read -r LEARNER_RSS LEARNER_PEAK <<<"$(rss_peak "${PID[4]}")"
LEARNER_SNAPSHOT=$(status_field 4 snapshot_index)
python3 - "$HOLDS" "$LEADER" "$LEADER_BEFORE_MIB" "$LEADER_RSS" "$LEADER_PEAK" \
  "$LEARNER_RSS" "$LEARNER_PEAK" "${LEARNER_SNAPSHOT:-none}" "$T0" "$T1" <<'PY'
import sys
holds, leader, before, rss, peak, l_rss, l_peak, snap, t0, t1 = sys.argv[1:]
holds, before, rss, peak = int(holds), float(before), float(rss), float(peak)
print(f"snapshot sent to a new learner (node 4, its snapshot at index {snap}) in {(float(t1) - float(t0)):.1f} s")
print(f"  leader {leader} while sending: RSS {rss:.1f} MiB, peak {peak:.1f} MiB = {(peak - before) * 1048576 / holds:.0f} B/hold over its RSS before the load")
print(f"  learner while receiving and installing: RSS {l_rss} MiB, peak {l_peak} MiB")
PY
