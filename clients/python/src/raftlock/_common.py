"""What the blocking client and the asyncio client share: endpoints and TLS
options, the retry policy, how a failed call is classified, request
building, the Python shapes of replies, and the validity arithmetic of a
session. No I/O here."""

from __future__ import annotations

import enum
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
from google.rpc import error_details_pb2, status_pb2

from . import errors
from .v1 import raftlock_pb2 as pb

# Metadata keys (crates/raftlock-proto/src/errors.rs and auth.rs).
REASON_KEY = "raftlock-reason"
LEADER_ID_KEY = "raftlock-leader-id"
LEADER_ADDR_KEY = "raftlock-leader-addr"
ERROR_DOMAIN = "raftlock.dev"
AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# The CLI's environment variables, with the same meaning.
ENV_ENDPOINTS = "RAFTLOCK_ENDPOINTS"
ENV_CA = "RAFTLOCK_CA"
ENV_CERT = "RAFTLOCK_CERT"
ENV_KEY = "RAFTLOCK_KEY"
ENV_TOKEN = "RAFTLOCK_TOKEN"
#: `raftlock dev`'s nodes: the CLI's default endpoints too.
DEV_ENDPOINTS = ("127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403")

MAX_TTL_S = 24 * 3600.0
MIN_TTL_S = 1.0


class Mode(str, enum.Enum):
    """How a request wants to hold a lock."""

    EXCLUSIVE = "exclusive"
    SHARED = "shared"
    SEMAPHORE = "semaphore"

    @property
    def pb(self) -> Any:  # the generated enum type (an int at run time)
        return {
            Mode.EXCLUSIVE: pb.MODE_EXCLUSIVE,
            Mode.SHARED: pb.MODE_SHARED,
            Mode.SEMAPHORE: pb.MODE_SEMAPHORE,
        }[self]

    @staticmethod
    def parse(value: Union["Mode", str]) -> "Mode":
        if isinstance(value, Mode):
            return value
        try:
            return Mode(str(value).lower())
        except ValueError:
            raise errors.InvalidArgument(
                f"mode {value!r}: use 'exclusive', 'shared' or 'semaphore'",
                reason="INVALID_ARGUMENT",
                metadata={"field": "mode"},
            ) from None


def _mode_out(value: Any) -> Optional[Mode]:
    return {
        pb.MODE_EXCLUSIVE: Mode.EXCLUSIVE,
        pb.MODE_SHARED: Mode.SHARED,
        pb.MODE_SEMAPHORE: Mode.SEMAPHORE,
    }.get(value)


# ----- retry policy ----------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How failed attempts are retried: exponential backoff with jitter,
    bounded by ``max_attempts`` and the call's deadline (the Rust client's
    policies, same numbers)."""

    max_attempts: int = 8
    initial_backoff: float = 0.05
    max_backoff: float = 0.4
    jitter: float = 0.2

    @staticmethod
    def none() -> "RetryPolicy":
        """One attempt: the caller retries."""
        return RetryPolicy(1, 0.0, 0.0, 0.0)

    @staticmethod
    def standard() -> "RetryPolicy":
        """8 attempts, 50 ms doubling to 400 ms: rides out one election
        (an answer naming the leader is followed at once and not counted)."""
        return RetryPolicy()

    @staticmethod
    def patient() -> "RetryPolicy":
        """30 attempts, 100 ms doubling to 2 s: about 30 s of trouble."""
        return RetryPolicy(30, 0.1, 2.0, 0.3)

    def backoff(self, attempt: int) -> float:
        """Pause after failed attempt number ``attempt`` (1-based)."""
        base = min(self.initial_backoff * (2 ** min(max(attempt - 1, 0), 20)), self.max_backoff)
        j = min(max(self.jitter, 0.0), 1.0)
        return base * (1.0 - j * random.random())


# ----- endpoints, TLS, identity ---------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A node's client address. ``target`` is what gRPC dials."""

    target: str
    tls: bool

    @property
    def host(self) -> str:
        return self.target.rsplit(":", 1)[0].strip("[]")


def parse_endpoint(text: str, tls_default: bool) -> Endpoint:
    """``host:port``, ``http://host:port`` or ``https://host:port``."""
    raw = text.strip()
    tls = tls_default
    if raw.startswith("https://"):
        raw, tls = raw[len("https://") :], True
    elif raw.startswith("http://"):
        if tls_default:
            raise errors.InvalidArgument(
                f"endpoint {text!r} is http:// while TLS is in use: give host:port or https://",
                reason="INVALID_ENDPOINT",
                metadata={"field": "endpoints"},
            )
        raw = raw[len("http://") :]
    raw = raw.rstrip("/")
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in raw:
        raise errors.InvalidArgument(
            f"endpoint {text!r} is not host:port (e.g. 10.0.0.1:7401)",
            reason="INVALID_ENDPOINT",
            metadata={"field": "endpoints"},
        )
    return Endpoint(raw, tls)


def endpoints_from(endpoints: Union[None, str, Iterable[str]]) -> List[str]:
    """The endpoints given, else RAFTLOCK_ENDPOINTS, else the dev cluster's."""
    if endpoints is None:
        env = os.environ.get(ENV_ENDPOINTS, "")
        endpoints = env if env.strip() else list(DEV_ENDPOINTS)
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",")]
    out = [e.strip() for e in endpoints if e and e.strip()]
    if not out:
        raise errors.InvalidArgument(
            "no endpoints: give at least one host:port",
            reason="INVALID_ENDPOINT",
            metadata={"field": "endpoints"},
        )
    return out


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise errors.InvalidArgument(
            f"cannot read the {what} {path}: {e.strerror or e}",
            reason="INVALID_ARGUMENT",
            metadata={"field": what.split()[0]},
        ) from None
    if b"-----BEGIN" not in data:
        raise errors.InvalidArgument(
            f"the {what} {path} holds no PEM data",
            reason="INVALID_ARGUMENT",
            metadata={"field": what.split()[0]},
        )
    return data


@dataclass(frozen=True)
class Credentials:
    """TLS files and token, as read once when the client is made."""

    ca: Optional[bytes]
    cert: Optional[bytes]
    key: Optional[bytes]
    token: Optional[str]

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def call_metadata(self) -> Tuple[Tuple[str, str], ...]:
        if self.token is None:
            return ()
        return ((AUTHORIZATION_KEY, BEARER_PREFIX + self.token),)


def credentials_from(
    ca: Optional[str], cert: Optional[str], key: Optional[str], token: Optional[str], use_env: bool
) -> Credentials:
    """Paths and token given, else (with ``use_env``) RAFTLOCK_CA,
    RAFTLOCK_CERT, RAFTLOCK_KEY, RAFTLOCK_TOKEN, as the CLI reads them."""

    def pick(value: Optional[str], env: str) -> Optional[str]:
        if value is not None:
            return value
        if use_env:
            v = os.environ.get(env, "")
            return v if v.strip() else None
        return None

    ca, cert, key, token = (
        pick(ca, ENV_CA),
        pick(cert, ENV_CERT),
        pick(key, ENV_KEY),
        pick(token, ENV_TOKEN),
    )
    if (cert is None) != (key is None):
        raise errors.InvalidArgument(
            "a client certificate needs its key and a key its certificate (cert= and key=, "
            f"or {ENV_CERT} and {ENV_KEY})",
            reason="INVALID_ARGUMENT",
            metadata={"field": "cert" if cert is None else "key"},
        )
    if token is not None and (not token or any(c <= " " or c > "~" for c in token)):
        raise errors.InvalidArgument(
            "the token must be printable ASCII without spaces",
            reason="INVALID_ARGUMENT",
            metadata={"field": "token"},
        )
    return Credentials(
        ca=_read(ca, "ca file") if ca else None,
        cert=_read(cert, "cert file") if cert else None,
        key=_read(key, "key file") if key else None,
        token=token,
    )


CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # Reconnect quickly to a node that came back (the default backoff
    # grows to 2 minutes, longer than any lock wait).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)


class ClientBase:
    """What both clients (blocking and asyncio) keep, with no I/O: the
    options, the endpoints and which one the next call goes to (the leader,
    once a reply named it)."""

    def __init__(
        self,
        endpoints: Union[None, str, Iterable[str]],
        *,
        retry: Optional[RetryPolicy],
        call_timeout: float,
        ca: Optional[str],
        cert: Optional[str],
        key: Optional[str],
        token: Optional[str],
        use_env: bool,
    ) -> None:
        self.retry = retry or RetryPolicy.standard()
        self.call_timeout = float(call_timeout)
        if not self.call_timeout > 0:
            raise errors.InvalidArgument(
                "call_timeout must be > 0 seconds", reason="INVALID_ARGUMENT", metadata={"field": "call_timeout"}
            )
        names = endpoints_from(endpoints)
        self._creds = credentials_from(ca, cert, key, token, use_env)
        tls = self._creds.tls or any(e.strip().startswith("https://") for e in names)
        self._tls = tls
        self._endpoints: List[Endpoint] = []
        for e in names:
            ep = parse_endpoint(e, tls)
            if ep not in self._endpoints:
                self._endpoints.append(ep)
        self._lock = threading.Lock()
        self._current = 0

    @property
    def endpoints(self) -> List[str]:
        """The endpoints known: those given, then leaders learnt from replies."""
        with self._lock:
            return [e.target for e in self._endpoints]

    @property
    def current_endpoint(self) -> str:
        """Where the next call goes (the leader, once a reply named it)."""
        with self._lock:
            return self._endpoints[self._current].target

    def _pick(self) -> Endpoint:
        with self._lock:
            return self._endpoints[self._current]

    def _prefer(self, addr: Optional[str]) -> None:
        """Send the next calls to ``addr`` (a leader a node named)."""
        if not addr:
            return
        try:
            ep = parse_endpoint(addr, self._tls)
        except errors.Error:
            return
        with self._lock:
            if ep not in self._endpoints:
                self._endpoints.append(ep)
            self._current = self._endpoints.index(ep)

    def _advance(self, failed: Endpoint) -> None:
        with self._lock:
            if self._endpoints[self._current] == failed:
                self._current = (self._current + 1) % len(self._endpoints)

    def _metadata(self) -> Tuple[Tuple[str, str], ...]:
        return self._creds.call_metadata()

    def _deadline(self, timeout: Optional[float]) -> float:
        """The monotonic instant a call given ``timeout`` (default:
        ``call_timeout``) ends by."""
        t = self.call_timeout if timeout is None else float(timeout)
        if not t > 0:
            raise errors.InvalidArgument(
                f"timeout must be > 0 seconds, not {timeout!r}",
                reason="INVALID_ARGUMENT",
                metadata={"field": "timeout"},
            )
        return time.monotonic() + t

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoints={self.endpoints!r}, tls={self._tls})"


# ----- classifying failures --------------------------------------------------


class Applied(enum.Enum):
    NO = "no"
    UNDONE = "undone"
    UNKNOWN = "unknown"


class Retry(enum.Enum):
    NEVER = "never"
    AFTER_PAUSE = "after_pause"
    IF_IDEMPOTENT = "if_idempotent"
    AT_LEADER = "at_leader"


# reason -> (applied, retry), the proto's ErrorReason table.
_RULES: Dict[str, Tuple[Applied, Retry]] = {
    "WAIT_TIMEOUT": (Applied.UNDONE, Retry.NEVER),
    "WAIT_DROPPED": (Applied.UNDONE, Retry.NEVER),
    "NOT_LEADER": (Applied.NO, Retry.AFTER_PAUSE),
    "NO_LEADER": (Applied.NO, Retry.AFTER_PAUSE),
    "OUTCOME_UNKNOWN": (Applied.UNKNOWN, Retry.IF_IDEMPOTENT),
    "SHUTTING_DOWN": (Applied.UNKNOWN, Retry.IF_IDEMPOTENT),
    "TIMEOUT": (Applied.UNKNOWN, Retry.IF_IDEMPOTENT),
    "INTERNAL": (Applied.UNKNOWN, Retry.NEVER),
    "RATE_LIMITED": (Applied.NO, Retry.AFTER_PAUSE),
}

# A name that does not resolve: nothing was sent. Checked before the TLS
# words, which a host's name may contain ("tls-node-1").
_UNRESOLVED = (
    "dns resolution failed",
    "name resolution failure",
    "errors resolving",
    "domain name not found",
)
_NEVER_SENT = _UNRESOLVED + (
    "failed to connect to all addresses",
    "connection refused",
    "dns resolution failed",
    "name resolution failure",
    "no route to host",
    "deadline exceeded while connecting",
)
_TLS_WORDS = (
    "ssl",
    "tls",
    "handshake",
    "certificate",
    "x509",
    # grpcio 1.85's words for a certificate that does not name the host
    "hostname verification",
    "verification check failed",
)


@dataclass
class Failure:
    """One failed attempt, classified."""

    reason: Optional[str]  # a node's reason name; None when the status had none
    code: grpc.StatusCode
    message: str
    metadata: Dict[str, str]
    applied: Applied
    retry: Retry
    leader_addr: Optional[str]
    tls: bool = False

    def error(self, attempts: int = 1) -> errors.Error:
        """The exception for this failure on its own."""
        if self.tls:
            return errors.TlsError(
                f"{self.message} (check the CA, the client certificate and that the node "
                "speaks TLS: https:// endpoints or ca= need a TLS node, plain host:port "
                "without TLS options a plaintext one)",
                reason="TLS",
                code=self.code,
                attempts=attempts,
            )
        if self.reason is not None:
            return errors.error_for(
                self.reason, self.message, code=self.code, metadata=self.metadata, attempts=attempts
            )
        name = self.code.name if self.code is not None else "UNKNOWN"
        if self.code == grpc.StatusCode.INVALID_ARGUMENT:
            return errors.InvalidArgument(self.message, reason="INVALID_ARGUMENT", code=self.code)
        if self.code == grpc.StatusCode.UNAUTHENTICATED:
            return errors.Unauthenticated(self.message, reason="UNAUTHENTICATED", code=self.code)
        if self.code == grpc.StatusCode.PERMISSION_DENIED:
            return errors.Denied(self.message, reason="DENIED", code=self.code)
        if self.code == grpc.StatusCode.UNAVAILABLE and self.applied == Applied.NO:
            return errors.Unavailable(self.message, reason="UNAVAILABLE", code=self.code, attempts=attempts)
        return errors.InternalError(self.message, reason=name, code=self.code, attempts=attempts)


def _md_get(md: Optional[Sequence[Tuple[str, Union[str, bytes]]]], key: str) -> Optional[Union[str, bytes]]:
    for k, v in md or ():
        if k == key:
            return v
    return None


def leader_addr_in(md: Optional[Sequence[Tuple[str, Union[str, bytes]]]]) -> Optional[str]:
    v = _md_get(md, LEADER_ADDR_KEY)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v or None


def classify(
    code: grpc.StatusCode, details: Optional[str], trailing: Optional[Sequence[Tuple[str, Union[str, bytes]]]]
) -> Failure:
    """What a failed attempt means (the Rust client's `classify`)."""
    message = details or ""
    reason: Optional[str] = None
    info_md: Dict[str, str] = {}
    raw = _md_get(trailing, STATUS_DETAILS_KEY)
    if isinstance(raw, bytes):
        try:
            st = status_pb2.Status.FromString(raw)
            for any_ in st.details:
                if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    ei = error_details_pb2.ErrorInfo()
                    any_.Unpack(ei)
                    if ei.domain == ERROR_DOMAIN:
                        reason = ei.reason
                        info_md = dict(ei.metadata)
        except Exception:  # a proxy's garbage: judged by the code below
            reason = None
    if reason is None:
        r = _md_get(trailing, REASON_KEY)
        if isinstance(r, bytes):
            r = r.decode("utf-8", "replace")
        reason = r or None
    leader = info_md.get("leader_addr") or leader_addr_in(trailing)
    if reason is not None:
        if reason in errors._BY_REASON:
            applied, retry = _RULES.get(reason, (Applied.NO, Retry.NEVER))
            if reason == "NOT_LEADER" and leader:
                retry = Retry.AT_LEADER
        else:
            # A newer node's reason: may have been applied, do not retry.
            applied, retry = Applied.UNKNOWN, Retry.NEVER
        return Failure(reason, code, message, info_md, applied, retry, leader)
    lower = message.lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(w in lower for w in _UNRESOLVED):
        return Failure(None, code, message, {}, Applied.NO, Retry.AFTER_PAUSE, None)
    if code == grpc.StatusCode.UNAVAILABLE and any(w in lower for w in _TLS_WORDS):
        return Failure(None, code, message, {}, Applied.NO, Retry.NEVER, None, tls=True)
    if code == grpc.StatusCode.UNAVAILABLE and any(w in lower for w in _NEVER_SENT):
        return Failure(None, code, message, {}, Applied.NO, Retry.AFTER_PAUSE, None)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED):
        return Failure(None, code, message, {}, Applied.UNKNOWN, Retry.IF_IDEMPOTENT, None)
    return Failure(None, code, message, {}, Applied.UNKNOWN, Retry.NEVER, None)


def failure_of(e: grpc.RpcError) -> Failure:
    """A failed call's status (blocking or grpc.aio), classified."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    trailing = e.trailing_metadata() if hasattr(e, "trailing_metadata") else None
    return classify(code, details, trailing)


#: Keep-alive refusals that mean the lease is gone.
LEASE_GONE = frozenset({"LEASE_NOT_FOUND", "LEASE_EXPIRING"})


def watch_gives_up(f: Failure) -> bool:
    """Whether a watch stream that failed so is not reopened: a compacted
    start, a cut-off slow watcher, TLS, or any definite refusal but the
    leader ones and rate limiting (which are retried)."""
    if f.tls or f.reason in ("COMPACTED", "SLOW_WATCHER"):
        return True
    return f.reason in errors.DEFINITE_REFUSALS and f.reason not in ("NOT_LEADER", "NO_LEADER", "RATE_LIMITED")


@dataclass(frozen=True)
class NextStep:
    """After a failed attempt: raise ``error``; or the call is ``done``
    (returns None); or retry after ``pause`` seconds, at ``leader`` if
    named (else at the next endpoint)."""

    error: Optional[errors.Error] = None
    done: bool = False
    pause: float = 0.0
    leader: Optional[str] = None


class Attempts:
    """The bookkeeping of one logical call across its attempts: what the
    final error is when they run out (the Rust client's rules)."""

    def __init__(self, policy: RetryPolicy, idempotent: bool) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.count = 0
        # Attempts counted against ``max_attempts``: an answer naming the
        # leader is not, unless that attempt had itself gone to a named
        # leader (the Rust client's rule: in a failover each pause costs one
        # attempt, and nodes naming each other still use attempts up).
        self.counted = 0
        self.redirected = False
        self.maybe_applied = False
        self.last: Optional[Failure] = None

    def failed(self, f: Failure) -> Tuple[Optional[errors.Error], float, Optional[str]]:
        """Record a failure: (error to raise now or None, pause before the
        next attempt, leader to try next)."""
        self.last = f
        if f.tls:
            return f.error(self.count), 0.0, None
        if f.applied == Applied.UNKNOWN and f.retry != Retry.NEVER:
            self.maybe_applied = True
        if f.retry == Retry.NEVER or (f.retry == Retry.IF_IDEMPOTENT and not self.idempotent):
            definite = f.reason is not None and f.reason in errors.DEFINITE_REFUSALS
            if (self.maybe_applied or f.applied == Applied.UNKNOWN) and not definite:
                return self.unknown(), 0.0, None
            return f.error(self.count), 0.0, None
        redirect = f.retry == Retry.AT_LEADER and f.leader_addr is not None
        after_redirect, self.redirected = self.redirected, False
        if not redirect or after_redirect:
            self.counted += 1
        if self.counted >= self.policy.max_attempts:
            return self.exhausted(), 0.0, None
        if f.retry == Retry.AT_LEADER:
            self.redirected = redirect
            return None, 0.0, f.leader_addr
        return None, self.policy.backoff(self.counted), f.leader_addr

    def after(
        self, e: grpc.RpcError, deadline: float, not_holder_after_unknown_is_done: bool = False
    ) -> "NextStep":
        """What to do after attempt ``e`` failed, in a call ending by
        ``deadline`` (monotonic seconds): raise, count the call as done, or
        retry (after a pause, at a leader). Both clients' ``_call``."""
        f = failure_of(e)
        if f.reason is None and f.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() >= deadline:
            self.last = f
            return NextStep(error=self.deadline(sent=True))
        was_unknown = self.maybe_applied
        err, pause, leader = self.failed(f)
        if err is not None:
            if was_unknown and f.reason == "NOT_HOLDER":
                if not_holder_after_unknown_is_done:
                    return NextStep(done=True)  # the earlier attempt released it
                # Several names, or not a release: which attempt did what is
                # not known.
                return NextStep(error=self.unknown())
            return NextStep(error=err)
        return NextStep(pause=pause, leader=leader)

    def unknown(self) -> errors.Error:
        f = self.last
        return errors.OutcomeUnknown(
            f"the call may have been applied; its outcome is unknown after {self.count} "
            f"attempt(s): {f.message if f else ''}",
            reason="OUTCOME_UNKNOWN",
            code=f.code if f else None,
            attempts=self.count,
        )

    def exhausted(self) -> errors.Error:
        if self.maybe_applied:
            return self.unknown()
        f = self.last
        return errors.Unavailable(
            f"no node took the call in {self.count} attempt(s): "
            f"{(f.reason or f.code.name) + ': ' + f.message if f else ''}",
            reason="UNAVAILABLE",
            code=f.code if f else None,
            attempts=self.count,
        )

    def deadline(self, sent: bool) -> errors.Error:
        """The call's own deadline passed (``sent``: an attempt was under
        way when it did)."""
        f = self.last
        return errors.DeadlineExceeded(
            f"the call's deadline passed after {self.count} attempt(s)"
            + (f": last {(f.reason or f.code.name)}: {f.message}" if f else ""),
            reason="DEADLINE_EXCEEDED",
            applied_unknown=sent or self.maybe_applied,
            attempts=self.count,
        )


# ----- input checks ----------------------------------------------------------


def seconds_to_ms(value: float, what: str) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise errors.InvalidArgument(
            f"{what} must be a number of seconds, not {value!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": what},
        ) from None
    if v != v or v < 0 or v == float("inf"):
        raise errors.InvalidArgument(
            f"{what} must be a finite number of seconds >= 0, not {value!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": what},
        )
    return int(round(v * 1000))


def ttl_ms(ttl: float) -> int:
    ms = seconds_to_ms(ttl, "ttl")
    if not MIN_TTL_S * 1000 <= ms <= MAX_TTL_S * 1000:
        raise errors.InvalidArgument(
            f"ttl {ttl!r} s is out of range: 1 s to 24 h",
            reason="TTL_OUT_OF_RANGE",
            metadata={"field": "ttl"},
        )
    return ms


def lock_specs(
    names: Sequence[str], modes: Mapping[str, Union[Mode, str]], default: Mode, permits: int
) -> List[pb.LockSpec]:
    out = []
    for n in names:
        if not isinstance(n, str):
            raise errors.InvalidArgument(
                f"lock name {n!r} is not a str", reason="INVALID_NAME", metadata={"field": "name"}
            )
        m = Mode.parse(modes.get(n, default))
        out.append(pb.LockSpec(name=n, mode=m.pb, permits=permits if m == Mode.SEMAPHORE else 0))
    return out


def check_metadata(metadata: Optional[Mapping[str, str]]) -> Dict[str, str]:
    md = dict(metadata or {})
    for k, v in md.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise errors.InvalidArgument(
                f"metadata must map str to str, got {k!r}: {v!r}",
                reason="INVALID_ARGUMENT",
                metadata={"field": "metadata"},
            )
    return md


@dataclass(frozen=True)
class AcquireArgs:
    """An acquire's arguments, checked: what both clients' ``lock_many``
    sends."""

    names: List[str]
    specs: List[pb.LockSpec]
    metadata: Dict[str, str]
    wait: float  # seconds, whole milliseconds
    lock_delay_ms: int
    total: float  # seconds the whole acquire may take


def acquire_args(
    names: Sequence[str],
    *,
    modes: Optional[Mapping[str, Union[Mode, str]]],
    wait: float,
    mode: Union[Mode, str],
    permits: int,
    reason: str,
    metadata: Optional[Mapping[str, str]],
    lock_delay: float,
    deadline: Optional[float],
    call_timeout: float,
) -> AcquireArgs:
    """Check a ``lock_many``'s input (InvalidArgument on anything wrong);
    ``total`` is ``deadline``, by default the wait + ``call_timeout``."""
    if isinstance(names, str) or not names:
        raise errors.InvalidArgument(
            "names must be a non-empty list of lock names", reason="INVALID_ARGUMENT", metadata={"field": "names"}
        )
    names = list(names)
    default = Mode.parse(mode)
    modes = modes or {}
    if not isinstance(permits, int) and any(
        Mode.parse(modes.get(n, default)) == Mode.SEMAPHORE for n in names if isinstance(n, str)
    ):
        raise errors.InvalidArgument("permits must be an int", reason="INVALID_ARGUMENT", metadata={"field": "permits"})
    if not isinstance(reason, str):
        raise errors.InvalidArgument(
            f"reason must be a str, not {reason!r}", reason="INVALID_ARGUMENT", metadata={"field": "reason"}
        )
    specs = lock_specs(names, modes, default, permits)
    md = check_metadata(metadata)
    wait_ms = seconds_to_ms(wait, "wait")
    delay_ms = seconds_to_ms(lock_delay, "lock_delay")
    if deadline is not None:
        total = float(deadline)
        if not total > 0:
            raise errors.InvalidArgument(
                "deadline must be > 0 seconds", reason="INVALID_ARGUMENT", metadata={"field": "deadline"}
            )
    else:
        total = wait_ms / 1000 + call_timeout
    return AcquireArgs(names, specs, md, wait_ms / 1000, delay_ms, total)


def check_drift_margin(ttl: float, drift_margin: Optional[float]) -> float:
    """The session's drift margin: ``drift_margin``, by default 5 % of the
    ttl; at least 0 and below the ttl."""
    m = default_drift_margin(ttl) if drift_margin is None else float(drift_margin)
    if not 0 <= m < ttl:
        raise errors.InvalidArgument(
            f"drift_margin must be >= 0 and below the ttl ({ttl} s), not {drift_margin!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "drift_margin"},
        )
    return m


def check_page_size(page_size: int) -> None:
    if not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise errors.InvalidArgument(
            f"page_size must be 1 to 1000, not {page_size!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "page_size"},
        )


def check_from_revision(from_revision: int) -> None:
    if not isinstance(from_revision, int) or from_revision < 0:
        raise errors.InvalidArgument(
            f"from_revision must be an int >= 0, not {from_revision!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "from_revision"},
        )


def server_wait_ms(wait_s: float, deadline: float, now: float) -> int:
    """The wait asked of the server: the caller's, cut so that the server's
    own WAIT_TIMEOUT answer (a definite one) arrives before the call's
    deadline (a quarter of the time left, at most 250 ms, is kept for it)."""
    wait_ms = seconds_to_ms(wait_s, "wait")
    if wait_ms == 0:
        return 0
    left = deadline - now
    keep = min(left / 4, 0.25)
    return max(1, min(wait_ms, int((left - keep) * 1000)))


# ----- what replies become ---------------------------------------------------


def _unix_ms(ms: int) -> Optional[datetime]:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None


@dataclass(frozen=True)
class Holder:
    """One current holder of a lock."""

    lease_id: int
    owner: str
    mode: Optional[Mode]
    token: int
    acquired_at: Optional[datetime]
    reason: str
    metadata: Dict[str, str]
    acquisitions: int
    extensions: int
    lock_delay: float

    @staticmethod
    def of(h: pb.Holder) -> "Holder":
        return Holder(
            h.lease_id,
            h.owner,
            _mode_out(h.mode),
            h.token,
            _unix_ms(h.acquired_at_unix_ms),
            h.reason,
            dict(h.metadata),
            h.acquisitions,
            h.extensions,
            h.lock_delay_ms / 1000,
        )


@dataclass(frozen=True)
class Waiter:
    """One queued request, as seen from one of its locks."""

    waiter_id: int
    lease_id: int
    owner: str
    mode: Optional[Mode]
    names: List[str]
    queued_at: Optional[datetime]
    reason: str

    @staticmethod
    def of(q: pb.QueuedRequest) -> "Waiter":
        return Waiter(
            q.waiter_id, q.lease_id, q.owner, _mode_out(q.mode), list(q.names), _unix_ms(q.queued_at_unix_ms), q.reason
        )


@dataclass(frozen=True)
class LockInfo:
    """A lock as the cluster keeps it: holders, queue, counters."""

    name: str
    kind: str  # "read_write" or "semaphore"
    permits: int
    holders: List[Holder]
    queue: List[Waiter]
    delayed_until_cluster_ms: Optional[int]
    grants: int
    max_token: int
    revision: int = 0

    @property
    def held(self) -> bool:
        return bool(self.holders)

    @staticmethod
    def of(info: pb.LockInfo, revision: int = 0) -> "LockInfo":
        return LockInfo(
            info.name,
            "semaphore" if info.kind == pb.LOCK_KIND_SEMAPHORE else "read_write",
            info.permits,
            [Holder.of(h) for h in info.holders],
            [Waiter.of(q) for q in info.queue],
            info.delayed_until_cluster_ms if info.HasField("delayed_until_cluster_ms") else None,
            info.grants,
            info.max_token,
            revision,
        )


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as the cluster keeps it."""

    lease_id: int
    owner: str
    ttl: float
    granted_at: Optional[datetime]
    holds: List[str]
    waits: List[int]
    remaining: Optional[float]
    identity: str

    @staticmethod
    def of(l: pb.LeaseInfo) -> "LeaseInfo":
        return LeaseInfo(
            l.lease_id,
            l.owner,
            l.ttl_ms / 1000,
            _unix_ms(l.granted_at_unix_ms),
            list(l.holds),
            list(l.waits),
            l.remaining_ms / 1000 if l.HasField("remaining_ms") else None,
            l.identity,
        )


_EVENT_TYPES = {
    pb.EVENT_TYPE_ACQUIRED: "acquired",
    pb.EVENT_TYPE_RELEASED: "released",
    pb.EVENT_TYPE_EXPIRED: "expired",
    pb.EVENT_TYPE_QUEUED: "queued",
    pb.EVENT_TYPE_FORCE_RELEASED: "force_released",
    pb.EVENT_TYPE_WAIT_DROPPED: "wait_dropped",
    pb.EVENT_TYPE_DELAYED: "delayed",
    pb.EVENT_TYPE_LEASE_GRANTED: "lease_granted",
    pb.EVENT_TYPE_LEASE_ENDED: "lease_ended",
}


@dataclass(frozen=True)
class Event:
    """One event of a watch. ``type`` is one of acquired, released, expired,
    queued, force_released, wait_dropped, delayed, lease_granted,
    lease_ended (an unknown newer one: ``"unknown"``)."""

    revision: int
    type: str
    name: str
    lease_id: int
    owner: str
    mode: Optional[Mode]
    token: int
    waiter_id: int
    position: int
    lease_end: Optional[str]
    delayed_until_cluster_ms: int
    ttl: float
    forced_by: str

    @staticmethod
    def of(e: pb.Event) -> "Event":
        end = {pb.LEASE_END_REVOKED: "revoked", pb.LEASE_END_EXPIRED: "expired"}.get(e.lease_end)
        return Event(
            e.revision,
            _EVENT_TYPES.get(e.type, "unknown"),
            e.name,
            e.lease_id,
            e.owner,
            _mode_out(e.mode),
            e.token,
            e.waiter_id,
            e.position,
            end,
            e.delayed_until_cluster_ms,
            e.ttl_ms / 1000,
            e.forced_by,
        )


@dataclass(frozen=True)
class Grant:
    """One hold as granted."""

    name: str
    mode: Optional[Mode]
    permits: int
    token: int

    @staticmethod
    def of(g: pb.Grant) -> "Grant":
        return Grant(g.name, _mode_out(g.mode), g.permits, g.token)


@dataclass(frozen=True)
class Acquired:
    """An acquire's answer."""

    token: int
    holds: List[Grant]
    retry: bool
    revision: int
    waited: float

    @staticmethod
    def of(r: pb.AcquireResponse) -> "Acquired":
        return Acquired(
            r.token,
            [Grant.of(g) for g in r.holds],
            r.retry,
            r.revision,
            r.waited_ms / 1000,
        )


# ----- session validity (pure) ----------------------------------------------


class Validity:
    """When a session's lease is certainly alive, on this process's
    monotonic clock: until the send time of the last acknowledged request
    (grant or keep-alive) + ttl - drift margin. The cluster counts the
    lease from when the leader *received* the request, after it was sent,
    and a new leader gives every lease a full ttl, so the cluster never
    ends it before then (docs/client.md, "Sessions and validity")."""

    def __init__(self, sent_at: float, ttl: float, margin: float) -> None:
        self._lock = threading.Lock()
        self.ttl = ttl
        self.margin = margin
        self._until: Optional[float] = sent_at + ttl - margin
        self.ended: Optional[str] = None  # "lost" or "revoked"

    #: Attached leases: the first acknowledged keep-alive sets the window
    #: (the ttl the caller guessed never widens it).
    provisional = False
    #: With ``provisional``: the drift margin is the default one of the ttl
    #: the first answer gives.
    margin_auto = False

    def renewed(self, sent_at: float, ttl: float, sets_ttl: bool = False) -> bool:
        """An acknowledged request sent at ``sent_at`` whose answer gave the
        lease ``ttl``; ``sets_ttl`` for an extend's answer (it may change the
        ttl), not a keep-alive's (which may be older than an extend). False
        if too late: the window had already closed, the session is lost
        whatever the answer says."""
        with self._lock:
            if self.ended is not None or self._until is None:
                return False
            now = time.monotonic()
            if now >= self._until:
                self.ended = "lost"
                self._until = None
                return False
            if self.provisional or ttl < self.ttl:
                # The first answer for an attached lease (the ttl the caller
                # guessed never counts), or a shorter ttl: a new leader gives
                # the lease only the new ttl from its election, so an older,
                # longer window no longer holds.
                if self.provisional and self.margin_auto:
                    self.margin = default_drift_margin(ttl)
                self.provisional = False
                self._until = sent_at + ttl - self.margin
                self.ttl = ttl
            else:
                if sets_ttl:
                    self.ttl = ttl
                # A keep-alive's answer never lengthens the ttl: it may
                # predate an extend that shortened it.
                self._until = max(self._until, sent_at + self.ttl - self.margin)
            return True

    def shrink(self, sent_at: float, ttl: float) -> None:
        """A ttl change that may have been applied (its answer was lost):
        count as if it was, never as longer than before."""
        with self._lock:
            if self._until is not None and ttl < self.ttl:
                self._until = min(self._until, sent_at + ttl - self.margin)
                self.ttl = ttl

    def end(self, how: str) -> bool:
        """Mark the session ended; True if this call ended it."""
        with self._lock:
            if self.ended is not None:
                return False
            self.ended = how
            self._until = None
            return True

    def valid_until(self) -> Optional[float]:
        with self._lock:
            if self._until is not None and time.monotonic() >= self._until:
                self.ended = self.ended or "lost"
                self._until = None
            return self._until

    def is_valid(self) -> bool:
        return self.valid_until() is not None

    def remaining(self) -> float:
        u = self.valid_until()
        return max(0.0, u - time.monotonic()) if u is not None else 0.0


def default_drift_margin(ttl: float) -> float:
    """5 % of the ttl, as the Rust client."""
    return ttl * 0.05


def owner_of(owner: Optional[str]) -> str:
    """The owner text of a new lease: ``owner``, or :func:`default_owner`."""
    if owner is None:
        return default_owner()
    if not isinstance(owner, str):
        raise errors.InvalidArgument(
            f"owner must be a str, not {owner!r}", reason="INVALID_ARGUMENT", metadata={"field": "owner"}
        )
    return owner


def default_owner() -> str:
    import socket

    return f"python pid {os.getpid()} on {socket.gethostname()}"


class GuardBase:
    """What a lock guard is in both flavours: the holds of one grant, their
    token, and validity read from the session (session.py, aio)."""

    def __init__(self, session: Any, names: Sequence[str], r: Acquired, specs: List[pb.LockSpec]) -> None:
        self.session = session
        self.names: Tuple[str, ...] = tuple(sorted(names))
        self.token = r.token
        self.revision = r.revision
        self.retry = r.retry
        self.holds = r.holds
        self.waited = r.waited
        self._specs = specs
        self._released = False
        self._owns_session = False

    @property
    def name(self) -> str:
        """The (first) name held."""
        return self.names[0]

    @property
    def mode(self) -> Optional[Mode]:
        return self.holds[0].mode if self.holds else None

    @property
    def lost(self) -> Any:
        """The session's ``lost`` event."""
        return self.session.lost

    @property
    def released(self) -> bool:
        return self._released

    def is_valid(self) -> bool:
        """Held and the session certainly alive."""
        return not self._released and self.session.is_valid()

    def remaining(self) -> float:
        """Seconds the hold is certainly still valid (0 once not)."""
        return 0.0 if self._released else self.session.remaining()

    def __repr__(self) -> str:
        return f"LockGuard(names={list(self.names)!r}, token={self.token}, valid={self.is_valid()})"
