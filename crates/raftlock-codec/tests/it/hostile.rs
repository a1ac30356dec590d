//! Bytes that are not what they claim: every decode answers with an error
//! that says what is wrong, never a panic, never a wrong value.

use openraft::{BasicNode, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
use proptest::prelude::*;
use prost::Message;
use raftlock_codec::{
    CodecError, FORMAT, MAX_BATCH_NESTING, SmHeader, SnapshotBody, decode, encode, pb,
};
use raftlock_core::{Applied, Command, Event, Header, LockError, Record, Request, Response, State};
use raftlock_testkit::hostile::{garbage, mutate, mutations};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::rpc::{AppendAnswer, SnapshotAnswer, VoteAnswer, append_request};
use crate::strategies::{self, RaftEntry, TypeConfig, cases};

/// Decodes `bytes` as every type; returns how many decodes succeeded (a
/// panic fails the test).
fn decode_as_everything(bytes: &[u8]) -> usize {
    [
        decode::<RaftEntry>(bytes).is_ok(),
        decode::<Request>(bytes).is_ok(),
        decode::<Command>(bytes).is_ok(),
        decode::<Applied>(bytes).is_ok(),
        decode::<Response>(bytes).is_ok(),
        decode::<LockError>(bytes).is_ok(),
        decode::<Event>(bytes).is_ok(),
        decode::<State>(bytes).is_ok(),
        decode::<Header>(bytes).is_ok(),
        decode::<Record>(bytes).is_ok(),
        decode::<SmHeader>(bytes).is_ok(),
        decode::<SnapshotBody>(bytes).is_ok(),
        streamed_agrees(bytes),
        decode::<LogId<u64>>(bytes).is_ok(),
        decode::<Option<LogId<u64>>>(bytes).is_ok(),
        decode::<Vote<u64>>(bytes).is_ok(),
        decode::<Membership<u64, BasicNode>>(bytes).is_ok(),
        decode::<StoredMembership<u64, BasicNode>>(bytes).is_ok(),
        decode::<SnapshotMeta<u64, BasicNode>>(bytes).is_ok(),
        decode::<AppendEntriesRequest<TypeConfig>>(bytes).is_ok(),
        decode::<AppendAnswer>(bytes).is_ok(),
        decode::<VoteRequest<u64>>(bytes).is_ok(),
        decode::<VoteAnswer>(bytes).is_ok(),
        decode::<InstallSnapshotRequest<TypeConfig>>(bytes).is_ok(),
        decode::<SnapshotAnswer>(bytes).is_ok(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// The record-by-record snapshot decoder: whatever it accepts, the whole
/// message's decoder accepts with the same value (it may refuse more: a
/// message field that comes twice). Returns whether it accepted.
fn streamed_agrees(bytes: &[u8]) -> bool {
    match raftlock_codec::decode_snapshot_body(bytes) {
        Ok(streamed) => {
            assert_eq!(
                decode::<SnapshotBody>(bytes).as_ref(),
                Ok(&streamed),
                "the two snapshot decoders disagree"
            );
            true
        }
        Err(_) => false,
    }
}

fn envelope(kind: pb::BodyKind, format: u32, min_reader: u32, body: Vec<u8>) -> Vec<u8> {
    pb::Envelope {
        format,
        min_reader,
        body,
        kind: kind as i32,
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes_are_refused_without_a_panic(bytes in garbage(512)) {
        // An envelope needs a format, a reader version and a kind that
        // random bytes almost never spell; either way nothing panics.
        decode_as_everything(&bytes);
    }

    /// Random bodies behind a valid envelope reach the message decoders
    /// themselves.
    #[test]
    fn random_bodies_behind_a_valid_envelope_are_refused_without_a_panic(
        body in garbage(512),
        kind in 1i32..=24,
    ) {
        let bytes = pb::Envelope { format: FORMAT, min_reader: 1, body, kind }.encode_to_vec();
        decode_as_everything(&bytes);
    }

    /// The envelope's last field is its kind, so every strict prefix of an
    /// encoding lacks it or cuts a field short: always an error.
    #[test]
    fn every_truncation_of_an_entry_is_an_error(entry in strategies::entry(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cut = cut.index(bytes.len());
        prop_assert!(decode::<RaftEntry>(&bytes[..cut]).is_err(), "prefix of {} of {} bytes decoded", cut, bytes.len());
    }

    #[test]
    fn every_truncation_of_a_state_is_an_error(ops in strategies::ops(), cut in any::<prop::sample::Index>()) {
        let state = strategies::run(&ops);
        let bytes = encode(&state).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cut = cut.index(bytes.len());
        prop_assert!(decode::<State>(&bytes[..cut]).is_err());
    }

    /// A snapshot body damaged anywhere: the record-by-record decoder
    /// never accepts what the whole-message decoder reads differently.
    #[test]
    fn damaged_snapshot_bodies_decode_alike_or_not_at_all(
        ops in strategies::ops(),
        membership in strategies::stored_membership(),
        damage in mutations(),
    ) {
        let state = strategies::run(&ops);
        let bytes = raftlock_codec::encode_snapshot_body(None, &membership, &state);
        prop_assert!(streamed_agrees(&bytes), "the undamaged body decodes");
        streamed_agrees(&mutate(bytes, &damage));
    }

    /// Flipped bits, inserted bytes, huge length prefixes: an error or
    /// some value, never a panic or a huge allocation.
    #[test]
    fn damaged_encodings_never_panic(
        entry in strategies::entry(),
        applied in strategies::applied(),
        ops in strategies::ops(),
        append in append_request(),
        damage in mutations(),
    ) {
        let state = strategies::run(&ops);
        for bytes in [
            encode(&append).map_err(|e| TestCaseError::fail(e.to_string()))?,
            encode(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?,
            encode(&applied).map_err(|e| TestCaseError::fail(e.to_string()))?,
            encode(&state).map_err(|e| TestCaseError::fail(e.to_string()))?,
        ] {
            decode_as_everything(&mutate(bytes, &damage));
        }
    }
}

fn varint(mut value: usize, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A Tick inside `depth` batches, as an enveloped Command, written byte by
/// byte: building it as nested structs would overflow the stack of the
/// test itself (prost encodes and Rust drops recursively).
fn nested_batches(depth: usize) -> Vec<u8> {
    // Command.tick (field 9), empty.
    let mut command = vec![(9 << 3) | 2, 0];
    for _ in 0..depth {
        // Batch.commands (field 1) holding the command so far...
        let mut batch = vec![(1 << 3) | 2];
        varint(command.len(), &mut batch);
        batch.extend_from_slice(&command);
        // ... in Command.batch (field 13).
        command = vec![(13 << 3) | 2];
        varint(batch.len(), &mut command);
        command.extend_from_slice(&batch);
    }
    envelope(pb::BodyKind::Command, FORMAT, 1, command)
}

/// Batches nested past the limit are refused by name; nested far past
/// prost's recursion limit they are refused too, with no stack overflow.
#[test]
fn deeply_nested_batches_are_refused() {
    let at_limit = decode::<Command>(&nested_batches(MAX_BATCH_NESTING)).expect("decodes");
    let mut depth = 0;
    let mut command = &at_limit;
    while let Command::Batch { commands } = command {
        depth += 1;
        command = &commands[0];
    }
    assert_eq!((depth, command), (MAX_BATCH_NESTING, &Command::Tick));
    assert_eq!(
        decode::<Command>(&nested_batches(MAX_BATCH_NESTING + 1)),
        Err(CodecError::TooDeep {
            field: "Command.batch",
            max: MAX_BATCH_NESTING
        })
    );
    for depth in [60, 1_000] {
        match decode::<Command>(&nested_batches(depth)) {
            Err(CodecError::Undecodable {
                what: "command",
                reason,
            }) => {
                assert!(reason.contains("recursion"), "{reason}")
            }
            other => panic!("expected prost's recursion limit at depth {depth}, got {other:?}"),
        }
    }
}

#[test]
fn an_envelope_needing_a_newer_reader_is_refused_naming_both_versions() {
    let body = encode(&Command::Tick).expect("encodes");
    let inner = pb::Envelope::decode(body.as_slice()).expect("decodes").body;
    let bytes = envelope(pb::BodyKind::Command, FORMAT + 2, FORMAT + 1, inner);
    let error = decode::<Command>(&bytes).expect_err("a newer reader is needed");
    assert_eq!(
        error,
        CodecError::TooNew {
            what: "command",
            format: FORMAT + 2,
            min_reader: FORMAT + 1,
            reader: FORMAT
        }
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!("needs a reader of format {}", FORMAT + 1))
            && text.contains(&format!("this build reads format {FORMAT} at most")),
        "{text}"
    );
}

/// A newer writer whose data an older reader may read (min_reader = 1)
/// is read, its fields unknown here skipped.
#[test]
fn a_newer_format_readable_by_this_one_decodes_and_its_new_fields_are_skipped() {
    let request = raftlock_core::Request::new(5, 6, Command::RevokeLease { lease: 9 });
    let bytes = encode(&request).expect("encodes");
    let mut body = pb::Envelope::decode(bytes.as_slice())
        .expect("decodes")
        .body;
    // Field 99, varint 1: a field a later format might add.
    body.extend_from_slice(&[0x98, 0x06, 0x01]);
    let newer = envelope(pb::BodyKind::Request, FORMAT + 1, 1, body);
    assert_eq!(decode::<Request>(&newer), Ok(request));
}

#[test]
fn envelope_faults_are_named() {
    let body = pb::Envelope::decode(encode(&Command::Tick).expect("encodes").as_slice())
        .expect("decodes")
        .body;
    assert_eq!(
        decode::<Command>(&[]),
        Err(CodecError::NoFormat { what: "command" })
    );
    assert_eq!(
        decode::<Command>(&envelope(pb::BodyKind::Command, 1, 0, body.clone())),
        Err(CodecError::BadEnvelope {
            what: "command",
            format: 1,
            min_reader: 0
        })
    );
    assert_eq!(
        decode::<Command>(&envelope(pb::BodyKind::Command, 1, 2, body.clone())),
        Err(CodecError::BadEnvelope {
            what: "command",
            format: 1,
            min_reader: 2
        })
    );
    // A vote read as a log entry.
    let vote = encode(&Vote::new(3, 1)).expect("encodes");
    assert_eq!(
        decode::<RaftEntry>(&vote).map(|_| ()),
        Err(CodecError::WrongKind {
            what: "log entry",
            found: "BODY_KIND_VOTE".into()
        })
    );
}

#[test]
fn missing_fields_unknown_values_and_out_of_range_integers_are_named() {
    let entry = pb::Entry {
        log_id: None,
        payload: Some(pb::entry::Payload::Blank(pb::entry::Blank {})),
    };
    assert_eq!(
        decode::<RaftEntry>(&envelope(pb::BodyKind::Entry, 1, 1, entry.encode_to_vec()))
            .map(|_| ()),
        Err(CodecError::Missing {
            field: "Entry.log_id"
        })
    );

    let command = pb::Command { command: None };
    assert_eq!(
        decode::<Command>(&envelope(
            pb::BodyKind::Command,
            1,
            1,
            command.encode_to_vec()
        )),
        Err(CodecError::Missing {
            field: "Command.command"
        })
    );

    let response = pb::Response {
        response: Some(pb::response::Response::LeaseEnded(
            pb::response::LeaseEnded {
                lease: 1,
                how: 7,
                released: vec![],
            },
        )),
    };
    assert_eq!(
        decode::<Response>(&envelope(
            pb::BodyKind::Response,
            1,
            1,
            response.encode_to_vec()
        )),
        Err(CodecError::UnknownValue {
            field: "Response.LeaseEnded.how",
            value: 7
        })
    );

    let epoch = pb::Command {
        command: Some(pb::command::Command::RaiseTokenEpoch(
            pb::command::RaiseTokenEpoch { at_least: 70_000 },
        )),
    };
    let error = decode::<Command>(&envelope(
        pb::BodyKind::Command,
        1,
        1,
        epoch.encode_to_vec(),
    ))
    .expect_err("out of range");
    assert_eq!(
        error,
        CodecError::OutOfRange {
            field: "RaiseTokenEpoch.at_least",
            value: 70_000,
            max: 65_535
        }
    );
    assert_eq!(
        error.to_string(),
        "RaiseTokenEpoch.at_least is 70000, above its maximum 65535"
    );
}

#[test]
fn a_membership_with_a_voter_without_a_node_is_refused() {
    let membership = pb::Membership {
        configs: vec![pb::NodeIdSet { ids: vec![1, 2] }],
        nodes: [(1, pb::BasicNode { addr: "a:1".into() })].into(),
    };
    assert_eq!(
        decode::<Membership<u64, BasicNode>>(&envelope(
            pb::BodyKind::Membership,
            1,
            1,
            membership.encode_to_vec()
        )),
        Err(CodecError::Invalid {
            field: "Membership.nodes",
            detail: "voter 2 has no node".into()
        })
    );
    let unordered = pb::Membership {
        configs: vec![pb::NodeIdSet { ids: vec![2, 1] }],
        nodes: [(1, pb::BasicNode::default()), (2, pb::BasicNode::default())].into(),
    };
    assert!(matches!(
        decode::<Membership<u64, BasicNode>>(&envelope(
            pb::BodyKind::Membership,
            1,
            1,
            unordered.encode_to_vec()
        )),
        Err(CodecError::Invalid {
            field: "Membership.configs.ids",
            ..
        })
    ));
}

/// A state that decodes is one the state machine could hold: records
/// that contradict each other are refused, and so are duplicates.
#[test]
fn states_that_break_invariants_or_repeat_records_are_refused() {
    let mut state = State::new();
    state.apply(
        1,
        &Request::new(
            1,
            1,
            Command::GrantLease {
                ttl_ms: 5_000,
                owner: "w".into(),
                identity: String::new(),
                quota: Default::default(),
            },
        ),
    );
    let good = encode(&state).expect("encodes");
    let mut proto = pb::State::decode(
        pb::Envelope::decode(good.as_slice())
            .expect("decodes")
            .body
            .as_slice(),
    )
    .expect("decodes");

    let mut twice = proto.clone();
    twice.leases.push(twice.leases[0].clone());
    assert!(matches!(
        decode::<State>(&envelope(pb::BodyKind::State, 1, 1, twice.encode_to_vec())),
        Err(CodecError::Invalid {
            field: "State.leases.id",
            ..
        })
    ));

    // The lease claims to hold a lock that does not exist.
    proto.leases[0].holds.push("ghost".into());
    assert!(matches!(
        decode::<State>(&envelope(pb::BodyKind::State, 1, 1, proto.encode_to_vec())),
        Err(CodecError::Invariant(_))
    ));
}

/// What a decode may allocate at most, per byte of its input, in one
/// allocation. protobuf's smallest element is 2 bytes (an empty message:
/// its tag and a zero length) and becomes a struct of up to 168 bytes
/// (`pb::Entry`), in a Vec that may double while it grows: about 170 times
/// the input, briefly, before the conversion refuses the empty messages.
/// (bincode's bound in raftlock-core was 128 times.) Peer messages are at
/// most 4 MiB, so a hostile peer can make a node allocate at most about
/// 700 MB once per message; stored data is behind a CRC.
const ALLOCATION_PER_INPUT_BYTE: usize = 176;

/// `count` copies of `element` as field `field` of a message, enveloped.
fn repeated(kind: pb::BodyKind, field: u8, element: &[u8], count: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..count {
        body.push((field << 3) | 2);
        varint(element.len(), &mut body);
        body.extend_from_slice(element);
    }
    envelope(kind, FORMAT, 1, body)
}

#[test]
fn hostile_bodies_allocate_a_bounded_multiple_of_their_size() {
    // A Lock (field 3 of State) holding 30 000 empty holds (its field 3).
    let mut lock = Vec::new();
    for _ in 0..30_000 {
        lock.extend_from_slice(&[(3 << 3) | 2, 0]);
    }
    let mut state_body = vec![(3 << 3) | 2];
    varint(lock.len(), &mut state_body);
    state_body.extend_from_slice(&lock);
    /// What a case is, its bytes, and whether decoding them went as
    /// expected.
    type Case = (&'static str, Vec<u8>, Box<dyn Fn(&[u8]) -> bool>);
    let cases: Vec<Case> = vec![
        (
            "a batch of empty commands",
            {
                let mut batch = Vec::new();
                for _ in 0..30_000 {
                    batch.extend_from_slice(&[(1 << 3) | 2, 0]);
                }
                let mut command = vec![(13 << 3) | 2];
                varint(batch.len(), &mut command);
                command.extend_from_slice(&batch);
                envelope(pb::BodyKind::Command, FORMAT, 1, command)
            },
            Box::new(|b| decode::<Command>(b).is_err()),
        ),
        (
            "a state of empty holds",
            envelope(pb::BodyKind::State, FORMAT, 1, state_body),
            Box::new(|b| decode::<State>(b).is_err()),
        ),
        (
            "an applied entry of empty events",
            repeated(pb::BodyKind::Applied, 3, &[], 30_000),
            Box::new(|b| decode::<Applied>(b).is_err()),
        ),
        (
            "a membership of empty voter sets",
            repeated(pb::BodyKind::Membership, 1, &[], 30_000),
            // Empty sets are valid openraft data: only the size matters.
            Box::new(|b| decode::<Membership<u64, BasicNode>>(b).is_ok()),
        ),
    ];
    for (what, bytes, refused) in cases {
        let (largest, as_expected) =
            raftlock_testkit::alloc_watch::largest_allocation_of(|| refused(&bytes));
        assert!(as_expected, "{what}: unexpected outcome");
        // The envelope's body alone is copied whole: a watcher that saw
        // less is not watching.
        assert!(
            largest >= bytes.len() / 2,
            "{what}: the allocator is not watching"
        );
        assert!(
            largest <= ALLOCATION_PER_INPUT_BYTE * bytes.len(),
            "{what}: {} input bytes made one allocation of {largest} bytes",
            bytes.len()
        );
    }
}

/// A length prefix claiming more than the input holds is refused before
/// anything of that size is allocated.
#[test]
fn forged_lengths_are_refused_without_allocating_them() {
    for claimed in raftlock_testkit::hostile::HUGE_LENGTHS {
        // Envelope.body claiming `claimed` bytes.
        let mut bytes = vec![(1 << 3), 1, (2 << 3), 1, (3 << 3) | 2];
        let mut length = claimed;
        while length >= 0x80 {
            bytes.push((length as u8) | 0x80);
            length >>= 7;
        }
        bytes.push(length as u8);
        bytes.extend_from_slice(b"abc");
        let (largest, result) =
            raftlock_testkit::alloc_watch::largest_allocation_of(|| decode::<State>(&bytes));
        assert!(
            matches!(result, Err(CodecError::Undecodable { .. })),
            "{claimed}: {result:?}"
        );
        assert!(
            largest < 4096,
            "claiming {claimed} bytes allocated {largest}"
        );
    }
}
