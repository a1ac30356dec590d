"""The recipes of ``raftlock.recipes`` on the asyncio API: a decorator,
readers/writer lock, semaphore, leader election. ``FencedResource`` does no
I/O and is the blocking module's."""

from __future__ import annotations

from typing import Any, AsyncGenerator, Callable, Optional, TypeVar

from .. import _common as c
from .. import errors
from ..recipes import VALUE_KEY, FencedResource, Leader, _leader_of
from ._client import Client
from ._session import LockAcquire, Session, _decorate

F = TypeVar("F", bound=Callable[..., Any])

_default: Optional[Client] = None


def default_client() -> Client:
    """One process-wide :class:`raftlock.aio.Client` made from the
    RAFTLOCK_* environment variables on first use: what :func:`locked`
    uses when given no client."""
    global _default
    if _default is None:
        _default = Client()
    return _default


def locked(name: str, *, client: Optional[Client] = None, session: Optional[Session] = None, **options: Any) -> Callable[[F], F]:
    """A decorator of ``async def`` functions: each call runs holding
    ``name``. ``@locked("jobs/nightly", wait=10)`` takes a one-off lock
    through :func:`default_client`; give ``session=`` to lock through a
    session you keep, or ``client=``. Options are :meth:`Session.lock`'s
    and, without a session, :meth:`Client.lock`'s ``ttl`` and ``owner``."""
    if session is not None:
        return session.locked(name, **options)
    return _decorate(lambda: (client or default_client()).lock(name, **options))


class RwLock:
    """A readers/writer lock on one name: many readers together, or one
    writer; waiters are served in arrival order, so writers do not starve.
    ``async with rw.read() as guard:``."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name

    def read(self, wait: float = 30.0, **options: Any) -> LockAcquire:
        return self.session.lock(self.name, mode=c.Mode.SHARED, wait=wait, **options)

    def write(self, wait: float = 30.0, **options: Any) -> LockAcquire:
        return self.session.lock(self.name, mode=c.Mode.EXCLUSIVE, wait=wait, **options)


class Semaphore:
    """A counting semaphore: at most ``permits`` holders of ``name``; the
    first acquirer fixes the count (another count: Conflict). A session
    holds at most one permit of a name."""

    def __init__(self, session: Session, name: str, permits: int) -> None:
        if not isinstance(permits, int) or not 1 <= permits <= 65536:
            raise errors.InvalidArgument(
                f"permits must be 1 to 65536, not {permits!r}", reason="INVALID_ARGUMENT", metadata={"field": "permits"}
            )
        self.session = session
        self.name = name
        self.permits = permits

    def acquire(self, wait: float = 30.0, **options: Any) -> LockAcquire:
        return self.session.semaphore(self.name, self.permits, wait=wait, **options)

    async def available(self) -> int:
        """Places free now (a linearizable read)."""
        info = await self.session.client.inspect(self.name)
        return self.permits - (len(info.holders) if info else 0)


class Election:
    """Leader election on one name: the leader is the exclusive holder; its
    value rides in the hold's metadata; its token fences its term (a later
    leader always has a larger one)."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name

    def campaign(self, value: str, wait: float = 30.0) -> LockAcquire:
        """Wait up to ``wait`` seconds to become leader: ``async with
        election.campaign(value) as term:`` (``term.token`` fences the term;
        leaving the block, or ``await term.release()``, resigns)."""
        return self.session.lock(self.name, wait=wait, metadata={VALUE_KEY: value}, reason="leader")

    async def leader(self) -> Optional[Leader]:
        """The current leader, or None."""
        return _leader_of(await self.session.client.inspect(self.name))

    async def observe(self, from_revision: int = 0) -> AsyncGenerator[Optional[Leader], None]:
        """The leader now, then each change (None while there is none), as
        long as you iterate: ``async for leader in election.observe():``.
        The watch starts right after the read of the first answer (or at
        ``from_revision``), so no change in between is missed."""
        client = self.session.client
        info, revision = await client._inspect(self.name, False, None)
        last = _leader_of(info)
        yield last
        async with client.watch(self.name, from_revision=from_revision or revision + 1) as events:
            async for ev in events:
                if ev.name != self.name or ev.type not in ("acquired", "released", "expired", "force_released"):
                    continue
                now = await self.leader()
                if now != last:
                    last = now
                    yield now


__all__ = ["locked", "default_client", "RwLock", "Semaphore", "Election", "Leader", "FencedResource", "VALUE_KEY"]
