//! kill -9 in the middle of appends, votes and applies loses nothing that
//! was acknowledged, and the state machine reopens equal to a replay of
//! the log up to its `last_applied`.
//!
//! The parent test re-executes this test binary running only
//! `crash_child`, which writes until it is killed and reports each durable
//! write on stdout.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{DrawOp, normal, open, replay, request};
use openraft::RaftLogReader;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use raftlock_core::State;
use raftlock_store::{Entry, Vote, frame};
use raftlock_testkit::rng::Rng;

const CHILD_DIR_ENV: &str = "RAFTLOCK_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "RAFTLOCK_CRASH_CHILD_SEED";
const ITERATIONS: u64 = 4;
/// Upper bound of one child's life, whatever happens.
const CHILD_DEADLINE: Duration = Duration::from_secs(3);

fn entry_crc(entry: &Entry) -> u32 {
    crc32fast::hash(&frame::encode(&"entry", entry).expect("encodes"))
}

/// The child: appends random batches of real commands, sometimes a new
/// vote, applies what was appended, and prints `ACK <index> <crc>` once the
/// append callback fired and `VOTE <term>` once `save_vote` returned.
/// Does nothing unless the parent set `RAFTLOCK_CRASH_CHILD_DIR`.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (mut log, mut sm) = open(Path::new(&dir));
        let mut rng = Rng::new(seed);
        let last = log.get_log_state().await.expect("log state").last_log_id;
        let mut index = last.map_or(0, |l| l.index);
        let mut term = log
            .read_vote()
            .await
            .expect("vote")
            .map_or(1, |v| v.leader_id.term);
        // Entries in the log that the state machine has not applied yet
        // (the previous child died in between) are applied first, as
        // openraft would after a restart.
        let applied = sm.last_applied().map_or(0, |l| l.index);
        let pending = log.try_get_log_entries(applied + 1..).await.expect("log");
        sm.apply(pending).await.expect("apply");
        let mut clock = sm.read(State::cluster_ms);
        // Bounded; the parent kills the child long before.
        for _ in 0..1_000_000 {
            if rng.below(8) == 0 {
                term += 1;
                log.save_vote(&Vote::new(term, 1)).await.expect("vote");
                println!("VOTE {term}");
            }
            let size = 1 + rng.below(8);
            let batch: Vec<Entry> = (0..size)
                .map(|_| {
                    index += 1;
                    let op = rng.op();
                    normal(term, index, sm.read(|s| request(s, op, &mut clock)))
                })
                .collect();
            let crc = batch.last().map_or(0, entry_crc);
            log.blocking_append(batch.clone()).await.expect("append");
            println!("ACK {index} {crc}");
            sm.apply(batch).await.expect("apply");
        }
    });
}

#[derive(Debug, Default)]
struct Acked {
    /// (index, crc of the last entry of the batch)
    entries: Vec<(u64, u32)>,
    max_term: u64,
}

/// Runs one child until it has acknowledged `kill_after` appends (or the
/// deadline passes), then SIGKILLs it.
fn run_child(dir: &Path, seed: u64, kill_after: usize) -> Acked {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut acked = Acked::default();
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut ended_early = false;
    while acked.entries.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => record(&mut acked, &line),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                ended_early = true;
                break;
            }
        }
    }
    // SIGKILL on unix: no destructor, no flush, no goodbye.
    let _ = child.kill();
    let status = child.wait().expect("child reaped");
    // Lines already printed before the kill were acknowledged too.
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        record(&mut acked, &line);
    }
    let stderr_text = errors.join().unwrap_or_default();
    assert!(
        !ended_early || status.success(),
        "child {seed} died on its own ({status}):\n{stderr_text}"
    );
    assert!(
        !stderr_text.contains("panicked"),
        "child {seed} panicked:\n{stderr_text}"
    );
    acked
}

fn record(acked: &mut Acked, line: &str) {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("ACK"), Some(index), Some(crc)) => {
            if let (Ok(index), Ok(crc)) = (index.parse(), crc.parse()) {
                acked.entries.push((index, crc));
            }
        }
        (Some("VOTE"), Some(term), None) => {
            if let Ok(term) = term.parse::<u64>() {
                acked.max_term = acked.max_term.max(term);
            }
        }
        _ => {}
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_and_state_matches_log_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(0xC0FFEE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let mut max_term = 0;
    let mut total_acked = 0;
    for iteration in 0..ITERATIONS {
        let kill_after = 1 + rng.below(150) as usize;
        let acked = run_child(dir.path(), 1_000 + iteration, kill_after);
        total_acked += acked.entries.len();
        max_term = max_term.max(acked.max_term);

        runtime.block_on(async {
            let (mut log, mut sm) = open(dir.path());
            let entries = log.try_get_log_entries(..).await.expect("log reads back");
            assert!(
                entries
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.log_id.index == i as u64 + 1),
                "log is contiguous from 1"
            );
            for (index, crc) in &acked.entries {
                let entry = entries
                    .get(*index as usize - 1)
                    .unwrap_or_else(|| panic!("acknowledged entry {index} is lost"));
                assert_eq!(entry_crc(entry), *crc, "acknowledged entry {index} changed");
            }
            let vote = log.read_vote().await.expect("vote reads back");
            let term = vote.map_or(0, |v| v.leader_id.term);
            assert!(term >= max_term, "acknowledged vote {max_term} lost, found {term}");

            let applied = sm.last_applied().map_or(0, |l| l.index);
            assert!(
                applied as usize <= entries.len(),
                "state machine at {applied} is ahead of the log ({})",
                entries.len()
            );
            let expected = replay(&entries[..applied as usize]);
            assert_eq!(sm.read(State::clone), expected, "state = replay of 1..={applied}");
            let (last, _) = sm.applied_state().await.expect("applied state");
            assert_eq!(last.map_or(0, |l| l.index), applied);
            eprintln!(
                "iteration {iteration}: {} appends acknowledged, log has {}, applied {applied}, vote term {term}",
                acked.entries.len(),
                entries.len()
            );
        });
    }
    assert!(total_acked > 0, "the children acknowledged something");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded");
}
