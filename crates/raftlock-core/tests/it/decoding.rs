//! Hostile bytes through `raftlock_core::decode`, the decoder of every log
//! entry, snapshot, stored record and peer message: arbitrary and mutated
//! input is an error, never a panic or a huge allocation, and valid values
//! round-trip.
//!
//! The binary's allocator (main.rs) records the largest allocation any
//! test asked for, so a decode that tried to allocate what a forged length
//! prefix claims fails here even where the system would have granted it.
//! (The mutations are a copy of raftlock-testkit's `hostile` module: the
//! core does not depend on the kit.)

use raftlock_core::IdentityLimits;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use raftlock_core::{Command, LockSpec, Metadata, Mode, Request, State, decode, encode};

use crate::alloc_watch::largest_allocation;
use crate::common::Sm;

/// No decode here has a reason to allocate this much.
const ALLOCATION_CEILING: usize = 1 << 30;

/// bincode 2's varint for a u64 above u32::MAX: the marker 253 and 8 bytes.
fn varint_u64(value: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&value.to_le_bytes());
    out
}

fn assert_no_huge_allocation() {
    let largest = largest_allocation();
    assert!(
        largest < ALLOCATION_CEILING,
        "a decode allocated {largest} bytes"
    );
}

/// Lengths a forged prefix may claim: past the input, past the limits,
/// past memory, past isize.
const HUGE_LENGTHS: [u64; 6] = [
    1 << 20,
    1 << 31,
    1 << 33,
    1 << 40,
    isize::MAX as u64 + 1,
    u64::MAX,
];

#[test]
fn a_string_claiming_a_huge_length_is_refused_without_allocating_it() {
    for claimed in HUGE_LENGTHS {
        // Command::GrantLease { ttl_ms: 5, owner: <claimed bytes> }.
        let mut bytes = vec![0, 5];
        bytes.extend(varint_u64(claimed));
        bytes.extend_from_slice(b"abc");
        let started = Instant::now();
        let err = decode::<Command>("command", &bytes).expect_err("a forged length");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusing {claimed} took {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("command"), "{err}");
    }
    assert_no_huge_allocation();
}

#[test]
fn a_sequence_claiming_a_huge_length_is_refused_without_allocating_it() {
    for claimed in HUGE_LENGTHS {
        // Command::ExpireLeases { leases: <claimed u64s> }, then State
        // whose first map claims as many entries.
        let mut expire = vec![2];
        expire.extend(varint_u64(claimed));
        expire.extend_from_slice(&[1, 2, 3]);
        assert!(decode::<Command>("command", &expire).is_err());
        let state = varint_u64(claimed);
        assert!(decode::<State>("state", &state).is_err());
    }
    assert_no_huge_allocation();
}

#[test]
fn a_string_as_long_as_its_input_still_decodes() {
    // The limit scales with the input: a value that is mostly one long
    // string (a large metadata value, a large snapshot) is not refused.
    let owner = "o".repeat(3 << 20);
    let command = Command::GrantLease {
        ttl_ms: 1_000,
        owner,
        identity: String::new(),
        quota: IdentityLimits::default(),
    };
    let back: Command = decode("command", &encode(&command)).expect("decodes");
    assert_eq!(back, command);
    // Many small varints, each claiming 8 bytes of memory per input byte.
    let leases: Vec<u64> = (0..200_000).map(|i| i % 100).collect();
    let command = Command::ExpireLeases { leases };
    let back: Command = decode("command", &encode(&command)).expect("decodes");
    assert_eq!(back, command);
}

// ----- generated values ----------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    "[a-z/é]{0,16}"
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        any::<u32>().prop_map(|permits| Mode::Semaphore { permits }),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    prop::collection::btree_map(name(), name(), 0..3)
}

fn simple_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (any::<u64>(), name(), name(), any::<Option<u32>>()).prop_map(
            |(ttl_ms, owner, identity, max_leases)| Command::GrantLease {
                ttl_ms,
                owner,
                identity,
                quota: IdentityLimits {
                    max_leases,
                    ..IdentityLimits::default()
                },
            }
        ),
        any::<u64>().prop_map(|lease| Command::RevokeLease { lease }),
        prop::collection::vec(any::<u64>(), 0..4)
            .prop_map(|leases| Command::ExpireLeases { leases }),
        (
            any::<u64>(),
            prop::collection::vec((name(), mode()), 0..3),
            any::<bool>(),
            name(),
            metadata(),
            any::<u64>()
        )
            .prop_map(|(lease, locks, wait, reason, metadata, lock_delay_ms)| {
                Command::Acquire {
                    lease,
                    locks: locks
                        .into_iter()
                        .map(|(name, mode)| LockSpec { name, mode })
                        .collect(),
                    wait,
                    reason,
                    metadata,
                    lock_delay_ms,
                    quota: IdentityLimits::default(),
                }
            }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(name(), 0..3)
        )
            .prop_map(|(lease, token, names)| Command::Release {
                lease,
                token,
                names
            }),
        (any::<u64>(), name(), any::<u64>(), any::<Option<u64>>()).prop_map(
            |(lease, name, token, ttl_ms)| Command::Extend {
                lease,
                name,
                token,
                ttl_ms
            }
        ),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(lease, waiter, as_of)| {
            Command::CancelWait {
                lease,
                waiter,
                as_of,
            }
        }),
        (name(), any::<Option<u64>>(), name())
            .prop_map(|(name, lease, by)| Command::ForceRelease { name, lease, by }),
        (name(), name(), name()).prop_map(|(cluster_id, store_id, client_addr)| {
            Command::RecordMember {
                node: 1,
                store_id,
                client_addr: format!("{cluster_id}{client_addr}"),
            }
        }),
        name().prop_map(|cluster_id| Command::InitCluster { cluster_id }),
        any::<u64>().prop_map(|node| Command::ForgetMember { node }),
        Just(Command::Tick),
        Just(Command::SetLimits {
            limits: raftlock_core::Limits::default()
        }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => simple_command(),
        1 => prop::collection::vec(simple_command(), 0..4)
            .prop_map(|commands| Command::Batch { commands }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), any::<u64>(), command())
        .prop_map(|(cluster_ms, wall_ms, command)| Request::new(cluster_ms, wall_ms, command))
}

/// A state with leases, holds and waiters in it, as a snapshot holds.
fn state() -> impl Strategy<Value = State> {
    prop::collection::vec((0u8..4, 0u8..3, any::<bool>()), 0..12).prop_map(|steps| {
        let mut sm = Sm::new();
        let mut leases = Vec::new();
        for (what, n, wait) in steps {
            match (what, leases.get(usize::from(n) % leases.len().max(1))) {
                (0, _) | (_, None) => leases.push(sm.lease()),
                (1, Some(&lease)) => {
                    let _ = sm.apply(crate::common::acquire(
                        lease,
                        &[(&format!("n/{n}"), Mode::Exclusive)],
                        wait,
                    ));
                }
                (2, Some(&lease)) => {
                    let _ = sm.apply(Command::RevokeLease { lease });
                }
                (_, Some(_)) => sm.clock_ms += 10,
            }
        }
        sm.state
    })
}

/// One damage done to an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    /// The byte at the index becomes a varint claiming `length` (a string's,
    /// a sequence's or a map's length prefix, if it was one).
    Length(prop::sample::Index, u64),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::sample::select(HUGE_LENGTHS.to_vec())
        )
            .prop_map(|(i, l)| Mutation::Length(i, l)),
    ];
    prop::collection::vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Flip(i, bit) => {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len());
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Length(i, length) => {
                let i = i.index(bytes.len());
                bytes.splice(i..=i, varint_u64(*length));
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_are_an_error_or_a_value_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        // Short inputs can be valid encodings (a Tick is one byte); what
        // matters is that every outcome is a value or an error.
        let _ = decode::<Command>("command", &bytes);
        let _ = decode::<Request>("request", &bytes);
        let _ = decode::<State>("state", &bytes);
        assert_no_huge_allocation();
    }

    #[test]
    fn mutated_requests_never_panic_nor_allocate_what_they_claim(
        request in request(),
        mutations in mutations(),
    ) {
        let bytes = mutate(encode(&request), &mutations);
        let _ = decode::<Request>("request", &bytes);
        assert_no_huge_allocation();
    }

    #[test]
    fn mutated_states_never_panic_nor_allocate_what_they_claim(
        state in state(),
        mutations in mutations(),
    ) {
        let bytes = mutate(state.to_bytes(), &mutations);
        // `from_bytes` also checks the invariants of what decoded.
        let _ = State::from_bytes(&bytes);
        assert_no_huge_allocation();
    }

    #[test]
    fn requests_round_trip(request in request()) {
        let back: Request = decode("request", &encode(&request)).expect("decodes");
        prop_assert_eq!(back, request);
    }

    #[test]
    fn states_round_trip_byte_for_byte(state in state()) {
        let bytes = state.to_bytes();
        let back = State::from_bytes(&bytes).expect("decodes");
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn a_truncated_encoding_is_an_error(request in request(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&request);
        let cut = cut.index(bytes.len());
        prop_assert!(decode::<Request>("request", &bytes[..cut]).is_err());
    }
}
