//! The state machine's records, its header and the whole state, and the
//! store's shapes around them (its header, a snapshot's body).

use std::collections::{BTreeSet, VecDeque};

use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use raftlock_core::{
    ClusterIdentity, Counters, Header, Lease, Lock, MemberRecord, Record, State, Waiter,
};

use crate::core_types::{
    hold_from, hold_to, kind_from, kind_to, limits_from, limits_to, metadata, mode_from, mode_to,
};
use crate::raft::{log_id_from, log_id_to, stored_membership_from, stored_membership_to};
use crate::{Codec, CodecError, pb, required, strictly_increasing, to_u16};

fn lease_to(l: &Lease) -> pb::Lease {
    pb::Lease {
        id: l.id,
        owner: l.owner.to_string(),
        identity: l.identity.clone(),
        ttl_ms: l.ttl_ms,
        granted_at_wall_ms: l.granted_at_wall_ms,
        holds: l.holds.iter().map(|n| n.to_string()).collect(),
        waits: l.waits.iter().copied().collect(),
    }
}

fn lease_from(l: pb::Lease) -> Result<Lease, CodecError> {
    strictly_increasing(&l.holds, "Lease.holds")?;
    strictly_increasing(&l.waits, "Lease.waits")?;
    Ok(Lease {
        id: l.id,
        // Shared with its holds and locks once the whole state is loaded
        // (`State::from_records`).
        owner: l.owner.into(),
        identity: l.identity,
        ttl_ms: l.ttl_ms,
        granted_at_wall_ms: l.granted_at_wall_ms,
        holds: l.holds.into_iter().map(Into::into).collect::<BTreeSet<_>>(),
        waits: l.waits.into_iter().collect::<BTreeSet<_>>(),
    })
}

fn waiter_to(w: &Waiter) -> pb::Waiter {
    pb::Waiter {
        id: w.id,
        lease: w.lease,
        owner: w.owner.clone(),
        locks: w
            .locks
            .iter()
            .map(|(name, mode)| pb::LockSpec {
                name: name.clone(),
                mode: Some(mode_to(*mode)),
            })
            .collect(),
        reason: w.reason.clone(),
        metadata: metadata(&w.metadata),
        lock_delay_ms: w.lock_delay_ms,
        queued_at_wall_ms: w.queued_at_wall_ms,
        requested_at: w.requested_at,
    }
}

fn waiter_from(w: pb::Waiter) -> Result<Waiter, CodecError> {
    Ok(Waiter {
        id: w.id,
        lease: w.lease,
        owner: w.owner,
        locks: w
            .locks
            .into_iter()
            .map(|s| Ok((s.name, mode_from(s.mode, "Waiter.locks.mode")?)))
            .collect::<Result<_, CodecError>>()?,
        reason: w.reason,
        metadata: w.metadata,
        lock_delay_ms: w.lock_delay_ms,
        queued_at_wall_ms: w.queued_at_wall_ms,
        requested_at: w.requested_at,
    })
}

fn lock_to(l: &Lock) -> pb::Lock {
    pb::Lock {
        name: l.name.to_string(),
        kind: Some(kind_to(l.kind)),
        // By lease: the map's key is each hold's own `lease`.
        holds: l.holds.values().map(hold_to).collect(),
        queue: l.queue.iter().copied().collect(),
        delayed_until_ms: l.delayed_until_ms,
        grants: l.grants,
        max_token: l.max_token,
    }
}

fn lock_from(l: pb::Lock) -> Result<Lock, CodecError> {
    let holds = l
        .holds
        .into_iter()
        .map(hold_from)
        .collect::<Result<Vec<_>, _>>()?;
    strictly_increasing(holds.iter().map(|h| &h.lease), "Lock.holds.lease")?;
    Ok(Lock {
        name: l.name.into(),
        kind: kind_from(l.kind, "Lock.kind")?,
        holds: holds.into_iter().map(|h| (h.lease, h)).collect(),
        queue: l.queue.into_iter().collect::<VecDeque<_>>(),
        delayed_until_ms: l.delayed_until_ms,
        grants: l.grants,
        max_token: l.max_token,
    })
}

fn counters_to(c: &Counters) -> pb::Counters {
    pb::Counters {
        leases_granted: c.leases_granted,
        leases_revoked: c.leases_revoked,
        leases_expired: c.leases_expired,
        grants: c.grants,
        grants_from_queue: c.grants_from_queue,
        releases: c.releases,
        force_releases: c.force_releases,
        queued: c.queued,
        waits_cancelled: c.waits_cancelled,
        rejected: c.rejected,
    }
}

fn counters_from(c: pb::Counters) -> Counters {
    Counters {
        leases_granted: c.leases_granted,
        leases_revoked: c.leases_revoked,
        leases_expired: c.leases_expired,
        grants: c.grants,
        grants_from_queue: c.grants_from_queue,
        releases: c.releases,
        force_releases: c.force_releases,
        queued: c.queued,
        waits_cancelled: c.waits_cancelled,
        rejected: c.rejected,
    }
}

fn cluster_to(c: &ClusterIdentity) -> pb::ClusterIdentity {
    pb::ClusterIdentity {
        id: c.id.clone(),
        members: c
            .members
            .iter()
            .map(|(node, m)| {
                (
                    *node,
                    pb::MemberRecord {
                        store_id: m.store_id.clone(),
                        client_addr: m.client_addr.clone(),
                    },
                )
            })
            .collect(),
    }
}

fn cluster_from(c: pb::ClusterIdentity) -> ClusterIdentity {
    ClusterIdentity {
        id: c.id,
        members: c
            .members
            .into_iter()
            .map(|(node, m)| {
                (
                    node,
                    MemberRecord {
                        store_id: m.store_id,
                        client_addr: m.client_addr,
                    },
                )
            })
            .collect(),
    }
}

fn header_to(h: &Header) -> pb::Header {
    pb::Header {
        last_applied: h.last_applied,
        cluster_ms: h.cluster_ms,
        limits: Some(limits_to(&h.limits)),
        counters: Some(counters_to(&h.counters)),
        cluster: Some(cluster_to(&h.cluster)),
        token_epoch: u32::from(h.token_epoch),
    }
}

fn header_from(h: Option<pb::Header>, field: &'static str) -> Result<Header, CodecError> {
    let h = required(h, field)?;
    Ok(Header {
        last_applied: h.last_applied,
        cluster_ms: h.cluster_ms,
        limits: limits_from(h.limits, "Header.limits")?,
        counters: counters_from(required(h.counters, "Header.counters")?),
        cluster: cluster_from(required(h.cluster, "Header.cluster")?),
        token_epoch: to_u16(h.token_epoch, "Header.token_epoch")?,
    })
}

fn state_to(s: &State) -> pb::State {
    pb::State {
        header: Some(header_to(&s.header())),
        leases: s.leases().map(lease_to).collect(),
        locks: s.locks().map(lock_to).collect(),
        waiters: s.waiters().map(waiter_to).collect(),
    }
}

fn state_from(s: Option<pb::State>, field: &'static str) -> Result<State, CodecError> {
    let s = required(s, field)?;
    let header = header_from(s.header, "State.header")?;
    let leases = s
        .leases
        .into_iter()
        .map(lease_from)
        .collect::<Result<Vec<_>, _>>()?;
    strictly_increasing(leases.iter().map(|l| &l.id), "State.leases.id")?;
    let locks = s
        .locks
        .into_iter()
        .map(lock_from)
        .collect::<Result<Vec<_>, _>>()?;
    strictly_increasing(locks.iter().map(|l| &l.name), "State.locks.name")?;
    let waiters = s
        .waiters
        .into_iter()
        .map(waiter_from)
        .collect::<Result<Vec<_>, _>>()?;
    strictly_increasing(waiters.iter().map(|w| &w.id), "State.waiters.id")?;
    let records = leases
        .into_iter()
        .map(Record::Lease)
        .chain(locks.into_iter().map(Record::Lock))
        .chain(waiters.into_iter().map(Record::Waiter));
    // Rebuilds the derived indexes and checks every invariant: a state that
    // decodes is one the state machine could have reached.
    State::from_records(header, records).map_err(|e| match e {
        raftlock_core::DecodeError::Invariant(detail) => CodecError::Invariant(detail),
        other => CodecError::Invariant(other.to_string()),
    })
}

impl Codec for Header {
    const KIND: pb::BodyKind = pb::BodyKind::Header;
    const WHAT: &'static str = "state header";
    type Proto = pb::Header;
    fn to_proto(&self) -> Result<pb::Header, CodecError> {
        Ok(header_to(self))
    }
    fn from_proto(proto: pb::Header) -> Result<Self, CodecError> {
        header_from(Some(proto), "Header")
    }
}

impl Codec for Record {
    const KIND: pb::BodyKind = pb::BodyKind::Record;
    const WHAT: &'static str = "state record";
    type Proto = pb::Record;
    fn to_proto(&self) -> Result<pb::Record, CodecError> {
        use pb::record::Record as R;
        Ok(pb::Record {
            record: Some(match self {
                Record::Lock(l) => R::Lock(lock_to(l)),
                Record::Lease(l) => R::Lease(lease_to(l)),
                Record::Waiter(w) => R::Waiter(waiter_to(w)),
            }),
        })
    }
    fn from_proto(proto: pb::Record) -> Result<Self, CodecError> {
        use pb::record::Record as R;
        Ok(match required(proto.record, "Record.record")? {
            R::Lock(l) => Record::Lock(lock_from(l)?),
            R::Lease(l) => Record::Lease(lease_from(l)?),
            R::Waiter(w) => Record::Waiter(waiter_from(w)?),
        })
    }
}

/// `Record::Lock(lock)` encoded, from a borrowed lock: the store saves
/// every changed record, and cloning each into a `Record` first would copy
/// it twice.
pub fn encode_lock(lock: &Lock) -> Vec<u8> {
    record_of(pb::record::Record::Lock(lock_to(lock)))
}

/// `Record::Lease(lease)` encoded, from a borrowed lease.
pub fn encode_lease(lease: &Lease) -> Vec<u8> {
    record_of(pb::record::Record::Lease(lease_to(lease)))
}

/// `Record::Waiter(waiter)` encoded, from a borrowed waiter.
pub fn encode_waiter(waiter: &Waiter) -> Vec<u8> {
    record_of(pb::record::Record::Waiter(waiter_to(waiter)))
}

fn record_of(record: pb::record::Record) -> Vec<u8> {
    crate::enveloped(
        pb::BodyKind::Record,
        &pb::Record {
            record: Some(record),
        },
    )
}

impl Codec for State {
    const KIND: pb::BodyKind = pb::BodyKind::State;
    const WHAT: &'static str = "state";
    type Proto = pb::State;
    fn to_proto(&self) -> Result<pb::State, CodecError> {
        Ok(state_to(self))
    }
    fn from_proto(proto: pb::State) -> Result<Self, CodecError> {
        state_from(Some(proto), "State")
    }
}

/// The state machine's header as the store keeps it beside the records:
/// the core's header and openraft's view of what was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmHeader {
    pub core: Header,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
}

/// [`SmHeader`] encoded from borrowed parts: the store writes it with every
/// save of the state.
pub fn encode_sm_header(
    core: &Header,
    last_applied: Option<&LogId<u64>>,
    membership: &StoredMembership<u64, BasicNode>,
) -> Vec<u8> {
    crate::enveloped(
        pb::BodyKind::SmHeader,
        &pb::SmHeader {
            core: Some(header_to(core)),
            last_applied: last_applied.map(log_id_to),
            membership: Some(stored_membership_to(membership)),
        },
    )
}

impl Codec for SmHeader {
    const KIND: pb::BodyKind = pb::BodyKind::SmHeader;
    const WHAT: &'static str = "state machine header";
    type Proto = pb::SmHeader;
    fn to_proto(&self) -> Result<pb::SmHeader, CodecError> {
        Ok(pb::SmHeader {
            core: Some(header_to(&self.core)),
            last_applied: self.last_applied.as_ref().map(log_id_to),
            membership: Some(stored_membership_to(&self.membership)),
        })
    }
    fn from_proto(proto: pb::SmHeader) -> Result<Self, CodecError> {
        Ok(SmHeader {
            core: header_from(proto.core, "SmHeader.core")?,
            last_applied: proto
                .last_applied
                .map(|l| log_id_from(l, "SmHeader.last_applied"))
                .transpose()?,
            membership: stored_membership_from(proto.membership, "SmHeader.membership")?,
        })
    }
}

/// The content of a snapshot: what was applied, the membership in force,
/// and the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBody {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub state: State,
}

/// [`SnapshotBody`] encoded from borrowed parts, record by record: the
/// state is neither cloned nor turned into one protobuf message tree (which
/// would be a second full copy of it at a snapshot's peak, issue 18); only
/// one lease, lock or waiter at a time is. The bytes are exactly those of
/// the whole message encoded at once (test: `roundtrip.rs`).
pub fn encode_snapshot_body(
    last_applied: Option<&LogId<u64>>,
    membership: &StoredMembership<u64, BasicNode>,
    state: &State,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_snapshot_body_into(&mut out, last_applied, membership, state);
    out
}

/// [`encode_snapshot_body`], appended to `out` (after the caller's own
/// framing, so the snapshot's bytes exist once).
pub fn encode_snapshot_body_into(
    out: &mut Vec<u8>,
    last_applied: Option<&LogId<u64>>,
    membership: &StoredMembership<u64, BasicNode>,
    state: &State,
) {
    crate::enveloped_streamed(pb::BodyKind::SnapshotBody, out, |out| {
        snapshot_body_fields(out, last_applied, membership);
        crate::delimited(3, out, |out| {
            let never = |_: &mut Vec<u8>| Ok::<(), std::convert::Infallible>(());
            let Ok(_) = write_state_records(state, out, usize::MAX, never);
        });
    })
}

/// The body's fields before the state.
fn snapshot_body_fields(
    out: &mut Vec<u8>,
    last_applied: Option<&LogId<u64>>,
    membership: &StoredMembership<u64, BasicNode>,
) {
    use prost::encoding::message;
    if let Some(last) = last_applied {
        message::encode(1, &log_id_to(last), out);
    }
    message::encode(2, &stored_membership_to(membership), out);
}

/// Appends the state's records (the contents of `SnapshotBody.state`) to
/// `out`, one at a time, handing `out` to `spill` whenever it holds
/// `spill_at` bytes or more (`spill` takes them away: writes and clears
/// them). Returns how many bytes were appended in all.
fn write_state_records<E>(
    state: &State,
    out: &mut Vec<u8>,
    spill_at: usize,
    mut spill: impl FnMut(&mut Vec<u8>) -> Result<(), E>,
) -> Result<u64, E> {
    use prost::encoding::message;
    let mut written = 0u64;
    let mut counted = |out: &mut Vec<u8>, spill: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), E>| {
        if out.len() >= spill_at {
            written += out.len() as u64;
            spill(out)?;
            out.clear();
        }
        Ok(())
    };
    let start = out.len();
    message::encode(1, &header_to(&state.header()), out);
    for lease in state.leases() {
        message::encode(2, &lease_to(lease), out);
        counted(out, &mut spill)?;
    }
    for lock in state.locks() {
        message::encode(3, &lock_to(lock), out);
        counted(out, &mut spill)?;
    }
    for waiter in state.waiters() {
        message::encode(4, &waiter_to(waiter), out);
        counted(out, &mut spill)?;
    }
    // Spilled and left, less what the caller had in `out` before.
    Ok(written + out.len() as u64 - start as u64)
}

/// A [`SnapshotBody`] written as a stream, for a snapshot far larger than
/// the memory one should spend on it: [`StreamedSnapshotBody::head`], then
/// the records [`StreamedSnapshotBody::write_records`] hands out, then
/// [`StreamedSnapshotBody::tail`]. The lengths in the head are
/// [padded](crate::encode_padded_len), so the head's size is known before
/// the records are: a writer leaves room for it and writes it last. The
/// bytes decode exactly as [`encode_snapshot_body`]'s do (test:
/// `roundtrip.rs`); only the two lengths' widths differ.
#[derive(Debug)]
pub struct StreamedSnapshotBody<'a> {
    last_applied: Option<&'a LogId<u64>>,
    membership: &'a StoredMembership<u64, BasicNode>,
    state: &'a State,
}

impl<'a> StreamedSnapshotBody<'a> {
    pub fn new(
        last_applied: Option<&'a LogId<u64>>,
        membership: &'a StoredMembership<u64, BasicNode>,
        state: &'a State,
    ) -> Self {
        StreamedSnapshotBody {
            last_applied,
            membership,
            state,
        }
    }

    /// The bytes before the records, given the records' length; as long
    /// for any length (up to [`crate::PADDED_LEN_MAX`] in all).
    pub fn head(&self, records_len: u64) -> Result<Vec<u8>, CodecError> {
        use prost::encoding::{WireType, encode_key};
        let mut fields = Vec::with_capacity(256);
        snapshot_body_fields(&mut fields, self.last_applied, self.membership);
        encode_key(3, WireType::LengthDelimited, &mut fields);
        let body_len = (fields.len() + crate::PADDED_LEN) as u64 + records_len;
        let mut head = Vec::with_capacity(fields.len() + 32);
        crate::envelope_start_padded(body_len, &mut head)?;
        head.extend_from_slice(&fields);
        crate::encode_padded_len(records_len, &mut head)?;
        Ok(head)
    }

    /// Hands the state's records to `write` in pieces of about `piece`
    /// bytes (at least one record each), encoding one record at a time;
    /// returns their length in all.
    pub fn write_records<E>(
        &self,
        piece: usize,
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut out = Vec::with_capacity(piece + piece / 8);
        let len = write_state_records(self.state, &mut out, piece, |out| write(out))?;
        if !out.is_empty() {
            write(&out)?;
        }
        Ok(len)
    }

    /// The bytes after the records.
    pub fn tail(&self) -> Vec<u8> {
        let mut tail = Vec::with_capacity(4);
        crate::envelope_end(pb::BodyKind::SnapshotBody, &mut tail);
        tail
    }
}

/// Decodes an enveloped [`SnapshotBody`] record by record, straight from
/// `bytes`: what [`crate::decode`] gives for well-formed input, without
/// its two extra copies (the envelope's body, then the whole protobuf
/// message with every record's fields), which at a million holds took the
/// memory of a node receiving a snapshot to 1.6 GB (issue 18). Fields come
/// as raftlock writes them; a singular message field that comes twice
/// (which protobuf would merge) is refused as damaged, as is any record of
/// a wrong wire type.
pub fn decode_snapshot_body(bytes: &[u8]) -> Result<SnapshotBody, CodecError> {
    use prost::Message;
    const WHAT: &str = "snapshot";
    let body = crate::envelope_body_in_place(pb::BodyKind::SnapshotBody, WHAT, bytes)?;
    let mut last_applied = None;
    let mut membership = None;
    let mut state = None;
    crate::for_each_field(WHAT, body, |tag, field| {
        match (tag, field) {
            (1, crate::Field::Len(b)) => once(
                &mut last_applied,
                pb::LogId::decode(b),
                "SnapshotBody.last_applied",
            )?,
            (2, crate::Field::Len(b)) => once(
                &mut membership,
                pb::StoredMembership::decode(b),
                "SnapshotBody.membership",
            )?,
            (3, crate::Field::Len(b)) => once(&mut state, Ok(b), "SnapshotBody.state")?,
            (1..=3, _) => return Err(wrong_type(WHAT, tag)),
            _ => {}
        }
        Ok(())
    })?;
    let last_applied = last_applied
        .map(|l| log_id_from(l, "SnapshotBody.last_applied"))
        .transpose()?;
    let membership = stored_membership_from(membership, "SnapshotBody.membership")?;
    let state = state_from_bytes(required(state, "SnapshotBody.state")?)?;
    Ok(SnapshotBody {
        last_applied,
        membership,
        state,
    })
}

fn once<T>(
    slot: &mut Option<T>,
    value: Result<T, prost::DecodeError>,
    field: &'static str,
) -> Result<(), CodecError> {
    if slot.is_some() {
        return Err(CodecError::Invalid {
            field,
            detail: "comes twice".into(),
        });
    }
    *slot = Some(value.map_err(|e| CodecError::Undecodable {
        what: field,
        reason: e.to_string(),
    })?);
    Ok(())
}

fn wrong_type(what: &'static str, tag: u32) -> CodecError {
    CodecError::Undecodable {
        what,
        reason: format!("field {tag} has the wrong wire type"),
    }
}

/// A `State` message's bytes decoded one record at a time into the state
/// (`state_from` of the whole message, without the message).
fn state_from_bytes(bytes: &[u8]) -> Result<State, CodecError> {
    use prost::Message;
    const WHAT: &str = "snapshot state";
    // The header first (the state is built around it): found by a pass
    // that skips the records.
    let mut header = None;
    crate::for_each_field(WHAT, bytes, |tag, field| match (tag, field) {
        (1, crate::Field::Len(b)) => once(&mut header, pb::Header::decode(b), "State.header"),
        (1..=4, crate::Field::Len(_)) => Ok(()),
        (1..=4, _) => Err(wrong_type(WHAT, tag)),
        _ => Ok(()),
    })?;
    let header = header_from(header, "State.header")?;
    // Then the records, straight into the state; the first error stops
    // them and is returned.
    let mut failed = None;
    let mut order = RecordOrder::default();
    let mut fields = crate::Fields::new(WHAT, bytes);
    let records = std::iter::from_fn(|| {
        if failed.is_some() {
            return None;
        }
        loop {
            let next = match fields.next()? {
                Ok((1, _)) => continue,
                Ok((2, crate::Field::Len(b))) => pb::Lease::decode(b)
                    .map_err(|e| undecodable_record("State.leases", e))
                    .and_then(lease_from)
                    .and_then(|l| order.lease(l)),
                Ok((3, crate::Field::Len(b))) => pb::Lock::decode(b)
                    .map_err(|e| undecodable_record("State.locks", e))
                    .and_then(lock_from)
                    .and_then(|l| order.lock(l)),
                Ok((4, crate::Field::Len(b))) => pb::Waiter::decode(b)
                    .map_err(|e| undecodable_record("State.waiters", e))
                    .and_then(waiter_from)
                    .and_then(|w| order.waiter(w)),
                Ok(_) => continue,
                Err(e) => Err(e),
            };
            match next {
                Ok(record) => return Some(record),
                Err(e) => {
                    failed = Some(e);
                    return None;
                }
            }
        }
    });
    let state = State::from_records(header, records);
    if let Some(e) = failed {
        return Err(e);
    }
    state.map_err(|e| match e {
        raftlock_core::DecodeError::Invariant(detail) => CodecError::Invariant(detail),
        other => CodecError::Invariant(other.to_string()),
    })
}

fn undecodable_record(what: &'static str, e: prost::DecodeError) -> CodecError {
    CodecError::Undecodable {
        what,
        reason: e.to_string(),
    }
}

/// The checks `state_from` makes on whole lists, made record by record:
/// leases, locks and waiters each in strictly increasing order.
#[derive(Default)]
struct RecordOrder {
    lease: Option<u64>,
    lock: Option<String>,
    waiter: Option<u64>,
}

impl RecordOrder {
    fn lease(&mut self, lease: Lease) -> Result<Record, CodecError> {
        increasing(&mut self.lease, lease.id, "State.leases.id")?;
        Ok(Record::Lease(lease))
    }

    fn lock(&mut self, lock: Lock) -> Result<Record, CodecError> {
        if let Some(previous) = &self.lock
            && previous.as_str() >= &*lock.name
        {
            return Err(CodecError::Invalid {
                field: "State.locks.name",
                detail: format!(
                    "{:?} follows {previous:?}: entries must be unique and in increasing order",
                    &*lock.name
                ),
            });
        }
        self.lock = Some(lock.name.to_string());
        Ok(Record::Lock(lock))
    }

    fn waiter(&mut self, waiter: Waiter) -> Result<Record, CodecError> {
        increasing(&mut self.waiter, waiter.id, "State.waiters.id")?;
        Ok(Record::Waiter(waiter))
    }
}

fn increasing(
    previous: &mut Option<u64>,
    next: u64,
    field: &'static str,
) -> Result<(), CodecError> {
    if let Some(p) = *previous
        && p >= next
    {
        return Err(CodecError::Invalid {
            field,
            detail: format!(
                "{next:?} follows {p:?}: entries must be unique and in increasing order"
            ),
        });
    }
    *previous = Some(next);
    Ok(())
}

impl Codec for SnapshotBody {
    const KIND: pb::BodyKind = pb::BodyKind::SnapshotBody;
    const WHAT: &'static str = "snapshot";
    type Proto = pb::SnapshotBody;
    fn to_proto(&self) -> Result<pb::SnapshotBody, CodecError> {
        Ok(pb::SnapshotBody {
            last_applied: self.last_applied.as_ref().map(log_id_to),
            membership: Some(stored_membership_to(&self.membership)),
            state: Some(state_to(&self.state)),
        })
    }
    fn from_proto(proto: pb::SnapshotBody) -> Result<Self, CodecError> {
        Ok(SnapshotBody {
            last_applied: proto
                .last_applied
                .map(|l| log_id_from(l, "SnapshotBody.last_applied"))
                .transpose()?,
            membership: stored_membership_from(proto.membership, "SnapshotBody.membership")?,
            state: state_from(proto.state, "SnapshotBody.state")?,
        })
    }
}

/// The current snapshot as the store keeps it: its metadata and its data.
/// The data is opaque here: it is framed and versioned on its own
/// (raftlock-store's snapshot data format), because it also travels to
/// peers and into backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta<u64, BasicNode>,
    pub data: Vec<u8>,
}

/// [`StoredSnapshot`] encoded from borrowed parts: the data can be
/// hundreds of megabytes, and a copy of it into an owned message would
/// double the store's peak memory while a snapshot is saved.
pub fn encode_stored_snapshot(meta: &SnapshotMeta<u64, BasicNode>, data: &[u8]) -> Vec<u8> {
    let (head, tail) = stored_snapshot_around(meta, data.len());
    let mut out = Vec::with_capacity(head.len() + data.len() + tail.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    out.extend_from_slice(&tail);
    out
}

/// The bytes of an encoded [`StoredSnapshot`] before and after its data
/// of `data_len` bytes: `head ++ data ++ tail` is
/// [`encode_stored_snapshot`]`(meta, data)`. For writing a large snapshot
/// to a file piece by piece, without a second copy of its data.
pub fn stored_snapshot_around(
    meta: &SnapshotMeta<u64, BasicNode>,
    data_len: usize,
) -> (Vec<u8>, Vec<u8>) {
    use prost::encoding::{
        WireType, encode_key, encode_varint, encoded_len_varint, key_len, message,
    };
    let meta = crate::raft::meta_to(meta);
    // proto3 leaves an empty `bytes` field out.
    let data_field_len = if data_len == 0 {
        0
    } else {
        key_len(2) + encoded_len_varint(data_len as u64) + data_len
    };
    let body_len = message::encoded_len(1, &meta) + data_field_len;
    let mut head = Vec::with_capacity(64);
    crate::envelope_start(body_len, &mut head);
    message::encode(1, &meta, &mut head);
    if data_len > 0 {
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(data_len as u64, &mut head);
    }
    (head, stored_snapshot_tail())
}

/// [`stored_snapshot_around`] with the two lengths that depend on
/// `data_len` [padded](crate::encode_padded_len): the head is as long for
/// any `data_len`, so a writer can leave room for it before it knows the
/// data's length. Decodes as [`encode_stored_snapshot`]'s bytes do.
pub fn stored_snapshot_around_padded(
    meta: &SnapshotMeta<u64, BasicNode>,
    data_len: u64,
) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
    use prost::encoding::{WireType, encode_key, key_len, message};
    let meta = crate::raft::meta_to(meta);
    let body_len =
        (message::encoded_len(1, &meta) + key_len(2) + crate::PADDED_LEN) as u64 + data_len;
    let mut head = Vec::with_capacity(96);
    crate::envelope_start_padded(body_len, &mut head)?;
    message::encode(1, &meta, &mut head);
    encode_key(2, WireType::LengthDelimited, &mut head);
    crate::encode_padded_len(data_len, &mut head)?;
    Ok((head, stored_snapshot_tail()))
}

fn stored_snapshot_tail() -> Vec<u8> {
    let mut tail = Vec::with_capacity(4);
    crate::envelope_end(pb::BodyKind::StoredSnapshot, &mut tail);
    tail
}

/// Where the data of an encoded [`StoredSnapshot`] lies, found from its
/// first bytes, so that a reader can check and send a snapshot of hundreds
/// of megabytes from its file without holding it in memory
/// ([`stored_snapshot_layout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshotLayout {
    pub meta: SnapshotMeta<u64, BasicNode>,
    /// Where the data starts, from the start of the encoding.
    pub data_start: u64,
    pub data_len: u64,
    format: u32,
    min_reader: u32,
    kind: i32,
}

const STORED: &str = "stored snapshot";

fn undecodable(reason: impl std::fmt::Display) -> CodecError {
    CodecError::Undecodable {
        what: STORED,
        reason: reason.to_string(),
    }
}

/// Reads the layout of an encoded [`StoredSnapshot`] of `total_len` bytes
/// from `head`, its first bytes (they must reach the data). Fields come
/// in the order every raftlock writes them (the envelope's format and
/// oldest reader, then the body: the metadata, then the data, which ends
/// the body); unknown fields are skipped. The envelope's kind follows the
/// data: check it with [`StoredSnapshotLayout::check_after_data`].
pub fn stored_snapshot_layout(
    head: &[u8],
    total_len: u64,
) -> Result<StoredSnapshotLayout, CodecError> {
    use prost::Message;
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut buf = head;
    let offset = |buf: &[u8]| (head.len() - buf.len()) as u64;
    let (mut format, mut min_reader, mut kind) = (0u32, 0u32, 0i32);
    let body_len = loop {
        if buf.is_empty() {
            return Err(undecodable("its envelope ends before its body"));
        }
        let (tag, wire) = decode_key(&mut buf).map_err(undecodable)?;
        match (tag, wire) {
            (1, WireType::Varint) => format = decode_varint(&mut buf).map_err(undecodable)? as u32,
            (2, WireType::Varint) => {
                min_reader = decode_varint(&mut buf).map_err(undecodable)? as u32
            }
            (4, WireType::Varint) => kind = decode_varint(&mut buf).map_err(undecodable)? as i32,
            (3, WireType::LengthDelimited) => {
                break decode_varint(&mut buf).map_err(undecodable)?;
            }
            _ => skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(undecodable)?,
        }
    };
    // Refuses a newer format before reading what it might have changed.
    crate::check_versions(STORED, format, min_reader)?;
    let body_end = offset(buf)
        .checked_add(body_len)
        .filter(|end| *end <= total_len)
        .ok_or_else(|| undecodable(format!("its body of {body_len} bytes runs past its end")))?;
    let mut meta = None;
    let data_len = loop {
        if buf.is_empty() {
            return Err(undecodable("no data within the bytes read before it"));
        }
        let (tag, wire) = decode_key(&mut buf).map_err(undecodable)?;
        match (tag, wire) {
            (1, WireType::LengthDelimited) => {
                let len = decode_varint(&mut buf).map_err(undecodable)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= buf.len())
                    .ok_or_else(|| undecodable("its metadata is longer than the bytes read"))?;
                let proto = pb::SnapshotMeta::decode(&buf[..len]).map_err(undecodable)?;
                meta = Some(proto);
                buf = &buf[len..];
            }
            (2, WireType::LengthDelimited) => {
                break decode_varint(&mut buf).map_err(undecodable)?;
            }
            _ => skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(undecodable)?,
        }
    };
    let data_start = offset(buf);
    if data_start.checked_add(data_len) != Some(body_end) {
        return Err(undecodable(format!(
            "its data of {data_len} bytes at {data_start} does not end its body at {body_end}"
        )));
    }
    let meta = crate::raft::meta_from(meta, "StoredSnapshot.meta")?;
    Ok(StoredSnapshotLayout {
        meta,
        data_start,
        data_len,
        format,
        min_reader,
        kind,
    })
}

impl StoredSnapshotLayout {
    /// Where the bytes after the data start.
    pub fn data_end(&self) -> u64 {
        self.data_start + self.data_len
    }

    /// Checks the bytes after the data (to the end): the rest of the
    /// envelope, which must name a stored snapshot and may not repeat the
    /// fields read before the data.
    pub fn check_after_data(&self, mut after: &[u8]) -> Result<(), CodecError> {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
        let mut kind = self.kind;
        while !after.is_empty() {
            let (tag, wire) = decode_key(&mut after).map_err(undecodable)?;
            match (tag, wire) {
                (4, WireType::Varint) => {
                    kind = decode_varint(&mut after).map_err(undecodable)? as i32
                }
                (1..=3, _) => {
                    return Err(undecodable(format!(
                        "its envelope's field {tag} comes again after the data"
                    )));
                }
                _ => skip_field(wire, tag, &mut after, DecodeContext::default())
                    .map_err(undecodable)?,
            }
        }
        crate::check_envelope(
            pb::BodyKind::StoredSnapshot,
            STORED,
            self.format,
            self.min_reader,
            kind,
        )
    }
}

impl Codec for StoredSnapshot {
    const KIND: pb::BodyKind = pb::BodyKind::StoredSnapshot;
    const WHAT: &'static str = "stored snapshot";
    type Proto = pb::StoredSnapshot;
    fn to_proto(&self) -> Result<pb::StoredSnapshot, CodecError> {
        Ok(pb::StoredSnapshot {
            meta: Some(crate::raft::meta_to(&self.meta)),
            data: self.data.clone(),
        })
    }
    fn from_proto(proto: pb::StoredSnapshot) -> Result<Self, CodecError> {
        Ok(StoredSnapshot {
            meta: crate::raft::meta_from(proto.meta, "StoredSnapshot.meta")?,
            data: proto.data,
        })
    }
}
