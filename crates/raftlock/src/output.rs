//! What the commands print: JSON documents and lines, tables, and the
//! text forms of locks, modes and times.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use raftlock_proto::v1 as pb;
use serde::Serialize;

use crate::exit::Failure;

/// Prints one JSON document. A closed stdout is not an error here: for the
/// short commands SIGPIPE has already ended the process quietly, and for
/// those that keep SIGPIPE ignored (`keeps_sigpipe_ignored` in main.rs) the
/// call has done its work; a loop that prints calls [`write_line`] itself.
pub fn print_json<T: Serialize>(value: &T, pretty: bool) -> Result<(), Failure> {
    write_line(&json_text(value, pretty)?).map(drop)
}

pub fn json_text<T: Serialize>(value: &T, pretty: bool) -> Result<String, Failure> {
    if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| Failure::Runtime(format!("cannot encode JSON: {e}")))
}

/// Writes one line (or several, joined by newlines) to stdout, flushed:
/// stdout is line-buffered. `Ok(false)` when the reader has gone, as in
/// `raftlock watch | head -3`, where `println!` would panic on the closed
/// pipe.
pub fn write_line(text: &str) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::Runtime(format!("cannot write to stdout: {e}"))),
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// "12s ago" from a Unix time in ms.
pub fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let secs = now_unix_ms().saturating_sub(unix_ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

pub fn ms_text(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub fn mode_name(mode: i32) -> &'static str {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Exclusive) => "exclusive",
        Ok(pb::Mode::Shared) => "shared",
        Ok(pb::Mode::Semaphore) => "semaphore",
        _ => "unspecified",
    }
}

pub fn kind_name(kind: i32) -> &'static str {
    match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::ReadWrite) => "read-write",
        Ok(pb::LockKind::Semaphore) => "semaphore",
        _ => "unspecified",
    }
}

/// A table: columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[derive(Debug, Serialize)]
pub struct HolderOut {
    pub lease_id: u64,
    pub owner: String,
    mode: &'static str,
    pub token: u64,
    acquired_at_unix_ms: u64,
    reason: String,
    metadata: BTreeMap<String, String>,
    extensions: u64,
    lock_delay_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct QueuedOut {
    waiter_id: u64,
    lease_id: u64,
    owner: String,
    mode: &'static str,
    names: Vec<String>,
    queued_at_unix_ms: u64,
    reason: String,
}

#[derive(Debug, Serialize)]
pub struct LockOut {
    pub name: String,
    /// True when nobody holds it or waits for it.
    free: bool,
    pub kind: &'static str,
    permits: u32,
    pub holders: Vec<HolderOut>,
    pub queue: Vec<QueuedOut>,
    delayed_until_cluster_ms: Option<u64>,
    grants: u64,
    max_token: u64,
}

impl LockOut {
    pub fn free(name: &str) -> LockOut {
        LockOut {
            name: name.to_string(),
            free: true,
            kind: "unspecified",
            permits: 0,
            holders: Vec::new(),
            queue: Vec::new(),
            delayed_until_cluster_ms: None,
            grants: 0,
            max_token: 0,
        }
    }

    pub fn new(l: pb::LockInfo) -> LockOut {
        LockOut {
            free: l.holders.is_empty() && l.queue.is_empty(),
            kind: kind_name(l.kind),
            permits: l.permits,
            holders: l
                .holders
                .into_iter()
                .map(|h| HolderOut {
                    lease_id: h.lease_id,
                    owner: h.owner,
                    mode: mode_name(h.mode),
                    token: h.token,
                    acquired_at_unix_ms: h.acquired_at_unix_ms,
                    reason: h.reason,
                    metadata: h.metadata.into_iter().collect(),
                    extensions: h.extensions,
                    lock_delay_ms: h.lock_delay_ms,
                })
                .collect(),
            queue: l
                .queue
                .into_iter()
                .map(|q| QueuedOut {
                    waiter_id: q.waiter_id,
                    lease_id: q.lease_id,
                    owner: q.owner,
                    mode: mode_name(q.mode),
                    names: q.names,
                    queued_at_unix_ms: q.queued_at_unix_ms,
                    reason: q.reason,
                })
                .collect(),
            delayed_until_cluster_ms: l.delayed_until_cluster_ms,
            grants: l.grants,
            max_token: l.max_token,
            name: l.name,
        }
    }

    pub fn text(&self) -> String {
        if self.free && self.delayed_until_cluster_ms.is_none() {
            return format!("{} is free\n", self.name);
        }
        let mut out = format!(
            "{} ({}{}), {} holder(s), {} waiting, highest token {}\n",
            self.name,
            self.kind,
            if self.permits > 0 {
                format!(", {} permits", self.permits)
            } else {
                String::new()
            },
            self.holders.len(),
            self.queue.len(),
            self.max_token
        );
        if let Some(until) = self.delayed_until_cluster_ms {
            out.push_str(&format!(
                "lock-delay: ungrantable until cluster time {until} ms\n"
            ));
        }
        if !self.holders.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .holders
                .iter()
                .map(|h| {
                    let meta: Vec<String> =
                        h.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    vec![
                        h.lease_id.to_string(),
                        h.owner.clone(),
                        h.mode.to_string(),
                        h.token.to_string(),
                        ago(h.acquired_at_unix_ms),
                        h.reason.clone(),
                        meta.join(","),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "LEASE", "OWNER", "MODE", "TOKEN", "SINCE", "REASON", "METADATA",
                ],
                &rows,
            ));
        }
        if !self.queue.is_empty() {
            out.push_str("\nqueue (first in line first):\n");
            let rows: Vec<Vec<String>> = self
                .queue
                .iter()
                .map(|q| {
                    vec![
                        q.waiter_id.to_string(),
                        q.lease_id.to_string(),
                        q.owner.clone(),
                        q.mode.to_string(),
                        ago(q.queued_at_unix_ms),
                        q.reason.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["WAITER", "LEASE", "OWNER", "MODE", "SINCE", "REASON"],
                &rows,
            ));
        }
        out
    }
}
