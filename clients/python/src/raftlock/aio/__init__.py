"""raftlock on asyncio: the blocking API's model with coroutines and
``async with``.

>>> import raftlock.aio
>>> async def main() -> None:
...     async with raftlock.aio.Client(["127.0.0.1:7401", "127.0.0.1:7402"]) as client:
...         async with client.session(ttl=30, owner="worker-1") as session:
...             async with session.lock("jobs/nightly", wait=10) as guard:
...                 await do_work(fencing_token=guard.token)

``client.session(...)``, ``session.lock(...)`` (and ``try_lock``,
``lock_many``, ``read_lock``, ``write_lock``, ``semaphore``) and
``client.lock(...)`` return objects that are both awaitable (``guard =
await session.lock(name)``) and async context managers. Errors are
``raftlock``'s (``raftlock.LockBusy``...); the model is docs/client.md's.
"""

from .._common import Acquired, Event, Grant, Holder, LeaseInfo, LockInfo, Mode, RetryPolicy, Waiter
from ._client import Client, Watch
from ._recipes import VALUE_KEY, Election, FencedResource, Leader, RwLock, Semaphore, default_client, locked
from ._session import LockAcquire, LockGuard, Session, SessionStart

__all__ = [
    "Client",
    "Session",
    "LockGuard",
    "LockAcquire",
    "SessionStart",
    "Watch",
    "Mode",
    "RetryPolicy",
    "LockInfo",
    "Holder",
    "Waiter",
    "LeaseInfo",
    "Event",
    "Grant",
    "Acquired",
    "locked",
    "default_client",
    "RwLock",
    "Semaphore",
    "Election",
    "Leader",
    "FencedResource",
    "VALUE_KEY",
]
