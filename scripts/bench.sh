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
# etcd (package etcd-server) and ZooKeeper (package zookeeper, with
# scripts/zookeeper.sh) are installed with apt-get when missing and this runs
# as root; a peer that cannot be installed or started is left out, said so.
#
# Everything it started is stopped and its temporary directory removed on
# exit, Ctrl-C included. The whole run is bounded by --time-limit.
#
# Usage: scripts/bench.sh [--time-limit SECONDS] [--duration 10s] [--skip-etcd]
#                         [--skip-zookeeper]
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

TIME_LIMIT=600
DURATION=10s
WARMUP=1s
SKIP_ETCD=0
SKIP_ZK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --time-limit) TIME_LIMIT="${2:?--time-limit needs a number of seconds}"; shift 2 ;;
    --time-limit=*) TIME_LIMIT="${1#*=}"; shift ;;
    --duration) DURATION="${2:?--duration needs a value such as 10s}"; shift 2 ;;
    --duration=*) DURATION="${1#*=}"; shift ;;
    --skip-etcd) SKIP_ETCD=1; shift ;;
    --skip-zookeeper) SKIP_ZK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$TIME_LIMIT" in
  ''|*[!0-9]*) echo "error: --time-limit must be a whole number of seconds, got '$TIME_LIMIT'" >&2; exit 2 ;;
esac
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
free_port() {
  local p used="$WORK/ports-handed-out"
  touch "$used"
  for _ in $(seq 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
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
for i in 1 2 3; do
  # Plaintext, as etcd is run here: the comparison is like for like.
  RUST_LOG=warn "$RAFTLOCK" serve --insecure --id "$i" --data-dir "$WORK/raftlock$i" \
    --listen "127.0.0.1:${RL_PORTS[$((i - 1))]}" \
    --peer-listen "127.0.0.1:${RL_PEER_PORTS[$((i - 1))]}" --peers "$RL_PEERS" \
    </dev/null >"$WORK/raftlock$i.log" 2>&1 &
  PIDS+=("$!")
  CLUSTER+=("raftlock$i:$!")
done
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
  for i in 1 2 3; do
    c="http://127.0.0.1:${E_CLIENT[$((i - 1))]}"
    p="http://127.0.0.1:${E_PEER[$((i - 1))]}"
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
      --listen-client-urls "$c" --advertise-client-urls "$c" \
      --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
      --initial-cluster "$E_CLUSTER" --initial-cluster-state new \
      --initial-cluster-token "raftlock-bench-$$" \
      </dev/null >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=("$!")
    CLUSTER+=("etcd$i:$!")
  done
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
    # A bounded heap: three JVMs share the machine with the other two
    # clusters (a JVM's default maximum is a quarter of the RAM).
    java -Xmx1g -cp "$ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zookeeper$i.cfg" \
      </dev/null >"$WORK/zookeeper$i.log" 2>&1 &
    PIDS+=("$!")
    CLUSTER+=("zookeeper$i:$!")
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
    if [ "$(remaining)" -gt 30 ]; then
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
for spec in "seq 1" "distinct 16" "distinct 64" "contended 8"; do
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
    results: .}' \
  "$RESULTS" >"$OUT"

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
failed=$(jq '[.results[] | select(.failed)] | length' "$OUT")
errors=$(jq '[.results[] | .errors_total // 0] | add // 0' "$OUT")
[ "$failed" != 0 ] && echo "($failed run(s) failed; see the JSON)"
[ "$errors" != 0 ] && echo "($errors operation error(s) counted; see the JSON)"
[ -n "$ETCD_SKIPPED" ] && echo "(etcd not run: $ETCD_SKIPPED)"
[ -n "$ZK_SKIPPED" ] && echo "(ZooKeeper not run: $ZK_SKIPPED)"
echo "JSON results: $OUT"
