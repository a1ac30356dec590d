from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_EXCLUSIVE: _ClassVar[Mode]
    MODE_SHARED: _ClassVar[Mode]
    MODE_SEMAPHORE: _ClassVar[Mode]

class LockKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCK_KIND_UNSPECIFIED: _ClassVar[LockKind]
    LOCK_KIND_READ_WRITE: _ClassVar[LockKind]
    LOCK_KIND_SEMAPHORE: _ClassVar[LockKind]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_ACQUIRED: _ClassVar[EventType]
    EVENT_TYPE_RELEASED: _ClassVar[EventType]
    EVENT_TYPE_EXPIRED: _ClassVar[EventType]
    EVENT_TYPE_QUEUED: _ClassVar[EventType]
    EVENT_TYPE_FORCE_RELEASED: _ClassVar[EventType]
    EVENT_TYPE_WAIT_DROPPED: _ClassVar[EventType]
    EVENT_TYPE_DELAYED: _ClassVar[EventType]
    EVENT_TYPE_LEASE_GRANTED: _ClassVar[EventType]
    EVENT_TYPE_LEASE_ENDED: _ClassVar[EventType]

class LeaseEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_END_UNSPECIFIED: _ClassVar[LeaseEnd]
    LEASE_END_REVOKED: _ClassVar[LeaseEnd]
    LEASE_END_EXPIRED: _ClassVar[LeaseEnd]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_LEADER: _ClassVar[Role]
    ROLE_FOLLOWER: _ClassVar[Role]
    ROLE_CANDIDATE: _ClassVar[Role]
    ROLE_LEARNER: _ClassVar[Role]
    ROLE_UNKNOWN: _ClassVar[Role]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INVALID_NAME: _ClassVar[ErrorReason]
    INVALID_ARGUMENT: _ClassVar[ErrorReason]
    TOO_LARGE: _ClassVar[ErrorReason]
    TTL_OUT_OF_RANGE: _ClassVar[ErrorReason]
    LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    LEASE_NOT_FOUND: _ClassVar[ErrorReason]
    LEASE_EXPIRING: _ClassVar[ErrorReason]
    LOCK_NOT_FOUND: _ClassVar[ErrorReason]
    WAITER_NOT_FOUND: _ClassVar[ErrorReason]
    LOCK_BUSY: _ClassVar[ErrorReason]
    NOT_HOLDER: _ClassVar[ErrorReason]
    STALE_TOKEN: _ClassVar[ErrorReason]
    KIND_CONFLICT: _ClassVar[ErrorReason]
    PERMITS_MISMATCH: _ClassVar[ErrorReason]
    HELD_IN_OTHER_MODE: _ClassVar[ErrorReason]
    PARTIALLY_HELD: _ClassVar[ErrorReason]
    ALREADY_WAITING: _ClassVar[ErrorReason]
    WAIT_TIMEOUT: _ClassVar[ErrorReason]
    WAIT_DROPPED: _ClassVar[ErrorReason]
    NOT_LEADER: _ClassVar[ErrorReason]
    NO_LEADER: _ClassVar[ErrorReason]
    OUTCOME_UNKNOWN: _ClassVar[ErrorReason]
    TIMEOUT: _ClassVar[ErrorReason]
    SHUTTING_DOWN: _ClassVar[ErrorReason]
    COMPACTED: _ClassVar[ErrorReason]
    SLOW_WATCHER: _ClassVar[ErrorReason]
    INTERNAL: _ClassVar[ErrorReason]
    DENIED: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    RATE_LIMITED: _ClassVar[ErrorReason]
    CLUSTER_MISMATCH: _ClassVar[ErrorReason]
    PEER_VERSION_MISMATCH: _ClassVar[ErrorReason]
    LEASE_LOST: _ClassVar[ErrorReason]
    UNAVAILABLE: _ClassVar[ErrorReason]
    DEADLINE_EXCEEDED: _ClassVar[ErrorReason]
    ALREADY_HELD: _ClassVar[ErrorReason]
    INVALID_ENDPOINT: _ClassVar[ErrorReason]
MODE_UNSPECIFIED: Mode
MODE_EXCLUSIVE: Mode
MODE_SHARED: Mode
MODE_SEMAPHORE: Mode
LOCK_KIND_UNSPECIFIED: LockKind
LOCK_KIND_READ_WRITE: LockKind
LOCK_KIND_SEMAPHORE: LockKind
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_ACQUIRED: EventType
EVENT_TYPE_RELEASED: EventType
EVENT_TYPE_EXPIRED: EventType
EVENT_TYPE_QUEUED: EventType
EVENT_TYPE_FORCE_RELEASED: EventType
EVENT_TYPE_WAIT_DROPPED: EventType
EVENT_TYPE_DELAYED: EventType
EVENT_TYPE_LEASE_GRANTED: EventType
EVENT_TYPE_LEASE_ENDED: EventType
LEASE_END_UNSPECIFIED: LeaseEnd
LEASE_END_REVOKED: LeaseEnd
LEASE_END_EXPIRED: LeaseEnd
ROLE_UNSPECIFIED: Role
ROLE_LEADER: Role
ROLE_FOLLOWER: Role
ROLE_CANDIDATE: Role
ROLE_LEARNER: Role
ROLE_UNKNOWN: Role
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_NAME: ErrorReason
INVALID_ARGUMENT: ErrorReason
TOO_LARGE: ErrorReason
TTL_OUT_OF_RANGE: ErrorReason
LIMIT_EXCEEDED: ErrorReason
LEASE_NOT_FOUND: ErrorReason
LEASE_EXPIRING: ErrorReason
LOCK_NOT_FOUND: ErrorReason
WAITER_NOT_FOUND: ErrorReason
LOCK_BUSY: ErrorReason
NOT_HOLDER: ErrorReason
STALE_TOKEN: ErrorReason
KIND_CONFLICT: ErrorReason
PERMITS_MISMATCH: ErrorReason
HELD_IN_OTHER_MODE: ErrorReason
PARTIALLY_HELD: ErrorReason
ALREADY_WAITING: ErrorReason
WAIT_TIMEOUT: ErrorReason
WAIT_DROPPED: ErrorReason
NOT_LEADER: ErrorReason
NO_LEADER: ErrorReason
OUTCOME_UNKNOWN: ErrorReason
TIMEOUT: ErrorReason
SHUTTING_DOWN: ErrorReason
COMPACTED: ErrorReason
SLOW_WATCHER: ErrorReason
INTERNAL: ErrorReason
DENIED: ErrorReason
UNAUTHENTICATED: ErrorReason
RATE_LIMITED: ErrorReason
CLUSTER_MISMATCH: ErrorReason
PEER_VERSION_MISMATCH: ErrorReason
LEASE_LOST: ErrorReason
UNAVAILABLE: ErrorReason
DEADLINE_EXCEEDED: ErrorReason
ALREADY_HELD: ErrorReason
INVALID_ENDPOINT: ErrorReason

class LockSpec(_message.Message):
    __slots__ = ("name", "mode", "permits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    mode: Mode
    permits: int
    def __init__(self, name: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., permits: _Optional[int] = ...) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("lease_id", "locks", "wait_timeout_ms", "reason", "metadata", "lock_delay_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LOCK_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    locks: _containers.RepeatedCompositeFieldContainer[LockSpec]
    wait_timeout_ms: int
    reason: str
    metadata: _containers.ScalarMap[str, str]
    lock_delay_ms: int
    def __init__(self, lease_id: _Optional[int] = ..., locks: _Optional[_Iterable[_Union[LockSpec, _Mapping]]] = ..., wait_timeout_ms: _Optional[int] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., lock_delay_ms: _Optional[int] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("name", "mode", "permits", "token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    mode: Mode
    permits: int
    token: int
    def __init__(self, name: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., permits: _Optional[int] = ..., token: _Optional[int] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("token", "holds", "retry", "revision", "waited_ms")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WAITED_MS_FIELD_NUMBER: _ClassVar[int]
    token: int
    holds: _containers.RepeatedCompositeFieldContainer[Grant]
    retry: bool
    revision: int
    waited_ms: int
    def __init__(self, token: _Optional[int] = ..., holds: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., retry: _Optional[bool] = ..., revision: _Optional[int] = ..., waited_ms: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "token", "names")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    token: int
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease_id: _Optional[int] = ..., token: _Optional[int] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("names", "revision")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("lease_id", "name", "token", "ttl_ms")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    name: str
    token: int
    ttl_ms: int
    def __init__(self, lease_id: _Optional[int] = ..., name: _Optional[str] = ..., token: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class ExtendResponse(_message.Message):
    __slots__ = ("ttl_ms", "extensions", "revision")
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    extensions: int
    revision: int
    def __init__(self, ttl_ms: _Optional[int] = ..., extensions: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("name", "stale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    stale: bool
    def __init__(self, name: _Optional[str] = ..., stale: _Optional[bool] = ...) -> None: ...

class Holder(_message.Message):
    __slots__ = ("lease_id", "owner", "mode", "token", "acquired_at_unix_ms", "reason", "metadata", "acquisitions", "extensions", "lock_delay_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ACQUISITIONS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    LOCK_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    owner: str
    mode: Mode
    token: int
    acquired_at_unix_ms: int
    reason: str
    metadata: _containers.ScalarMap[str, str]
    acquisitions: int
    extensions: int
    lock_delay_ms: int
    def __init__(self, lease_id: _Optional[int] = ..., owner: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., token: _Optional[int] = ..., acquired_at_unix_ms: _Optional[int] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., acquisitions: _Optional[int] = ..., extensions: _Optional[int] = ..., lock_delay_ms: _Optional[int] = ...) -> None: ...

class QueuedRequest(_message.Message):
    __slots__ = ("waiter_id", "lease_id", "owner", "mode", "names", "queued_at_unix_ms", "reason")
    WAITER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    waiter_id: int
    lease_id: int
    owner: str
    mode: Mode
    names: _containers.RepeatedScalarFieldContainer[str]
    queued_at_unix_ms: int
    reason: str
    def __init__(self, waiter_id: _Optional[int] = ..., lease_id: _Optional[int] = ..., owner: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., names: _Optional[_Iterable[str]] = ..., queued_at_unix_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class LockInfo(_message.Message):
    __slots__ = ("name", "kind", "permits", "holders", "queue", "delayed_until_cluster_ms", "grants", "max_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    DELAYED_UNTIL_CLUSTER_MS_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: LockKind
    permits: int
    holders: _containers.RepeatedCompositeFieldContainer[Holder]
    queue: _containers.RepeatedCompositeFieldContainer[QueuedRequest]
    delayed_until_cluster_ms: int
    grants: int
    max_token: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[LockKind, str]] = ..., permits: _Optional[int] = ..., holders: _Optional[_Iterable[_Union[Holder, _Mapping]]] = ..., queue: _Optional[_Iterable[_Union[QueuedRequest, _Mapping]]] = ..., delayed_until_cluster_ms: _Optional[int] = ..., grants: _Optional[int] = ..., max_token: _Optional[int] = ...) -> None: ...

class InspectResponse(_message.Message):
    __slots__ = ("lock", "revision")
    LOCK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    lock: LockInfo
    revision: int
    def __init__(self, lock: _Optional[_Union[LockInfo, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("prefix", "stale", "limit", "start_after")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    stale: bool
    limit: int
    start_after: str
    def __init__(self, prefix: _Optional[str] = ..., stale: _Optional[bool] = ..., limit: _Optional[int] = ..., start_after: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("locks", "revision", "more")
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[LockInfo]
    revision: int
    more: bool
    def __init__(self, locks: _Optional[_Iterable[_Union[LockInfo, _Mapping]]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("prefix", "from_revision")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    from_revision: int
    def __init__(self, prefix: _Optional[str] = ..., from_revision: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("revision", "type", "name", "lease_id", "owner", "mode", "token", "waiter_id", "position", "lease_end", "delayed_until_cluster_ms", "ttl_ms", "forced_by")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    WAITER_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LEASE_END_FIELD_NUMBER: _ClassVar[int]
    DELAYED_UNTIL_CLUSTER_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    FORCED_BY_FIELD_NUMBER: _ClassVar[int]
    revision: int
    type: EventType
    name: str
    lease_id: int
    owner: str
    mode: Mode
    token: int
    waiter_id: int
    position: int
    lease_end: LeaseEnd
    delayed_until_cluster_ms: int
    ttl_ms: int
    forced_by: str
    def __init__(self, revision: _Optional[int] = ..., type: _Optional[_Union[EventType, str]] = ..., name: _Optional[str] = ..., lease_id: _Optional[int] = ..., owner: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., token: _Optional[int] = ..., waiter_id: _Optional[int] = ..., position: _Optional[int] = ..., lease_end: _Optional[_Union[LeaseEnd, str]] = ..., delayed_until_cluster_ms: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., forced_by: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class GrantLeaseRequest(_message.Message):
    __slots__ = ("ttl_ms", "owner")
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    owner: str
    def __init__(self, ttl_ms: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class GrantLeaseResponse(_message.Message):
    __slots__ = ("lease_id", "ttl_ms")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    ttl_ms: int
    def __init__(self, lease_id: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    def __init__(self, lease_id: _Optional[int] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ("lease_id", "ttl_ms")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    ttl_ms: int
    def __init__(self, lease_id: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class RevokeLeaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    def __init__(self, lease_id: _Optional[int] = ...) -> None: ...

class RevokeLeaseResponse(_message.Message):
    __slots__ = ("released", "revision")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedCompositeFieldContainer[Grant]
    revision: int
    def __init__(self, released: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("stale",)
    STALE_FIELD_NUMBER: _ClassVar[int]
    stale: bool
    def __init__(self, stale: _Optional[bool] = ...) -> None: ...

class LeaseInfo(_message.Message):
    __slots__ = ("lease_id", "owner", "ttl_ms", "granted_at_unix_ms", "holds", "waits", "remaining_ms", "identity")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    WAITS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    owner: str
    ttl_ms: int
    granted_at_unix_ms: int
    holds: _containers.RepeatedScalarFieldContainer[str]
    waits: _containers.RepeatedScalarFieldContainer[int]
    remaining_ms: int
    identity: str
    def __init__(self, lease_id: _Optional[int] = ..., owner: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., granted_at_unix_ms: _Optional[int] = ..., holds: _Optional[_Iterable[str]] = ..., waits: _Optional[_Iterable[int]] = ..., remaining_ms: _Optional[int] = ..., identity: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases", "revision")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseInfo]
    revision: int
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseInfo, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("id", "address", "role", "voter", "matched_index", "lag", "peer_address", "build_version", "protocol_min", "protocol_max")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    MATCHED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BUILD_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_MIN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_MAX_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    role: Role
    voter: bool
    matched_index: int
    lag: int
    peer_address: str
    build_version: str
    protocol_min: int
    protocol_max: int
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., voter: _Optional[bool] = ..., matched_index: _Optional[int] = ..., lag: _Optional[int] = ..., peer_address: _Optional[str] = ..., build_version: _Optional[str] = ..., protocol_min: _Optional[int] = ..., protocol_max: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node_id", "role", "term", "leader_id", "leader_addr", "last_log_index", "applied_index", "snapshot_index", "purged_index", "nodes", "leases", "locks", "cluster_id", "token_epoch", "token_high_water")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDR_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PURGED_INDEX_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    role: Role
    term: int
    leader_id: int
    leader_addr: str
    last_log_index: int
    applied_index: int
    snapshot_index: int
    purged_index: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    leases: int
    locks: int
    cluster_id: str
    token_epoch: int
    token_high_water: int
    def __init__(self, node_id: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ..., term: _Optional[int] = ..., leader_id: _Optional[int] = ..., leader_addr: _Optional[str] = ..., last_log_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., snapshot_index: _Optional[int] = ..., purged_index: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., leases: _Optional[int] = ..., locks: _Optional[int] = ..., cluster_id: _Optional[str] = ..., token_epoch: _Optional[int] = ..., token_high_water: _Optional[int] = ...) -> None: ...

class AddLearnerRequest(_message.Message):
    __slots__ = ("id", "address", "wait_caught_up")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WAIT_CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    wait_caught_up: bool
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., wait_caught_up: _Optional[bool] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class MembershipResponse(_message.Message):
    __slots__ = ("voters", "learners", "revision")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    revision: int
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., revision: _Optional[int] = ...) -> None: ...

class ForceReleaseRequest(_message.Message):
    __slots__ = ("name", "lease_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    lease_id: int
    def __init__(self, name: _Optional[str] = ..., lease_id: _Optional[int] = ...) -> None: ...

class ForceReleaseResponse(_message.Message):
    __slots__ = ("released", "revision")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedCompositeFieldContainer[Holder]
    revision: int
    def __init__(self, released: _Optional[_Iterable[_Union[Holder, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class ForgetMemberRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ForgetMemberResponse(_message.Message):
    __slots__ = ("existed", "revision")
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    revision: int
    def __init__(self, existed: _Optional[bool] = ..., revision: _Optional[int] = ...) -> None: ...

class SaveSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("header", "data", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: BackupHeader
    data: bytes
    trailer: BackupTrailer
    def __init__(self, header: _Optional[_Union[BackupHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., trailer: _Optional[_Union[BackupTrailer, _Mapping]] = ...) -> None: ...

class BackupHeader(_message.Message):
    __slots__ = ("cluster_id", "index", "term", "voters", "token_epoch", "token_high_water", "snapshot_format", "build_version", "data_bytes", "leases", "locks")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BUILD_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    index: int
    term: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    token_epoch: int
    token_high_water: int
    snapshot_format: int
    build_version: str
    data_bytes: int
    leases: int
    locks: int
    def __init__(self, cluster_id: _Optional[str] = ..., index: _Optional[int] = ..., term: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ..., token_epoch: _Optional[int] = ..., token_high_water: _Optional[int] = ..., snapshot_format: _Optional[int] = ..., build_version: _Optional[str] = ..., data_bytes: _Optional[int] = ..., leases: _Optional[int] = ..., locks: _Optional[int] = ...) -> None: ...

class BackupTrailer(_message.Message):
    __slots__ = ("data_sha256",)
    DATA_SHA256_FIELD_NUMBER: _ClassVar[int]
    data_sha256: bytes
    def __init__(self, data_sha256: _Optional[bytes] = ...) -> None: ...
