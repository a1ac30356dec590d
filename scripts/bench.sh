#!/usr/bin/env bash
# Side-by-side benchmark of raftlock, etcd and ZooKeeper on this machine.
#
# Builds raftlock and raftlock-bench (release), starts a 3-node raftlock
# cluster (three `raftlock serve` processes), a 3-node etcd cluster and a
# 3-node ZooKeeper ensemble on free loopback ports, with all data directories
# in one temporary directory (so on the same disk), then runs `raftlock-bench`
# for each workload against each system back to back:
#   seq (1 client), distinct (16 clients), distinct (64 clients),
#   contended (8 clients).
# All three sync to disk before they acknowledge a write: raftlock always
# (fdatasync of its log), etcd always (fdatasync of its WAL; only
# --unsafe-no-fsync, not given here, turns it off), ZooKeeper with
# forceSync=yes (its default, written into its configuration here).
# ZooKeeper's JVMs get 5 s of unmeasured load first (JIT warm-up).
# Prints one table (cycles/s, p50/p99 of a cycle, raftlock's ratio to the
# best peer) and writes the JSON results to target/bench/ (path printed).
#
# Then failover, the same way for all three (--failover-rounds N, default 5
# per system; 0 skips it): each round, for raftlock, etcd and ZooKeeper in
# turn, finds the leader (raftlock: `raftlock status --json` of each node;
# etcd: its maintenance status, member_id == leader; ZooKeeper: the `srvr`
# four-letter command, "Mode: leader"), kills it with SIGKILL, and at once
# starts ONE `raftlock-bench --workload failover` process (the same program
# for the three) with the two survivors as its endpoints. Its retry
# behaviour is the same for all three: an attempt is what a client does to
# take a lock (raftlock: grant a lease, Acquire; etcd: grant a lease,
# v3lock Lock; ZooKeeper: open a session, Curator's InterProcessMutex
# recipe); every call may take 1 s; after ANY failure it pauses 25 ms (no
# backoff, no jitter; etcd's Go client's pause) and tries again, for up to
# 30 s. A lease or session once granted is kept. The next attempt goes to
# the leader a raftlock NOT_LEADER answer named, else to the next survivor
# (raftlock, etcd); ZooKeeper's client library is given both survivors and
# picks and changes the server itself. (tools/raftlock-bench/src/bench/failover.rs
# has the details.) Measured: kill -> the client holds the lock (the client
# computes it from the kill's $EPOCHREALTIME, so it includes starting the
# client process), and kill -> a survivor reports itself leader (polled
# every 25 ms with one status call per survivor: it lags by up to a poll and
# the call's own time). Then the killed node restarts on its data and the
# next round waits until all three serve and agree on a leader. Printed:
# median, p90 and max per system (nearest rank), under the table, with
# each system's timing: all three run with their default timing (raftlock:
# what `raftlock serve --help` says, read from it and printed; etcd:
# heartbeat 100 ms, election timeout 1000 ms, given explicitly; ZooKeeper:
# tickTime 2000 ms, initLimit 10, syncLimit 5, as written below).
# --failover-only skips the throughput workloads (and the JIT warm-up) to
# rerun the failover alone; with --skip-etcd --skip-zookeeper, raftlock's.
# --failover-call-timeout (default 1s) sets the client's per-call deadline:
# an etcd member holds a write it forwarded to a leader that died until the
# client gives up on it, so etcd's figure moves with this setting.
# etcd (package etcd-server) and ZooKeeper (package zookeeper, with
# scripts/zookeeper.sh) are installed with apt-get when missing and this runs
# as root; a peer that cannot be installed or started is left out, said so.
#
# Everything it started is stopped and its temporary directory removed on
# exit, Ctrl-C included. The whole run is bounded by --time-limit.
#
# Usage: scripts/bench.sh [--time-limit SECONDS] [--duration 10s] [--skip-etcd]
#                         [--skip-zookeeper] [--failover-rounds N]
#                         [--failover-only] [--failover-call-timeout 1s]
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

TIME_LIMIT=600
DURATION=10s
WARMUP=1s
SKIP_ETCD=0
SKIP_ZK=0
FAILOVER_ROUNDS=5
FAILOVER_ONLY=0
FAILOVER_CALL_TIMEOUT=1s
# Option $1 needs a value ($2, empty when missing): exit 2 otherwise.
need_value() {
  if [ -z "${2:-}" ]; then
    echo "error: $1 needs a value" >&2; usage >&2; exit 2
  fi
}
while [ $# -gt 0 ]; do
  case "$1" in
    --time-limit) need_value --time-limit "${2:-}"; TIME_LIMIT="$2"; shift 2 ;;
    --time-limit=*) TIME_LIMIT="${1#*=}"; shift ;;
    --duration) need_value --duration "${2:-}"; DURATION="$2"; shift 2 ;;
    --duration=*) DURATION="${1#*=}"; shift ;;
    --skip-etcd) SKIP_ETCD=1; shift ;;
    --skip-zookeeper) SKIP_ZK=1; shift ;;
    --failover-rounds) need_value --failover-rounds "${2:-}"; FAILOVER_ROUNDS="$2"; shift 2 ;;
    --failover-rounds=*) FAILOVER_ROUNDS="${1#*=}"; shift ;;
    --failover-only) FAILOVER_ONLY=1; shift ;;
    --failover-call-timeout) need_value --failover-call-timeout "${2:-}"; FAILOVER_CALL_TIMEOUT="$2"; shift 2 ;;
    --failover-call-timeout=*) FAILOVER_CALL_TIMEOUT="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$TIME_LIMIT" in
  ''|*[!0-9]*) echo "error: --time-limit must be a whole number of seconds, got '$TIME_LIMIT'" >&2; exit 2 ;;
esac
case "$FAILOVER_ROUNDS" in
  ''|*[!0-9]*) echo "error: --failover-rounds must be a whole number (0 skips the failover), got '$FAILOVER_ROUNDS'" >&2; exit 2 ;;
esac
if [ "$FAILOVER_ROUNDS" -gt 100 ]; then
  echo "error: --failover-rounds must be at most 100, got $FAILOVER_ROUNDS" >&2; exit 2
fi
if ! [[ "$FAILOVER_CALL_TIMEOUT" =~ ^[1-9][0-9]{0,5}(ms|s)$ ]]; then
  echo "error: --failover-call-timeout must look like 250ms or 1s, got '$FAILOVER_CALL_TIMEOUT'" >&2; exit 2
fi
if [ "$FAILOVER_ONLY" = 1 ] && [ "$FAILOVER_ROUNDS" = 0 ]; then
  echo "error: --failover-only with --failover-rounds 0 leaves nothing to run" >&2; exit 2
fi
if [ -z "${EPOCHREALTIME:-}" ]; then
  echo "error: needs bash 5 or later (\$EPOCHREALTIME, to date the kills)" >&2; exit 2
fi
case "$DURATION" in
  *ms) DURATION_S=1 ;;
  *s) DURATION_S="${DURATION%s}" ;;
  *m) DURATION_S=$(( ${DURATION%m} * 60 )) ;;
  *) echo "error: --duration must look like 500ms, 10s or 2m, got '$DURATION'" >&2; exit 2 ;;
esac
case "$DURATION_S" in
  ''|*[!0-9]*) echo "error: --duration must look like 500ms, 10s or 2m, got '$DURATION'" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The terminal's stderr, kept on fd 3: a trap may fire inside a command whose
# stderr goes to a file.
exec 3>&2
STARTED=$SECONDS
remaining() { echo $(( TIME_LIMIT - (SECONDS - STARTED) )); }
say() { printf '[bench %3ds] %s\n' "$(( SECONDS - STARTED ))" "$*" >&3; }

WORK=""
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "${#PIDS[@]}" -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      local alive=0
      for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted; stopping everything" >&3; exit 130' INT TERM

# Runs a command for at most $1 seconds, in the background so that Ctrl-C
# is handled at once (the trap runs while `wait` waits). Returns its status
# (124 on timeout).
bounded() {
  local secs=$1; shift
  if [ "$secs" -le 0 ]; then
    echo "error: the time limit of ${TIME_LIMIT} s is used up" >&2
    return 124
  fi
  timeout "$secs" "$@" &
  local pid=$!
  PIDS+=("$pid")
  local rc=0
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

# Drops a reaped pid from PIDS, so the cleanup never signals a reused one.
forget() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# A loopback port nobody listens on and that we have not handed out yet.
# Callers run it in $(...), a subshell, so the ports handed out are kept in
# a file of the work directory, not in a variable the subshell would lose
# (a quorum or election port is not listened on until its server starts).
# Drawn below the kernel's ephemeral range (ip_local_port_range, usually
# from 32768): a port in it can be taken by any outgoing connection between
# this check and the server's bind (seen once: "Address already in use").
free_port() {
  local p used="$WORK/ports-handed-out" low=32768
  touch "$used"
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  [ "$low" -gt 12000 ] || low=32768
  for _ in $(seq 200); do
    p=$(( 10000 + (RANDOM * 32768 + RANDOM) % (low - 10000) ))
    grep -qx "$p" "$used" && continue
    if ! (exec 5<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p" >>"$used"
      echo "$p"
      return 0
    fi
  done
  echo "error: found no free loopback port" >&2
  return 1
}

need_tool() {
  local tool=$1 package=$2
  command -v "$tool" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ]; then
    say "installing $package (for $tool)"
    if bounded "$(remaining)" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >"$WORK/apt-$package.log" 2>&1 \
      || { bounded "$(remaining)" apt-get update -q >>"$WORK/apt-$package.log" 2>&1 \
           && bounded "$(remaining)" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >>"$WORK/apt-$package.log" 2>&1; }; then
      command -v "$tool" >/dev/null 2>&1 && return 0
    fi
    WHY_MISSING="apt-get install $package failed: $(tail -n 3 "$WORK/apt-$package.log" | tr '\n' ' ')"
  else
    WHY_MISSING="$tool is not installed and this is not root (install $package, e.g. sudo apt-get install -y $package)"
  fi
  return 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/raftlock-bench.XXXXXX")"
say "work directory $WORK ($(df -PT "$WORK" | awk 'NR==2 {print $2 " on " $1}'))"

WHY_MISSING=""
if ! need_tool jq jq; then
  echo "error: jq is needed to read the results: $WHY_MISSING" >&2
  exit 1
fi

say "building raftlock and raftlock-bench (release)"
if ! bounded "$(remaining)" cargo build --release --quiet -p raftlock -p raftlock-bench --manifest-path "$ROOT/Cargo.toml"; then
  echo "error: cargo build failed or ran out of time" >&2
  exit 1
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | jq -r .target_directory)"
RAFTLOCK="$TARGET_DIR/release/raftlock"
RAFTLOCK_BENCH="$TARGET_DIR/release/raftlock-bench"

# --- raftlock: three `raftlock serve` processes ---------------------------
# name:pid of every cluster process, to notice one that died.
CLUSTER=()
# Stops the processes of a peer left out of the runs (named PREFIX1..3 in
# CLUSTER): one that exits later must not stop the runs of the others.
drop_peer() {
  local keep=() entry
  for entry in "${CLUSTER[@]}"; do
    case "${entry%%:*}" in
      "$1"*)
        kill "${entry#*:}" 2>/dev/null || true
        wait "${entry#*:}" 2>/dev/null || true
        forget "${entry#*:}"
        ;;
      *) keep+=("$entry") ;;
    esac
  done
  CLUSTER=("${keep[@]}")
}
# Replaces the pid of cluster process $1 (e.g. raftlock2) with $2, or adds
# it: a restarted node has a new pid.
set_member() {
  local keep=() entry
  for entry in "${CLUSTER[@]}"; do
    [ "${entry%%:*}" = "$1" ] || keep+=("$entry")
  done
  CLUSTER=("${keep[@]}" "$1:$2")
}
# The pid of cluster process $1, or nothing.
member_pid() {
  local entry
  for entry in "${CLUSTER[@]}"; do
    [ "${entry%%:*}" = "$1" ] && { echo "${entry#*:}"; return 0; }
  done
  return 0
}
cluster_alive() {
  local entry
  for entry in "${CLUSTER[@]}"; do
    if ! kill -0 "${entry#*:}" 2>/dev/null; then
      say "${entry%%:*} exited; its log ends with:"
      tail -n 5 "$WORK/${entry%%:*}.log" >&2
      return 1
    fi
  done
}
RL_PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
RL_PEER_PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
# --peers names the peer ports; clients use the client ports.
RL_PEERS="1=127.0.0.1:${RL_PEER_PORTS[0]},2=127.0.0.1:${RL_PEER_PORTS[1]},3=127.0.0.1:${RL_PEER_PORTS[2]}"
RL_ENDPOINTS="127.0.0.1:${RL_PORTS[0]},127.0.0.1:${RL_PORTS[1]},127.0.0.1:${RL_PORTS[2]}"
# Node $1, on its data directory (a restart after a kill reuses it).
# Plaintext, as etcd is run here: the comparison is like for like. Its
# default timing: no RAFTLOCK_* timing variable of the caller leaks in.
start_raftlock() {
  local i=$1
  env -u RAFTLOCK_HEARTBEAT_MS -u RAFTLOCK_ELECTION_TIMEOUT_MS -u RAFTLOCK_ELECTION_TIMEOUT_MIN_MS \
    -u RAFTLOCK_ELECTION_TIMEOUT_MAX_MS RUST_LOG=warn \
    "$RAFTLOCK" serve --insecure --id "$i" --data-dir "$WORK/raftlock$i" \
    --listen "127.0.0.1:${RL_PORTS[$((i - 1))]}" \
    --peer-listen "127.0.0.1:${RL_PEER_PORTS[$((i - 1))]}" --peers "$RL_PEERS" \
    </dev/null >>"$WORK/raftlock$i.log" 2>&1 &
  PIDS+=("$!")
  set_member "raftlock$i" "$!"
}
for i in 1 2 3; do start_raftlock "$i"; done
# The timing it runs with, as its --help states the defaults.
RL_HEARTBEAT="$("$RAFTLOCK" serve --help 2>/dev/null | awk '/--heartbeat-ms/ {getline; if (match($0, /default: [0-9]+/)) print substr($0, RSTART + 9, RLENGTH - 9); exit}' || true)"
RL_ELECTION="$("$RAFTLOCK" serve --help 2>/dev/null | awk '/--election-timeout-ms/ {getline; if (match($0, /default: [0-9]+-[0-9]+/)) print substr($0, RSTART + 9, RLENGTH - 9); exit}' || true)"
RL_TIMING="heartbeat ${RL_HEARTBEAT:-?} ms, election timeout ${RL_ELECTION:-?} ms (its defaults, from raftlock serve --help)"
say "raftlock nodes on $RL_ENDPOINTS; waiting for a leader"
rl_ready=0
for _ in $(seq 150); do
  if "$RAFTLOCK" status --json --timeout-ms 500 --endpoints "$RL_ENDPOINTS" 2>/dev/null \
    | jq -e '.leader_id != null' >/dev/null 2>&1; then
    rl_ready=1; break
  fi
  [ "$(remaining)" -le 0 ] && break
  sleep 0.2
done
if [ "$rl_ready" != 1 ]; then
  echo "error: the raftlock cluster elected no leader within 30 s; its logs:" >&2
  tail -n 20 "$WORK"/raftlock*.log >&2
  exit 1
fi

# --- etcd: three members ----------------------------------------------------
ETCD_ENDPOINTS=""
ETCD_VERSION=""
if [ "$SKIP_ETCD" = 1 ]; then
  ETCD_SKIPPED="--skip-etcd"
elif ! need_tool etcd etcd-server; then
  ETCD_SKIPPED="$WHY_MISSING"
else
  ETCD_SKIPPED=""
  ETCD_VERSION="$(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3; exit}')"
  E_CLIENT=("$(free_port)" "$(free_port)" "$(free_port)")
  E_PEER=("$(free_port)" "$(free_port)" "$(free_port)")
  E_CLUSTER="e1=http://127.0.0.1:${E_PEER[0]},e2=http://127.0.0.1:${E_PEER[1]},e3=http://127.0.0.1:${E_PEER[2]}"
fi
# Member $1 (on a restart etcd finds its data directory and ignores the
# --initial-* flags). Its default timing, given explicitly so no ETCD_*
# variable of the caller changes it: heartbeat 100 ms, election 1000 ms.
ETCD_TIMING="heartbeat 100 ms, election timeout 1000 ms (its defaults)"
start_etcd() {
  local i=$1 c p
  c="http://127.0.0.1:${E_CLIENT[$((i - 1))]}"
  p="http://127.0.0.1:${E_PEER[$((i - 1))]}"
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
    --initial-cluster "$E_CLUSTER" --initial-cluster-state new \
    --initial-cluster-token "raftlock-bench-$$" \
    --heartbeat-interval 100 --election-timeout 1000 \
    </dev/null >>"$WORK/etcd$i.log" 2>&1 &
  PIDS+=("$!")
  set_member "etcd$i" "$!"
}
if [ -z "$ETCD_SKIPPED" ]; then
  for i in 1 2 3; do start_etcd "$i"; done
  say "etcd $ETCD_VERSION members on ports ${E_CLIENT[*]}; waiting until healthy"
  etcd_ready=0
  for _ in $(seq 150); do
    healthy=0
    for port in "${E_CLIENT[@]}"; do
      curl -fsS -m 1 "http://127.0.0.1:$port/health" 2>/dev/null | jq -e '.health == "true"' >/dev/null 2>&1 \
        && healthy=$((healthy + 1))
    done
    if [ "$healthy" = 3 ]; then etcd_ready=1; break; fi
    [ "$(remaining)" -le 0 ] && break
    sleep 0.2
  done
  if [ "$etcd_ready" != 1 ]; then
    ETCD_SKIPPED="etcd did not become healthy within 30 s (logs: $(tail -n 3 "$WORK/etcd1.log" | tr '\n' ' '))"
  else
    # The leader first: raftlock's clients go to its leader, so etcd's do
    # too (etcd would forward from a follower, at a cost).
    leader_port=""
    for port in "${E_CLIENT[@]}"; do
      if curl -fsS -m 1 -X POST -d '{}' "http://127.0.0.1:$port/v3/maintenance/status" 2>/dev/null \
        | jq -e '.header.member_id == .leader' >/dev/null 2>&1; then
        leader_port=$port
      fi
    done
    ETCD_ENDPOINTS="${leader_port:+127.0.0.1:$leader_port,}127.0.0.1:${E_CLIENT[0]},127.0.0.1:${E_CLIENT[1]},127.0.0.1:${E_CLIENT[2]}"
    say "etcd is healthy; leader at ${leader_port:-unknown}"
  fi
fi
if [ -n "$ETCD_SKIPPED" ]; then
  say "running without etcd: $ETCD_SKIPPED"
  drop_peer etcd
fi

# --- ZooKeeper: three servers -------------------------------------------------
# The 4-letter command `srvr` of the server on port $1 ("Mode: leader" ...).
zk_srvr() {
  (exec 5<>"/dev/tcp/127.0.0.1/$1" && echo srvr >&5 && timeout 1 cat <&5) 2>/dev/null || true
}
ZK_ENDPOINTS=""
ZK_VERSION=""
if [ "$SKIP_ZK" != 1 ] && ! "$ROOT/scripts/zookeeper.sh" version >/dev/null 2>&1; then
  say "installing ZooKeeper (Debian's zookeeper package and a Java runtime)"
fi
if [ "$SKIP_ZK" = 1 ]; then
  ZK_SKIPPED="--skip-zookeeper"
elif ! bounded "$(remaining)" "$ROOT/scripts/zookeeper.sh" install 2>"$WORK/zookeeper-install.err"; then
  ZK_SKIPPED="$(tr '\n' ' ' <"$WORK/zookeeper-install.err")"
else
  ZK_SKIPPED=""
  ZK_VERSION="$("$ROOT/scripts/zookeeper.sh" version)"
  ZK_CP="$("$ROOT/scripts/zookeeper.sh" classpath)"
  Z_CLIENT=("$(free_port)" "$(free_port)" "$(free_port)")
  Z_QUORUM=("$(free_port)" "$(free_port)" "$(free_port)")
  Z_ELECT=("$(free_port)" "$(free_port)" "$(free_port)")
fi
ZK_TIMING="tickTime 2000 ms, initLimit 10, syncLimit 5 (the values of its sample zoo.cfg, as Debian ships it)"
# Server $1, on its configuration and data directory written below.
start_zookeeper() {
  local i=$1
  # A bounded heap: three JVMs share the machine with the other two
  # clusters (a JVM's default maximum is a quarter of the RAM).
  java -Xmx1g -cp "$ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zookeeper$i.cfg" \
    </dev/null >>"$WORK/zookeeper$i.log" 2>&1 &
  PIDS+=("$!")
  set_member "zookeeper$i" "$!"
}
if [ -z "$ZK_SKIPPED" ]; then
  for i in 1 2 3; do
    mkdir -p "$WORK/zookeeper$i"
    echo "$i" >"$WORK/zookeeper$i/myid"
    # forceSync=yes: the transaction log is fsynced before a write is
    # acknowledged (ZooKeeper's default, stated so nobody wonders).
    # maxClientCnxns=0: no limit on connections from one address (the
    # default, 60, refuses the 64 clients of distinct/64 on loopback).
    # The AdminServer (an HTTP port) is off; `srvr` tells the leader.
    {
      echo "tickTime=2000"
      echo "initLimit=10"
      echo "syncLimit=5"
      echo "dataDir=$WORK/zookeeper$i"
      echo "clientPortAddress=127.0.0.1"
      echo "clientPort=${Z_CLIENT[$((i - 1))]}"
      echo "forceSync=yes"
      echo "maxClientCnxns=0"
      echo "admin.enableServer=false"
      echo "4lw.commands.whitelist=srvr,ruok"
      for j in 1 2 3; do
        echo "server.$j=127.0.0.1:${Z_QUORUM[$((j - 1))]}:${Z_ELECT[$((j - 1))]}"
      done
    } >"$WORK/zookeeper$i.cfg"
    start_zookeeper "$i"
  done
  say "ZooKeeper $ZK_VERSION servers on ports ${Z_CLIENT[*]}; waiting for a quorum"
  zk_leader=""
  for _ in $(seq 150); do
    serving=0
    for port in "${Z_CLIENT[@]}"; do
      mode="$(zk_srvr "$port" | awk '/^Mode:/ {print $2}')"
      case "$mode" in
        leader) zk_leader=$port; serving=$((serving + 1)) ;;
        follower) serving=$((serving + 1)) ;;
      esac
    done
    if [ "$serving" = 3 ] && [ -n "$zk_leader" ]; then break; fi
    zk_leader=""
    [ "$(remaining)" -le 0 ] && break
    sleep 0.2
  done
  if [ -z "$zk_leader" ]; then
    ZK_SKIPPED="ZooKeeper formed no quorum within 30 s (logs: $(tail -n 3 "$WORK/zookeeper1.log" | tr '\n' ' '))"
  else
    # The leader first, as for etcd: every write goes through it, and a
    # session at a follower would add a forwarding hop to each.
    ZK_ENDPOINTS="127.0.0.1:$zk_leader,127.0.0.1:${Z_CLIENT[0]},127.0.0.1:${Z_CLIENT[1]},127.0.0.1:${Z_CLIENT[2]}"
    say "ZooKeeper has a quorum; leader at $zk_leader"
    # The JVMs compile their hot paths while they run: a few seconds of
    # unmeasured load first, so the first measured workload (seq) does not
    # pay ZooKeeper's JIT warm-up (raftlock and etcd are compiled ahead of
    # time and need none).
    if [ "$FAILOVER_ONLY" = 0 ] && [ "$(remaining)" -gt 30 ]; then
      say "warming ZooKeeper's JIT up (distinct, 16 clients, 5 s, not measured)"
      bounded 30 "$RAFTLOCK_BENCH" --target zookeeper --endpoints "$ZK_ENDPOINTS" \
        --workload distinct --clients 16 --duration 5s --warmup 0ms --json \
        >/dev/null 2>"$WORK/zookeeper-warmup.err" \
        || say "  the warm-up failed: $(tail -n 2 "$WORK/zookeeper-warmup.err" | tr '\n' ' ')"
    fi
  fi
fi
if [ -n "$ZK_SKIPPED" ]; then
  say "running without ZooKeeper: $ZK_SKIPPED"
  drop_peer zookeeper
fi

# --- the runs ---------------------------------------------------------------
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
run_bench() {
  local target=$1 endpoints=$2 workload=$3 clients=$4
  # Warmup, duration, and some room for setup, drain and revokes.
  local need=$(( DURATION_S + 15 ))
  if [ "$(remaining)" -lt "$need" ]; then
    say "skipping $workload on $target: the time limit leaves $(remaining) s, a run needs about $need s"
    return 0
  fi
  say "$workload on $target, $clients client(s), $DURATION"
  local out="$WORK/bench-$target-$workload-$clients.json" rc=0
  bounded "$(remaining)" "$RAFTLOCK_BENCH" --target "$target" --endpoints "$endpoints" \
    --workload "$workload" --clients "$clients" --duration "$DURATION" --warmup "$WARMUP" \
    --json >"$out" 2>"$WORK/bench-$target-$workload-$clients.err" || rc=$?
  if [ "$rc" = 0 ] && jq -e . "$out" >/dev/null 2>&1; then
    jq -c . "$out" >>"$RESULTS"
  else
    say "  failed (exit $rc): $(tail -n 3 "$WORK/bench-$target-$workload-$clients.err" | tr '\n' ' ')"
    jq -nc --arg t "$target" --arg w "$workload" --argjson c "$clients" --argjson rc "$rc" \
      --arg e "$(tail -n 3 "$WORK/bench-$target-$workload-$clients.err")" \
      '{target: $t, workload: $w, clients: $c, failed: true, exit_code: $rc, error: $e}' >>"$RESULTS"
  fi
}
THROUGHPUT_SPECS=("seq 1" "distinct 16" "distinct 64" "contended 8")
[ "$FAILOVER_ONLY" = 1 ] && THROUGHPUT_SPECS=()
for spec in "${THROUGHPUT_SPECS[@]}"; do
  cluster_alive || { say "stopping the runs: a cluster process is gone"; break; }
  # shellcheck disable=SC2086 # split "workload clients"
  set -- $spec
  run_bench raftlock "$RL_ENDPOINTS" "$1" "$2"
  if [ -n "$ETCD_ENDPOINTS" ]; then
    run_bench etcd "$ETCD_ENDPOINTS" "$1" "$2"
  fi
  if [ -n "$ZK_ENDPOINTS" ]; then
    run_bench zookeeper "$ZK_ENDPOINTS" "$1" "$2"
  fi
done

# --- failover ---------------------------------------------------------------
# How a failover client is run (the header explains the choice).
FO_RETRY_PAUSE=25ms
FO_CALL_TIMEOUT=$FAILOVER_CALL_TIMEOUT
FO_DEADLINE=30s
FO_DEADLINE_S=30
FO_CLIENT="one raftlock-bench --workload failover process on the 2 survivors: pause $FO_RETRY_PAUSE after any failure, $FO_CALL_TIMEOUT per call, gives up after $FO_DEADLINE"

# The client port of node $2 (1..3) of system $1.
client_port() {
  case "$1" in
    raftlock) echo "${RL_PORTS[$(($2 - 1))]}" ;;
    etcd) echo "${E_CLIENT[$(($2 - 1))]}" ;;
    zookeeper) echo "${Z_CLIENT[$(($2 - 1))]}" ;;
  esac
}

# How node $2 of system $1 sees the cluster: "leader L" or "follower L"
# (L: the leader it knows, "-" for a ZooKeeper follower, whose `srvr` does
# not name it), or nothing when it does not answer or knows no leader.
node_view() {
  local port
  port="$(client_port "$1" "$2")"
  case "$1" in
    raftlock)
      "$RAFTLOCK" status --json --timeout-ms 500 --endpoints "127.0.0.1:$port" 2>/dev/null \
        | jq -r 'select(.leader_id != null) | "\(.role) \(.leader_id)"' 2>/dev/null || true
      ;;
    etcd)
      # The JSON gateway prints uint64s as strings; leader "0": none known.
      curl -fsS -m 1 -X POST -d '{}' "http://127.0.0.1:$port/v3/maintenance/status" 2>/dev/null \
        | jq -r 'select((.leader // "0") != "0")
                 | (if .header.member_id == .leader then "leader" else "follower" end) + " " + .leader' \
          2>/dev/null || true
      ;;
    zookeeper)
      # A server without a quorum answers "not currently serving requests"
      # and no Mode line.
      case "$(zk_srvr "$port" | awk '/^Mode:/ {print $2}')" in
        leader) echo "leader $2" ;;
        follower) echo "follower -" ;;
      esac
      ;;
  esac
}

# The node (1..3) that leads system $1 if all three serve and agree on
# one leader (raftlock, etcd: all name the same leader; ZooKeeper: all
# serve and exactly one says it leads); else nothing.
whole_leader() {
  local i view serving=0 leading="" named=()
  for i in 1 2 3; do
    view="$(node_view "$1" "$i")"
    [ -n "$view" ] || return 0
    serving=$((serving + 1))
    case "$view" in leader\ *) leading="$leading$i" ;; esac
    named+=("${view#* }")
  done
  [ "$serving" = 3 ] && [ "${#leading}" = 1 ] || return 0
  if [ "$1" != zookeeper ]; then
    [ "${named[0]}" = "${named[1]}" ] && [ "${named[1]}" = "${named[2]}" ] || return 0
  fi
  echo "$leading"
}

# Waits up to $2 seconds until system $1 is whole; prints its leader.
wait_whole() {
  local leader="" until=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$until" ]; do
    leader="$(whole_leader "$1")"
    [ -n "$leader" ] && { echo "$leader"; return 0; }
    sleep 0.2
  done
  return 1
}

# In the background: polls the survivors of system $1 (all but node $2)
# every 25 ms until one says it leads, then writes the epoch to file $3.
poll_new_leader() {
  local i
  for _ in $(seq $((FO_DEADLINE_S * 40))); do
    for i in 1 2 3; do
      [ "$i" = "$2" ] && continue
      case "$(node_view "$1" "$i")" in
        leader\ *) echo "$EPOCHREALTIME" >"$3"; return 0 ;;
      esac
    done
    sleep 0.025
  done
}

declare -A FO_STOPPED=()
# Round $2 of system $1: kill -9 its leader, time the client, restart the
# node, wait until whole again.
failover_round() {
  local system=$1 round=$2 leader victim survivors="" i t0 rc=0 client poller new_leader_ms=""
  local out="$WORK/failover-$system-$round.json" err="$WORK/failover-$system-$round.err"
  if ! leader="$(wait_whole "$system" 60)"; then
    say "failover $system: not whole (3 serving, one leader) within 60 s; no more rounds for it"
    FO_STOPPED[$system]=1
    return 0
  fi
  victim="$(member_pid "$system$leader")"
  if [ -z "$victim" ]; then
    say "failover $system: no process known for its leader, node $leader; no more rounds for it"
    FO_STOPPED[$system]=1
    return 0
  fi
  for i in 1 2 3; do
    [ "$i" = "$leader" ] || survivors="${survivors:+$survivors,}127.0.0.1:$(client_port "$system" "$i")"
  done
  rm -f "$WORK/new-leader"
  t0=$EPOCHREALTIME
  kill -KILL "$victim"
  # The client first, then the poller: nothing delays the client's start.
  timeout $((FO_DEADLINE_S + 10)) "$RAFTLOCK_BENCH" --target "$system" --workload failover \
    --endpoints "$survivors" --since-epoch "$t0" --duration "$FO_DEADLINE" \
    --retry-pause "$FO_RETRY_PAUSE" --call-timeout "$FO_CALL_TIMEOUT" --json >"$out" 2>"$err" &
  client=$!
  PIDS+=("$client")
  poll_new_leader "$system" "$leader" "$WORK/new-leader" &
  poller=$!
  PIDS+=("$poller")
  wait "$client" || rc=$?
  forget "$client"
  # A held lock means a leader exists: the poller's next round sees it.
  for _ in $(seq 80); do kill -0 "$poller" 2>/dev/null || break; sleep 0.025; done
  kill "$poller" 2>/dev/null || true
  wait "$poller" 2>/dev/null || true
  forget "$poller"
  wait "$victim" 2>/dev/null || true
  forget "$victim"
  if [ -s "$WORK/new-leader" ]; then
    new_leader_ms="$(awk -v a="$t0" -v b="$(cat "$WORK/new-leader")" 'BEGIN { printf "%.1f", (b - a) * 1000 }')"
  fi
  if [ "$rc" = 0 ] && jq -e '.held_after_ms' "$out" >/dev/null 2>&1; then
    jq -c --argjson round "$round" --argjson killed "$leader" --arg nl "$new_leader_ms" \
      '. + {round: $round, killed_node: $killed,
            new_leader_ms: (if $nl == "" then null else ($nl | tonumber) end)}' "$out" >>"$RESULTS"
    say "failover $system round $round: killed leader node $leader; new leader seen after ${new_leader_ms:-?} ms;" \
      "lock held after $(jq -r .held_after_ms "$out") ms ($(jq -r .attempts "$out") attempt(s))"
  else
    say "failover $system round $round: the client failed (exit $rc): $(tail -n 2 "$err" | tr '\n' ' ')"
    jq -nc --arg t "$system" --argjson round "$round" --argjson killed "$leader" --argjson rc "$rc" \
      --arg e "$(tail -n 3 "$err")" \
      '{target: $t, workload: "failover", round: $round, killed_node: $killed, failed: true,
        exit_code: $rc, error: $e}' >>"$RESULTS"
  fi
  # The killed node comes back on its data; the next round waits until the
  # cluster is whole again.
  "start_$system" "$leader"
}

FO_SYSTEMS=(raftlock)
[ -n "$ETCD_ENDPOINTS" ] && FO_SYSTEMS+=(etcd)
[ -n "$ZK_ENDPOINTS" ] && FO_SYSTEMS+=(zookeeper)
if [ "$FAILOVER_ROUNDS" -gt 0 ]; then
  say "failover: $FAILOVER_ROUNDS round(s) each of ${FO_SYSTEMS[*]}, in turn; client: $FO_CLIENT"
fi
# Rounds alternate between the systems, so a change of the machine's load
# during the run falls on all three alike.
# The loop's stderr goes to a file: bash reports each SIGKILLed node there
# ("Killed ..."), which is the point of the loop, not news; anything else
# in it is shown afterwards.
for round in $(seq "$FAILOVER_ROUNDS"); do
  cluster_alive || { say "stopping the failover: a cluster process is gone"; break; }
  for system in "${FO_SYSTEMS[@]}"; do
    [ -n "${FO_STOPPED[$system]:-}" ] && continue
    # Up to 60 s for the cluster to be whole, the client's deadline, and
    # a restart.
    if [ "$(remaining)" -lt $((FO_DEADLINE_S + 45)) ]; then
      say "skipping failover round $round of $system and later: the time limit leaves $(remaining) s"
      FO_STOPPED[$system]=1
      continue
    fi
    failover_round "$system" "$round"
  done
done 2>>"$WORK/failover-shell.err"
if grep -v ' Killed ' "$WORK/failover-shell.err" >"$WORK/failover-shell.other" 2>/dev/null \
  && [ -s "$WORK/failover-shell.other" ]; then
  say "the failover loop wrote to stderr:"
  cat "$WORK/failover-shell.other" >&3
fi
# The last restarted nodes: whole again before the cleanup, so their logs
# end cleanly (and a node that cannot come back is said so).
if [ "$FAILOVER_ROUNDS" -gt 0 ]; then
  for system in "${FO_SYSTEMS[@]}"; do
    wait_whole "$system" "$(( $(remaining) < 30 ? ($(remaining) > 0 ? $(remaining) : 1) : 30 ))" >/dev/null \
      || say "failover $system: not whole again after its last round"
  done
fi

# --- report -----------------------------------------------------------------
mkdir -p "$TARGET_DIR/bench"
OUT="$TARGET_DIR/bench/bench-$(date -u +%Y%m%dT%H%M%SZ).json"
jq -s --arg duration "$DURATION" --arg warmup "$WARMUP" --arg etcd "$ETCD_VERSION" \
  --arg skipped "$ETCD_SKIPPED" --arg zk "$ZK_VERSION" --arg zk_skipped "$ZK_SKIPPED" \
  --arg host "$(uname -n)" --argjson cpus "$(nproc)" \
  --arg disk "$(df -PT "$WORK" | awk 'NR==2 {print $2}')" \
  '{started_at: (now | todate), host: $host, cpus: $cpus, disk: $disk, duration: $duration,
    warmup: $warmup, etcd_version: (if $etcd == "" then null else $etcd end),
    etcd_skipped: (if $skipped == "" then null else $skipped end),
    zookeeper_version: (if $zk == "" then null else $zk end),
    zookeeper_skipped: (if $zk_skipped == "" then null else $zk_skipped end),
    durability: {raftlock: "fdatasync of the log before an append is acknowledged (always)",
                 etcd: "fdatasync of the WAL before a write is acknowledged (always; --unsafe-no-fsync not given)",
                 zookeeper: "forceSync=yes: fsync of the transaction log before a write is acknowledged"},
    timing: {raftlock: $rl_timing, etcd: $etcd_timing, zookeeper: $zk_timing},
    failover_rounds: $fo_rounds, failover_client: $fo_client,
    results: .}' \
  --arg rl_timing "$RL_TIMING" --arg etcd_timing "$ETCD_TIMING" --arg zk_timing "$ZK_TIMING" \
  --argjson fo_rounds "$FAILOVER_ROUNDS" --arg fo_client "$FO_CLIENT" \
  "$RESULTS" >"$OUT"

if [ "$FAILOVER_ONLY" = 0 ]; then
echo
echo "raftlock, etcd and ZooKeeper: cycles (acquire + release) per second; p50/p99 of a cycle in ms;"
echo "VS BEST PEER = raftlock's cycles/s over the better of etcd's and ZooKeeper's; $DURATION each after $WARMUP warmup"
jq -r '
  def num(x): if x == null then "-"
    else (x * 100 | round) as $c
      | ($c / 100 | floor | tostring) + "." + ($c % 100 | tostring | if length < 2 then "0" + . else . end)
    end;
  def lat(x): if x == null then "-" else num(x.cycle_ms_p50) + "/" + num(x.cycle_ms_p99) end;
  def pad(n): if n > length then . + (" " * (n - length)) else . end;
  .results as $r
  | def pick($t; $w; $c): $r | map(select(.target == $t and .workload == $w and .clients == $c
                                          and (.failed | not))) | first;
  [["WORKLOAD", "CLIENTS", "RAFTLOCK/S", "ETCD/S", "ZOOKEEPER/S", "VS BEST PEER",
    "RAFTLOCK P50/P99", "ETCD P50/P99", "ZOOKEEPER P50/P99"]]
  + [ (["seq", 1], ["distinct", 16], ["distinct", 64], ["contended", 8]) as [$w, $c]
        | pick("raftlock"; $w; $c) as $a
        | pick("etcd"; $w; $c) as $e
        | pick("zookeeper"; $w; $c) as $z
        | select($a != null or $e != null or $z != null)
        | ([$e, $z] | map(select(. != null) | .cycles_per_s) | max) as $best
        | [$w, ($c | tostring), num($a.cycles_per_s), num($e.cycles_per_s), num($z.cycles_per_s),
           (if $a != null and $best != null and $best > 0
            then num($a.cycles_per_s / $best) + "x" else "-" end),
           lat($a), lat($e), lat($z)] ]
  | . as $rows
  | [range(0; 9) as $i | $rows | map(.[$i] | length) | max] as $widths
  | $rows[] | [range(0; 9) as $i | .[$i] | pad($widths[$i])] | join("  ") | sub(" +$"; "")' "$OUT"
fi
if [ "$FAILOVER_ROUNDS" -gt 0 ]; then
  echo
  echo "Failover: kill -9 of the leader -> the failover client holds a lock (HELD), and -> a survivor"
  echo "reports itself leader (NEW LEADER, polled every 25 ms); ms, median/p90/max (nearest rank)"
  jq -r '
    def pct($xs; $q): ($xs | sort) as $s
      | if ($s | length) == 0 then null
        else $s[[($s | length) - 1, ($q * ($s | length) | floor)] | min] end;
    def ms(x): if x == null then "-" else (x | round | tostring) end;
    def three($xs): ms(pct($xs; 0.5)) + "/" + ms(pct($xs; 0.9)) + "/" + ms($xs | max);
    def pad(n): if n > length then . + (" " * (n - length)) else . end;
    .timing as $timing
    | (.results | map(select(.workload == "failover"))) as $f
    | [["SYSTEM", "ROUNDS OK", "HELD MED/P90/MAX", "NEW LEADER MED/P90/MAX", "ATTEMPTS MED", "TIMING"]]
      + [ ("raftlock", "etcd", "zookeeper") as $t
          | ($f | map(select(.target == $t))) as $r
          | select(($r | length) > 0)
          | ($r | map(select(.failed | not))) as $ok
          | ($ok | map(.held_after_ms)) as $held
          | ($ok | map(.new_leader_ms | select(. != null))) as $lead
          | [$t, "\($ok | length)/\($r | length)", three($held),
             (if ($lead | length) == 0 then "-" else three($lead) end),
             ms(pct($ok | map(.attempts); 0.5)), $timing[$t]] ]
    | . as $rows
    | [range(0; 6) as $i | $rows | map(.[$i] | length) | max] as $widths
    | $rows[] | [range(0; 6) as $i | .[$i] | pad($widths[$i])] | join("  ") | sub(" +$"; "")' "$OUT"
  echo "Client: $FO_CLIENT"
fi
failed=$(jq '[.results[] | select(.failed)] | length' "$OUT")
# Failed attempts of a failover client are its job, not errors.
errors=$(jq '[.results[] | select(.workload != "failover") | .errors_total // 0] | add // 0' "$OUT")
[ "$failed" != 0 ] && echo "($failed run(s) failed; see the JSON)"
[ "$errors" != 0 ] && echo "($errors operation error(s) counted; see the JSON)"
[ -n "$ETCD_SKIPPED" ] && echo "(etcd not run: $ETCD_SKIPPED)"
[ -n "$ZK_SKIPPED" ] && echo "(ZooKeeper not run: $ZK_SKIPPED)"
echo "JSON results: $OUT"
