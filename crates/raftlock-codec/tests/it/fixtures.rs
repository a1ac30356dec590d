//! Stored bytes of every format this build reads, and what they must decode
//! to: tests/fixtures/v<format>/<name>.bin beside <name>.txt (the value,
//! printed). A newer build must decode every older fixture to the same
//! text; the current format's fixtures are also exactly what this build
//! writes, byte for byte.
//!
//! `RAFTLOCK_BLESS=1 cargo test -p raftlock-codec --test it fixtures`
//! rewrites the current format's fixtures (and only those: an older
//! format's bytes are history, never regenerated).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;
use openraft::entry::EntryPayload;
use openraft::{BasicNode, CommittedLeaderId, Entry, LogId, Membership, StoredMembership, Vote};
use raftlock_codec::{
    CodecError, FORMAT, SmHeader, SnapshotBody, StoredSnapshot, decode, encode,
    encode_stored_snapshot,
};
use raftlock_core::{
    Applied, Command, IdentityLimits, Limits, LockSpec, Mode, Record, Request, Response, State,
};

use openraft::SnapshotSegmentId;
use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};

use crate::rpc::{AppendAnswer, SnapshotAnswer};
use crate::strategies::{RaftEntry, TypeConfig};

/// A log entry as text. openraft's Debug of an entry hides a normal
/// entry's payload, so this prints the parts.
pub fn describe_entry(entry: &RaftEntry) -> String {
    let payload = match &entry.payload {
        EntryPayload::Blank => "Blank".to_string(),
        EntryPayload::Normal(request) => format!("Normal({request:#?})"),
        EntryPayload::Membership(m) => format!("Membership({m:#?})"),
    };
    format!("log_id: {:?}\npayload: {payload}\n", entry.log_id)
}

/// A state as text: its replicated content, not its derived indexes.
fn describe_state(state: &State) -> String {
    format!(
        "header: {:#?}\nleases: {:#?}\nlocks: {:#?}\nwaiters: {:#?}\n",
        state.header(),
        state.leases().collect::<Vec<_>>(),
        state.locks().collect::<Vec<_>>(),
        state.waiters().collect::<Vec<_>>(),
    )
}

fn describe_snapshot(body: &SnapshotBody) -> String {
    format!(
        "last_applied: {:?}\nmembership: {:#?}\n{}",
        body.last_applied,
        body.membership,
        describe_state(&body.state)
    )
}

fn describe_append(r: &AppendEntriesRequest<TypeConfig>) -> String {
    let mut text = format!(
        "vote: {:?}\nprev_log_id: {:?}\nleader_commit: {:?}\n",
        r.vote, r.prev_log_id, r.leader_commit
    );
    for entry in &r.entries {
        text.push_str(&describe_entry(entry));
    }
    text
}

/// The bytes of fixture `name` decoded as the type its name starts with,
/// printed. Longer prefixes first.
fn decode_and_describe(name: &str, bytes: &[u8]) -> Result<String, CodecError> {
    Ok(if name.starts_with("append-entries-request-") {
        describe_append(&decode(bytes)?)
    } else if name.starts_with("append-entries-answer-") {
        format!("{:#?}\n", decode::<AppendAnswer>(bytes)?)
    } else if name.starts_with("vote-request-") {
        format!("{:#?}\n", decode::<VoteRequest<u64>>(bytes)?)
    } else if name.starts_with("install-snapshot-answer-") {
        format!("{:#?}\n", decode::<SnapshotAnswer>(bytes)?)
    } else if name.starts_with("entry-") {
        describe_entry(&decode::<RaftEntry>(bytes)?)
    } else if name.starts_with("state-") {
        describe_state(&decode::<State>(bytes)?)
    } else if name.starts_with("snapshot-") {
        describe_snapshot(&decode::<SnapshotBody>(bytes)?)
    } else if name.starts_with("sm-header-") {
        format!("{:#?}\n", decode::<SmHeader>(bytes)?)
    } else if name.starts_with("record-") {
        format!("{:#?}\n", decode::<Record>(bytes)?)
    } else if name.starts_with("stored-snapshot-") {
        format!("{:#?}\n", decode::<StoredSnapshot>(bytes)?)
    } else if name.starts_with("committed-") {
        format!("{:#?}\n", decode::<Option<LogId<u64>>>(bytes)?)
    } else if name.starts_with("log-id-") {
        format!("{:#?}\n", decode::<LogId<u64>>(bytes)?)
    } else if name.starts_with("applied-") {
        format!("{:#?}\n", decode::<Applied>(bytes)?)
    } else if name.starts_with("vote-") {
        format!("{:#?}\n", decode::<Vote<u64>>(bytes)?)
    } else {
        panic!("fixture {name}: its name starts with no known type (see decode_and_describe)")
    })
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(index: u64, command: Command) -> RaftEntry {
    Entry {
        log_id: log_id(2, index),
        payload: EntryPayload::Normal(Request::new(
            90_000 + index,
            1_765_000_000_000 + index,
            command,
        )),
    }
}

fn membership() -> Membership<u64, BasicNode> {
    Membership::new(
        vec![[1, 2, 3].into()],
        BTreeMap::from([
            (1, BasicNode::new("10.0.0.1:7001")),
            (2, BasicNode::new("10.0.0.2:7001")),
            (3, BasicNode::new("10.0.0.3:7001")),
            (4, BasicNode::new("10.0.0.4:7001")),
        ]),
    )
}

fn acquire(lease: u64, name: &str, mode: Mode, wait: bool) -> Command {
    Command::Acquire {
        lease,
        locks: vec![LockSpec {
            name: name.into(),
            mode,
        }],
        wait,
        reason: "nightly build".into(),
        metadata: BTreeMap::from([
            ("host".into(), "build-7".into()),
            ("pid".into(), "4242".into()),
        ]),
        lock_delay_ms: 1_000,
        quota: IdentityLimits {
            max_leases: Some(10),
            max_holds: None,
            max_waiters: Some(3),
        },
    }
}

/// A small state with a bit of everything: a cluster with members, an
/// exclusive hold with a queue behind it, a semaphore, a lock-delay, a
/// raised token epoch.
fn small_state() -> State {
    let commands = vec![
        Command::InitCluster {
            cluster_id: "cluster-7f3a".into(),
        },
        Command::RecordMember {
            node: 1,
            store_id: "store-1".into(),
            client_addr: "10.0.0.1:7000".into(),
        },
        Command::RaiseTokenEpoch { at_least: 1 },
        grant("alice"),
        grant("bob"),
        grant("carol"),
        acquire(stamp(4), "jobs/nightly", Mode::Exclusive, false),
        acquire(stamp(5), "jobs/nightly", Mode::Exclusive, true),
        acquire(stamp(6), "pool", Mode::Semaphore { permits: 2 }, false),
        acquire(stamp(6), "jobs/weekly", Mode::Shared, false),
        Command::ExpireLeases {
            leases: vec![stamp(6)],
        },
    ];
    let mut state = State::new();
    for (i, command) in commands.into_iter().enumerate() {
        let index = i as u64 + 1;
        let applied = state.apply(
            index,
            &Request::new(10_000 + index, 1_765_000_000_000 + index, command),
        );
        assert!(
            applied.result.is_ok(),
            "fixture state step {index}: {:?}",
            applied.result
        );
    }
    state
}

fn grant(owner: &str) -> Command {
    Command::GrantLease {
        ttl_ms: 10_000,
        owner: owner.into(),
        identity: format!("team-{owner}"),
        quota: IdentityLimits::default(),
    }
}

/// The id of a lease granted at `index` after the epoch became 1.
fn stamp(index: u64) -> u64 {
    raftlock_core::stamp(1, index)
}

/// The current format's fixtures: (name, bytes, text).
fn current() -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    let mut entry = |name: &str, e: RaftEntry| {
        out.push((
            format!("entry-{name}"),
            encode(&e).expect("a fixture encodes"),
            describe_entry(&e),
        ));
    };
    entry(
        "blank",
        Entry {
            log_id: log_id(2, 1),
            payload: EntryPayload::Blank,
        },
    );
    entry(
        "membership",
        Entry {
            log_id: log_id(2, 2),
            payload: EntryPayload::Membership(membership()),
        },
    );
    let commands: Vec<(&str, Command)> = vec![
        (
            "grant-lease",
            Command::GrantLease {
                ttl_ms: 15_000,
                owner: "deploy@host-3".into(),
                identity: "team-ci".into(),
                quota: IdentityLimits {
                    max_leases: Some(5),
                    max_holds: Some(20),
                    max_waiters: None,
                },
            },
        ),
        ("revoke-lease", Command::RevokeLease { lease: 12 }),
        (
            "expire-leases",
            Command::ExpireLeases {
                leases: vec![12, 40, 281_474_976_710_700],
            },
        ),
        (
            "acquire",
            acquire(12, "jobs/nightly", Mode::Exclusive, true),
        ),
        (
            "release",
            Command::Release {
                lease: 12,
                token: 33,
                names: vec!["jobs/nightly".into(), "pool".into()],
            },
        ),
        (
            "extend",
            Command::Extend {
                lease: 12,
                name: "jobs/nightly".into(),
                token: 33,
                ttl_ms: Some(20_000),
            },
        ),
        (
            "cancel-wait",
            Command::CancelWait {
                lease: 12,
                waiter: 34,
                as_of: 34,
            },
        ),
        (
            "force-release",
            Command::ForceRelease {
                name: "jobs/nightly".into(),
                lease: Some(12),
                by: "admin".into(),
            },
        ),
        ("tick", Command::Tick),
        (
            "set-limits",
            Command::SetLimits {
                limits: Limits {
                    max_leases: 5_000,
                    ..Limits::default()
                },
            },
        ),
        (
            "init-cluster",
            Command::InitCluster {
                cluster_id: "cluster-7f3a".into(),
            },
        ),
        (
            "record-member",
            Command::RecordMember {
                node: 2,
                store_id: "store-2".into(),
                client_addr: "10.0.0.2:7000".into(),
            },
        ),
        (
            "batch",
            Command::Batch {
                commands: vec![
                    acquire(12, "a", Mode::Shared, false),
                    Command::Release {
                        lease: 13,
                        token: 30,
                        names: vec!["b".into()],
                    },
                    Command::Extend {
                        lease: 14,
                        name: "c".into(),
                        token: 31,
                        ttl_ms: None,
                    },
                ],
            },
        ),
        ("forget-member", Command::ForgetMember { node: 3 }),
        (
            "raise-token-epoch",
            Command::RaiseTokenEpoch { at_least: 2 },
        ),
        (
            "force-new-cluster",
            Command::ForceNewCluster {
                cluster_id: "cluster-b21c".into(),
                node: 1,
                store_id: "store-1".into(),
                client_addr: "10.0.0.1:7000".into(),
            },
        ),
    ];
    for (i, (name, command)) in commands.into_iter().enumerate() {
        entry(name, normal(3 + i as u64, command));
    }

    let state = small_state();
    out.push((
        "state-small".into(),
        encode(&state).expect("a fixture encodes"),
        describe_state(&state),
    ));
    let snapshot = SnapshotBody {
        last_applied: Some(log_id(2, state.last_applied())),
        membership: StoredMembership::new(Some(log_id(2, 2)), membership()),
        state: state.clone(),
    };
    out.push((
        "snapshot-small".into(),
        encode(&snapshot).expect("a fixture encodes"),
        describe_snapshot(&snapshot),
    ));
    // What the store keeps beside the log (store format 5).
    let header = SmHeader {
        core: state.header(),
        last_applied: snapshot.last_applied,
        membership: snapshot.membership.clone(),
    };
    out.push((
        "sm-header-small".into(),
        encode(&header).expect("a fixture encodes"),
        format!("{header:#?}\n"),
    ));
    let records = [
        ("lock", state.locks().next().cloned().map(Record::Lock)),
        ("lease", state.leases().next().cloned().map(Record::Lease)),
        (
            "waiter",
            state.waiters().next().cloned().map(Record::Waiter),
        ),
    ];
    for (kind, record) in records {
        let record = record.unwrap_or_else(|| panic!("the small state has a {kind}"));
        out.push((
            format!("record-{kind}"),
            encode(&record).expect("a fixture encodes"),
            format!("{record:#?}\n"),
        ));
    }
    let stored = StoredSnapshot {
        meta: SnapshotMeta {
            last_log_id: snapshot.last_applied,
            last_membership: snapshot.membership.clone(),
            snapshot_id: "2-9-0badcafe".into(),
        },
        data: vec![0, 1, 2, 3, 254, 255],
    };
    let bytes = encode(&stored).expect("a fixture encodes");
    assert_eq!(
        bytes,
        encode_stored_snapshot(&stored.meta, &stored.data),
        "written from borrowed parts, the same bytes"
    );
    out.push((
        "stored-snapshot-small".into(),
        bytes,
        format!("{stored:#?}\n"),
    ));
    let committed = Some(log_id(2, 9));
    out.push((
        "committed-some".into(),
        encode(&committed).expect("a fixture encodes"),
        format!("{committed:#?}\n"),
    ));
    let purged = log_id(2, 4);
    out.push((
        "log-id-purged".into(),
        encode(&purged).expect("a fixture encodes"),
        format!("{purged:#?}\n"),
    ));

    let mut next = state;
    let applied = next.apply(
        next.last_applied() + 1,
        &Request::new(
            20_000,
            1_765_000_100_000,
            Command::Batch {
                commands: vec![
                    acquire(stamp(4), "jobs/weekly", Mode::Shared, false),
                    acquire(stamp(5), "jobs/nightly", Mode::Exclusive, false),
                ],
            },
        ),
    );
    assert!(matches!(applied.result, Ok(Response::Batch { .. })));
    out.push((
        "applied-batch".into(),
        encode(&applied).expect("a fixture encodes"),
        format!("{applied:#?}\n"),
    ));
    let vote = Vote::new_committed(7, 2);
    out.push((
        "vote-committed".into(),
        encode(&vote).expect("a fixture encodes"),
        format!("{vote:#?}\n"),
    ));

    // What peers send each other (a rolling upgrade mixes versions).
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(7, 40)),
        entries: vec![
            normal(41, acquire(12, "jobs/nightly", Mode::Exclusive, true)),
            Entry {
                log_id: log_id(7, 42),
                payload: EntryPayload::Membership(membership()),
            },
        ],
        leader_commit: Some(log_id(7, 39)),
    };
    out.push((
        "append-entries-request-two-entries".into(),
        encode(&append).expect("a fixture encodes"),
        describe_append(&append),
    ));
    let answer: AppendAnswer = Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(7, 41))));
    out.push((
        "append-entries-answer-partial".into(),
        encode(&answer).expect("a fixture encodes"),
        format!("{answer:#?}\n"),
    ));
    let request = VoteRequest::new(Vote::new(8, 3), Some(log_id(7, 42)));
    out.push((
        "vote-request-term-8".into(),
        encode(&request).expect("a fixture encodes"),
        format!("{request:#?}\n"),
    ));
    let mismatch: SnapshotAnswer = Err(RaftError::APIError(
        InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "7-42-3".into(),
                offset: 65_536,
            },
            got: SnapshotSegmentId {
                id: "7-42-3".into(),
                offset: 131_072,
            },
        }),
    ));
    out.push((
        "install-snapshot-answer-mismatch".into(),
        encode(&mismatch).expect("a fixture encodes"),
        format!("{mismatch:#?}\n"),
    ));
    out
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The `.bin` names (without extension) in `dir`, sorted.
fn bin_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .expect("fixture names are UTF-8")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_fixture_of_every_readable_version_decodes() {
    let root = fixtures_dir();
    let current_dir = root.join(format!("v{FORMAT}"));
    if std::env::var_os("RAFTLOCK_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&current_dir).expect("creating the fixtures directory");
        for name in bin_names(&current_dir) {
            for ext in ["bin", "txt"] {
                std::fs::remove_file(current_dir.join(format!("{name}.{ext}")))
                    .unwrap_or_else(|e| panic!("removing {name}.{ext}: {e}"));
            }
        }
        for (name, bytes, text) in current() {
            std::fs::write(current_dir.join(format!("{name}.bin")), bytes).expect("writing .bin");
            std::fs::write(current_dir.join(format!("{name}.txt")), text).expect("writing .txt");
        }
    }

    let mut versions = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/fixtures exists") {
        let dir = dir.expect("a directory entry").path();
        let version: u32 = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('v'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{} is not named v<format>", dir.display()));
        assert!(
            version <= FORMAT,
            "fixtures of format {version} are newer than this build's format {FORMAT}"
        );
        versions.push(version);
        let names = bin_names(&dir);
        assert!(!names.is_empty(), "{} holds no fixture", dir.display());
        for name in names {
            let bytes = std::fs::read(dir.join(format!("{name}.bin"))).expect("reading .bin");
            let expected = std::fs::read_to_string(dir.join(format!("{name}.txt")))
                .unwrap_or_else(|e| panic!("v{version}/{name}.txt: {e}"));
            let got = decode_and_describe(&name, &bytes)
                .unwrap_or_else(|e| panic!("v{version}/{name}.bin no longer decodes: {e}"));
            assert_eq!(
                got, expected,
                "v{version}/{name}.bin decodes to another value"
            );
        }
    }
    assert!(
        versions.contains(&FORMAT),
        "no fixtures of the current format {FORMAT}: bless them"
    );

    // The current format's fixtures are what this build writes, exactly:
    // a change that alters the bytes of format FORMAT breaks snapshot and
    // log identity between nodes of one format.
    let current = current();
    assert_eq!(
        bin_names(&current_dir),
        current
            .iter()
            .map(|(n, ..)| n.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "the v{FORMAT} fixtures differ from the list in fixtures.rs: RAFTLOCK_BLESS=1 rewrites them"
    );
    for (name, bytes, text) in current {
        let stored = std::fs::read(current_dir.join(format!("{name}.bin"))).expect("reading .bin");
        assert!(
            stored == bytes,
            "v{FORMAT}/{name}.bin is not what this build writes for it: the encoding of format {FORMAT} changed (raise FORMAT for a new encoding, or bless if the value itself changed)"
        );
        let stored_text =
            std::fs::read_to_string(current_dir.join(format!("{name}.txt"))).expect("reading .txt");
        assert_eq!(stored_text, text, "v{FORMAT}/{name}.txt");
    }
}
