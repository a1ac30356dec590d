"""Every error the client raises: subclasses of :class:`Error`.

A node answers a failed call with a gRPC status that carries a stable,
machine-readable reason (proto/raftlock/v1/raftlock.proto, enum
ErrorReason) in a google.rpc.ErrorInfo detail and in the ``raftlock-reason``
metadata key. This module is the one place that turns those into
exceptions, and says for each whether the call may have been applied.
"""

from __future__ import annotations

from typing import Dict, Optional

import grpc

__all__ = [
    "Error",
    "InvalidArgument",
    "LimitExceeded",
    "RateLimited",
    "LeaseLost",
    "LockNotFound",
    "LockBusy",
    "WaitTimeout",
    "WaitDropped",
    "NotHolder",
    "StaleToken",
    "Conflict",
    "AlreadyHeld",
    "Denied",
    "Unauthenticated",
    "Unavailable",
    "OutcomeUnknown",
    "DeadlineExceeded",
    "Compacted",
    "SlowWatcher",
    "ClusterMismatch",
    "TlsError",
    "InternalError",
]


class Error(Exception):
    """Base of every raftlock error.

    ``reason`` is the stable reason name (``"LOCK_BUSY"``; for a status
    that carried none, the gRPC code's name), ``message`` the node's (or the
    client's) explanation, ``metadata`` the ErrorInfo details (``field``,
    ``missing``, ``leader_addr``...), ``code`` the gRPC status code when the
    error came from one.
    """

    #: Whether a write that failed so may still have taken effect.
    _may_have_been_applied = False

    def __init__(
        self,
        message: str,
        *,
        reason: Optional[str] = None,
        code: Optional[grpc.StatusCode] = None,
        metadata: Optional[Dict[str, str]] = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or type(self).__name__
        self.code = code
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.attempts = attempts

    @property
    def may_have_been_applied(self) -> bool:
        """True when the call may have changed the cluster (OutcomeUnknown,
        and DeadlineExceeded with an attempt under way); False for every
        definite answer: nothing was applied."""
        return self._may_have_been_applied

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(Error):
    """Bad input (INVALID_NAME, INVALID_ARGUMENT, TOO_LARGE,
    TTL_OUT_OF_RANGE, INVALID_ENDPOINT). ``field`` names the request field
    when known. Not applied."""

    @property
    def field(self) -> Optional[str]:
        return self.metadata.get("field")


class LimitExceeded(Error):
    """A configured limit was hit (holds per lease, leases, waiters, watch
    streams...). Not applied."""


class RateLimited(LimitExceeded):
    """The identity sent more requests than its rate allows. Not applied;
    retried after a pause by the client's retry policy."""


class LeaseLost(Error):
    """The session's lease is gone (LEASE_NOT_FOUND, LEASE_EXPIRING) or the
    client can no longer be sure it is alive (LEASE_LOST): its locks must be
    taken as lost."""


class LockNotFound(Error):
    """The lock does not exist (nobody holds it or waits for it)."""


class LockBusy(Error):
    """The lock is held (or reserved by earlier waiters) and the call did
    not wait. Not applied."""


class WaitTimeout(Error):
    """The wait ended without a grant: the queued request was withdrawn (and
    a grant that raced the timeout released). Nothing is held."""


class WaitDropped(Error):
    """The queued request was dropped before its grant (its lease ended)."""


class NotHolder(Error):
    """Not the holder, or not with this token. Not applied."""


class StaleToken(NotHolder):
    """A token lower than one already seen (a release or extend with an old
    token, or :class:`raftlock.FencedResource` refusing an access)."""


class Conflict(Error):
    """The request conflicts with how the lock or the lease holds it now
    (KIND_CONFLICT, PERMITS_MISMATCH, HELD_IN_OTHER_MODE, PARTIALLY_HELD,
    ALREADY_WAITING). Not applied."""


class AlreadyHeld(Conflict):
    """This session already holds, or is acquiring, the name through another
    guard (a session is one lease; two guards of one hold would release each
    other's lock). Not sent to the server."""


class Denied(Error):
    """The identity may not make this call on this name (``missing`` names
    the rule, e.g. ``"lock on billing/x"``). Not applied."""

    @property
    def missing(self) -> Optional[str]:
        return self.metadata.get("missing")

    @property
    def identity(self) -> Optional[str]:
        return self.metadata.get("identity")


class Unauthenticated(Error):
    """No identity the node accepts: no client certificate and no token, or
    an unknown one. Not applied."""


class Unavailable(Error):
    """No node took the call before the retries ran out, and every attempt
    was definitely refused or never sent. Not applied."""


class OutcomeUnknown(Error):
    """At least one attempt may have reached the leader and the outcome was
    never learnt: a write may have taken effect."""

    _may_have_been_applied = True


class DeadlineExceeded(Error):
    """The call's own deadline passed. ``may_have_been_applied`` is False
    only when nothing was sent or every attempt was definitely refused."""

    def __init__(self, message: str, *, applied_unknown: bool = True, **kw) -> None:
        super().__init__(message, **kw)
        self._may_have_been_applied = applied_unknown


class Compacted(Error):
    """A watch's start revision is older than the node's event history
    (``oldest_revision`` in ``metadata``)."""

    @property
    def oldest_revision(self) -> Optional[int]:
        v = self.metadata.get("oldest_revision")
        return int(v) if v and v.isdigit() else None


class SlowWatcher(Error):
    """A watcher fell too far behind and was cut off."""


class ClusterMismatch(Error):
    """A node of another cluster, a wiped node, or a node whose peer protocol
    version another cannot speak (PEER_VERSION_MISMATCH) answered."""


class TlsError(Error):
    """A TLS handshake failed (wrong CA, a certificate not naming the host,
    a TLS client against a plaintext node or the reverse). Retrying cannot
    fix it; nothing was sent."""


class InternalError(Error):
    """A fault inside the node, or a reason this client does not know (a
    newer node's): the call may have been applied; not retried."""

    _may_have_been_applied = True


# Reason name -> exception class, for every reason a node sends.
_BY_REASON = {
    "INVALID_NAME": InvalidArgument,
    "INVALID_ARGUMENT": InvalidArgument,
    "TOO_LARGE": InvalidArgument,
    "TTL_OUT_OF_RANGE": InvalidArgument,
    "LIMIT_EXCEEDED": LimitExceeded,
    "LEASE_NOT_FOUND": LeaseLost,
    "LEASE_EXPIRING": LeaseLost,
    "LOCK_NOT_FOUND": LockNotFound,
    "WAITER_NOT_FOUND": LockNotFound,
    "LOCK_BUSY": LockBusy,
    "NOT_HOLDER": NotHolder,
    "STALE_TOKEN": StaleToken,
    "KIND_CONFLICT": Conflict,
    "PERMITS_MISMATCH": Conflict,
    "HELD_IN_OTHER_MODE": Conflict,
    "PARTIALLY_HELD": Conflict,
    "ALREADY_WAITING": Conflict,
    "WAIT_TIMEOUT": WaitTimeout,
    "WAIT_DROPPED": WaitDropped,
    "NOT_LEADER": Unavailable,
    "NO_LEADER": Unavailable,
    "OUTCOME_UNKNOWN": OutcomeUnknown,
    "TIMEOUT": OutcomeUnknown,
    "SHUTTING_DOWN": OutcomeUnknown,
    "COMPACTED": Compacted,
    "SLOW_WATCHER": SlowWatcher,
    "INTERNAL": InternalError,
    "DENIED": Denied,
    "UNAUTHENTICATED": Unauthenticated,
    "RATE_LIMITED": RateLimited,
    "CLUSTER_MISMATCH": ClusterMismatch,
    "PEER_VERSION_MISMATCH": ClusterMismatch,
}

#: Reasons after which a retry is never useful and nothing was applied.
DEFINITE_REFUSALS = frozenset(
    r for r in _BY_REASON if r not in ("OUTCOME_UNKNOWN", "TIMEOUT", "SHUTTING_DOWN", "INTERNAL")
)


def error_for(
    reason: str,
    message: str,
    *,
    code: Optional[grpc.StatusCode] = None,
    metadata: Optional[Dict[str, str]] = None,
    attempts: int = 1,
) -> Error:
    """The exception for a node's reason (an unknown name: InternalError,
    "may have been applied, do not retry", as the proto says)."""
    cls = _BY_REASON.get(reason, InternalError)
    return cls(message, reason=reason, code=code, metadata=metadata, attempts=attempts)
