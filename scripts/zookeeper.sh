#!/usr/bin/env bash
# ZooKeeper for the side-by-side benchmark (scripts/bench.sh): installs
# Debian's `zookeeper` package (which pulls a Java runtime) when it is
# missing, and tells how to run its server.
#
#   scripts/zookeeper.sh install     install it unless it is there (needs root
#                                    and apt-get; does nothing when installed)
#   scripts/zookeeper.sh classpath   print the Java class path of the server
#                                    (main class org.apache.zookeeper.server.quorum.QuorumPeerMain)
#   scripts/zookeeper.sh version     print the installed package's version
#   scripts/zookeeper.sh --help
#
# Exit codes: 0 done, 1 not installed and cannot be (the message says why),
# 2 a usage error.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# What Debian's package installs: the server's jar (its manifest names the
# jars it needs, also from Debian packages) and the JRE it depends on.
ZK_JAR=/usr/share/java/zookeeper.jar
JAVA=/usr/bin/java

installed() { [ -f "$ZK_JAR" ] && [ -x "$JAVA" ]; }

install() {
  installed && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "error: ZooKeeper is not installed ($ZK_JAR or $JAVA missing) and this is not root;" \
      "install Debian's package: sudo apt-get install -y zookeeper" >&2
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ZooKeeper is not installed ($ZK_JAR or $JAVA missing) and apt-get is not" \
      "available here; install ZooKeeper 3.8 (Debian's package 'zookeeper') by other means" >&2
    return 1
  fi
  local log
  log="$(mktemp "${TMPDIR:-/tmp}/zookeeper-apt.XXXXXX")"
  echo "installing Debian's zookeeper package (and a Java runtime); apt-get's output: $log" >&2
  # Without `apt-get update` first the package lists may be missing (a fresh
  # container) or stale (a version no longer on the mirror): try as they
  # are, then update once and try again.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q zookeeper >"$log" 2>&1; then
    if ! { apt-get update -q >>"$log" 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q zookeeper >>"$log" 2>&1; }; then
      echo "error: apt-get install zookeeper failed; the end of its output:" >&2
      tail -n 5 "$log" >&2
      return 1
    fi
  fi
  if ! installed; then
    echo "error: apt-get installed zookeeper but $ZK_JAR or $JAVA is missing (another" \
      "layout than Debian 12's?)" >&2
    return 1
  fi
  rm -f "$log"
}

case "${1:-}" in
  install) install ;;
  classpath)
    installed || { echo "error: ZooKeeper is not installed; run $0 install" >&2; exit 1; }
    echo "$ZK_JAR"
    ;;
  version)
    installed || { echo "error: ZooKeeper is not installed; run $0 install" >&2; exit 1; }
    dpkg-query -W -f '${Version}\n' zookeeper 2>/dev/null || echo unknown
    ;;
  -h|--help) usage ;;
  *) echo "error: expected install, classpath or version, got '${1:-}'" >&2; usage >&2; exit 2 ;;
esac
