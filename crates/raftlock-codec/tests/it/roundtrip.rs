//! Every type comes back equal from its bytes, and equal values give equal
//! bytes.

use std::fmt::Debug;

use openraft::{BasicNode, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use proptest::prelude::*;
use raftlock_codec::{
    Codec, CodecError, MAX_BATCH_NESTING, SmHeader, SnapshotBody, StoredSnapshot,
    StreamedSnapshotBody, decode, encode, encode_lease, encode_lock, encode_snapshot_body,
    encode_stored_snapshot, encode_waiter, stored_snapshot_around_padded, stored_snapshot_layout,
};
use raftlock_core::{Applied, Command, Event, Header, LockError, Record, Request, Response, State};

use crate::strategies::{self, RaftEntry, cases};

/// `value` → bytes → value is the identity, and encoding is a function of
/// the value: the decoded copy encodes to the same bytes.
fn round_trips<T: Codec + PartialEq + Debug>(value: &T) -> Result<(), TestCaseError> {
    let bytes = encode(value).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let back: T = decode(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&back, value);
    let again = encode(&back).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
    prop_assert_eq!(again, bytes, "equal values must give equal bytes");
    Ok(())
}

/// openraft's `Entry` has no `PartialEq` (and its Debug hides a normal
/// entry's payload): compare the parts.
fn entry_round_trips(entry: &RaftEntry) -> Result<(), TestCaseError> {
    let bytes = encode(entry).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let back: RaftEntry =
        decode(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(back.log_id, entry.log_id);
    prop_assert!(
        back.payload == entry.payload,
        "payload differs: {:?}",
        describe(&back)
    );
    prop_assert_eq!(
        encode(&back).map_err(|e| TestCaseError::fail(e.to_string()))?,
        bytes
    );
    Ok(())
}

fn describe(entry: &RaftEntry) -> String {
    crate::fixtures::describe_entry(entry)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn every_command_round_trips_with_nested_batches(command in strategies::command()) {
        round_trips::<Command>(&command)?;
    }

    #[test]
    fn every_request_round_trips(request in strategies::request()) {
        round_trips::<Request>(&request)?;
    }

    #[test]
    fn every_response_and_lock_error_round_trips(
        response in strategies::response(),
        error in strategies::lock_error(),
    ) {
        round_trips::<Response>(&response)?;
        round_trips::<LockError>(&error)?;
    }

    #[test]
    fn every_applied_and_event_round_trips(applied in strategies::applied(), event in strategies::event()) {
        round_trips::<Applied>(&applied)?;
        round_trips::<Event>(&event)?;
    }

    #[test]
    fn every_log_entry_round_trips(entry in strategies::entry()) {
        entry_round_trips(&entry)?;
    }

    #[test]
    fn openraft_ids_votes_and_memberships_round_trip(
        log_id in strategies::log_id(),
        committed in proptest::option::of(strategies::log_id()),
        vote in strategies::vote(),
        membership in strategies::membership(),
        stored in strategies::stored_membership(),
        meta in strategies::snapshot_meta(),
    ) {
        round_trips::<LogId<u64>>(&log_id)?;
        round_trips::<Option<LogId<u64>>>(&committed)?;
        round_trips::<Vote<u64>>(&vote)?;
        round_trips::<Membership<u64, BasicNode>>(&membership)?;
        round_trips::<StoredMembership<u64, BasicNode>>(&stored)?;
        round_trips::<SnapshotMeta<u64, BasicNode>>(&meta)?;
    }

    /// A stored snapshot's layout, read from its first bytes, finds its
    /// metadata and its data, with the lengths written shortest (as
    /// `encode_stored_snapshot` and formats up to 5 write them) or padded
    /// (as a snapshot streamed to a file has them); and the padded bytes
    /// decode whole to the same snapshot.
    #[test]
    fn a_stored_snapshots_layout_is_found_from_its_head(
        meta in strategies::snapshot_meta(),
        data in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let shortest = encode_stored_snapshot(&meta, &data);
        let (head, tail) = stored_snapshot_around_padded(&meta, data.len() as u64)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let padded = [&head[..], &data, &tail].concat();
        let whole = decode::<StoredSnapshot>(&padded).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&whole, &StoredSnapshot { meta: meta.clone(), data: data.clone() });
        for bytes in [&shortest, &padded] {
            let layout = stored_snapshot_layout(bytes, bytes.len() as u64)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&layout.meta, &meta);
            let start = layout.data_start as usize;
            prop_assert_eq!(&bytes[start..start + data.len()], &data[..]);
            prop_assert_eq!(layout.data_end() as usize, start + data.len());
            prop_assert_eq!(layout.check_after_data(&bytes[layout.data_end() as usize..]), Ok(()));
            // A head cut before the data, or a snapshot shorter than its
            // body says, is refused.
            prop_assert!(stored_snapshot_layout(&bytes[..start - 1], bytes.len() as u64).is_err());
            prop_assert!(stored_snapshot_layout(bytes, bytes.len() as u64 - 1 - tail.len() as u64).is_err());
        }
    }

    /// A state reached by applying commands comes back equal: whole, as a
    /// snapshot body, and as the store keeps it (header + one record each).
    #[test]
    fn states_reached_by_commands_round_trip_whole_and_by_record(
        ops in strategies::ops(),
        last_applied in proptest::option::of(strategies::log_id()),
        membership in strategies::stored_membership(),
    ) {
        let state = strategies::run(&ops);
        round_trips::<State>(&state)?;
        round_trips::<SnapshotBody>(&SnapshotBody {
            last_applied,
            membership: membership.clone(),
            state: state.clone(),
        })?;
        // The snapshot body streamed record by record is the whole
        // message's encoding, byte for byte, and decodes to the same.
        let streamed = encode_snapshot_body(last_applied.as_ref(), &membership, &state);
        let whole = encode(&SnapshotBody {
            last_applied,
            membership: membership.clone(),
            state: state.clone(),
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&streamed, &whole);
        let body = decode::<SnapshotBody>(&streamed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&body.state, &state);
        // Streamed in pieces with padded lengths, as the store writes a
        // snapshot file: the same body, whatever the piece size.
        let stream = StreamedSnapshotBody::new(last_applied.as_ref(), &membership, &state);
        for piece in [1usize, 100, 1 << 20] {
            let mut records = Vec::new();
            let len = stream
                .write_records(piece, |b| {
                    records.extend_from_slice(b);
                    Ok::<_, std::convert::Infallible>(())
                })
                .unwrap_or_else(|never| match never {});
            prop_assert_eq!(len, records.len() as u64);
            let mut bytes = stream.head(len).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let empty_head = stream.head(0).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(bytes.len(), empty_head.len(), "the head's size is fixed");
            bytes.extend_from_slice(&records);
            bytes.extend_from_slice(&stream.tail());
            let padded = decode::<SnapshotBody>(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&padded, &body, "pieces of {} bytes", piece);
            let streamed = raftlock_codec::decode_snapshot_body(&bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&streamed, &body, "decoded record by record");
        }
        round_trips::<SmHeader>(&SmHeader { core: state.header(), last_applied, membership })?;
        round_trips::<Header>(&state.header())?;
        let mut records = Vec::new();
        for lease in state.leases() {
            records.push(Record::Lease(lease.clone()));
        }
        for lock in state.locks() {
            records.push(Record::Lock(lock.clone()));
        }
        for waiter in state.waiters() {
            records.push(Record::Waiter(waiter.clone()));
        }
        let mut decoded = Vec::new();
        for record in &records {
            round_trips::<Record>(record)?;
            // The borrowed encoders write the same bytes.
            let borrowed = match record {
                Record::Lock(l) => encode_lock(l),
                Record::Lease(l) => encode_lease(l),
                Record::Waiter(w) => encode_waiter(w),
            };
            prop_assert_eq!(&borrowed, &encode(record).map_err(|e| TestCaseError::fail(e.to_string()))?);
            decoded.push(decode::<Record>(&encode(record).map_err(|e| TestCaseError::fail(e.to_string()))?)
                .map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
        let rebuilt = State::from_records(state.header(), decoded)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(rebuilt, state);
    }

    /// Two replicas applying the same log hold equal states, and equal
    /// states give equal bytes: the snapshot bytes do not depend on which
    /// replica made them (maps included).
    #[test]
    fn replicas_of_one_log_encode_to_identical_bytes(ops in strategies::ops()) {
        let one = strategies::run(&ops);
        let two = strategies::run(&ops);
        prop_assert_eq!(
            encode(&one).map_err(|e| TestCaseError::fail(e.to_string()))?,
            encode(&two).map_err(|e| TestCaseError::fail(e.to_string()))?
        );
    }
}

/// A batch one level deeper than the codec reads is refused when written,
/// so nothing is stored that could not be read back.
#[test]
fn encoding_refuses_batches_nested_deeper_than_the_decoder_reads() {
    let mut command = Command::Tick;
    for _ in 0..MAX_BATCH_NESTING {
        command = Command::Batch {
            commands: vec![command],
        };
    }
    let bytes = encode(&command).expect("nesting at the limit encodes");
    assert_eq!(decode::<Command>(&bytes), Ok(command.clone()));

    let deeper = Command::Batch {
        commands: vec![command],
    };
    assert_eq!(
        encode(&deeper),
        Err(CodecError::TooDeep {
            field: "Command.batch",
            max: MAX_BATCH_NESTING
        })
    );
    let response = (0..=MAX_BATCH_NESTING).fold(Response::Ticked, |inner, _| Response::Batch {
        results: vec![Ok(inner)],
    });
    assert!(matches!(
        encode(&response),
        Err(CodecError::TooDeep {
            field: "Response.batch",
            ..
        })
    ));
}

/// Maps are BTreeMaps in the generated code: the order in which a map was
/// filled does not show in the bytes.
#[test]
fn metadata_filled_in_any_order_encodes_identically() {
    let keys = ["zeta", "alpha", "mid", "beta", "omega", "k1", "k10", "k2"];
    let acquire = |order: &[&str]| Command::Acquire {
        lease: 7,
        locks: vec![],
        wait: false,
        reason: String::new(),
        metadata: order
            .iter()
            .map(|k| (k.to_string(), k.to_uppercase()))
            .collect(),
        lock_delay_ms: 0,
        quota: Default::default(),
    };
    let mut reversed = keys;
    reversed.reverse();
    assert_eq!(
        encode(&acquire(&keys)).expect("encodes"),
        encode(&acquire(&reversed)).expect("encodes")
    );
}

/// The state round-trips above prove something only if the generated
/// states hold what real ones do: holds, queues, lock-delays, members and
/// raised epochs.
#[test]
fn generated_states_reach_holds_queues_delays_members_and_epochs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut holds, mut queued, mut delayed, mut members, mut epochs) = (0, 0, 0, 0, 0);
    for _ in 0..200 {
        let ops = strategies::ops()
            .new_tree(&mut runner)
            .expect("a strategy of plain values always generates")
            .current();
        let state = strategies::run(&ops);
        holds += usize::from(state.locks().any(|l| !l.holds.is_empty()));
        queued += usize::from(state.waiters().next().is_some());
        delayed += usize::from(state.locks().any(|l| l.delayed_until_ms.is_some()));
        members += usize::from(!state.cluster().members.is_empty());
        epochs += usize::from(state.token_epoch() > 0);
    }
    for (what, count) in [
        ("holds", holds),
        ("queued requests", queued),
        ("lock-delays", delayed),
        ("members", members),
        ("raised epochs", epochs),
    ] {
        assert!(
            count >= 10,
            "only {count} of 200 generated states have {what}"
        );
    }
}

/// What follows a stored snapshot's data must finish its envelope as a
/// stored snapshot: another kind, a repeated field or a newer format is
/// refused by name.
#[test]
fn a_stored_snapshots_layout_refuses_a_wrong_kind_a_repeat_and_a_newer_format() {
    let meta = SnapshotMeta::<u64, BasicNode>::default();
    let data = [7u8; 10];
    let bytes = encode_stored_snapshot(&meta, &data);
    let layout = stored_snapshot_layout(&bytes, bytes.len() as u64).expect("layout");
    // Kind 4 = another body kind; field 3 again; garbage.
    let wrong_kind = [0x20, 0x01];
    assert!(matches!(
        layout.check_after_data(&wrong_kind),
        Err(CodecError::WrongKind { .. })
    ));
    let repeated = [0x1a, 0x00];
    assert!(matches!(
        layout.check_after_data(&repeated),
        Err(CodecError::Undecodable { .. })
    ));
    assert!(layout.check_after_data(&[0xff]).is_err());
    // format 9, oldest reader 9.
    let mut newer = vec![0x08, 0x09, 0x10, 0x09];
    newer.extend_from_slice(&bytes[4..]);
    assert!(matches!(
        stored_snapshot_layout(&newer, newer.len() as u64),
        Err(CodecError::TooNew { .. })
    ));
}
