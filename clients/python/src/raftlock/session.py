"""Sessions (one lease kept alive by one background thread) and lock
guards (holds with fencing tokens), for the blocking client."""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _common as c
from . import errors
from .v1 import raftlock_pb2 as pb
from .v1 import raftlock_pb2_grpc as pbg

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("raftlock")
F = TypeVar("F", bound=Callable[..., Any])

# Name states on a session (the same-session rule, docs/client.md).
_ACQUIRING, _HELD, _SETTLING = "acquiring", "held", "settling"


class Session:
    """One lease, kept alive by one keep-alive stream in a background thread
    (a request every ttl/3, reopened on another node when it breaks).

    ``valid_until()`` is when the lease is certainly still alive, on
    ``time.monotonic()``: the send time of the last acknowledged keep-alive
    + ttl - drift margin. ``lost`` (a ``threading.Event``) is set, and the
    ``on_lost`` callbacks run, when a keep-alive is refused (the lease is
    gone) or that instant passes without an acknowledged keep-alive —
    before the cluster can give the session's locks to anyone else.

    Use it as a context manager (revoked on exit) or call ``close()``.
    """

    def __init__(self, client: "Client", lease_id: int, ttl: float, owner: str, margin: float, sent_at: Optional[float], revoke_on_close: bool) -> None:
        self.client = client
        self.lease_id = lease_id
        self.owner = owner
        self.drift_margin = margin
        # An attached lease is not known alive until its first keep-alive.
        self._validity = c.Validity(sent_at if sent_at is not None else time.monotonic() - ttl, ttl, margin)
        self._revoke_on_close = revoke_on_close
        #: Set when the lease is lost (not on a clean revoke or close).
        self.lost = threading.Event()
        #: Set when the session ended in any way (lost, revoked, closed).
        self.ended = threading.Event()
        self._callbacks: List[Callable[["Session"], None]] = []
        self._cond = threading.Condition()
        self._names: Dict[str, str] = {}
        self._stop = threading.Event()
        self._paused = False
        self._stream: Optional[Tuple[Any, "queue.Queue[Optional[pb.KeepAliveRequest]]"]] = None
        self._first_ack = threading.Event()
        self._handed_out = True
        self._stopped = False
        self._keeper = threading.Thread(target=self._keep_alive, name=f"raftlock-keepalive-{lease_id}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch_validity, name=f"raftlock-validity-{lease_id}", daemon=True)

    # ----- starting ----------------------------------------------------------

    @classmethod
    def _start(
        cls,
        client: "Client",
        ttl: float,
        owner: Optional[str],
        drift_margin: Optional[float],
        on_lost: Optional[Callable[["Session"], None]],
        timeout: Optional[float],
    ) -> "Session":
        ttl_ms = c.ttl_ms(ttl)
        margin = _margin(ttl_ms / 1000, drift_margin)
        owner = c.owner_of(owner)
        sent_at = time.monotonic()
        r = client._call(
            pbg.LeasesStub,
            "Grant",
            pb.GrantLeaseRequest(ttl_ms=ttl_ms, owner=owner),
            deadline=client._deadline(timeout),
        )
        s = cls(client, r.lease_id, r.ttl_ms / 1000, owner, margin, sent_at, True)
        if on_lost is not None:
            s._callbacks.append(on_lost)
        s._keeper.start()
        s._watchdog.start()
        return s

    @classmethod
    def _attach(
        cls,
        client: "Client",
        lease_id: int,
        ttl: float,
        drift_margin: Optional[float],
        on_lost: Optional[Callable[["Session"], None]],
    ) -> "Session":
        ttl_s = c.ttl_ms(ttl) / 1000
        # Never handed out before the first acknowledged keep-alive, which
        # sets the validity from its own send time (later than now); if none
        # comes within a ttl the watchdog ends the session, and a node that
        # says the lease is gone ends it at once.
        s = cls(client, lease_id, ttl_s, "", _margin(ttl_s, drift_margin), time.monotonic(), False)
        s._validity.provisional = True
        s._validity.margin_auto = drift_margin is None
        s._handed_out = False
        s._keeper.start()
        s._watchdog.start()
        deadline = time.monotonic() + ttl_s
        while not s._first_ack.is_set() and not s.ended.is_set() and time.monotonic() < deadline:
            s._first_ack.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        if not (s._first_ack.is_set() and s.is_valid()):
            s._stop_threads("revoked")
            raise errors.LeaseLost(f"lease {lease_id} could not be kept alive", reason="LEASE_LOST")
        s._handed_out = True
        if on_lost is not None:
            s._callbacks.append(on_lost)
        return s

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

    def on_lost(self, callback: Callable[["Session"], None]) -> None:
        """Call ``callback(session)`` (from a background thread) when the
        lease is lost; at once if it already is."""
        with self._cond:
            if not self.lost.is_set():
                self._callbacks.append(callback)
                return
        _run_callback(callback, self)

    def pause_keep_alives(self, paused: bool = True) -> None:
        """Stop (or restart) sending keep-alives, as a frozen process would:
        for tests of what happens when a lease runs out."""
        self._paused = paused
        if paused:
            self._cancel_stream()

    # ----- the background threads --------------------------------------------

    def _cancel_stream(self) -> None:
        with self._cond:
            st = self._stream
        if st is not None:
            st[1].put(None)
            st[0].cancel()

    def _keep_alive(self) -> None:
        client = self.client
        req = pb.KeepAliveRequest(lease_id=self.lease_id)
        reopen_pause = 0.02
        while not self._stop.is_set() and self._validity.valid_until() is not None:
            if self._paused:
                self._stop.wait(0.02)
                continue
            ep = client._pick()
            q: "queue.Queue[Optional[pb.KeepAliveRequest]]" = queue.Queue()

            def requests(q: "queue.Queue[Optional[pb.KeepAliveRequest]]" = q) -> Iterable[pb.KeepAliveRequest]:
                while True:
                    item = q.get()
                    if item is None:
                        return
                    yield item

            sent_at = time.monotonic()
            q.put(req)
            call = None
            try:
                call = client._stub(ep, pbg.LeasesStub).KeepAlive(requests(), metadata=client._metadata())
                with self._cond:
                    self._stream = (call, q)
                if self._stop.is_set():
                    break
                learnt = False
                for resp in call:
                    if not learnt:
                        client._learn(call)
                        learnt = True
                    if not self._validity.renewed(sent_at, resp.ttl_ms / 1000):
                        break
                    self._first_ack.set()
                    reopen_pause = 0.02
                    with self._cond:
                        self._cond.notify_all()
                    if self._stop_before_next(sent_at):
                        break
                    if self._paused:
                        break
                    sent_at = time.monotonic()
                    q.put(req)
            except grpc.RpcError as e:
                if not self._stop.is_set() and not self._paused:
                    f = c.classify(e.code(), e.details(), e.trailing_metadata())
                    if f.reason in ("LEASE_NOT_FOUND", "LEASE_EXPIRING"):
                        self._end("lost", gone=True)
                        break
                    log.debug("lease %d: keep-alive stream failed: %s", self.lease_id, e.details())
                    if f.leader_addr:
                        client._prefer(f.leader_addr)
                    else:
                        client._advance(ep)
            except errors.Error:
                break  # the client was closed
            finally:
                q.put(None)
                if call is not None:
                    call.cancel()
                with self._cond:
                    self._stream = None
            if self._stop.wait(reopen_pause):
                break
            reopen_pause = min(reopen_pause * 2, 0.5)

    def _stop_before_next(self, sent_at: float) -> bool:
        """Wait until the next keep-alive is due (ttl/3 after the last one
        was sent, with the ttl as it is now: an extend may shorten it
        meanwhile); True if the session stopped first."""
        while True:
            left = sent_at + self._validity.ttl / 3 - time.monotonic()
            if left <= 0:
                return False
            if self._stop.wait(min(left, 0.1)):
                return True

    def _watch_validity(self) -> None:
        """Marks the session lost the moment its validity window closes."""
        while True:
            with self._cond:
                if self._stop.is_set():
                    return
                until = self._validity.valid_until()
                if until is None:
                    break
                self._cond.wait(max(0.0, until - time.monotonic()) + 0.001)
        self._end(self._validity.ended or "lost")

    def _end(self, how: str, gone: bool = False) -> None:
        """The session ended: ``how`` is "lost" or "revoked"; an earlier end
        stands (a session revoked is not lost later). ``gone``: a node said
        the lease no longer exists."""
        self._validity.end(how)
        how = self._validity.ended or how
        with self._cond:
            first = not self.ended.is_set()
            if how == "lost" and not self.lost.is_set():
                self.lost.set()
                callbacks, self._callbacks = self._callbacks, []
            else:
                callbacks = []
            self.ended.set()
            self._cond.notify_all()
        self._cancel_stream()
        if first and how == "lost" and self._handed_out:
            log.warning("lease %d lost: its locks must be taken as gone", self.lease_id)
        for cb in callbacks:
            _run_callback(cb, self)
        if first and how == "lost" and not gone and self._revoke_on_close and not self._paused and not self._stopped:
            # Lost here, yet the cluster may still keep the lease (a new
            # leader gives every lease a full ttl): revoking frees its locks
            # now. A paused session plays a frozen process.
            threading.Thread(target=self._revoke_quietly, name=f"raftlock-revoke-{self.lease_id}", daemon=True).start()

    def _revoke_quietly(self) -> None:
        try:
            self._revoke_call(None)
        except errors.Error as e:
            log.debug("lease %d: revoke after the loss failed: %s", self.lease_id, e)

    # ----- ending ------------------------------------------------------------

    def revoke(self, *, timeout: Optional[float] = None) -> None:
        """End the lease now: its holds are released, its waits dropped. A
        lease the cluster no longer knows counts as revoked (a lost session
        is revoked too: the cluster may still keep it)."""
        self._stop_threads("revoked")
        self._revoke_call(timeout)

    def _revoke_call(self, timeout: Optional[float]) -> None:
        try:
            self.client._call(
                pbg.LeasesStub,
                "Revoke",
                pb.RevokeLeaseRequest(lease_id=self.lease_id),
                deadline=self.client._deadline(timeout),
                idempotent=True,  # revoking a lease twice: LEASE_NOT_FOUND, fine
            )
        except errors.LeaseLost:
            pass

    def close(self) -> None:
        """Stop the keep-alives and revoke the lease (best effort: if the
        cluster cannot be reached it expires after its ttl). An attached
        session only stops its keep-alives."""
        if self._stopped:
            return
        if self._revoke_on_close:
            try:
                self.revoke()
            except errors.Error as e:
                log.info("lease %d: revoke on close failed (%s); it expires after its ttl", self.lease_id, e)
        else:
            self._stop_threads("revoked")

    def _stop_threads(self, how: str) -> None:
        self._stopped = True
        self._stop.set()
        self._end(how)
        for t in (self._keeper, self._watchdog):
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=2.0)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(lease_id={self.lease_id}, ttl={self.ttl}, valid={self.is_valid()})"

    def info(self, *, timeout: Optional[float] = None) -> Optional[c.LeaseInfo]:
        """What the cluster keeps about this lease (None once it is gone)."""
        for l in self.client.leases(timeout=timeout):
            if l.lease_id == self.lease_id:
                return l
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
    ) -> "LockGuard":
        """Acquire ``name`` for this session, waiting up to ``wait`` seconds
        in its FIFO queue (0: try once). A :class:`LockGuard`: use it with
        ``with`` (released on exit) or call ``release()``.

        ``deadline`` bounds the whole call, retries included (default: the
        wait + the client's call_timeout)."""
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

    def try_lock(self, name: str, **options: Any) -> "LockGuard":
        """``lock(name, wait=0)``: :class:`errors.LockBusy` if it is held."""
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
    ) -> "LockGuard":
        """Several locks at once, all or none, with one token (one request,
        one log entry). ``modes`` gives some names another mode. Sets taken
        in different orders cannot deadlock: a waiting request is granted
        when it is first in every queue."""
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
        return self._acquire(a, reason, time.monotonic() + a.total)

    def _acquire(self, a: c.AcquireArgs, reason: str, end: float) -> "LockGuard":
        names, specs = a.names, a.specs
        if not self.is_valid():
            raise errors.LeaseLost(f"session {self.lease_id} is no longer valid", reason="LEASE_LOST")
        self._claim(names, end)
        try:
            r = self.client._acquire(self.lease_id, specs, a.wait, reason, a.metadata, a.lock_delay_ms, end)
        except errors.Error as e:
            if e.may_have_been_applied:
                self._settle(names, specs, reason)
            else:
                self._unclaim(names)
                if isinstance(e, errors.LeaseLost):
                    self._end("lost", gone=True)
            raise
        except BaseException:
            # Interrupted mid-call (KeyboardInterrupt...): the request may be
            # in the log; clean up in the background.
            self._settle(names, specs, reason)
            raise
        with self._cond:
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

    def read_lock(self, name: str, **options: Any) -> "LockGuard":
        """A shared hold: many readers, never beside a writer."""
        return self.lock(name, mode=c.Mode.SHARED, **options)

    def write_lock(self, name: str, **options: Any) -> "LockGuard":
        """An exclusive hold: the writer side of a readers/writer lock."""
        return self.lock(name, mode=c.Mode.EXCLUSIVE, **options)

    def semaphore(self, name: str, permits: int, **options: Any) -> "LockGuard":
        """One of ``permits`` places of a counting semaphore."""
        return self.lock(name, mode=c.Mode.SEMAPHORE, permits=permits, **options)

    def locked(self, name: str, **options: Any) -> Callable[[F], F]:
        """A decorator: the function runs under ``session.lock(name, **options)``."""
        from .recipes import _decorate

        return _decorate(lambda: self.lock(name, **options))

    # ----- the same-session rule ----------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this session holds or is acquiring ``name`` through a guard."""
        with self._cond:
            return self._names.get(name) in (_ACQUIRING, _HELD)

    def _claim(self, names: Sequence[str], end: float) -> None:
        with self._cond:
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
                self._cond.wait(left)
            for n in names:
                self._names[n] = _ACQUIRING

    def _unclaim(self, names: Iterable[str], only: Optional[str] = None) -> None:
        """Free ``names`` on the session (``only`` those in that state)."""
        with self._cond:
            for n in names:
                if only is None or self._names.get(n) == only:
                    self._names.pop(n, None)
            self._cond.notify_all()

    def _settle(self, names: Sequence[str], specs: List[pb.LockSpec], reason: str) -> None:
        """An acquire (or release) ended without a definite answer: its
        request may be queued or granted for this lease. In the background,
        release what it holds there and withdraw what is queued, then free
        the names (bounded: 10 failed rounds or 3 ttls)."""
        with self._cond:
            for n in names:
                self._names[n] = _SETTLING
        t = threading.Thread(
            target=self._settle_run, args=(list(names), specs, reason), name=f"raftlock-settle-{self.lease_id}", daemon=True
        )
        t.start()

    def _settle_run(self, names: List[str], specs: List[pb.LockSpec], reason: str) -> None:
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
                        info = client.inspect(n)
                        if info is None:
                            continue
                        for h in info.holders:
                            if h.lease_id == self.lease_id:
                                left_over = True
                                try:
                                    client._release(self.lease_id, h.token, [n], time.monotonic() + client.call_timeout)
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
                            r = client._acquire(self.lease_id, specs, 0.001, reason, {}, 0, time.monotonic() + client.call_timeout)
                            client._release(self.lease_id, r.token, [h.name for h in r.holds], time.monotonic() + client.call_timeout)
                        except (errors.WaitTimeout, errors.LockBusy, errors.WaitDropped, errors.NotHolder):
                            pass
                    if not left_over:
                        return
                    busy_rounds += 1
                    self._stop.wait(0.05)
                except errors.Error as e:
                    failures += 1
                    log.debug("lease %d: cleanup of %s failed: %s", self.lease_id, names, e)
                    self._stop.wait(min(0.05 * 2**failures, 1.0))
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
    set. A context manager: released on exit."""

    def __init__(self, session: Session, names: Sequence[str], r: c.Acquired, specs: List[pb.LockSpec]) -> None:
        self._owns = [False]
        super().__init__(session, names, r, specs)
        self._lock = threading.Lock()
        # A guard dropped without release(): its holds are released in the
        # background (and a one-off lock's session revoked), as the Rust
        # client's Drop does.
        self._finalizer = weakref.finalize(self, _abandoned, session, self.names, specs, self._owns)

    @property
    def _owns_session(self) -> bool:
        return self._owns[0]

    @_owns_session.setter
    def _owns_session(self, value: bool) -> None:
        self._owns[0] = value

    session: Session

    @property
    def lost(self) -> threading.Event:
        """The session's ``lost`` event."""
        return self.session.lost

    def extend(self, ttl: Optional[float] = None, *, timeout: Optional[float] = None) -> int:
        """Record an extension of the hold(s) and restart the lease's
        deadline; ``ttl`` gives the lease a new ttl. The hold's extension
        count. Raises LeaseLost/NotHolder if the hold is gone."""
        if self._released:
            raise errors.NotHolder("the guard was released", reason="NOT_HOLDER")
        sent_at = time.monotonic()
        extensions = 0
        session = self.session
        for n in self.names:
            try:
                r = session.client._extend(session.lease_id, n, self.token, ttl, session.client._deadline(timeout))
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

    def release(self, *, timeout: Optional[float] = None) -> None:
        """Release the hold(s). Idempotent. If the hold was lost meanwhile
        (the lease ended, an administrator force-released it) this raises
        LeaseLost or NotHolder: the protected work ran, at its end, without
        the lock. A release that cannot reach the cluster, or fails in any
        other way, is finished in the background (what is left of this
        lease on the names is released; the lease's end is the backstop);
        until then a new acquire of the names on this session waits."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._finalizer.detach()
        session = self.session
        with session._cond:
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
                session.client._release(session.lease_id, self.token, self.names, session.client._deadline(timeout))
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
            except BaseException:  # interrupted mid-call
                session._settle(self.names, self._specs, "")
                in_background = True
                raise
        finally:
            if not in_background:
                session._unclaim(self.names, _SETTLING)
            if self._owns_session:
                session.close()

    def _release_in_background(self) -> None:
        with self._lock:
            self._released = True
        self._finalizer.detach()
        self.session._settle(self.names, self._specs, "")

    def __enter__(self) -> "LockGuard":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.release()
            return
        try:
            self.release()
        except errors.Error as e:
            log.warning("releasing %s after an exception failed: %s", list(self.names), e)



def _margin(ttl: float, drift_margin: Optional[float]) -> float:
    return c.check_drift_margin(ttl, drift_margin)


def _abandoned(session: Session, names: Tuple[str, ...], specs: List[pb.LockSpec], owns: List[bool]) -> None:
    """A guard was garbage-collected unreleased (never the guard itself
    here: it is gone). Work in a thread of its own, never in the collector's."""

    def run() -> None:
        if owns[0]:
            session.close()
        elif not session.ended.is_set():
            session._settle(names, specs, "")

    log.info("a guard of %s was dropped without release(): releasing in the background", list(names))
    threading.Thread(target=run, name="raftlock-abandoned-guard", daemon=True).start()


def _run_callback(cb: Callable[[Session], None], s: Session) -> None:
    try:
        cb(s)
    except Exception:  # a user's callback must not kill our thread
        log.exception("an on_lost callback raised")
