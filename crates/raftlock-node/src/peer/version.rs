//! Which peer protocol versions a node speaks, and whether two nodes can
//! talk.
//!
//! A peer protocol version names the encoding of every node-to-node
//! payload (`RaftMessage.data`) and of the log entries inside it. Each
//! build speaks a range of them; two nodes speak the highest version in
//! both ranges, and a node whose range does not meet this node's is
//! refused at its `Hello` (and every message it sends is refused) with
//! `PEER_VERSION_MISMATCH`, naming both ranges and the procedure, instead
//! of decoding garbage. Builds before versioning send no range: they speak
//! protocol 1 only, which every build of this range still reads and writes,
//! so a cluster of them can be upgraded one node at a time.
//!
//! Version 1: bincode 2 (standard config, through serde) of the node's Rust
//! types. Version 2: protobuf (`raftlock.storage.v1`, raftlock-codec) in a
//! versioned envelope that names the message's kind. Both framed with a
//! CRC32 ([`super::wire`]).

use std::fmt;

use raftlock_proto::errors::ErrorReason;

/// The peer protocol version of bincode-encoded payloads: what builds
/// before versioning speak.
pub(crate) const BINCODE: u32 = 1;

/// The peer protocol version of protobuf payloads (raftlock-codec).
pub(crate) const PROTOBUF: u32 = 2;

/// The protocol versions this build can read and write.
pub const SUPPORTED: ProtocolRange = ProtocolRange {
    min: BINCODE,
    max: PROTOBUF,
};

/// Test-only: `min..max` makes a node announce and accept that range
/// instead of [`SUPPORTED`] (its payloads keep their real encoding), to
/// stand in for a release that speaks other versions. Read by
/// `raftlock serve` into `NodeConfig::peer_protocol`.
pub const TEST_OVERRIDE_ENV: &str = "RAFTLOCK_TEST_PEER_PROTOCOL";

/// An inclusive range of peer protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolRange {
    /// The lowest version spoken.
    pub min: u32,
    /// The highest version spoken.
    pub max: u32,
}

impl fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

impl Default for ProtocolRange {
    fn default() -> Self {
        SUPPORTED
    }
}

impl std::str::FromStr for ProtocolRange {
    type Err = String;

    /// `N` or `MIN..MAX`, both at least 1, MIN ≤ MAX.
    fn from_str(text: &str) -> Result<Self, String> {
        let (min, max) = text.split_once("..").unwrap_or((text, text));
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    format!("peer protocol range {text:?}: {s:?} is not a version (1, 2, ...)")
                })
        };
        let range = ProtocolRange {
            min: parse(min)?,
            max: parse(max)?,
        };
        if range.min > range.max {
            return Err(format!(
                "peer protocol range {text:?}: the lowest version is above the highest"
            ));
        }
        Ok(range)
    }
}

impl ProtocolRange {
    /// The range a peer announced in its `Hello`: both fields 0 from a
    /// build before versioning, which speaks protocol 1 only.
    pub(crate) fn announced(min: u32, max: u32) -> ProtocolRange {
        if max == 0 {
            ProtocolRange {
                min: BINCODE,
                max: BINCODE,
            }
        } else {
            ProtocolRange {
                min: min.clamp(1, max),
                max,
            }
        }
    }

    /// The version two nodes speak: the highest in both ranges.
    pub(crate) fn common(self, other: ProtocolRange) -> Option<u32> {
        let speak = self.max.min(other.max);
        (speak >= self.min.max(other.min)).then_some(speak)
    }

    pub(crate) fn contains(self, version: u32) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

/// Peer messages (requests and answers of the `RaftTransport` RPCs, not
/// `Hello`s) this node sent and received, per peer protocol version this
/// build writes (`raftlock_peer_messages_total`): what shows that a mixed
/// cluster really speaks both versions during a rolling upgrade.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// By version − 1, for versions 1 ..= [`SUPPORTED`]`.max`.
    sent: [std::sync::atomic::AtomicU64; SUPPORTED.max as usize],
    received: [std::sync::atomic::AtomicU64; SUPPORTED.max as usize],
}

impl Traffic {
    /// A message in `version` left this node.
    pub(crate) fn sent(&self, version: u32) {
        Self::count(&self.sent, version);
    }

    /// A message in `version`, which this node reads, arrived.
    pub(crate) fn received(&self, version: u32) {
        Self::count(&self.received, version);
    }

    fn count(counts: &[std::sync::atomic::AtomicU64], version: u32) {
        // A version outside this build's (a test override's range) is
        // never written by it, and never read: nothing to count.
        if let Some(c) = version.checked_sub(1).and_then(|i| counts.get(i as usize)) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// (version, direction, messages) for every version this build writes
    /// and both directions, zeros included.
    pub(crate) fn counts(&self) -> Vec<(u32, &'static str, u64)> {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        (SUPPORTED.min..=SUPPORTED.max)
            .flat_map(|version| {
                let i = (version - 1) as usize;
                [
                    (version, "sent", load(&self.sent[i])),
                    (version, "received", load(&self.received[i])),
                ]
            })
            .collect()
    }
}

/// A message's protocol field: 0 from a build before versioning.
pub(crate) fn of_message(protocol: u32) -> u32 {
    if protocol == 0 { BINCODE } else { protocol }
}

/// The refusal of a peer whose range `theirs` does not meet `ours`.
/// `cluster_id` is the cluster the answering side of the `Hello` belongs
/// to (empty while it has none), carried in the refusal's details
/// ([`raftlock_proto::errors::detail::CLUSTER_ID`]): a node with a new
/// store that asks before it bootstraps must learn that the peer is in a
/// cluster even when they share no version ([`cluster_in`]).
pub(crate) fn mismatch(
    ours: ProtocolRange,
    me: u64,
    theirs: ProtocolRange,
    peer: u64,
    peer_build: &str,
    cluster_id: &str,
) -> tonic::Status {
    let build = if peer_build.is_empty() {
        "a build before 0.2".to_string()
    } else {
        format!("build {peer_build}")
    };
    let advice = if theirs.max < ours.min {
        format!("upgrade node {peer} first")
    } else {
        format!("upgrade node {me} first")
    };
    raftlock_proto::errors::status(
        ErrorReason::PeerVersionMismatch,
        format!(
            "node {peer} ({build}) speaks peer protocol {theirs}, node {me} (build {}) speaks {ours}: no version in common. Upgrade one release at a time, each node to a release that speaks the version the others speak ({advice}; docs/operations.md, Upgrades)",
            env!("CARGO_PKG_VERSION"),
        ),
        if cluster_id.is_empty() {
            Default::default()
        } else {
            [(
                raftlock_proto::errors::detail::CLUSTER_ID.to_string(),
                cluster_id.to_string(),
            )]
            .into()
        },
    )
}

/// The cluster id a `PEER_VERSION_MISMATCH` refusal of a `Hello` names
/// ([`mismatch`]), if it names one.
pub(crate) fn cluster_in(status: &tonic::Status) -> Option<String> {
    let classified = raftlock_proto::errors::classify(status);
    if classified.known() != Some(ErrorReason::PeerVersionMismatch) {
        return None;
    }
    classified
        .metadata
        .get(raftlock_proto::errors::detail::CLUSTER_ID)
        .filter(|id| !id.is_empty())
        .cloned()
}

/// The refusal of a message encoded in `version`, which `ours` cannot read.
pub(crate) fn unreadable(ours: ProtocolRange, me: u64, version: u32, peer: u64) -> tonic::Status {
    raftlock_proto::errors::status(
        ErrorReason::PeerVersionMismatch,
        format!(
            "node {peer} sent a message in peer protocol {version}; node {me} (build {}) reads {ours} (docs/operations.md, Upgrades)",
            env!("CARGO_PKG_VERSION"),
        ),
        Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(min: u32, max: u32) -> ProtocolRange {
        ProtocolRange { min, max }
    }

    #[test]
    fn two_nodes_speak_the_highest_version_both_know() {
        assert_eq!(r(1, 3).common(r(2, 5)), Some(3));
        assert_eq!(r(1, 1).common(r(1, 2)), Some(1));
        assert_eq!(r(2, 2).common(r(1, 3)), Some(2));
    }

    #[test]
    fn ranges_that_do_not_meet_have_no_common_version() {
        assert_eq!(r(1, 1).common(r(2, 2)), None);
        assert_eq!(r(3, 4).common(r(1, 2)), None);
    }

    #[test]
    fn a_build_before_versioning_speaks_protocol_1() {
        assert_eq!(ProtocolRange::announced(0, 0), r(1, 1));
        assert_eq!(of_message(0), 1);
        assert_eq!(ProtocolRange::announced(0, 3), r(1, 3));
        assert_eq!(SUPPORTED.common(ProtocolRange::announced(0, 0)), Some(1));
    }

    #[test]
    fn traffic_counts_each_version_and_direction_apart() {
        let t = Traffic::default();
        t.sent(1);
        t.sent(2);
        t.sent(2);
        t.received(1);
        // Versions this build never writes are not counted.
        t.sent(0);
        t.received(9);
        assert_eq!(
            t.counts(),
            [
                (1, "sent", 1),
                (1, "received", 1),
                (2, "sent", 2),
                (2, "received", 0)
            ]
        );
    }

    #[test]
    fn ranges_parse_and_bad_ones_say_why() {
        assert_eq!("2".parse::<ProtocolRange>(), Ok(r(2, 2)));
        assert_eq!("1..3".parse::<ProtocolRange>(), Ok(r(1, 3)));
        for bad in ["", "0", "3..1", "x", "1..", "-1"] {
            let err = bad.parse::<ProtocolRange>().expect_err(bad);
            assert!(err.contains("peer protocol range"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_mismatch_names_both_ranges_and_who_to_upgrade() {
        let status = mismatch(r(2, 2), 1, r(1, 1), 3, "", "");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let m = status.message();
        assert!(
            m.contains("node 3 (a build before 0.2) speaks peer protocol 1"),
            "{m}"
        );
        assert!(m.contains("speaks 2"), "{m}");
        assert!(m.contains("upgrade node 3 first"), "{m}");
        assert_eq!(
            raftlock_proto::errors::classify(&status).known(),
            Some(ErrorReason::PeerVersionMismatch)
        );
        assert_eq!(cluster_in(&status), None, "no cluster to name");
    }

    #[test]
    fn a_mismatch_names_the_cluster_of_the_node_that_refused() {
        let status = mismatch(r(2, 2), 1, r(1, 1), 3, "0.1.0", "c-42");
        assert_eq!(cluster_in(&status).as_deref(), Some("c-42"));
        // Another refusal never passes for a version mismatch with a cluster.
        let other = raftlock_proto::errors::status(
            ErrorReason::ClusterMismatch,
            "another cluster",
            [(
                raftlock_proto::errors::detail::CLUSTER_ID.to_string(),
                "c-42".to_string(),
            )]
            .into(),
        );
        assert_eq!(cluster_in(&other), None);
    }

    /// Before it bootstraps, a node with a new store asks every member:
    /// one refused for its version, by either side of the `Hello`, is in
    /// a cluster when the refusal names one, and unknown otherwise.
    #[test]
    fn a_peer_refused_for_its_version_that_names_a_cluster_is_in_a_cluster() {
        use crate::peer::client::{PeerAnswer, judge_hello};
        let refused = mismatch(r(1, 1), 2, r(2, 2), 1, "0.3.0", "c-42");
        match judge_hello(1, "127.0.0.1:7001", Err(refused)) {
            PeerAnswer::InCluster(why) => assert!(why.contains("cluster c-42"), "{why}"),
            other => panic!("a peer naming cluster c-42 counted as {other:?}"),
        }
        let in_none = mismatch(r(1, 1), 2, r(2, 2), 1, "0.3.0", "");
        assert!(matches!(
            judge_hello(1, "127.0.0.1:7001", Err(in_none)),
            PeerAnswer::Unknown(_)
        ));
        assert_eq!(
            judge_hello(1, "127.0.0.1:7001", Ok(String::new())),
            PeerAnswer::New
        );
    }
}
