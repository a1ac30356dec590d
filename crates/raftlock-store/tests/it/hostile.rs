//! Hostile bytes through the store's decoders: every framed record read
//! from disk (log entries, vote, purged and committed log ids, the state
//! machine's header and records, the current snapshot, the format version
//! and store id), in this format and in the bincode of format 4 that the
//! migration reads, and snapshot data (formats 3 and 4) as it arrives in
//! InstallSnapshot chunks. Random bytes behind a *valid* checksum, so the
//! decoder and not only the checksum is tried; mutated valid encodings
//! re-framed the same way; round trips.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use openraft::RaftSnapshotBuilder;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use proptest::prelude::*;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use raftlock_codec::{Codec, pb};
use raftlock_core::{Command, Record, Request};
use raftlock_store::layout::{SmHeader, StoredSnapshot};
use raftlock_store::{
    Entry, LogId, SNAPSHOT_FORMAT_V3, SNAPSHOT_FORMAT_VERSION, SnapshotMeta, Vote, frame,
    verify_snapshot_data,
};
use raftlock_testkit::hostile::{HUGE_LENGTHS, garbage, mutate, mutations, varint_u64};
use raftlock_testkit::rng::Rng;

use crate::common::{DrawOp, blank, membership, normal, open, request};

/// A real snapshot of a store with leases, holds and waiters, and the
/// entries that made it.
struct Made {
    meta: SnapshotMeta,
    data: Vec<u8>,
    entries: Vec<Entry>,
}

static MADE: LazyLock<Made> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let (mut log, mut sm) = open(dir.path());
        let mut entries = vec![membership(1, 0, &[1, 2, 3])];
        log.blocking_append(entries.clone()).await.expect("append");
        sm.apply(entries.clone()).await.expect("apply");
        let mut rng = Rng::new(15);
        let mut clock = 0;
        for index in 1..=80 {
            let op = rng.op();
            let entry = normal(1, index, sm.read(|s| request(s, op, &mut clock)));
            log.blocking_append([entry.clone()]).await.expect("append");
            sm.apply([entry.clone()]).await.expect("apply");
            entries.push(entry);
        }
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        Made {
            meta: snapshot.meta,
            data: snapshot.snapshot.into_bytes().await.expect("read"),
            entries,
        }
    })
});

/// Every type the store decodes from a frame, tried on `framed`: each is a
/// value or an error, never a panic.
fn decode_as_every_stored_type(framed: &[u8]) {
    let what = "hostile";
    let _ = frame::decode::<Entry>(&what, framed);
    let _ = frame::decode::<Vote>(&what, framed);
    let _ = frame::decode::<LogId>(&what, framed);
    let _ = frame::decode::<Option<LogId>>(&what, framed);
    let _ = frame::decode::<SmHeader>(&what, framed);
    let _ = frame::decode::<Record>(&what, framed);
    let _ = frame::decode::<StoredSnapshot>(&what, framed);
    let _ = frame::decode_format_version(framed);
    let _ = frame::decode_text(&what, framed);
    // What the migration from format 4 reads.
    let _ = frame::legacy::decode::<Entry>(&what, framed);
    let _ = frame::legacy::decode::<Vote>(&what, framed);
    let _ = frame::legacy::decode::<Option<LogId>>(&what, framed);
    let _ = frame::legacy::decode::<Record>(&what, framed);
    let _ = frame::legacy::decode::<String>(&what, framed);
}

/// Snapshot data whose checksum and format version (`version`) are right
/// around `body`.
fn snapshot_data_of(version: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = version.to_be_bytes().to_vec();
    payload.extend_from_slice(body);
    frame::seal(&payload)
}

/// Snapshot data of this build's format around `body`.
fn snapshot_data(body: &[u8]) -> Vec<u8> {
    snapshot_data_of(SNAPSHOT_FORMAT_VERSION, body)
}

/// An envelope of `kind` around `body`, as the codec writes it.
fn enveloped(kind: pb::BodyKind, body: Vec<u8>) -> Vec<u8> {
    pb::Envelope {
        format: raftlock_codec::FORMAT,
        min_reader: raftlock_codec::MIN_READER,
        body,
        kind: kind as i32,
    }
    .encode_to_vec()
}

/// A length-delimited field `tag` that claims `claimed` bytes and has 16.
fn forged_field(tag: u32, claimed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(claimed, &mut out);
    out.extend_from_slice(&[1; 16]);
    out
}

#[test]
fn the_made_snapshot_verifies() {
    // The mutation tests below start from data that is valid.
    verify_snapshot_data(&MADE.meta, &MADE.data).expect("valid");
    assert!(MADE.entries.len() > 50);
}

#[test]
fn a_stored_snapshot_claiming_a_huge_data_length_is_refused_fast() {
    let meta = MADE.meta.to_proto().expect("encodes");
    let mut body = Vec::new();
    prost::encoding::message::encode(1, &meta, &mut body);
    // In format 4 (what the migration reads) too.
    let legacy_meta = raftlock_core::encode(&MADE.meta);
    for claimed in HUGE_LENGTHS {
        let mut forged_body = body.clone();
        forged_body.extend(forged_field(2, claimed));
        // The data field's length, and the envelope's body length.
        let mut forged_envelope = Vec::new();
        encode_varint(8, &mut forged_envelope);
        encode_varint(u64::from(raftlock_codec::FORMAT), &mut forged_envelope);
        forged_envelope.extend(forged_field(3, claimed));
        let mut legacy = legacy_meta.clone();
        legacy.extend(varint_u64(claimed));
        legacy.extend_from_slice(&[1, 2, 3, 4]);
        for forged in [
            enveloped(pb::BodyKind::StoredSnapshot, forged_body),
            forged_envelope,
        ] {
            let started = Instant::now();
            let err = frame::decode::<StoredSnapshot>(&"current snapshot", &frame::seal(&forged))
                .expect_err("forged length");
            assert!(started.elapsed() < Duration::from_secs(1), "{claimed}");
            assert!(err.to_string().contains("current snapshot"), "{err}");
        }
        let started = Instant::now();
        frame::legacy::decode::<(SnapshotMeta, Vec<u8>)>(&"format 4", &frame::seal(&legacy))
            .expect_err("forged length");
        assert!(started.elapsed() < Duration::from_secs(1), "{claimed}");
    }
}

#[test]
fn snapshot_data_claiming_a_huge_state_is_refused_fast() {
    // Keep last_applied and the membership, forge the length of the state
    // after them: in format 4 (protobuf) and in format 3 (bincode), which
    // peers of protocol 1 still send.
    let mut body = Vec::new();
    if let Some(last) = &MADE.meta.last_log_id {
        prost::encoding::message::encode(1, &last.to_proto().expect("encodes"), &mut body);
    }
    let membership = MADE.meta.last_membership.to_proto().expect("encodes");
    prost::encoding::message::encode(2, &membership, &mut body);
    let v3_prefix = raftlock_core::encode(&(MADE.meta.last_log_id, &MADE.meta.last_membership));
    for claimed in HUGE_LENGTHS {
        let mut forged = body.clone();
        forged.extend(forged_field(3, claimed));
        let mut v3 = v3_prefix.clone();
        v3.extend(varint_u64(claimed));
        v3.extend_from_slice(&[0; 16]);
        for data in [
            snapshot_data(&enveloped(pb::BodyKind::SnapshotBody, forged)),
            snapshot_data_of(SNAPSHOT_FORMAT_V3, &v3),
        ] {
            let started = Instant::now();
            let err = verify_snapshot_data(&MADE.meta, &data).expect_err("forged");
            assert!(started.elapsed() < Duration::from_secs(1), "{claimed}");
            assert!(err.to_string().contains("snapshot"), "{err}");
        }
    }
}

#[test]
fn snapshot_data_of_a_newer_format_names_the_upgrade() {
    let data = snapshot_data_of(SNAPSHOT_FORMAT_VERSION + 1, &[1, 2, 3]);
    let err = verify_snapshot_data(&MADE.meta, &data).expect_err("newer");
    assert!(err.to_string().contains("upgrade this node"), "{err}");
}

#[test]
fn snapshot_data_for_a_protocol_1_peer_is_format_3_with_the_same_state() {
    let old =
        raftlock_store::snapshot_data_for_protocol_1(&MADE.meta, &MADE.data).expect("re-encodes");
    let payload = frame::unseal(&"old", &old).expect("framed");
    assert_eq!(payload[..4], SNAPSHOT_FORMAT_V3.to_be_bytes());
    verify_snapshot_data(&MADE.meta, &old).expect("this build reads format 3 too");
    let (_, new_state) = raftlock_store::decode_snapshot_copy(&MADE.data).expect("new");
    let (_, old_state) = raftlock_store::decode_snapshot_copy(&old).expect("old");
    assert_eq!(new_state, old_state);
    // Idempotent: format 3 data goes out as it is.
    assert_eq!(
        raftlock_store::snapshot_data_for_protocol_1(&MADE.meta, &old).expect("as is"),
        old
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_behind_a_valid_checksum_never_panic(bytes in garbage(512)) {
        decode_as_every_stored_type(&frame::seal(&bytes));
    }

    #[test]
    fn random_snapshot_data_is_refused(bytes in garbage(2048), versioned in any::<bool>()) {
        let data = if versioned { snapshot_data(&bytes) } else { frame::seal(&bytes) };
        prop_assert!(verify_snapshot_data(&MADE.meta, &data).is_err());
    }

    #[test]
    fn mutated_records_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in mutations(),
    ) {
        let entry = &MADE.entries[pick.index(MADE.entries.len())];
        let payload = raftlock_codec::encode(entry).expect("encodes");
        decode_as_every_stored_type(&frame::seal(&mutate(payload, &mutations)));
        let legacy = raftlock_core::encode(entry);
        decode_as_every_stored_type(&frame::seal(&mutate(legacy, &mutations)));
        let stored = raftlock_codec::encode_stored_snapshot(&MADE.meta, &MADE.data);
        decode_as_every_stored_type(&frame::seal(&mutate(stored, &mutations)));
    }

    #[test]
    fn mutated_snapshot_data_never_panics(mutations in mutations()) {
        // Re-framed, so the checksum is right and the version and body
        // decoders see the damage. A mutation inside a name can leave a
        // valid snapshot; most do not, and none may panic.
        let payload = frame::unseal(&"snapshot", &MADE.data).expect("valid");
        let data = frame::seal(&mutate(payload.to_vec(), &mutations));
        let _ = verify_snapshot_data(&MADE.meta, &data);
    }

    #[test]
    fn entries_round_trip_through_frames(
        term in 1u64..1_000,
        index in any::<u64>(),
        kind in 0u8..3,
        owner in "[a-z]{0,12}",
        ttl_ms in any::<u64>(),
    ) {
        let entry = match kind {
            0 => blank(term, index),
            1 => membership(term, index, &[1, 2, 3]),
            _ => normal(term, index, Request::new(1, 2, Command::GrantLease {
                    ttl_ms,
                    owner,
                    identity: String::new(),
                    quota: Default::default(),
                })),
        };
        let framed = frame::encode(&"entry", &entry).expect("encodes");
        let back: Entry = frame::decode(&"entry", &framed).expect("decodes");
        prop_assert_eq!(frame::encode(&"entry", &back).expect("encodes"), framed);
    }
}

#[test]
fn a_format_3_snapshot_from_a_protocol_1_leader_installs_and_is_kept_in_this_format() {
    // Made before the runtime below: MADE runs one of its own.
    let old =
        raftlock_store::snapshot_data_for_protocol_1(&MADE.meta, &MADE.data).expect("re-encodes");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let (_log, mut sm) = open(dir.path());
        sm.install_snapshot(
            &MADE.meta,
            Box::new(raftlock_store::SnapshotData::from_vec(old)),
        )
        .await
        .expect("a format-3 snapshot installs");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("stored");
        let data = current.snapshot.into_bytes().await.expect("read");
        let payload = frame::unseal(&"current", &data).expect("framed");
        assert_eq!(payload[..4], SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        let (_, installed) = raftlock_store::decode_snapshot_copy(&data).expect("decodes");
        let (_, made) = raftlock_store::decode_snapshot_copy(&MADE.data).expect("decodes");
        assert_eq!(installed, made);
        assert_eq!(sm.read(raftlock_core::State::clone), made);
    });
}
