"""Sessions (one lease kept alive by one asyncio task) and lock guards
(holds with fencing tokens) on asyncio: ``raftlock.session``'s model, with
``async with`` and coroutines."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    Generator,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    TypeVar,
    Union,
)

import grpc
import grpc.aio

from .. import _common as c
from .. import errors
from ..v1 import raftlock_pb2 as pb
from ..v1 import raftlock_pb2_grpc as pbg

if TYPE_CHECKING:
    from ._client import Client

log = logging.getLogger("raftlock")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: An ``on_lost`` callback: a function or a coroutine function of the session.
LostCallback = Callable[["Session"], Union[None, Awaitable[None]]]

# Name states on a session (the same-session rule, docs/client.md).
_ACQUIRING, _HELD, _SETTLING = "acquiring", "held", "settling"

# Tasks nobody else holds a reference to (asyncio keeps only weak ones).
_orphans: Set["asyncio.Task[Any]"] = set()


def _spawn(coro: Coroutine[Any, Any, Any], into: Optional[Set["asyncio.Task[Any]"]] = None, name: str = "") -> "asyncio.Task[Any]":
    """Run ``coro`` as a background task, kept referenced until it ends; an
    exception it ends with is logged."""
    tasks = _orphans if into is None else into
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)

    def done(t: "asyncio.Task[Any]") -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("raftlock background task %s failed", name or t, exc_info=t.exception())

    task.add_done_callback(done)
    return task


class _Changed:
    """Wakes every task waiting for a change of a session's names."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class _Pending(Generic[T]):
    """Something started when awaited, or entered with ``async with`` (and
    then closed or released on exit). Use it once."""

    def __init__(self, start: Callable[[], Coroutine[Any, Any, T]], what: str) -> None:
        self._start = start
        self._what = what
        self._used = False
        self._value: Optional[T] = None

    def _begin(self) -> Coroutine[Any, Any, T]:
        if self._used:
            raise RuntimeError(f"this {self._what} was already awaited or entered: make a new one")
        self._used = True
        return self._start()

    def __await__(self) -> Generator[Any, None, T]:
        return self._begin().__await__()

    async def __aenter__(self) -> T:
        self._value = await self._begin()
        return self._value

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        value, self._value = self._value, None
        if value is not None:
            await value.__aexit__(exc_type, exc, tb)  # type: ignore[attr-defined]


class LockAcquire(_Pending["LockGuard"]):
    """An acquire: ``guard = await session.lock(name)``, or ``async with
    session.lock(name) as guard:`` (released on exit). Nothing is sent
    before it is awaited or entered."""

    def __init__(self, start: Callable[[], Coroutine[Any, Any, "LockGuard"]]) -> None:
        super().__init__(start, "acquire")


class SessionStart(_Pending["Session"]):
    """A session being started: ``session = await client.session()``, or
    ``async with client.session() as session:`` (closed on exit)."""

    def __init__(self, start: Callable[[], Coroutine[Any, Any, "Session"]]) -> None:
        super().__init__(start, "session start")


def _decorate(take: Callable[[], LockAcquire]) -> Callable[[F], F]:
    """A decorator of coroutine functions: each call runs under ``take()``."""

    def wrap(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is not a coroutine function: raftlock.aio's locked() decorates `async def`s")

        @functools.wraps(fn)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with take():
                return await fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


async def _exchange(call: grpc.aio.StreamStreamCall, req: pb.KeepAliveRequest) -> Any:
    """Send one keep-alive on the stream and read its answer (or EOF)."""
    try:
        await call.write(req)
    except asyncio.InvalidStateError:
        pass  # the stream has ended: the read says how
    return await call.read()


class Session:
    """One lease, kept alive by one keep-alive stream in an asyncio task (a
    request every ttl/3, each answer paired with its request's send time,
    the stream reopened on another node when it breaks).

    ``valid_until()`` is when the lease is certainly still alive, on
    ``time.monotonic()`` (the event loop's clock): the send time of the last
    acknowledged keep-alive + ttl - drift margin. ``lost`` (an
    ``asyncio.Event``) is set, and the ``on_lost`` callbacks run, when a
    keep-alive is refused (the lease is gone) or that instant passes without
    an acknowledged keep-alive — before the cluster can give the session's
    locks to anyone else. ``ended`` is set when the session ends in any way.

    Made by ``await client.session(...)`` or ``async with
    client.session(...) as session:``; ``await close()`` (or leaving
    ``async with``) revokes the lease.
    """

    def __init__(
        self,
        client: "Client",
        lease_id: int,
        owner: str,
        margin: float,
        validity: c.Validity,
        revoke_on_close: bool,
    ) -> None:
        self.client = client
        self.lease_id = lease_id
        self.owner = owner
        self.drift_margin = margin
        self._validity = validity
        self._revoke_on_close = revoke_on_close
        #: Set when the lease is lost (not on a clean revoke or close).
        self.lost = asyncio.Event()
        #: Set when the session ended in any way (lost, revoked, closed).
        self.ended = asyncio.Event()
        self._callbacks: List[LostCallback] = []
        self._names: Dict[str, str] = {}
        self._names_changed = _Changed()
        self._paused = False
        self._stopped = False
        self._handed_out = True  # False while attach_session waits: a loss then is its error, not news
        self._first_ack = asyncio.Event()
        self._keeper: Optional["asyncio.Task[None]"] = None
        self._watchdog: Optional["asyncio.Task[None]"] = None
        self._cleanups: Set["asyncio.Task[Any]"] = set()
        self._callback_tasks: Set["asyncio.Task[Any]"] = set()

    # ----- starting ----------------------------------------------------------

    @classmethod
    async def _start(
        cls,
        client: "Client",
        ttl: float,
        owner: Optional[str],
        drift_margin: Optional[float],
        on_lost: Optional[LostCallback],
        deadline: float,
    ) -> "Session":
        ttl_ms = c.ttl_ms(ttl)
        margin = c.check_drift_margin(ttl_ms / 1000, drift_margin)
        owner = c.owner_of(owner)
        if not isinstance(owner, str):
            raise errors.InvalidArgument(
                f"owner must be a str, not {owner!r}", reason="INVALID_ARGUMENT", metadata={"field": "owner"}
            )
        sent_at = time.monotonic()
        r = await client._call(
            pbg.LeasesStub, "Grant", pb.GrantLeaseRequest(ttl_ms=ttl_ms, owner=owner), deadline=deadline
        )
        ttl_s = r.ttl_ms / 1000
        s = cls(client, r.lease_id, owner, margin, c.Validity(sent_at, ttl_s, margin), True)
        if on_lost is not None:
            s._callbacks.append(on_lost)
        s._start_tasks()
        return s

    @classmethod
    async def _attach(
        cls,
        client: "Client",
        lease_id: int,
        ttl: float,
        drift_margin: Optional[float],
        on_lost: Optional[LostCallback],
    ) -> "Session":
        ttl_s = c.ttl_ms(ttl) / 1000
        margin = c.check_drift_margin(ttl_s, drift_margin)
        # Not handed out before the first acknowledged keep-alive, which
        # sets the validity from its own send time; this window only gives
        # that keep-alive one ttl to come.
        s = cls(client, lease_id, "", margin, c.Validity(time.monotonic(), ttl_s, margin), False)
        s._validity.provisional = True
        s._validity.margin_auto = drift_margin is None
        s._handed_out = False
        s._start_tasks()
        ack = asyncio.ensure_future(s._first_ack.wait())
        end = asyncio.ensure_future(s.ended.wait())
        try:
            await asyncio.wait({ack, end}, timeout=ttl_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ack.cancel()
            end.cancel()
            if not (s._first_ack.is_set() and s.is_valid()):
                await s._stop("revoked")
        if not s.is_valid():
            raise errors.LeaseLost(f"lease {lease_id} could not be kept alive", reason="LEASE_LOST")
        s._handed_out = True
        if on_lost is not None:
            s._callbacks.append(on_lost)
        return s

    def _start_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        self._keeper = loop.create_task(self._keep_alive())
        self._watchdog = loop.create_task(self._watch_validity())

    # ----- validity ----------------------------------------------------------

    @property
    def ttl(self) -> float:
        return self._validity.ttl

    def valid_until(self) -> Optional[float]:
        """``time.monotonic()`` instant until which the lease is certainly
        alive; None once lost, revoked or closed."""
        return self._validity.valid_until()

    def is_valid(self) -> bool:
        return self._validity.is_valid()

    def remaining(self) -> float:
        """Seconds of certain validity left (0 once invalid)."""
        return self._validity.remaining()

    def on_lost(self, callback: LostCallback) -> None:
        """Call ``callback(session)`` when the lease is lost (at once if it
        already is). A coroutine function's coroutine runs as a task."""
        if self.lost.is_set():
            self._run_callback(callback)
        else:
            self._callbacks.append(callback)

    def pause_keep_alives(self, paused: bool = True) -> None:
        """Stop (or restart) sending keep-alives, as a frozen process would:
        for tests of what happens when a lease runs out."""
        self._paused = paused
        if paused:
            if self._keeper is not None:
                self._keeper.cancel()
                self._keeper = None
        elif self._keeper is None and not self.ended.is_set():
            self._keeper = asyncio.get_running_loop().create_task(self._keep_alive())

    # ----- the background tasks ----------------------------------------------

    async def _keep_alive(self) -> None:
        client = self.client
        req = pb.KeepAliveRequest(lease_id=self.lease_id)
        reopen_pause = 0.02
        while self._validity.valid_until() is not None:
            ep = client._pick()
            call: Optional[grpc.aio.StreamStreamCall] = None
            try:
                call = client._stub(ep, pbg.LeasesStub).KeepAlive(metadata=client._metadata())
                learnt = False
                while True:
                    until = self._validity.valid_until()
                    if until is None:
                        return
                    sent_at = time.monotonic()
                    try:
                        resp = await asyncio.wait_for(_exchange(call, req), max(0.0, until - sent_at))
                    except asyncio.TimeoutError:
                        # No answer within the window known then (an extend
                        # may have moved it since): reopen, or let the
                        # watchdog mark the session lost.
                        break
                    if resp is grpc.aio.EOF:
                        break
                    if not learnt:
                        await client._learn(call)
                        learnt = True
                    if not self._validity.renewed(sent_at, resp.ttl_ms / 1000):
                        self._end("lost")  # the answer came after the window closed
                        return
                    self._first_ack.set()
                    reopen_pause = 0.02
                    # Due ttl/3 after the last send, with the ttl as it is
                    # now (an extend may shorten it meanwhile).
                    while (left := sent_at + self._validity.ttl / 3 - time.monotonic()) > 0:
                        await asyncio.sleep(min(left, 0.1))
            except grpc.RpcError as e:
                f = c.failure_of(e)
                if f.reason in c.LEASE_GONE:
                    self._end("lost", gone=True)
                    return
                log.debug("lease %d: keep-alive stream failed: %s", self.lease_id, f.message)
                if f.leader_addr:
                    client._prefer(f.leader_addr)
                else:
                    client._advance(ep)
            except errors.Error:
                return  # the client was closed: the watchdog ends the session
            finally:
                if call is not None:
                    call.cancel()
            await asyncio.sleep(reopen_pause)
            reopen_pause = min(reopen_pause * 2, 0.5)

    async def _watch_validity(self) -> None:
        """Marks the session lost the moment its validity window closes."""
        while True:
            until = self._validity.valid_until()
            if until is None:
                break
            await asyncio.sleep(max(0.0, until - time.monotonic()) + 0.001)
        self._end(self._validity.ended or "lost")

    def _end(self, how: str, gone: bool = False) -> None:
        """The session ended: ``how`` is "lost" or "revoked"; an earlier end
        stands (a session revoked is not lost later). ``gone``: a node said
        the lease no longer exists."""
        self._validity.end(how)
        how = self._validity.ended or how
        first = not self.ended.is_set()
        callbacks: List[LostCallback] = []
        if how == "lost" and not self.lost.is_set():
            self.lost.set()
            callbacks, self._callbacks = self._callbacks, []
        self.ended.set()
        self._names_changed.notify()
        current = asyncio.current_task()
        for t in (self._keeper, self._watchdog):
            if t is not None and t is not current:
                t.cancel()
        if first and how == "lost" and self._handed_out:
            log.warning("lease %d lost: its locks must be taken as gone", self.lease_id)
        for cb in callbacks:
            self._run_callback(cb)
        if how == "lost" and first and not gone:
            if self._revoke_on_close and not self._paused and not self._stopped:
                # Lost here, yet the cluster may still keep the lease (a new
                # leader gives every lease a full ttl): revoking frees its
                # locks now. A paused session plays a frozen process.
                _spawn(self._revoke_quietly(), self._cleanups, f"revoke of lost lease {self.lease_id}")

    async def _revoke_quietly(self) -> None:
        try:
            await self._revoke_call(None)
        except errors.Error as e:
            log.debug("lease %d: revoke after the loss failed: %s", self.lease_id, e)

    def _run_callback(self, cb: LostCallback) -> None:
        try:
            r = cb(self)
        except Exception:  # a user's callback must not break ours
            log.exception("an on_lost callback raised")
            return
        if inspect.isawaitable(r):

            async def run() -> None:
                try:
                    await r
                except Exception:
                    log.exception("an on_lost callback raised")

            _spawn(run(), self._callback_tasks, "on_lost")

    # ----- ending ------------------------------------------------------------

    async def _stop(self, how: str) -> None:
        """Stop the keep-alives, the watchdog and any cleanup."""
        self._stopped = True
        self._end(how)
        current = asyncio.current_task()
        tasks = [t for t in (self._keeper, self._watchdog, *self._cleanups) if t is not None and t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def revoke(self, *, timeout: Optional[float] = None) -> None:
        """End the lease now: its holds are released, its waits dropped. A
        lease the cluster no longer knows counts as revoked (a lost session
        is revoked too: the cluster may still keep it)."""
        await self._stop("revoked")
        await self._revoke_call(timeout)

    async def _revoke_call(self, timeout: Optional[float]) -> None:
        try:
            await self.client._call(
                pbg.LeasesStub,
                "Revoke",
                pb.RevokeLeaseRequest(lease_id=self.lease_id),
                deadline=self.client._deadline(timeout),
                idempotent=True,  # revoking a lease twice: LEASE_NOT_FOUND, fine
            )
        except errors.LeaseLost:
            pass

    async def close(self) -> None:
        """Stop the keep-alives and revoke the lease (best effort: if the
        cluster cannot be reached it expires after its ttl). An attached
        session only stops its keep-alives."""
        if self._stopped:
            return
        if self._revoke_on_close:
            try:
                await self.revoke()
            except errors.Error as e:
                log.info("lease %d: revoke on close failed (%s); it expires after its ttl", self.lease_id, e)
        else:
            await self._stop("revoked")

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Session(lease_id={self.lease_id}, ttl={self.ttl}, valid={self.is_valid()})"

    async def info(self, *, timeout: Optional[float] = None) -> Optional[c.LeaseInfo]:
        """What the cluster keeps about this lease (None once it is gone)."""
        for lease in await self.client.leases(timeout=timeout):
            if lease.lease_id == self.lease_id:
                return lease
        return None

    # ----- locks -------------------------------------------------------------

    def lock(
        self,
        name: str,
        *,
        wait: float = 30.0,
        mode: Union[c.Mode, str] = c.Mode.EXCLUSIVE,
        permits: int = 0,
        reason: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        lock_delay: float = 0.0,
        deadline: Optional[float] = None,
    ) -> LockAcquire:
        """Acquire ``name`` for this session, waiting up to ``wait`` seconds
        in its FIFO queue (0: try once): ``guard = await session.lock(name)``
        or ``async with session.lock(name) as guard:`` (released on exit).

        ``deadline`` bounds the whole acquire, retries included (default: the
        wait + the client's call_timeout). A cancelled acquire may already be
        in the log: the session withdraws it in the background."""
        return self.lock_many(
            [name],
            wait=wait,
            mode=mode,
            permits=permits,
            reason=reason,
            metadata=metadata,
            lock_delay=lock_delay,
            deadline=deadline,
        )

    def try_lock(self, name: str, **options: Any) -> LockAcquire:
        """``lock(name, wait=0)``: :class:`raftlock.LockBusy` if it is held."""
        return self.lock(name, wait=0, **options)

    def lock_many(
        self,
        names: Sequence[str],
        *,
        modes: Optional[Mapping[str, Union[c.Mode, str]]] = None,
        wait: float = 30.0,
        mode: Union[c.Mode, str] = c.Mode.EXCLUSIVE,
        permits: int = 0,
        reason: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        lock_delay: float = 0.0,
        deadline: Optional[float] = None,
    ) -> LockAcquire:
        """Several locks at once, all or none, with one token (one request,
        one log entry). ``modes`` gives some names another mode. Sets taken
        in different orders cannot deadlock: a waiting request is granted
        when it is first in every queue."""

        async def start() -> LockGuard:
            a = c.acquire_args(
                names,
                modes=modes,
                wait=wait,
                mode=mode,
                permits=permits,
                reason=reason,
                metadata=metadata,
                lock_delay=lock_delay,
                deadline=deadline,
                call_timeout=self.client.call_timeout,
            )
            return await self._acquire(a, reason, time.monotonic() + a.total)

        return LockAcquire(start)

    def read_lock(self, name: str, **options: Any) -> LockAcquire:
        """A shared hold: many readers, never beside a writer."""
        return self.lock(name, mode=c.Mode.SHARED, **options)

    def write_lock(self, name: str, **options: Any) -> LockAcquire:
        """An exclusive hold: the writer side of a readers/writer lock."""
        return self.lock(name, mode=c.Mode.EXCLUSIVE, **options)

    def semaphore(self, name: str, permits: int, **options: Any) -> LockAcquire:
        """One of ``permits`` places of a counting semaphore."""
        return self.lock(name, mode=c.Mode.SEMAPHORE, permits=permits, **options)

    def locked(self, name: str, **options: Any) -> Callable[[F], F]:
        """A decorator of ``async def`` functions: each call runs under
        ``session.lock(name, **options)``."""
        return _decorate(lambda: self.lock(name, **options))

    async def _acquire(self, a: c.AcquireArgs, reason: str, end: float) -> "LockGuard":
        """The acquire of checked arguments, ending by ``end`` (monotonic)."""
        names, specs = a.names, a.specs
        if not self.is_valid():
            raise errors.LeaseLost(f"session {self.lease_id} is no longer valid", reason="LEASE_LOST")
        await self._claim(names, end)
        try:
            r = await self.client._acquire(self.lease_id, specs, a.wait, reason, a.metadata, a.lock_delay_ms, end)
        except errors.Error as e:
            if e.may_have_been_applied:
                self._settle(names, specs, reason)
            else:
                self._unclaim(names)
                if isinstance(e, errors.LeaseLost):
                    self._end("lost", gone=True)
            raise
        except BaseException:
            # Cancelled mid-call (asyncio.CancelledError): the request may be
            # in the log, queued or granted; clean up in the background.
            self._settle(names, specs, reason)
            raise
        for n in names:
            self._names[n] = _HELD
        guard = LockGuard(self, names, r, specs)
        if not self.is_valid():
            guard._release_in_background()
            raise errors.LeaseLost(
                f"the lock was granted after session {self.lease_id} stopped being valid; it is being released",
                reason="LEASE_LOST",
            )
        return guard

    # ----- the same-session rule ----------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this session holds or is acquiring ``name`` through a guard."""
        return self._names.get(name) in (_ACQUIRING, _HELD)

    async def _claim(self, names: Sequence[str], end: float) -> None:
        while True:
            taken = [n for n in names if self._names.get(n) in (_ACQUIRING, _HELD)]
            if taken:
                raise errors.AlreadyHeld(
                    f"session {self.lease_id} already holds or is acquiring {taken[0]!r} "
                    "through another guard: use that guard, or another session",
                    reason="ALREADY_HELD",
                    metadata={"name": taken[0]},
                )
            if not any(self._names.get(n) == _SETTLING for n in names):
                break
            left = end - time.monotonic()
            if left <= 0:
                raise errors.DeadlineExceeded(
                    "the deadline passed while this session was still releasing or "
                    "withdrawing an earlier acquire of the name",
                    reason="DEADLINE_EXCEEDED",
                    applied_unknown=False,
                )
            await self._names_changed.wait(left)
        for n in names:
            self._names[n] = _ACQUIRING

    def _unclaim(self, names: Iterable[str], only: Optional[str] = None) -> None:
        """Free ``names`` on the session (``only`` those in that state)."""
        for n in names:
            if only is None or self._names.get(n) == only:
                self._names.pop(n, None)
        self._names_changed.notify()

    def _settle(self, names: Sequence[str], specs: List[pb.LockSpec], reason: str) -> None:
        """An acquire (or release) ended without a definite answer: its
        request may be queued or granted for this lease. In a background
        task, release what it holds there and withdraw what is queued, then
        free the names (bounded: 10 failed rounds or 3 ttls)."""
        for n in names:
            self._names[n] = _SETTLING
        _spawn(self._settle_run(list(names), specs, reason), self._cleanups, f"cleanup of lease {self.lease_id}")

    async def _settle_run(self, names: List[str], specs: List[pb.LockSpec], reason: str) -> None:
        client = self.client
        give_up_at = time.monotonic() + 3 * self.ttl
        failures = 0
        busy_rounds = 0  # rounds that released or withdrew something and found more
        try:
            while time.monotonic() < give_up_at and failures < 10 and busy_rounds < 6:
                if not self.is_valid() or client._closed:
                    return  # the lease's end takes everything with it
                try:
                    left_over = False
                    queued = False
                    for n in names:
                        info = await client.inspect(n)
                        if info is None:
                            continue
                        for h in info.holders:
                            if h.lease_id == self.lease_id:
                                left_over = True
                                try:
                                    await client._release(self.lease_id, h.token, [n], client._deadline(None))
                                except errors.NotHolder:
                                    pass
                        if any(q.lease_id == self.lease_id for q in info.queue):
                            left_over = queued = True
                    if queued:
                        # The same acquire with a 1 ms wait: the server answers a
                        # lease already queued with its place and withdraws it
                        # when the wait ends; a grant made just before comes back
                        # and is released.
                        try:
                            r = await client._acquire(self.lease_id, specs, 0.001, reason, {}, 0, client._deadline(None))
                            await client._release(self.lease_id, r.token, [h.name for h in r.holds], client._deadline(None))
                        except (errors.WaitTimeout, errors.LockBusy, errors.WaitDropped, errors.NotHolder):
                            pass
                    if not left_over:
                        return
                    busy_rounds += 1
                    await asyncio.sleep(0.05)
                except errors.Error as e:
                    failures += 1
                    log.debug("lease %d: cleanup of %s failed: %s", self.lease_id, names, e)
                    await asyncio.sleep(min(0.05 * 2**failures, 1.0))
            log.warning(
                "lease %d: gave up cleaning up %s after an acquire without an answer; the lease's end will",
                self.lease_id,
                names,
            )
        finally:
            self._unclaim(names, _SETTLING)


class LockGuard(c.GuardBase):
    """Holds of one grant (one name, or several from ``lock_many``) with
    their fencing token. Pass ``token`` with every access to the resource
    the lock protects; stop when ``is_valid()`` turns False or ``lost`` is
    set. ``async with guard:`` releases it on exit."""

    def __init__(self, session: Session, names: Sequence[str], r: c.Acquired, specs: List[pb.LockSpec]) -> None:
        super().__init__(session, names, r, specs)

    session: Session

    @property
    def lost(self) -> asyncio.Event:
        """The session's ``lost`` event."""
        return self.session.lost

    async def extend(self, ttl: Optional[float] = None, *, timeout: Optional[float] = None) -> int:
        """Record an extension of the hold(s) and restart the lease's
        deadline; ``ttl`` gives the lease a new ttl. The hold's extension
        count. Raises LeaseLost/NotHolder if the hold is gone."""
        if self._released:
            raise errors.NotHolder("the guard was released", reason="NOT_HOLDER")
        session = self.session
        sent_at = time.monotonic()
        extensions = 0
        for n in self.names:
            try:
                r = await session.client._extend(session.lease_id, n, self.token, ttl, session.client._deadline(timeout))
            except errors.LeaseLost:
                session._end("lost", gone=True)
                raise
            except errors.Error as e:
                if ttl is not None and e.may_have_been_applied:
                    session._validity.shrink(sent_at, c.ttl_ms(ttl) / 1000)
                raise
            extensions = r.extensions
            session._validity.renewed(sent_at, r.ttl_ms / 1000, sets_ttl=True)
        return extensions

    async def release(self, *, timeout: Optional[float] = None) -> None:
        """Release the hold(s). Idempotent. If the hold was lost meanwhile
        (the lease ended, an administrator force-released it) this raises
        LeaseLost or NotHolder: the protected work ran, at its end, without
        the lock. A release that cannot reach the cluster, or is cancelled,
        is finished in the background (the lease's end is the backstop);
        until the release is done a new acquire of the names on this session
        waits for it."""
        if self._released:
            return
        self._released = True
        session = self.session
        for n in self.names:
            if session._names.get(n) == _HELD:
                session._names[n] = _SETTLING
        in_background = False
        try:
            if session.lost.is_set():
                raise errors.LeaseLost(
                    f"session {session.lease_id} was lost while holding {list(self.names)}", reason="LEASE_LOST"
                )
            try:
                await session.client._release(session.lease_id, self.token, self.names, session.client._deadline(timeout))
            except errors.LeaseLost:
                session._end("lost", gone=True)
                raise
            except errors.Error as e:
                # Not certainly released (or, with several names, one was
                # force-released and the others are still held): clean up.
                session._settle(self.names, self._specs, "")
                in_background = True
                if e.may_have_been_applied or isinstance(e, errors.Unavailable):
                    return
                raise
            except BaseException:  # cancelled mid-call
                session._settle(self.names, self._specs, "")
                in_background = True
                raise
        finally:
            if not in_background:
                session._unclaim(self.names, _SETTLING)
            if self._owns_session:
                await session.close()

    def _release_in_background(self) -> None:
        self._released = True
        self.session._settle(self.names, self._specs, "")

    async def __aenter__(self) -> "LockGuard":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.release()
            return
        try:
            await self.release()
        except errors.Error as e:
            log.warning("releasing %s after an exception failed: %s", list(self.names), e)

