"""Fixtures of the Python client's tests: real clusters of `raftlock serve`.

Fixtures
--------
``cluster`` (session-scoped, shared)
    A 3-node plaintext cluster for the whole run. Tests share it, so they
    use names of their own (e.g. the test's name as a prefix) and must not
    kill nodes: ``kill``/``stop``/``start``/``stop_all`` raise on it.
``fresh_cluster`` (function-scoped factory)
    ``fresh_cluster(n=3, *, secure=False, extra_args=())`` starts a new
    cluster (waiting for its leader) that the test may kill and restart
    nodes of; every cluster it made is torn down after the test.
``secure_cluster`` (session-scoped, shared)
    A 3-node cluster with TLS (``raftlock certs``) and an auth file
    (``auth_file``): ``ca_cert``, ``client_cert``/``client_key`` (identity
    ``admin_name`` = "admin", allowed everything) and ``token`` (identity
    ``token_name`` = "limited": inspect, lock and watch on names under
    ``token_prefix`` = "limited/" only). ``channel()`` uses the admin
    certificate.

Every node runs the release binary (``RAFTLOCK_BIN``, default
``<repo>/target/release/raftlock``) on free 127.0.0.1 ports, with its data
and its log (stderr and stdout) in a temporary directory. Every wait is
bounded; at teardown, failed or not, every process is killed and the
directory removed. When a test fails, the tail of each node's log is added
to its report. Each test has a time limit (120 s, ``RAFTLOCK_PYTEST_TIMEOUT_S``
or ``@pytest.mark.timeout_s(N)``) enforced with SIGALRM, so no test hangs.

The fixture speaks to the nodes through the generated stubs only
(``raftlock.v1``), never through the client library it tests.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import grpc
import pytest

from raftlock.v1 import raftlock_pb2, raftlock_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "raftlock"

# How long one Admin.Status call may take before the node counts as not
# answering.
STATUS_CALL_TIMEOUT_S = 1.0
# How long a new cluster may take to elect a leader (the Rust process tests'
# bound: crates/raftlock-testkit/src/process.rs).
LEADER_TIMEOUT_S = 30.0
# Attempts at starting a cluster when a chosen port was taken meanwhile.
START_ATTEMPTS = 4
# What each node's log shows in a failure report: its last lines, each
# cut short (openraft's debug lines run to kilobytes).
LOG_TAIL_LINES = 30
LOG_LINE_CHARS = 300
DEFAULT_TEST_TIMEOUT_S = 120.0

# The secure fixture's identities (docs/security-auth.md).
ADMIN_NAME = "admin"
TOKEN_NAME = "limited"
TOKEN_PREFIX = "limited/"


class ClusterError(RuntimeError):
    """A cluster did not do what a fixture waited for (the message has the
    nodes' answers and log tails)."""


def raftlock_bin() -> Path:
    """The `raftlock` binary the clusters run; fails the test clearly if
    it is missing."""
    path = Path(os.environ.get("RAFTLOCK_BIN") or DEFAULT_BIN)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"no raftlock binary at {path}: build it with "
            "`cargo build --release --locked -p raftlock` or set RAFTLOCK_BIN "
            "(scripts/test.sh does this)",
            pytrace=False,
        )
    return path


def _child_env() -> Dict[str, str]:
    # No configuration leaks into the nodes from whoever runs the tests
    # (as crates/raftlock-testkit's `command`).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOCK_")}
    env["RUST_LOG"] = "info"
    env["NO_COLOR"] = "1"
    return env


# setpriv (util-linux) makes the kernel SIGKILL a node when the test run
# itself dies (kill -9, a CI time limit), which no teardown would survive.
_SETPRIV = shutil.which("setpriv")


def _free_ports(n: int) -> List[int]:
    """`n` distinct ports that were free a moment ago (bound together, then
    released); another process may take one before a node binds it, so
    callers retry."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = LOG_TAIL_LINES, line_chars: int = LOG_LINE_CHARS) -> str:
    """The last `lines` lines of a log, each at most `line_chars` long."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    out = []
    for line in text.splitlines()[-lines:]:
        if len(line) > line_chars:
            line = line[:line_chars] + f"... ({len(line)} chars)"
        out.append(line)
    return "\n".join(out)


def _run(args: Sequence[str], cwd: Path, timeout_s: float = 30.0) -> str:
    """Runs a CLI command to completion (bounded); its stdout."""
    try:
        done = subprocess.run(
            list(args),
            cwd=cwd,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{' '.join(args)} did not finish within {timeout_s} s") from None
    if done.returncode != 0:
        raise ClusterError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode()


class Certs:
    """A CA, node certificates, the ``admin`` client certificate, the
    ``limited`` bearer token and the auth file naming both, made with
    ``raftlock certs`` (docs/security-certs.md) in ``dir``."""

    def __init__(self, binary: Path, dir: Path):
        self.binary = binary
        self.dir = dir
        self._lock = threading.Lock()
        dir.mkdir(parents=True, exist_ok=True)
        self._run("ca")
        self._run("client", "--name", ADMIN_NAME)
        # `token` writes nothing, so it takes no --dir.
        token = json.loads(
            _run([str(binary), "certs", "token", "--name", TOKEN_NAME, "--json"], dir)
        )
        self.ca_cert: Path = dir / "ca.crt"
        self.client_cert: Path = dir / f"client-{ADMIN_NAME}.crt"
        self.client_key: Path = dir / f"client-{ADMIN_NAME}.key"
        self.token: str = token["token"]
        self.auth_file: Path = dir / "auth.toml"
        self.auth_file.write_text(
            f"""# Made by clients/python/tests/conftest.py.
[[role]]
name = "everything"
rules = [{{ prefix = "", allow = ["inspect", "lock", "watch", "admin"] }}]

[[role]]
name = "limited"
rules = [{{ prefix = "{TOKEN_PREFIX}", allow = ["inspect", "lock", "watch"] }}]

[[identity]]
cert = "{ADMIN_NAME}"
roles = ["everything"]

[[identity]]
token_sha256 = "{token["token_sha256"]}"
name = "{TOKEN_NAME}"
roles = ["limited"]
"""
        )

    def _run(self, *args: str) -> str:
        return _run([str(self.binary), "certs", *args, "--dir", str(self.dir)], self.dir)

    def node(self, node_id: int) -> "tuple[Path, Path]":
        """Node `node_id`'s certificate and key (made on first use; valid for
        localhost, 127.0.0.1 and ::1)."""
        crt = self.dir / f"node-{node_id}.crt"
        key = self.dir / f"node-{node_id}.key"
        with self._lock:
            if not crt.exists():
                self._run("node", "--id", str(node_id))
        return crt, key

    def read(self) -> "tuple[bytes, bytes, bytes]":
        """(ca.crt, admin's key, admin's certificate) as bytes, for
        `grpc.ssl_channel_credentials`."""
        return (
            self.ca_cert.read_bytes(),
            self.client_key.read_bytes(),
            self.client_cert.read_bytes(),
        )


class Node:
    """One `raftlock serve` process slot: its ports and data survive
    restarts."""

    def __init__(self, node_id: int, port: int, peer_port: int, dir: Path):
        self.id = node_id
        self.port = port
        self.peer_port = peer_port
        self.data_dir = dir / f"node{node_id}"
        self.log_path = dir / f"node{node_id}.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        self.proc = None


class Cluster:
    """`raftlock serve` nodes 1..n on 127.0.0.1 (see the module's doc).

    Node ids are 1..n; ``endpoints[i - 1]`` is node i's client address.
    """

    def __init__(
        self,
        binary: Path,
        n: int = 3,
        *,
        certs: Optional[Certs] = None,
        extra_args: Sequence[str] = (),
        shared: bool = False,
    ):
        if n < 1:
            raise ValueError("a cluster has at least one node")
        self.binary = binary
        self.certs = certs
        self.extra_args = list(extra_args)
        self.shared = shared
        self.dir = Path(tempfile.mkdtemp(prefix="raftlock-pytest-"))
        self.nodes: Dict[int, Node] = {}
        self._closed = False
        self._credentials: Optional[grpc.ChannelCredentials] = None
        # What a secure cluster's clients need (None on a plaintext one):
        # the CA of the nodes' certificates; the certificate and key of
        # identity `admin_name`, allowed everything; the bearer token of
        # identity `token_name`, allowed inspect, lock and watch on names
        # starting with `token_prefix` only (and Admin.Status).
        self.ca_cert: Optional[Path] = certs.ca_cert if certs else None
        self.client_cert: Optional[Path] = certs.client_cert if certs else None
        self.client_key: Optional[Path] = certs.client_key if certs else None
        self.admin_name: Optional[str] = ADMIN_NAME if certs else None
        self.token: Optional[str] = certs.token if certs else None
        self.token_name: Optional[str] = TOKEN_NAME if certs else None
        self.token_prefix: Optional[str] = TOKEN_PREFIX if certs else None
        self.auth_file: Optional[Path] = certs.auth_file if certs else None
        if certs is not None:
            ca, key, crt = certs.read()
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=crt
            )
        _LIVE.add(self)
        try:
            self._start(n)
        except BaseException:
            self.close()
            raise

    # -- what tests use ----------------------------------------------------

    @property
    def ids(self) -> List[int]:
        return sorted(self.nodes)

    @property
    def endpoints(self) -> List[str]:
        """Every node's client address, "127.0.0.1:P", in id order."""
        return [self.nodes[i].endpoint for i in self.ids]

    @property
    def secure(self) -> bool:
        return self.certs is not None

    def endpoint(self, node_id: int) -> str:
        return self.nodes[node_id].endpoint

    def running_ids(self) -> List[int]:
        return [i for i in self.ids if self.nodes[i].running()]

    def channel(self, node_id: Optional[int] = None) -> grpc.Channel:
        """A new channel to node `node_id` (default: the leader), with the
        admin client certificate on a secure cluster. Close it (it is a
        context manager)."""
        target = self.endpoint(node_id) if node_id is not None else self.leader_endpoint()
        if self._credentials is None:
            return grpc.insecure_channel(target)
        return grpc.secure_channel(target, self._credentials)

    def status(
        self, node_id: int, timeout: float = STATUS_CALL_TIMEOUT_S
    ) -> Optional[raftlock_pb2.StatusResponse]:
        """Admin.Status of node `node_id`, or None if it does not answer
        within `timeout` seconds."""
        # A new channel each time: a channel's reconnect backoff would
        # otherwise hide a restarted node for seconds.
        with self.channel(node_id) as ch:
            try:
                return raftlock_pb2_grpc.AdminStub(ch).Status(
                    raftlock_pb2.StatusRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return None

    def wait_for_leader(
        self, timeout: float = LEADER_TIMEOUT_S, *, not_id: Optional[int] = None
    ) -> int:
        """Waits until every running node answers Admin.Status naming the
        same leader, itself running (and not `not_id`: after killing a
        leader, pass its id to wait for the next one); returns its id.
        Raises ClusterError after `timeout` seconds, or at once if a node
        that was not killed exited."""
        deadline = time.monotonic() + timeout
        seen: Dict[int, Optional[int]] = {}
        while True:
            self._check_alive()
            running = self.running_ids()
            seen = {}
            for i in running:
                s = self.status(i)
                seen[i] = s.leader_id if s is not None and s.HasField("leader_id") else None
            leaders = set(seen.values())
            if len(leaders) == 1:
                leader = leaders.pop()
                if leader is not None and leader in running and leader != not_id:
                    return leader
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no common leader among running nodes {running} within {timeout} s "
                    f"(leader each names: {seen}, not wanted: {not_id})\n{self.logs()}"
                )
            time.sleep(0.05)

    def leader_id(self, timeout: float = 10.0) -> int:
        """The leader every running node names now (waits for one at most
        `timeout` seconds)."""
        return self.wait_for_leader(timeout)

    def leader_endpoint(self, timeout: float = 10.0) -> str:
        return self.endpoint(self.leader_id(timeout))

    def kill(self, node_id: int) -> None:
        """SIGKILLs node `node_id` (no-op if it is not running); its data and
        ports stay for `start`."""
        self._mutable()
        self.nodes[node_id].kill()

    def stop(self, node_id: int, timeout: float = 10.0) -> None:
        """Stops node `node_id` gracefully (SIGTERM), SIGKILL after
        `timeout` seconds."""
        self._mutable()
        node = self.nodes[node_id]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.terminate()
            try:
                node.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        node.kill()

    def start(self, node_id: int, timeout: float = LEADER_TIMEOUT_S) -> None:
        """(Re)starts node `node_id` with its data dir and ports, and waits
        (at most `timeout` seconds) until it answers Admin.Status; it need
        not have found a leader yet (see `wait_for_leader`)."""
        self._mutable()
        node = self.nodes[node_id]
        if node.running():
            raise ClusterError(f"node {node_id} is running already")
        self._spawn(node)
        deadline = time.monotonic() + timeout
        while self.status(node_id) is None:
            if node.proc is not None and node.proc.poll() is not None:
                raise ClusterError(
                    f"node {node_id} exited with {node.proc.returncode} on restart:\n"
                    f"{_tail(node.log_path)}"
                )
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"node {node_id} does not answer within {timeout} s of its restart:\n"
                    f"{_tail(node.log_path)}"
                )
            time.sleep(0.05)

    def stop_all(self) -> None:
        """SIGKILLs every node (their data stays until teardown)."""
        self._mutable()
        self._kill_all()

    def logs(self) -> str:
        """The tail of every node's log, for failure messages."""
        return "".join(
            f"--- node {i} ({self.nodes[i].log_path}) ---\n{_tail(self.nodes[i].log_path)}\n"
            for i in self.ids
        )

    # -- fixtures' own ------------------------------------------------------

    def close(self) -> None:
        """Kills every node and removes the directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._kill_all()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            _LIVE.discard(self)

    def check_healthy(self) -> None:
        """Fails if a node of a shared cluster died (a test must not kill
        them; a crash is a bug to see)."""
        self._check_alive()
        dead = [i for i in self.ids if not self.nodes[i].running()]
        if dead:
            raise ClusterError(f"nodes {dead} of the shared cluster are gone\n{self.logs()}")

    def _mutable(self) -> None:
        if self.shared:
            raise ClusterError(
                "this cluster is shared by the whole test run: use the fresh_cluster "
                "fixture to kill, stop or start nodes"
            )

    def _start(self, n: int) -> None:
        last = ""
        for attempt in range(START_ATTEMPTS):
            self._kill_all()
            attempt_dir = self.dir / f"attempt{attempt}"
            attempt_dir.mkdir()
            ports = _free_ports(2 * n)
            self.nodes = {
                i: Node(i, ports[i - 1], ports[n + i - 1], attempt_dir) for i in range(1, n + 1)
            }
            for node in self.nodes.values():
                self._spawn(node)
            try:
                self.wait_for_leader(LEADER_TIMEOUT_S)
                return
            except _NodeExited as e:
                if "in use" in e.log:
                    # A port taken between choosing and binding it.
                    last = str(e)
                    continue
                raise ClusterError(str(e)) from None
        raise ClusterError(f"could not start a cluster on free ports: {last}")

    def _peers(self) -> str:
        return ",".join(f"{i}=127.0.0.1:{self.nodes[i].peer_port}" for i in self.ids)

    def _spawn(self, node: Node) -> None:
        args = [
            str(self.binary),
            "serve",
            "--id",
            str(node.id),
            "--data-dir",
            str(node.data_dir),
            "--listen",
            f"127.0.0.1:{node.port}",
            "--peer-listen",
            f"127.0.0.1:{node.peer_port}",
            "--peers",
            self._peers(),
        ]
        if self.certs is None:
            args.append("--insecure")
        else:
            crt, key = self.certs.node(node.id)
            args += [
                "--tls-cert",
                str(crt),
                "--tls-key",
                str(key),
                "--tls-ca",
                str(self.certs.ca_cert),
                "--auth",
                str(self.certs.auth_file),
            ]
        args += self.extra_args
        if _SETPRIV is not None:
            args = [_SETPRIV, "--pdeathsig", "KILL", "--", *args]
        with open(node.log_path, "ab") as log:
            log.write(f"=== {' '.join(args)}\n".encode())
            log.flush()
            node.proc = subprocess.Popen(
                args,
                cwd=self.dir,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _check_alive(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                code = node.proc.returncode
                raise _NodeExited(
                    f"node {node.id} exited with {code}:\n{_tail(node.log_path)}",
                    _tail(node.log_path, lines=5, line_chars=100_000),
                )

    def _kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def __repr__(self) -> str:
        return f"Cluster({self.endpoints}, secure={self.secure}, dir={self.dir})"


class _NodeExited(ClusterError):
    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


class ClusterFactory:
    """What `fresh_cluster` is: call it to start a cluster; the fixture
    tears down every one it made."""

    def __init__(self, binary: Path, certs: Callable[[], Certs]):
        self._binary = binary
        self._certs = certs
        self.clusters: List[Cluster] = []

    def __call__(
        self, n: int = 3, *, secure: bool = False, extra_args: Sequence[str] = ()
    ) -> Cluster:
        c = Cluster(
            self._binary,
            n,
            certs=self._certs() if secure else None,
            extra_args=extra_args,
        )
        self.clusters.append(c)
        return c

    def close(self) -> None:
        for c in self.clusters:
            c.close()


# Clusters not closed yet: killed at exit if a teardown never ran (an
# interrupted run).
_LIVE: "set[Cluster]" = set()


@atexit.register
def _close_leftovers() -> None:
    for c in list(_LIVE):
        c.close()


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def raftlock_binary() -> Path:
    return raftlock_bin()


@pytest.fixture(scope="session")
def raftlock_certs(raftlock_binary: Path) -> Iterator[Certs]:
    """The secure clusters' certificates, token and auth file (one set per
    run, removed after it: keys and a token are not left in /tmp)."""
    dir = Path(tempfile.mkdtemp(prefix="raftlock-pytest-certs-"))
    try:
        yield Certs(raftlock_binary, dir / "certs")
    finally:
        shutil.rmtree(dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _shared_cluster(raftlock_binary: Path) -> Iterator[Cluster]:
    c = Cluster(raftlock_binary, 3, shared=True)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def cluster(_shared_cluster: Cluster) -> Cluster:
    """The session's shared plaintext 3-node cluster (see the module doc)."""
    _shared_cluster.check_healthy()
    return _shared_cluster


@pytest.fixture(scope="session")
def _shared_secure_cluster(raftlock_binary: Path, raftlock_certs: Certs) -> Iterator[Cluster]:
    c = Cluster(raftlock_binary, 3, certs=raftlock_certs, shared=True)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def secure_cluster(_shared_secure_cluster: Cluster) -> Cluster:
    """The session's shared 3-node cluster with TLS and auth: ``ca_cert``,
    ``client_cert`` and ``client_key`` (identity "admin", allowed
    everything), ``token`` (identity "limited": inspect, lock and watch
    only on names under ``token_prefix``) and ``auth_file``."""
    _shared_secure_cluster.check_healthy()
    return _shared_secure_cluster


@pytest.fixture
def fresh_cluster(
    raftlock_binary: Path, request: pytest.FixtureRequest
) -> Iterator[ClusterFactory]:
    """A factory of clusters for this test alone (nodes may be killed and
    restarted); they are torn down after it."""
    factory = ClusterFactory(raftlock_binary, lambda: request.getfixturevalue("raftlock_certs"))
    try:
        yield factory
    finally:
        factory.close()


# -- failure reports and time limits -----------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "timeout_s(seconds): this test's time limit instead of the default "
        f"{DEFAULT_TEST_TIMEOUT_S:.0f} s (RAFTLOCK_PYTEST_TIMEOUT_S)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        clusters: List[Cluster] = []
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Cluster):
                clusters.append(value)
            elif isinstance(value, ClusterFactory):
                clusters.extend(value.clusters)
        for c in dict.fromkeys(clusters):
            if not c._closed:
                report.sections.append((f"raftlock node logs ({c.dir})", c.logs()))
    return report


def _test_timeout_s(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout_s")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(os.environ.get("RAFTLOCK_PYTEST_TIMEOUT_S", DEFAULT_TEST_TIMEOUT_S))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    seconds = _test_timeout_s(item)
    if (
        seconds <= 0
        or not hasattr(signal, "SIGALRM")
        or threading.current_thread() is not threading.main_thread()
    ):
        return (yield)

    def on_alarm(signum: int, frame: object) -> None:
        pytest.fail(
            f"{item.nodeid} ran longer than its limit of {seconds:g} s "
            "(@pytest.mark.timeout_s(N) or RAFTLOCK_PYTEST_TIMEOUT_S change it)"
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
