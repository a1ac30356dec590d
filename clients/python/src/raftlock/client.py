"""The blocking client: connections, leader following, retries, deadlines,
reads, watches and the admin calls. Sessions and locks: session.py."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _common as c
from . import errors
from .v1 import raftlock_pb2 as pb
from .v1 import raftlock_pb2_grpc as pbg

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Client(c.ClientBase):
    """A connection to a raftlock cluster.

    ``endpoints``: any subset of the nodes' client addresses (``host:port``,
    ``https://host:port``); default ``RAFTLOCK_ENDPOINTS``, else the dev
    cluster's three. TLS: ``ca`` (the CA file of the nodes' certificates),
    ``cert`` and ``key`` (a client certificate: its CN is the identity),
    ``token`` (a bearer token, with or without a certificate); each not
    given is read from ``RAFTLOCK_CA``, ``RAFTLOCK_CERT``, ``RAFTLOCK_KEY``,
    ``RAFTLOCK_TOKEN`` as the CLI does (``use_env=False`` turns that off).

    ``call_timeout`` bounds one logical call, retries included (an acquire
    that waits gets its wait on top); every call also takes ``timeout=``.
    Channels connect lazily: making a client does no I/O. A client is safe
    to share between threads; ``close()`` (or ``with``) closes its channels.
    """

    def __init__(
        self,
        endpoints: Union[None, str, Iterable[str]] = None,
        *,
        retry: Optional[c.RetryPolicy] = None,
        call_timeout: float = 10.0,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        token: Optional[str] = None,
        use_env: bool = True,
    ) -> None:
        super().__init__(
            endpoints,
            retry=retry,
            call_timeout=call_timeout,
            ca=ca,
            cert=cert,
            key=key,
            token=token,
            use_env=use_env,
        )
        self._channels: Dict[str, grpc.Channel] = {}
        # Stubs per (endpoint, service): made once, not per call.
        self._stubs: Dict[Tuple[str, Any], Any] = {}
        self._closed = False

    # ----- plumbing (endpoints, leader hint, deadlines: c.ClientBase) -------

    def _channel(self, ep: c.Endpoint) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise errors.Error("the client is closed", reason="CLOSED")
            ch = self._channels.get(ep.target)
            if ch is None:
                if ep.tls:
                    ch = grpc.secure_channel(
                        ep.target, self._creds.channel_credentials(), options=c.CHANNEL_OPTIONS
                    )
                else:
                    ch = grpc.insecure_channel(ep.target, options=c.CHANNEL_OPTIONS)
                self._channels[ep.target] = ch
            return ch

    def _stub(self, ep: c.Endpoint, service: Callable[[grpc.Channel], Any]) -> Any:
        """The stub of ``service`` (e.g. ``LocksStub``) on ``ep``'s channel."""
        key = (ep.target, service)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = service(self._channel(ep))
        return stub

    def _learn(self, call: Any) -> None:
        try:
            md = call.initial_metadata()
        except Exception:
            return
        self._prefer(c.leader_addr_in(md))

    def _call(
        self,
        stub: Callable[[grpc.Channel], Any],
        method: str,
        request: Any,
        *,
        deadline: float,
        idempotent: bool = True,
        policy: Optional[c.RetryPolicy] = None,
        request_for: Optional[Callable[[float], Any]] = None,
        not_holder_after_unknown_is_done: bool = False,
    ) -> Any:
        """One logical unary call with leader following and retries, ending
        by ``deadline`` (monotonic seconds). ``request_for(now)`` rebuilds
        the request per attempt (an acquire's server wait shrinks)."""
        att = c.Attempts(policy or self.retry, idempotent)
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise att.deadline(sent=False)
            att.count += 1
            ep = self._pick()
            req = request_for(now) if request_for is not None else request
            try:
                fn = getattr(self._stub(ep, stub), method)
                resp, call = fn.with_call(req, timeout=left, metadata=self._metadata())
            except grpc.RpcError as e:
                step = att.after(e, deadline, not_holder_after_unknown_is_done)
                if step.done:
                    return None
                if step.error is not None:
                    raise step.error from None
                if step.leader:
                    self._prefer(step.leader)
                else:
                    self._advance(ep)
                if step.pause > 0:
                    if time.monotonic() + step.pause >= deadline:
                        raise att.deadline(sent=att.maybe_applied) from None
                    time.sleep(step.pause)
                continue
            self._learn(call)
            return resp

    def close(self) -> None:
        """Close every channel. Close this client's sessions first: their
        keep-alives stop with the channels (they are then reported lost and
        their leases expire after their ttl)."""
        with self._lock:
            self._closed = True
            chans, self._channels = list(self._channels.values()), {}
            self._stubs = {}
        for ch in chans:
            ch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- leases and sessions ---------------------------------------------

    def grant_lease(self, ttl: float, owner: str = "", *, timeout: Optional[float] = None) -> int:
        """Grant a bare lease (no keep-alives): its id. Sessions do this for you."""
        req = pb.GrantLeaseRequest(ttl_ms=c.ttl_ms(ttl), owner=owner)
        # Not idempotent: a retried grant after an unknown outcome could
        # make a second lease, which then expires on its own (harmless),
        # so it is retried like the Rust client does.
        r = self._call(pbg.LeasesStub, "Grant", req, deadline=self._deadline(timeout))
        return r.lease_id

    def revoke_lease(self, lease_id: int, *, timeout: Optional[float] = None) -> List[Grant]:
        """End a lease now: its holds are released, its waits dropped."""
        r = self._call(
            pbg.LeasesStub,
            "Revoke",
            pb.RevokeLeaseRequest(lease_id=lease_id),
            deadline=self._deadline(timeout),
            idempotent=False,
        )
        return [c.Grant.of(g) for g in r.released]

    def leases(self, *, stale: bool = False, timeout: Optional[float] = None) -> List[c.LeaseInfo]:
        """Leases alive, with their holds and waits."""
        r = self._call(pbg.LeasesStub, "List", pb.ListLeasesRequest(stale=stale), deadline=self._deadline(timeout))
        return [c.LeaseInfo.of(l) for l in r.leases]

    def session(
        self,
        ttl: float = 30.0,
        owner: Optional[str] = None,
        *,
        drift_margin: Optional[float] = None,
        on_lost: Optional[Callable[["Session"], None]] = None,
        timeout: Optional[float] = None,
    ) -> "Session":
        """Grant a lease and keep it alive in a background thread: a
        :class:`Session`, also a context manager that revokes on exit."""
        from .session import Session

        return Session._start(self, ttl, owner, drift_margin, on_lost, timeout)

    def attach_session(
        self,
        lease_id: int,
        ttl: float,
        *,
        drift_margin: Optional[float] = None,
        on_lost: Optional[Callable[["Session"], None]] = None,
    ) -> "Session":
        """Keep alive a lease granted elsewhere (``raftlock lease grant``);
        closing the session stops the keep-alives but does not revoke it.
        ``ttl`` is how long to wait for the first keep-alive's answer; the
        validity comes from the cluster's answers alone (the ttl they give,
        from the first acknowledged keep-alive's send time)."""
        from .session import Session

        return Session._attach(self, lease_id, ttl, drift_margin, on_lost)

    # ----- one-off locks ----------------------------------------------------

    def lock(
        self,
        name: str,
        *,
        ttl: float = 30.0,
        owner: Optional[str] = None,
        wait: float = 30.0,
        mode: Union[c.Mode, str] = c.Mode.EXCLUSIVE,
        permits: int = 0,
        reason: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        lock_delay: float = 0.0,
        deadline: Optional[float] = None,
    ) -> "LockGuard":
        """One lock with a lease of its own: the lease is granted here and
        revoked when the guard is released. For many locks, or a loop, use
        one :meth:`session`. ``deadline`` bounds it all, the lease's grant
        included."""
        from .session import Session

        a = c.acquire_args(
            [name],
            modes=None,
            wait=wait,
            mode=mode,
            permits=permits,
            reason=reason,
            metadata=metadata,
            lock_delay=lock_delay,
            deadline=deadline,
            call_timeout=self.call_timeout,
        )
        # One deadline for all of it: granting the lease, then the acquire.
        end = time.monotonic() + a.total
        session = Session._start(self, ttl, owner, None, None, min(self.call_timeout, a.total))
        try:
            guard = session._acquire(a, reason, end)
        except BaseException:
            session.close()
            raise
        guard._owns_session = True
        return guard

    def locked(self, name: str, **options: Any) -> Callable[[F], F]:
        """A decorator: the function runs under ``client.lock(name, **options)``."""
        from .recipes import _decorate

        return _decorate(lambda: self.lock(name, **options))

    # ----- reads ------------------------------------------------------------

    def _inspect(self, name: str, stale: bool, timeout: Optional[float]) -> Tuple[Optional[c.LockInfo], int]:
        r = self._call(
            pbg.LocksStub, "Inspect", pb.InspectRequest(name=name, stale=stale), deadline=self._deadline(timeout)
        )
        return (c.LockInfo.of(r.lock, r.revision) if r.HasField("lock") else None), int(r.revision)

    def inspect(self, name: str, *, stale: bool = False, timeout: Optional[float] = None) -> Optional[c.LockInfo]:
        """One lock: holders, queue, counters; None when it is free and
        nobody waits (a free lock does not exist). Linearizable unless
        ``stale``."""
        return self._inspect(name, stale, timeout)[0]

    def _revision(self, prefix: str) -> int:
        """The applied revision a linearizable read of ``prefix`` reflects."""
        r = self._call(pbg.LocksStub, "List", pb.ListRequest(prefix=prefix, limit=1), deadline=self._deadline(None))
        return int(r.revision)

    def list(
        self, prefix: str = "", *, stale: bool = False, page_size: int = 100, timeout: Optional[float] = None
    ) -> List[c.LockInfo]:
        """Every lock whose name starts with ``prefix``, in name order (all
        pages; each page is its own read)."""
        return list(self.iter_locks(prefix, stale=stale, page_size=page_size, timeout=timeout))

    def iter_locks(
        self, prefix: str = "", *, stale: bool = False, page_size: int = 100, timeout: Optional[float] = None
    ) -> Iterator[c.LockInfo]:
        """Like :meth:`list`, a page at a time."""
        c.check_page_size(page_size)
        after = ""
        while True:
            r = self._call(
                pbg.LocksStub,
                "List",
                pb.ListRequest(prefix=prefix, stale=stale, limit=page_size, start_after=after),
                deadline=self._deadline(timeout),
            )
            for info in r.locks:
                yield c.LockInfo.of(info, r.revision)
            if not r.more or not r.locks:
                return
            after = r.locks[-1].name

    def watch(self, prefix: str = "", *, from_revision: int = 0) -> "Watch":
        """Events on locks whose names start with ``prefix``: an iterator that
        reopens its stream (on another node if need be) from the revision
        after the last one delivered. ``close()`` it, or use ``with``."""
        return Watch(self, prefix, from_revision)

    # ----- admin ------------------------------------------------------------

    def status(self, *, timeout: Optional[float] = None) -> pb.StatusResponse:
        """The answering node's view of the cluster (the protobuf message)."""
        return self._call(pbg.AdminStub, "Status", pb.StatusRequest(), deadline=self._deadline(timeout))

    def force_release(
        self, name: str, lease_id: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> List[c.Holder]:
        """Remove holds of ``name`` regardless of token: all, or one lease's.
        Not retried after an unknown outcome (it is not idempotent)."""
        req = pb.ForceReleaseRequest(name=name)
        if lease_id is not None:
            req.lease_id = lease_id
        r = self._call(pbg.AdminStub, "ForceRelease", req, deadline=self._deadline(timeout), idempotent=False)
        return [c.Holder.of(h) for h in r.released]

    def snapshot(self, *, timeout: Optional[float] = None) -> int:
        """Build a snapshot now; the log index it covers."""
        return self._call(pbg.AdminStub, "Snapshot", pb.SnapshotRequest(), deadline=self._deadline(timeout)).index

    # ----- lock calls used by sessions --------------------------------------

    def _acquire(
        self,
        lease_id: int,
        specs: List[pb.LockSpec],
        wait: float,
        reason: str,
        metadata: Dict[str, str],
        lock_delay_ms: int,
        deadline: float,
    ) -> c.Acquired:
        def request_for(now: float) -> pb.AcquireRequest:
            return pb.AcquireRequest(
                lease_id=lease_id,
                locks=specs,
                wait_timeout_ms=c.server_wait_ms(wait, deadline, now),
                reason=reason,
                metadata=metadata,
                lock_delay_ms=lock_delay_ms,
            )

        r = self._call(pbg.LocksStub, "Acquire", None, deadline=deadline, request_for=request_for)
        return c.Acquired.of(r)

    def _release(self, lease_id: int, token: int, names: Sequence[str], deadline: float) -> None:
        """Release by token. After an attempt whose outcome is unknown, a
        NOT_HOLDER on a retry means that attempt was applied: done."""
        req = pb.ReleaseRequest(lease_id=lease_id, token=token, names=list(names))
        # With one name, NOT_HOLDER after an unknown attempt means that
        # attempt released it; with several it may be a force-release of one.
        self._call(pbg.LocksStub, "Release", req, deadline=deadline, not_holder_after_unknown_is_done=len(names) == 1)

    def _extend(self, lease_id: int, name: str, token: int, ttl: Optional[float], deadline: float) -> pb.ExtendResponse:
        req = pb.ExtendRequest(lease_id=lease_id, name=name, token=token)
        if ttl is not None:
            req.ttl_ms = c.ttl_ms(ttl)
        return self._call(pbg.LocksStub, "Extend", req, deadline=deadline)


class Watch:
    """An iterator of :class:`raftlock.Event`; see :meth:`Client.watch`.

    From revision 0 it starts after the revision a linearizable read
    returns when it is entered (``with``) or first iterated, so a break
    before the first event loses nothing. It resumes after the last
    revision it delivered when its stream breaks
    (a node stops, a leader changes), with the client's retry policy per
    break; a ``Compacted`` start revision or a cut-off ``SlowWatcher`` is
    raised (resume from ``last_revision + 1`` with a new watch if you
    can). ``close()`` ends it from any thread."""

    def __init__(self, client: Client, prefix: str, from_revision: int) -> None:
        c.check_from_revision(from_revision)
        self._client = client
        self.prefix = prefix
        self._from = from_revision
        self._next: Optional[int] = None
        #: The revision of the last event delivered (0 before the first).
        self.last_revision = 0
        self._call: Any = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pending: List[c.Event] = []
        self._failures = 0
        self._ep: Optional[c.Endpoint] = None  # where the open stream goes

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _start(self) -> None:
        if self._next is None:
            self._next = self._from if self._from else self._client._revision(self.prefix) + 1

    def __enter__(self) -> "Watch":
        self._start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> "Watch":
        return self

    def _open(self) -> Any:
        client = self._client
        ep = client._pick()
        stub = client._stub(ep, pbg.LocksStub)
        call = stub.Watch(pb.WatchRequest(prefix=self.prefix, from_revision=self._next), metadata=client._metadata())
        with self._lock:
            self._call = call
        if self._closed.is_set():
            call.cancel()
        return ep, call

    def __next__(self) -> c.Event:
        client = self._client
        while True:
            if self._pending:
                ev = self._pending.pop(0)
                self.last_revision = ev.revision
                self._next = ev.revision + 1
                return ev
            if self._closed.is_set():
                raise StopIteration
            self._start()
            if self._call is None:
                self._ep, _ = self._open()
            ep = self._ep
            try:
                resp = next(self._call)
                self._failures = 0
                # Events of one entry share a revision: a batch is whole,
                # so resuming after its revision loses nothing.
                self._pending.extend(c.Event.of(e) for e in resp.events)
                continue
            except StopIteration:
                f = None
            except grpc.RpcError as e:
                if self._closed.is_set():
                    raise StopIteration from None
                f = c.failure_of(e)
                if c.watch_gives_up(f):
                    raise f.error() from None
            with self._lock:
                self._call = None
            if self._closed.is_set():
                raise StopIteration
            self._failures += 1
            if self._failures > client.retry.max_attempts:
                raise errors.Unavailable(
                    f"the watch could not be reopened in {self._failures - 1} attempts"
                    + (f": {f.reason or f.code.name}: {f.message}" if f else ""),
                    reason="UNAVAILABLE",
                )
            if f is not None and f.leader_addr:
                client._prefer(f.leader_addr)
            elif ep is not None:
                client._advance(ep)  # only if no other call moved on already
            self._closed.wait(client.retry.backoff(self._failures))


# Late imports for type names used above.
from ._common import Grant  # noqa: E402
from .session import LockGuard, Session  # noqa: E402,F401
