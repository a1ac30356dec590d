"""Recipes built only on the public client API, each short: a decorator,
readers/writer lock, semaphore, leader election, a fenced resource."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, Iterator, Optional, TypeVar

from . import _common as c
from . import errors
from .session import LockGuard, Session

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _decorate(take: Callable[[], LockGuard]) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with take():
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


_default_lock = threading.Lock()
_default: Optional[Any] = None


def default_client() -> Any:
    """One process-wide :class:`raftlock.Client` made from the RAFTLOCK_*
    environment variables (endpoints, CA, certificate, key, token) on first
    use: what :func:`locked` uses when given no client."""
    global _default
    from .client import Client

    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def locked(name: str, *, client: Any = None, session: Optional[Session] = None, **options: Any) -> Callable[[F], F]:
    """A decorator: each call of the function runs holding ``name``.

    ``@locked("jobs/nightly", wait=10)`` takes a one-off lock through
    :func:`default_client` (a lease of its own per call); give ``session=``
    to lock through a session you keep, or ``client=``. Options are
    :meth:`Session.lock`'s (``wait``, ``mode``, ``reason``...) and, without a
    session, :meth:`Client.lock`'s ``ttl`` and ``owner``."""
    if session is not None:
        return session.locked(name, **options)
    return _decorate(lambda: (client or default_client()).lock(name, **options))


class RwLock:
    """A readers/writer lock on one name: many readers together, or one
    writer; waiters are served in arrival order, so writers do not starve."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name

    def read(self, wait: float = 30.0, **options: Any) -> LockGuard:
        return self.session.lock(self.name, mode=c.Mode.SHARED, wait=wait, **options)

    def write(self, wait: float = 30.0, **options: Any) -> LockGuard:
        return self.session.lock(self.name, mode=c.Mode.EXCLUSIVE, wait=wait, **options)


class Semaphore:
    """A counting semaphore: at most ``permits`` holders of ``name``; the
    first acquirer fixes the count (another count: Conflict)."""

    def __init__(self, session: Session, name: str, permits: int) -> None:
        if not isinstance(permits, int) or not 1 <= permits <= 65536:
            raise errors.InvalidArgument(
                f"permits must be 1 to 65536, not {permits!r}", reason="INVALID_ARGUMENT", metadata={"field": "permits"}
            )
        self.session = session
        self.name = name
        self.permits = permits

    def acquire(self, wait: float = 30.0, **options: Any) -> LockGuard:
        return self.session.semaphore(self.name, self.permits, wait=wait, **options)

    def available(self) -> int:
        """Places free now (a linearizable read)."""
        info = self.session.client.inspect(self.name)
        return self.permits - (len(info.holders) if info else 0)


#: The hold metadata key an election candidate's value is kept under.
VALUE_KEY = "value"


@dataclass(frozen=True)
class Leader:
    """The current leader of an election, as the cluster sees it."""

    value: str
    owner: str
    lease_id: int
    token: int


class Election:
    """Leader election on one name: the leader is the exclusive holder; its
    value rides in the hold's metadata; its token fences its term (a
    later leader always has a larger one)."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name

    def campaign(self, value: str, wait: float = 30.0) -> LockGuard:
        """Wait up to ``wait`` seconds to become leader: the guard (its
        ``token`` is the term's fencing token; release it to resign)."""
        return self.session.lock(self.name, wait=wait, metadata={VALUE_KEY: value}, reason="leader")

    def leader(self) -> Optional[Leader]:
        """The current leader, or None."""
        return _leader_of(self.session.client.inspect(self.name))

    def observe(self, from_revision: int = 0) -> Iterator[Optional[Leader]]:
        """The leader now, then each change (None while there is none), as
        long as you iterate. The watch starts right after the revision of
        the first answer's read (or at ``from_revision``), so no change in
        between is missed."""
        client = self.session.client
        info, revision = client._inspect(self.name, False, None)
        last = _leader_of(info)
        yield last
        with client.watch(self.name, from_revision=from_revision or revision + 1) as w:
            for ev in w:
                if ev.name != self.name or ev.type not in ("acquired", "released", "expired", "force_released"):
                    continue
                now = self.leader()
                if now != last:
                    last = now
                    yield now


def _leader_of(info: Optional[c.LockInfo]) -> Optional[Leader]:
    if info is None or not info.holders:
        return None
    h = info.holders[0]
    return Leader(h.metadata.get(VALUE_KEY, ""), h.owner, h.lease_id, h.token)


class FencedResource(Generic[T]):
    """A resource that keeps the highest fencing token it has seen and
    refuses any access with a lower one — reads too. Wrap what your locked
    code touches (or do the same check where the resource lives): a holder
    paused past its lease is then refused, whatever it believes.

    >>> r = FencedResource({})
    >>> r.write(7, lambda d: d.update(x=1))
    >>> r.write(5, lambda d: d.update(x=2))  # raises StaleToken
    """

    def __init__(self, value: T) -> None:
        self._value = value
        self._highest = 0
        self._lock = threading.Lock()

    @property
    def highest(self) -> int:
        with self._lock:
            return self._highest

    def _check(self, token: int) -> None:
        if not isinstance(token, int) or token <= 0:
            raise errors.InvalidArgument(
                f"a fencing token is an int > 0, not {token!r}", reason="INVALID_ARGUMENT", metadata={"field": "token"}
            )
        if token < self._highest:
            raise errors.StaleToken(
                f"token {token} is below {self._highest}, already seen: a newer holder exists",
                reason="STALE_TOKEN",
            )
        self._highest = token

    def read(self, token: int, fn: Callable[[T], Any]) -> Any:
        with self._lock:
            self._check(token)
            return fn(self._value)

    def write(self, token: int, fn: Callable[[T], Any]) -> Any:
        with self._lock:
            self._check(token)
            return fn(self._value)


__all__ = ["locked", "default_client", "RwLock", "Semaphore", "Election", "Leader", "FencedResource", "VALUE_KEY"]

_ = Dict  # typing names kept for readers of older Pythons
