//! `raftlock watch [PREFIX]`: lock and lease events as they happen, until
//! Ctrl-C or until stdout closes.

use std::time::Duration;

use clap::Args as ClapArgs;
use futures::StreamExt;
use raftlock_client::{ClientOptions, RetryPolicy};
use raftlock_proto::v1 as pb;
use serde::Serialize;

use crate::commands::{Conn, connect, endpoint_list};
use crate::exit::{Failure, client_failure};
use crate::output::{json_text, mode_name, ms_text, write_line};
use crate::runner::{self, Signals};

/// How long `watch` keeps trying to reopen a broken stream while no node
/// answers.
const WATCH_RIDE_OUT: Duration = Duration::from_secs(30);

#[derive(Debug, ClapArgs)]
pub struct WatchArgs {
    /// Only locks whose names start with this (lease events come only with
    /// no prefix).
    #[arg(default_value = "")]
    pub prefix: String,
    /// Start from this revision (inclusive); 0: only new events.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub from_revision: u64,
    #[command(flatten)]
    pub conn: Conn,
}

fn event_type(t: i32) -> &'static str {
    match pb::EventType::try_from(t) {
        Ok(pb::EventType::Acquired) => "acquired",
        Ok(pb::EventType::Released) => "released",
        Ok(pb::EventType::Expired) => "expired",
        Ok(pb::EventType::Queued) => "queued",
        Ok(pb::EventType::ForceReleased) => "force_released",
        Ok(pb::EventType::WaitDropped) => "wait_dropped",
        Ok(pb::EventType::Delayed) => "delayed",
        Ok(pb::EventType::LeaseGranted) => "lease_granted",
        Ok(pb::EventType::LeaseEnded) => "lease_ended",
        _ => "unspecified",
    }
}

fn lease_end(e: i32) -> Option<&'static str> {
    match pb::LeaseEnd::try_from(e) {
        Ok(pb::LeaseEnd::Revoked) => Some("revoked"),
        Ok(pb::LeaseEnd::Expired) => Some("expired"),
        _ => None,
    }
}

#[derive(Debug, Serialize)]
struct EventOut {
    revision: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    lease_id: u64,
    owner: String,
    mode: Option<&'static str>,
    token: u64,
    waiter_id: u64,
    position: u32,
    lease_end: Option<&'static str>,
    delayed_until_cluster_ms: u64,
    ttl_ms: u64,
}

impl EventOut {
    fn new(e: pb::Event) -> EventOut {
        EventOut {
            revision: e.revision,
            kind: event_type(e.r#type),
            name: e.name,
            lease_id: e.lease_id,
            owner: e.owner,
            mode: (e.mode != 0).then(|| mode_name(e.mode)),
            token: e.token,
            waiter_id: e.waiter_id,
            position: e.position,
            lease_end: lease_end(e.lease_end),
            delayed_until_cluster_ms: e.delayed_until_cluster_ms,
            ttl_ms: e.ttl_ms,
        }
    }

    fn text(&self) -> String {
        let mut out = format!("rev {} {}", self.revision, self.kind);
        if !self.name.is_empty() {
            out.push_str(&format!(" {}", self.name));
        }
        out.push_str(&format!(" lease {}", self.lease_id));
        if !self.owner.is_empty() {
            out.push_str(&format!(" owner {:?}", self.owner));
        }
        if let Some(m) = self.mode {
            out.push_str(&format!(" {m}"));
        }
        if self.token != 0 {
            out.push_str(&format!(" token {}", self.token));
        }
        if self.kind == "queued" {
            out.push_str(&format!(" position {}", self.position));
        }
        if let Some(end) = self.lease_end {
            out.push_str(&format!(" ({end})"));
        }
        if self.ttl_ms != 0 {
            out.push_str(&format!(" ttl {}", ms_text(self.ttl_ms)));
        }
        out
    }
}

/// Prints events until Ctrl-C, or until stdout is closed (exit 0 either
/// way). The stream is `Client::watch_resuming`: when it breaks it is
/// reopened (on another node if need be) at the revision of
/// the last event printed, skipping the events of that revision already
/// printed. Reopening after it instead would lose the rest of that entry's
/// events (a release and the grant to the next waiter share one revision,
/// and a batch boundary may fall between them).
pub fn run(args: WatchArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    let mut signals = Signals::new(&rt)?;
    rt.block_on(async {
        // A watch runs for long: let it ride out a node's restart, not only
        // an election, before giving up (each reopening retries for up to
        // WATCH_RIDE_OUT; the timeout bounds the opening, not the stream).
        let endpoints = endpoint_list(&args.conn.endpoints)?;
        let mut options = ClientOptions {
            retry: RetryPolicy::patient(),
            call_timeout: WATCH_RIDE_OUT,
            ..ClientOptions::default()
        };
        args.conn.auth.apply(&endpoints, &mut options)?;
        let client = connect(endpoints, options).await?;
        let mut stream = client
            .watch_resuming(&args.prefix, args.from_revision)
            .await
            .map_err(|e| client_failure(&e, &args.prefix, None))?;
        loop {
            tokio::select! {
                sig = signals.recv() => {
                    eprintln!("{sig}: stopped watching");
                    return Ok(());
                }
                item = stream.next() => match item {
                    Some(Ok(e)) => {
                        let out = EventOut::new(e);
                        let line = if args.conn.json {
                            json_text(&out, false)?
                        } else {
                            out.text()
                        };
                        // Whoever read the events has gone: nothing left to do.
                        if !write_line(&line)? {
                            return Ok(());
                        }
                    }
                    // It cannot go on: the events it needs are gone from
                    // every node's history (COMPACTED), or no node answered
                    // within the client's retries.
                    Some(Err(e)) => return Err(client_failure(&e, &args.prefix, None)),
                    None => {
                        return Err(Failure::Runtime(format!(
                            "the watch of {:?} ended unexpectedly; watch again with \
                             --from-revision R (R: the last revision printed, whose events \
                             may then come again)",
                            args.prefix
                        )));
                    }
                }
            }
        }
    })
}
