#!/usr/bin/env bash
# Failover time of a 3-process raftlock cluster: how long after `kill -9` of
# the leader does a new leader serve, and how long until a client's lock
# call succeeds?
#
# Builds raftlock (release profile) unless --bin is given, starts three
# `raftlock serve` processes on free loopback ports (default Raft timing:
# heartbeat 100 ms, election timeout 400-800 ms) in a temporary directory,
# then for each round:
#   1. finds the leader (`raftlock status --json`) and kills it with SIGKILL;
#   2. `raftlock acquire failover/N --ttl 5s` against all three endpoints
#      starts at once and retries by itself through the election
#      (lease grant + acquire: two Raft writes);
#   3. reports: kill -> another node reports itself leader (polled every
#      20 ms), and kill -> the acquire command has exited with the lock;
#   4. restarts the killed node on its data directory and waits until it
#      follows again.
# Prints median, p90 and max in ms of both figures. Times from bash's
# $EPOCHREALTIME; the client figure includes starting one `raftlock` process
# and ends when that process exits (before 2026-12-07 it ended when the
# leader polls were done, which could be later).
#
# With --log-dir DIR the nodes log at info level (each role change, with
# its time: a follower that lost its leader, a candidate, the new leader)
# and DIR keeps their logs and rounds.tsv (per round: the killed leader, the
# epoch seconds of the kill, of the first poll that saw a new leader and of
# the client's success), to see where a failover's time goes. Logging costs
# a little; compare figures of runs with the same setting.
#
# This measures raftlock alone, with its own CLI as the client. The
# side-by-side with etcd and ZooKeeper, one client program for the three
# with the same retry behaviour, is scripts/bench.sh (--failover-rounds N;
# --failover-only to run just that part).
#
# Everything it started is stopped and its directory removed on exit,
# Ctrl-C included; the run is bounded by --time-limit.
#
# Usage: scripts/failover.sh [--rounds 10] [--bin PATH] [--time-limit SECONDS]
#                            [--log-dir DIR]
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

ROUNDS=10
BIN=""
TIME_LIMIT=300
LOG_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="${2:?--rounds needs a number}"; shift 2 ;;
    --rounds=*) ROUNDS="${1#*=}"; shift ;;
    --bin) BIN="${2:?--bin needs a path}"; shift 2 ;;
    --bin=*) BIN="${1#*=}"; shift ;;
    --time-limit) TIME_LIMIT="${2:?--time-limit needs seconds}"; shift 2 ;;
    --time-limit=*) TIME_LIMIT="${1#*=}"; shift ;;
    --log-dir) LOG_DIR="${2:?--log-dir needs a directory}"; shift 2 ;;
    --log-dir=*) LOG_DIR="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$ROUNDS" "$TIME_LIMIT"; do
  case "$v" in
    ''|*[!0-9]*|0) echo "error: --rounds and --time-limit must be whole numbers above 0, got '$v'" >&2; exit 2 ;;
  esac
done
if [ -n "$LOG_DIR" ]; then
  mkdir -p "$LOG_DIR" || { echo "error: cannot create --log-dir $LOG_DIR" >&2; exit 2; }
  LOG_DIR="$(cd "$LOG_DIR" && pwd)"
  printf 'round\tkilled\tkill_epoch\tnew_leader_seen_epoch\tclient_done_epoch\n' >"$LOG_DIR/rounds.tsv"
fi
NODE_LOG_LEVEL=warn
[ -n "$LOG_DIR" ] && NODE_LOG_LEVEL=info
if [ -z "${EPOCHREALTIME:-}" ]; then
  echo "error: needs bash 5 or later (\$EPOCHREALTIME)" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "error: python3 is needed to read JSON and compute percentiles" >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STARTED=$SECONDS
say() { printf '[failover %3ds] %s\n' "$(( SECONDS - STARTED ))" "$*" >&2; }
over_time() { [ $(( SECONDS - STARTED )) -ge "$TIME_LIMIT" ]; }

if [ -z "$BIN" ]; then
  say "building raftlock (release)"
  (cd "$ROOT" && cargo build --release --locked -p raftlock >&2)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/raftlock"
fi
[ -x "$BIN" ] || { echo "error: $BIN is not an executable" >&2; exit 2; }

WORK="$(mktemp -d -t raftlock-failover.XXXXXX)"
declare -A PID=()
cleanup() {
  local p
  for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$LOG_DIR" ]; then cp "$WORK"/node*.log "$LOG_DIR"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
declare -A PORT=()
declare -A PEER_PORT=()
for i in 1 2 3; do PORT[$i]=$(free_port); PEER_PORT[$i]=$(free_port); done
# --peers names the peer ports; clients use the client ports.
PEERS="1=127.0.0.1:${PEER_PORT[1]},2=127.0.0.1:${PEER_PORT[2]},3=127.0.0.1:${PEER_PORT[3]}"
ENDPOINTS="127.0.0.1:${PORT[1]},127.0.0.1:${PORT[2]},127.0.0.1:${PORT[3]}"

start_node() {
  local i=$1
  # Plaintext on loopback, as the peers it is compared with.
  RUST_LOG=$NODE_LOG_LEVEL "$BIN" serve --insecure --id "$i" --data-dir "$WORK/node$i" \
    --listen "127.0.0.1:${PORT[$i]}" --peer-listen "127.0.0.1:${PEER_PORT[$i]}" --peers "$PEERS" \
    </dev/null >>"$WORK/node$i.log" 2>&1 &
  PID[$i]=$!
}

# The leader id as node $1 sees it, or nothing.
leader_seen_by() {
  "$BIN" status --json --timeout-ms 300 --endpoints "127.0.0.1:${PORT[$1]}" 2>/dev/null \
    | python3 -c 'import json,sys
try:
    d=json.load(sys.stdin); l=d.get("leader_id")
    print(l if l is not None else "")
except Exception:
    pass' || true
}

for i in 1 2 3; do start_node "$i"; done
say "cluster on $ENDPOINTS; waiting for a leader"
LEADER=""
for _ in $(seq 150); do
  LEADER=$(leader_seen_by 1)
  [ -n "$LEADER" ] && break
  sleep 0.2
done
[ -n "$LEADER" ] || { echo "error: no leader within 30 s" >&2; tail -n 20 "$WORK"/node*.log >&2; exit 1; }

ms_since() { python3 -c "print(round(($2 - $1) * 1000, 1))"; }
ELECT=()
CLIENT=()
for round in $(seq "$ROUNDS"); do
  over_time && { say "time limit reached after $((round - 1)) rounds"; break; }
  LEADER=$(leader_seen_by 1); [ -n "$LEADER" ] || LEADER=$(leader_seen_by 2)
  [ -n "$LEADER" ] || { say "no leader known before round $round; waiting"; sleep 1; continue; }
  OTHERS=(); for i in 1 2 3; do [ "$i" = "$LEADER" ] || OTHERS+=("$i"); done

  T0=$EPOCHREALTIME
  kill -KILL "${PID[$LEADER]}"
  # The acquire notes the moment it exited itself: the leader polls below
  # take tens of ms each, and a `wait` after them would date a client that
  # finished first no earlier than the poll that saw the new leader.
  rm -f "$WORK/acquire.done"
  ( "$BIN" acquire "failover/$round" --ttl 5s --json --endpoints "$ENDPOINTS" \
      >"$WORK/acquire.out" 2>"$WORK/acquire.err"
    rc=$?
    echo "$EPOCHREALTIME" >"$WORK/acquire.done"
    exit "$rc" ) &
  ACQ=$!
  T_ELECT=""
  for _ in $(seq 500); do
    for i in "${OTHERS[@]}"; do
      l=$(leader_seen_by "$i")
      if [ -n "$l" ] && [ "$l" != "$LEADER" ]; then T_ELECT=$EPOCHREALTIME; break 2; fi
    done
    sleep 0.02
  done
  if wait "$ACQ"; then T_CLIENT=$(cat "$WORK/acquire.done"); else
    echo "error: round $round: the acquire failed: $(cat "$WORK/acquire.err")" >&2; exit 1
  fi
  wait "${PID[$LEADER]}" 2>/dev/null || true
  [ -n "$T_ELECT" ] || { echo "error: round $round: no new leader within 10 s" >&2; exit 1; }
  e=$(ms_since "$T0" "$T_ELECT"); c=$(ms_since "$T0" "$T_CLIENT")
  ELECT+=("$e"); CLIENT+=("$c")
  if [ -n "$LOG_DIR" ]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$LEADER" "$T0" "$T_ELECT" "$T_CLIENT" >>"$LOG_DIR/rounds.tsv"
  fi
  say "round $round: killed leader $LEADER; new leader after $e ms; lock acquired after $c ms"

  start_node "$LEADER"
  for _ in $(seq 150); do
    [ -n "$(leader_seen_by "$LEADER")" ] && break
    sleep 0.1
  done
done

[ "${#ELECT[@]}" -gt 0 ] || { echo "error: no round completed" >&2; exit 1; }
python3 - "${ELECT[*]}" "${CLIENT[*]}" <<'EOF'
import sys
def stats(name, xs):
    xs = sorted(float(x) for x in xs.split())
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    print(f"{name}: rounds {len(xs)}  median {pick(0.5):.0f} ms  p90 {pick(0.9):.0f} ms  max {xs[-1]:.0f} ms")
stats("kill -9 leader -> new leader reported", sys.argv[1])
stats("kill -9 leader -> client holds a lock ", sys.argv[2])
EOF
