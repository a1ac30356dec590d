"""raftlock: a client for the raftlock distributed lock service.

>>> import raftlock
>>> client = raftlock.Client(["127.0.0.1:7401", "127.0.0.1:7402"])
>>> with client.session(ttl=30, owner="worker-1") as session:
...     with session.lock("jobs/nightly", wait=10, reason="backup") as guard:
...         do_work(fencing_token=guard.token)

The blocking API is here; ``raftlock.aio`` is the same on asyncio. The
model (leases, holds, fencing tokens, validity) is docs/client.md's;
docs/python.md shows this package.
"""

from ._common import (
    Acquired,
    Event,
    Grant,
    Holder,
    LeaseInfo,
    LockInfo,
    Mode,
    RetryPolicy,
    Waiter,
)
from .client import Client, Watch
from . import errors
from .errors import (
    AlreadyHeld,
    ClusterMismatch,
    Compacted,
    Conflict,
    DeadlineExceeded,
    Denied,
    Error,
    InternalError,
    InvalidArgument,
    LeaseLost,
    LimitExceeded,
    LockBusy,
    LockNotFound,
    NotHolder,
    OutcomeUnknown,
    RateLimited,
    SlowWatcher,
    StaleToken,
    TlsError,
    Unauthenticated,
    Unavailable,
    WaitDropped,
    WaitTimeout,
)
from .recipes import Election, FencedResource, Leader, RwLock, Semaphore, default_client, locked
from .session import LockGuard, Session

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Session",
    "LockGuard",
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
]
__all__ += errors.__all__
