//! The history: every operation of every client (and every fault of the
//! nemesis) as an invocation followed by its completion, Jepsen style,
//! with times on one monotonic clock counted from the start of the test.
//!
//! Written as JSON lines (one [`Op`] per line) and read back by the
//! checkers and the report, so a history from a run can be re-checked
//! later (`jepsen --check history.jsonl`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The process id of the nemesis in a history (clients are 0, 1, ...).
pub const NEMESIS: i64 = -1;

/// The process id of the harness reading the fenced registers at the end.
pub const FINAL_READER: i64 = -2;

/// Invocation or one of the three completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The client is about to send the request.
    Invoke,
    /// It took effect, with the result given.
    Ok,
    /// It certainly did not take effect (a definite refusal).
    Fail,
    /// Indeterminate: it may or may not have taken effect, now or later
    /// (timeouts, lost connections, a leader change mid-request).
    Info,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// Grant a lease (args.ttl_ms; result.lease_id).
    Grant,
    /// Keep a lease alive (args.lease_id).
    KeepAlive,
    /// Acquire a lock (args.lease_id, args.wait_ms, args.mode, args.permits;
    /// result.token, result.retry).
    Acquire,
    /// Release a hold (args.lease_id, args.token).
    Release,
    /// Read the fenced register with a token (result.value).
    Read,
    /// Write the fenced register with a token (args.value).
    Write,
    /// The register's value read at the end of the test, without a token.
    FinalRead,
    /// A fault starts (invoke) or ends (info), described in args.fault.
    Nemesis,
}

/// What an operation was called with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Args {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The mode an acquire asked for; absent means exclusive (histories
    /// recorded before modes were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    /// The permits a semaphore acquire asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
}

/// How an acquire asks to hold a lock, as recorded in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Exclusive,
    Shared,
    Semaphore,
}

/// A hold's mode with a semaphore's permits: what the checkers reason with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HoldMode {
    /// One holder at a time (also the writer side of a readers/writer lock).
    Exclusive,
    /// Readers together, never beside an exclusive holder.
    Shared,
    /// At most `permits` holders together.
    Semaphore { permits: u32 },
}

impl HoldMode {
    /// True for modes whose holders may hold together (and may share a
    /// grant entry's token).
    pub fn is_shared_kind(self) -> bool {
        !matches!(self, HoldMode::Exclusive)
    }
}

impl Args {
    /// The mode an acquire asked for (exclusive when not recorded).
    pub fn hold_mode(&self) -> HoldMode {
        match self.mode {
            None | Some(LockMode::Exclusive) => HoldMode::Exclusive,
            Some(LockMode::Shared) => HoldMode::Shared,
            Some(LockMode::Semaphore) => HoldMode::Semaphore {
                permits: self.permits.unwrap_or(1),
            },
        }
    }

    /// Records `mode` in the args (nothing for exclusive, so histories of
    /// plain mutex runs read as before).
    pub fn with_mode(mut self, mode: HoldMode) -> Args {
        (self.mode, self.permits) = match mode {
            HoldMode::Exclusive => (None, None),
            HoldMode::Shared => (Some(LockMode::Shared), None),
            HoldMode::Semaphore { permits } => (Some(LockMode::Semaphore), Some(permits)),
        };
        self
    }
}

/// What a completion returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// Start of the validity window the client computed (the time it
    /// learned of the grant: the acknowledgement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from_ns: Option<u64>,
    /// End of the validity window the client computed: the send time of
    /// the last acknowledged grant or keep-alive of the lease, plus its ttl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_ns: Option<u64>,
    /// The ttl the cluster granted or renewed the lease for (grant and
    /// keep-alive), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// For an ok acquire: the cluster answered that the lease already held
    /// the lock (an idempotent re-acquire returning the existing hold, not a
    /// new grant). Absent in histories recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    /// The machine-readable reason of a failure (e.g. `LOCK_BUSY`), or a short
    /// description of an indeterminate one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the test started, on the harness's monotonic clock.
    pub time_ns: u64,
    /// The client (0, 1, ...) or [`NEMESIS`].
    pub process: i64,
    /// The node the client talks to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    /// The lock (and register) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<OpResult>,
}

/// Errors reading or writing a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("history file {path}, line {line}: {source}")]
    Parse {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// A whole history, in index order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
}

/// An invocation and its completion (None: the history ended first, which
/// counts as indeterminate).
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub complete: Option<&'a Op>,
}

impl Pair<'_> {
    /// The completion's type; a missing completion is `Info`.
    pub fn outcome(&self) -> OpType {
        self.complete.map_or(OpType::Info, |c| c.kind)
    }

    pub fn result(&self) -> Option<&OpResult> {
        self.complete.and_then(|c| c.result.as_ref())
    }

    /// Completion time, or None when indeterminate (no upper bound).
    pub fn ok_or_fail_time_ns(&self) -> Option<u64> {
        match self.complete {
            Some(c) if matches!(c.kind, OpType::Ok | OpType::Fail) => Some(c.time_ns),
            _ => None,
        }
    }
}

impl History {
    /// Writes one JSON object per line.
    pub fn write_jsonl(&self, path: &Path) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = BufWriter::new(file);
        for op in &self.ops {
            let line = serde_json::to_string(op).map_err(|e| io(std::io::Error::other(e)))?;
            out.write_all(line.as_bytes()).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Reads a file written by [`History::write_jsonl`]; blank lines are
    /// skipped, anything else that does not parse is an error naming the line.
    pub fn read_jsonl(path: &Path) -> Result<History, HistoryError> {
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut ops = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io {
                path: path.display().to_string(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                path: path.display().to_string(),
                line: n + 1,
                source,
            })?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// Every invocation with its completion: the next op of the same
    /// process (each process does one operation at a time). Nemesis ops
    /// are paired the same way.
    pub fn pairs(&self) -> Vec<Pair<'_>> {
        let mut open: BTreeMap<i64, usize> = BTreeMap::new();
        let mut pairs: Vec<Pair<'_>> = Vec::new();
        for op in &self.ops {
            if op.kind == OpType::Invoke {
                open.insert(op.process, pairs.len());
                pairs.push(Pair {
                    invoke: op,
                    complete: None,
                });
            } else if let Some(i) = open.remove(&op.process) {
                pairs[i].complete = Some(op);
            }
        }
        pairs
    }

    /// Time of the last op.
    pub fn end_ns(&self) -> u64 {
        self.ops.iter().map(|o| o.time_ns).max().unwrap_or(0)
    }

    /// Periods of faults: (start, end or None if never healed, description).
    pub fn fault_periods(&self) -> Vec<(u64, Option<u64>, String)> {
        self.pairs()
            .into_iter()
            .filter(|p| p.invoke.f == F::Nemesis)
            .map(|p| {
                (
                    p.invoke.time_ns,
                    p.complete.map(|c| c.time_ns),
                    p.invoke.args.fault.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Records a history as the test runs; cheap to clone, shared by all
/// clients and the nemesis.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

struct RecorderInner {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

/// An invocation in flight: completing it copies its identity.
#[derive(Debug, Clone)]
#[must_use = "an invocation must be completed (ok, fail or info)"]
pub struct Invocation {
    pub time_ns: u64,
    process: i64,
    node: Option<u64>,
    f: F,
    name: Option<String>,
    args: Args,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            inner: Arc::new(RecorderInner {
                start: Instant::now(),
                ops: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Nanoseconds since the recorder was made (the history's clock).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends an op stamped now (under the lock, so times and indexes
    /// increase together).
    fn push(&self, mut op: Op) -> u64 {
        let mut ops = self
            .inner
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        op.index = ops.len() as u64;
        op.time_ns = self.now_ns();
        let t = op.time_ns;
        ops.push(op);
        t
    }

    /// Records the invocation, stamped now: call it right before sending.
    pub fn invoke(
        &self,
        process: i64,
        node: Option<u64>,
        f: F,
        name: Option<&str>,
        args: Args,
    ) -> Invocation {
        let time_ns = self.push(Op {
            index: 0,
            time_ns: 0,
            process,
            node,
            kind: OpType::Invoke,
            f,
            name: name.map(str::to_string),
            args: args.clone(),
            result: None,
        });
        Invocation {
            time_ns,
            process,
            node,
            f,
            name: name.map(str::to_string),
            args,
        }
    }

    /// Records the completion, stamped now; returns its time.
    pub fn complete(&self, inv: Invocation, kind: OpType, result: OpResult) -> u64 {
        self.push(Op {
            index: 0,
            time_ns: 0,
            process: inv.process,
            node: inv.node,
            kind,
            f: inv.f,
            name: inv.name,
            args: inv.args,
            result: Some(result),
        })
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History {
            ops: self
                .inner
                .ops
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_history_survives_a_jsonl_round_trip() {
        let r = Recorder::new();
        let inv = r.invoke(
            0,
            Some(1),
            F::Acquire,
            Some("a"),
            Args {
                lease_id: Some(7),
                wait_ms: Some(0),
                ..Args::default()
            },
        );
        let inv2 = r.invoke(1, Some(2), F::Grant, None, Args::default());
        r.complete(
            inv,
            OpType::Ok,
            OpResult {
                token: Some(12),
                valid_from_ns: Some(5),
                valid_until_ns: Some(1_000),
                ..OpResult::default()
            },
        );
        r.complete(
            inv2,
            OpType::Info,
            OpResult {
                error: Some("timeout".into()),
                ..OpResult::default()
            },
        );
        let h = r.history();
        assert_eq!(h.ops.len(), 4);
        assert!(h.ops.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        assert_eq!(h.ops[3].index, 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        h.write_jsonl(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.contains("\"type\":\"invoke\""))
        );
        let back = History::read_jsonl(&path).expect("read back");
        assert_eq!(back, h);
        let pairs = back.pairs();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].outcome(), OpType::Ok);
        assert_eq!(pairs[0].result().and_then(|r| r.token), Some(12));
        assert_eq!(pairs[1].outcome(), OpType::Info);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        std::fs::write(&path, "\n{\"nope\": 1}\n").expect("write");
        let e = History::read_jsonl(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn an_invocation_without_completion_is_indeterminate() {
        let r = Recorder::new();
        let _pending = r.invoke(3, None, F::Release, Some("x"), Args::default());
        let h = r.history();
        assert_eq!(h.pairs()[0].outcome(), OpType::Info);
        assert_eq!(h.pairs()[0].ok_or_fail_time_ns(), None);
    }
}
