//! Hostile bytes through `raftlock_core::decode`, the decoder of every log
//! entry, snapshot, stored record and peer message: arbitrary and mutated
//! input is an error, never a panic or a huge allocation, and valid values
//! round-trip.
//!
//! The binary's allocator (main.rs) records the largest allocation any
//! test asked for, so a decode that tried to allocate what a forged length
//! prefix claims fails here even where the system would have granted it.
//! The damage (mutations, forged lengths) and the commands come from
//! raftlock-testkit (`hostile`, `strategies`), shared with the codec's and
//! the node's decoding tests.

use raftlock_core::IdentityLimits;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use raftlock_core::{Command, Mode, Request, State, decode, encode};
use raftlock_testkit::hostile::{HUGE_LENGTHS, mutate, mutations, varint_u64};

use crate::alloc_watch::largest_allocation;
use crate::common::Sm;

/// No decode here has a reason to allocate this much.
const ALLOCATION_CEILING: usize = 1 << 30;

/// Batches in generated requests nest this deep: as deep as the protobuf
/// form carries (raftlock-codec's `MAX_BATCH_NESTING`), deeper than any
/// leader builds.
const BATCH_NESTING: u32 = 4;

fn assert_no_huge_allocation() {
    let largest = largest_allocation();
    assert!(
        largest < ALLOCATION_CEILING,
        "a decode allocated {largest} bytes"
    );
}

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

fn request() -> impl Strategy<Value = Request> {
    raftlock_testkit::strategies::request(BATCH_NESTING)
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
