"""The asyncio client: ``raftlock.client``'s model (leader following,
retries, deadlines, reads, watches, admin calls) on ``grpc.aio``."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, AsyncGenerator, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union, cast

import grpc
import grpc.aio

from .. import _common as c
from .. import errors
from ..v1 import raftlock_pb2 as pb
from ..v1 import raftlock_pb2_grpc as pbg
from ._session import LockAcquire, LockGuard, LostCallback, Session, SessionStart, _decorate, _spawn

F = TypeVar("F", bound=Callable[..., Any])


class Client(c.ClientBase):
    """A connection to a raftlock cluster, for asyncio.

    The arguments, the ``RAFTLOCK_*`` environment variables and the
    endpoint and TLS rules are :class:`raftlock.Client`'s. ``call_timeout``
    bounds one logical call, retries included (an acquire that waits gets
    its wait on top); every call also takes ``timeout=``.

    Making a client does no I/O and needs no event loop: channels are
    opened on first use, on the running loop. A client serves one event
    loop at a time (when that loop has ended, the next ``asyncio.run`` gets
    new channels). ``await close()`` (or ``async with``) closes them, and
    cancels the calls still in flight; close sessions first.
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
        self._channels: Dict[str, grpc.aio.Channel] = {}
        # Stubs per (endpoint, service): made once, not per call.
        self._stubs: Dict[Tuple[str, Any], Any] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False

    # ----- plumbing (endpoints, leader hint, deadlines: c.ClientBase) -------

    def _channel(self, ep: c.Endpoint) -> grpc.aio.Channel:
        if self._closed:
            raise errors.Error("the client is closed", reason="CLOSED")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and self._loop.is_running() and not self._loop.is_closed():
                raise errors.Error(
                    "this raftlock.aio.Client is in use on another event loop: make one client per loop",
                    reason="OTHER_LOOP",
                )
            # The previous loop has ended, and its channels with it.
            self._channels = {}
            self._stubs = {}
            self._loop = loop
        ch = self._channels.get(ep.target)
        if ch is None:
            if ep.tls:
                ch = grpc.aio.secure_channel(ep.target, self._creds.channel_credentials(), options=c.CHANNEL_OPTIONS)
            else:
                ch = grpc.aio.insecure_channel(ep.target, options=c.CHANNEL_OPTIONS)
            self._channels[ep.target] = ch
        return ch

    def _stub(self, ep: c.Endpoint, service: Callable[[grpc.aio.Channel], Any]) -> Any:
        """The stub of ``service`` (e.g. ``LocksStub``) on ``ep``'s channel."""
        ch = self._channel(ep)  # first: it drops a previous loop's stubs
        key = (ep.target, service)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = service(ch)
        return stub

    async def _learn(self, call: Any) -> None:
        """Follow the leader a reply's initial metadata names."""
        try:
            md = await call.initial_metadata()
        except Exception:
            return
        self._prefer(c.leader_addr_in(md))

    async def _call(
        self,
        stub: Callable[[grpc.aio.Channel], Any],
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
        by ``deadline`` (monotonic seconds): :meth:`raftlock.Client._call`'s
        rules. ``request_for(now)`` rebuilds the request per attempt."""
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
                call = getattr(self._stub(ep, stub), method)(req, timeout=left, metadata=self._metadata())
                resp = await call
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
                    await asyncio.sleep(step.pause)
                continue
            await self._learn(call)
            return resp

    async def close(self) -> None:
        """Close every channel (calls in flight are cancelled). Sessions of
        this client stop keeping their leases alive; each is lost when its
        validity ends."""
        self._closed = True
        chans, self._channels = list(self._channels.values()), {}
        self._stubs = {}
        if self._loop is not asyncio.get_running_loop():
            return  # the channels died with their loop
        for ch in chans:
            await ch.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ----- leases and sessions ---------------------------------------------

    async def grant_lease(self, ttl: float, owner: str = "", *, timeout: Optional[float] = None) -> int:
        """Grant a bare lease (no keep-alives): its id. Sessions do this for you."""
        req = pb.GrantLeaseRequest(ttl_ms=c.ttl_ms(ttl), owner=owner)
        r = await self._call(pbg.LeasesStub, "Grant", req, deadline=self._deadline(timeout))
        return int(r.lease_id)

    async def revoke_lease(self, lease_id: int, *, timeout: Optional[float] = None) -> List[c.Grant]:
        """End a lease now: its holds are released, its waits dropped."""
        r = await self._call(
            pbg.LeasesStub,
            "Revoke",
            pb.RevokeLeaseRequest(lease_id=lease_id),
            deadline=self._deadline(timeout),
            idempotent=False,
        )
        return [c.Grant.of(g) for g in r.released]

    async def leases(self, *, stale: bool = False, timeout: Optional[float] = None) -> List[c.LeaseInfo]:
        """Leases alive, with their holds and waits."""
        r = await self._call(
            pbg.LeasesStub, "List", pb.ListLeasesRequest(stale=stale), deadline=self._deadline(timeout)
        )
        return [c.LeaseInfo.of(lease) for lease in r.leases]

    def session(
        self,
        ttl: float = 30.0,
        owner: Optional[str] = None,
        *,
        drift_margin: Optional[float] = None,
        on_lost: Optional[LostCallback] = None,
        timeout: Optional[float] = None,
    ) -> SessionStart:
        """Grant a lease and keep it alive in a background task:
        ``session = await client.session(ttl=30)``, or ``async with
        client.session(ttl=30) as session:`` (revoked on exit)."""

        async def start() -> Session:
            return await Session._start(self, ttl, owner, drift_margin, on_lost, self._deadline(timeout))

        return SessionStart(start)

    def attach_session(
        self,
        lease_id: int,
        ttl: float,
        *,
        drift_margin: Optional[float] = None,
        on_lost: Optional[LostCallback] = None,
    ) -> SessionStart:
        """Keep alive a lease granted elsewhere (``raftlock lease grant``);
        closing the session stops the keep-alives but does not revoke it.
        ``ttl`` is how long to wait for the first keep-alive's answer
        (LeaseLost if none comes); the validity comes from the cluster's
        answers alone (the ttl they give, from the first acknowledged
        keep-alive's send time)."""

        async def start() -> Session:
            return await Session._attach(self, lease_id, ttl, drift_margin, on_lost)

        return SessionStart(start)

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
    ) -> LockAcquire:
        """One lock with a lease of its own, granted here and revoked when
        the guard is released: ``async with client.lock(name) as guard:``
        or ``guard = await client.lock(name)``. ``deadline`` bounds it all,
        the lease's grant included. For many locks, or a loop, use one
        :meth:`session`."""

        async def start() -> LockGuard:
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
            end = time.monotonic() + a.total
            session = await Session._start(self, ttl, owner, None, None, min(end, self._deadline(None)))
            try:
                guard = await session._acquire(a, reason, end)
            except Exception:
                await session.close()
                raise
            except BaseException:  # cancelled: revoking ends whatever the acquire left
                _spawn(session.close(), name=f"revoke of lease {session.lease_id}")
                raise
            guard._owns_session = True
            return guard

        return LockAcquire(start)

    def locked(self, name: str, **options: Any) -> Callable[[F], F]:
        """A decorator of ``async def`` functions: each call runs under
        ``client.lock(name, **options)``."""
        return _decorate(lambda: self.lock(name, **options))

    # ----- reads ------------------------------------------------------------

    async def _inspect(self, name: str, stale: bool, timeout: Optional[float]) -> Tuple[Optional[c.LockInfo], int]:
        r = await self._call(
            pbg.LocksStub, "Inspect", pb.InspectRequest(name=name, stale=stale), deadline=self._deadline(timeout)
        )
        return (c.LockInfo.of(r.lock, r.revision) if r.HasField("lock") else None), int(r.revision)

    async def inspect(self, name: str, *, stale: bool = False, timeout: Optional[float] = None) -> Optional[c.LockInfo]:
        """One lock: holders, queue, counters; None when it is free and
        nobody waits (a free lock does not exist). Linearizable unless
        ``stale``."""
        info, _ = await self._inspect(name, stale, timeout)
        return info

    async def list(
        self, prefix: str = "", *, stale: bool = False, page_size: int = 100, timeout: Optional[float] = None
    ) -> List[c.LockInfo]:
        """Every lock whose name starts with ``prefix``, in name order (all
        pages; each page is its own read)."""
        return [info async for info in self.iter_locks(prefix, stale=stale, page_size=page_size, timeout=timeout)]

    async def iter_locks(
        self, prefix: str = "", *, stale: bool = False, page_size: int = 100, timeout: Optional[float] = None
    ) -> AsyncGenerator[c.LockInfo, None]:
        """Like :meth:`list`, a page at a time: ``async for info in
        client.iter_locks(prefix):``."""
        c.check_page_size(page_size)
        after = ""
        while True:
            r = await self._call(
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

    async def _revision(self, prefix: str) -> int:
        """The applied revision a linearizable read of ``prefix`` reflects."""
        r = await self._call(
            pbg.LocksStub, "List", pb.ListRequest(prefix=prefix, limit=1), deadline=self._deadline(None)
        )
        return int(r.revision)

    def watch(self, prefix: str = "", *, from_revision: int = 0) -> "Watch":
        """Events on locks whose names start with ``prefix``: an async
        iterator that reopens its stream (on another node if need be) from
        the revision after the last one delivered. ``async with
        client.watch(prefix) as events: async for event in events:``."""
        return Watch(self, prefix, from_revision)

    # ----- admin ------------------------------------------------------------

    async def status(self, *, timeout: Optional[float] = None) -> pb.StatusResponse:
        """The answering node's view of the cluster (the protobuf message)."""
        r = await self._call(pbg.AdminStub, "Status", pb.StatusRequest(), deadline=self._deadline(timeout))
        return cast(pb.StatusResponse, r)

    async def force_release(
        self, name: str, lease_id: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> List[c.Holder]:
        """Remove holds of ``name`` regardless of token: all, or one lease's.
        Not retried after an unknown outcome (it is not idempotent)."""
        req = pb.ForceReleaseRequest(name=name)
        if lease_id is not None:
            req.lease_id = lease_id
        r = await self._call(pbg.AdminStub, "ForceRelease", req, deadline=self._deadline(timeout), idempotent=False)
        return [c.Holder.of(h) for h in r.released]

    async def snapshot(self, *, timeout: Optional[float] = None) -> int:
        """Build a snapshot now; the log index it covers."""
        r = await self._call(pbg.AdminStub, "Snapshot", pb.SnapshotRequest(), deadline=self._deadline(timeout))
        return int(r.index)

    # ----- lock calls used by sessions --------------------------------------

    async def _acquire(
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

        r = await self._call(pbg.LocksStub, "Acquire", None, deadline=deadline, request_for=request_for)
        return c.Acquired.of(r)

    async def _release(self, lease_id: int, token: int, names: Sequence[str], deadline: float) -> None:
        """Release by token. After an attempt whose outcome is unknown, a
        NOT_HOLDER on a retry means that attempt was applied: done."""
        req = pb.ReleaseRequest(lease_id=lease_id, token=token, names=list(names))
        await self._call(pbg.LocksStub, "Release", req, deadline=deadline, not_holder_after_unknown_is_done=len(names) == 1)

    async def _extend(
        self, lease_id: int, name: str, token: int, ttl: Optional[float], deadline: float
    ) -> pb.ExtendResponse:
        req = pb.ExtendRequest(lease_id=lease_id, name=name, token=token)
        if ttl is not None:
            req.ttl_ms = c.ttl_ms(ttl)
        return cast(pb.ExtendResponse, await self._call(pbg.LocksStub, "Extend", req, deadline=deadline))


def _cancelling() -> bool:
    """Whether the current task is being cancelled (Python 3.11+; before,
    a cancellation cannot be told from a call cancelled by ``close()``)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling and cancelling())


class Watch:
    """An async iterator of :class:`raftlock.Event`; see :meth:`Client.watch`.

    From revision 0 it starts after the revision a linearizable read
    returns when it is entered (``async with``) or first iterated, so a
    break before the first event loses nothing. It resumes after the last
    revision it delivered when its stream breaks (a node stops, a leader
    changes), with the client's retry policy per break; a ``Compacted``
    start revision or a cut-off ``SlowWatcher`` is raised (resume from
    ``last_revision + 1`` with a new watch if you can). ``await close()``
    ends it, from any task."""

    def __init__(self, client: Client, prefix: str, from_revision: int) -> None:
        c.check_from_revision(from_revision)
        self._client = client
        self.prefix = prefix
        self._from = from_revision
        self._next: Optional[int] = None
        #: The revision of the last event delivered (0 before the first).
        self.last_revision = 0
        self._call: Optional[grpc.aio.UnaryStreamCall] = None
        self._closed = False
        self._closed_event: Optional[asyncio.Event] = None
        self._pending: Deque[c.Event] = collections.deque()
        self._failures = 0
        self._ep: Optional[c.Endpoint] = None  # where the open stream goes

    async def _start(self) -> None:
        if self._next is None:
            self._next = self._from if self._from else await self._client._revision(self.prefix) + 1

    async def close(self) -> None:
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def __aenter__(self) -> "Watch":
        await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> c.Event:
        client = self._client
        while True:
            if self._pending:
                ev = self._pending.popleft()
                self.last_revision = ev.revision
                self._next = ev.revision + 1
                return ev
            if self._closed:
                raise StopAsyncIteration
            await self._start()
            if self._call is None:
                self._ep = client._pick()
                self._call = client._stub(self._ep, pbg.LocksStub).Watch(
                    pb.WatchRequest(prefix=self.prefix, from_revision=self._next), metadata=client._metadata()
                )
            call = self._call
            f: Optional[c.Failure] = None
            try:
                resp = await call.read()
                if resp is not grpc.aio.EOF:
                    self._failures = 0
                    # Events of one entry share a revision and come in one
                    # message, so resuming after its revision loses nothing.
                    self._pending.extend(c.Event.of(e) for e in resp.events)
                    continue
            except grpc.RpcError as e:
                if self._closed:
                    raise StopAsyncIteration from None
                f = c.failure_of(e)
                if c.watch_gives_up(f):
                    raise f.error() from None
            except asyncio.CancelledError:
                if self._closed and not _cancelling():
                    raise StopAsyncIteration from None  # close() cancelled the stream
                call.cancel()
                raise
            self._call = None
            call.cancel()
            if self._closed:
                raise StopAsyncIteration
            self._failures += 1
            if self._failures > client.retry.max_attempts:
                raise errors.Unavailable(
                    f"the watch could not be reopened in {self._failures - 1} attempts"
                    + (f": {f.reason or f.code.name}: {f.message}" if f else ""),
                    reason="UNAVAILABLE",
                )
            if f is not None and f.leader_addr:
                client._prefer(f.leader_addr)
            else:
                if self._ep is not None:
                    client._advance(self._ep)  # only if no other call moved on already
            if self._closed_event is None:
                self._closed_event = asyncio.Event()
            try:
                await asyncio.wait_for(self._closed_event.wait(), client.retry.backoff(self._failures))
            except asyncio.TimeoutError:
                pass


__all__ = ["Client", "Watch"]
