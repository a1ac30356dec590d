//! Hostile bytes through the store's decoders: every framed record read
//! from disk (log entries, vote, purged and committed log ids, the state
//! machine's header and records, the current snapshot) and snapshot data as
//! it arrives in InstallSnapshot chunks. Random bytes behind a *valid*
//! checksum, so the decoder and not only the checksum is tried; mutated
//! valid encodings re-framed the same way; round trips.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use openraft::RaftSnapshotBuilder;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use proptest::prelude::*;
use raftlock_core::{Command, Record, Request};
use raftlock_store::layout::{SmHeader, StoredSnapshot};
use raftlock_store::{
    Entry, LogId, SNAPSHOT_FORMAT_VERSION, SnapshotMeta, Vote, frame, verify_snapshot_data,
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
            data: snapshot.snapshot.into_inner(),
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
    let _ = frame::decode::<u32>(&what, framed);
}

/// Snapshot data whose checksum and format version are right around
/// `body`.
fn snapshot_data(body: &[u8]) -> Vec<u8> {
    let mut payload = SNAPSHOT_FORMAT_VERSION.to_be_bytes().to_vec();
    payload.extend_from_slice(body);
    frame::seal(&payload)
}

#[test]
fn the_made_snapshot_verifies() {
    // The mutation tests below start from data that is valid.
    verify_snapshot_data(&MADE.meta, &MADE.data).expect("valid");
    assert!(MADE.entries.len() > 50);
}

#[test]
fn a_stored_snapshot_claiming_a_huge_data_length_is_refused_fast() {
    let meta = raftlock_core::encode(&MADE.meta);
    for claimed in HUGE_LENGTHS {
        let mut forged = meta.clone();
        forged.extend(varint_u64(claimed));
        forged.extend_from_slice(&[1, 2, 3, 4]);
        let started = Instant::now();
        let err = frame::decode::<StoredSnapshot>(&"current snapshot", &frame::seal(&forged))
            .expect_err("forged length");
        assert!(started.elapsed() < Duration::from_secs(1), "{claimed}");
        assert!(err.to_string().contains("current snapshot"), "{err}");
    }
}

#[test]
fn snapshot_data_claiming_a_huge_state_is_refused_fast() {
    // The body starts with last_applied (Some(log id)) and the membership;
    // keep them and forge the length of the state bytes after them.
    let prefix = raftlock_core::encode(&(MADE.meta.last_log_id, &MADE.meta.last_membership));
    for claimed in HUGE_LENGTHS {
        let mut body = prefix.clone();
        body.extend(varint_u64(claimed));
        body.extend_from_slice(&[0; 16]);
        let started = Instant::now();
        let err = verify_snapshot_data(&MADE.meta, &snapshot_data(&body)).expect_err("forged");
        assert!(started.elapsed() < Duration::from_secs(1), "{claimed}");
        assert!(err.to_string().contains("snapshot"), "{err}");
    }
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
        let payload = raftlock_core::encode(entry);
        decode_as_every_stored_type(&frame::seal(&mutate(payload, &mutations)));
        let stored = raftlock_core::encode(&StoredSnapshot {
            meta: MADE.meta.clone(),
            data: MADE.data.clone(),
        });
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
        let framed = frame::encode(&entry);
        let back: Entry = frame::decode(&"entry", &framed).expect("decodes");
        prop_assert_eq!(frame::encode(&back), framed);
    }
}
