//! Hostile bytes for decoding tests: proptest strategies of damage done to
//! a valid encoding (truncation, flipped bits, inserted bytes, a length
//! prefix made huge), and the framings that put random bytes behind a
//! valid checksum so the decoder itself, not only the checksum, is tried.

use proptest::prelude::*;

/// Lengths a forged prefix may claim: past the input, past every limit,
/// past memory, past isize.
pub const HUGE_LENGTHS: [u64; 6] = [
    1 << 20,
    1 << 31,
    1 << 33,
    1 << 40,
    isize::MAX as u64 + 1,
    u64::MAX,
];

/// bincode 2's (standard config) varint of a u64 above u32::MAX: the
/// marker 253, then 8 little-endian bytes.
pub fn varint_u64(value: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// One damage done to an encoding.
#[derive(Debug, Clone)]
pub enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    /// The byte at the index becomes a varint claiming `length` (a
    /// string's, a sequence's or a map's length prefix, if it was one).
    Length(prop::sample::Index, u64),
}

/// One to three mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
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

/// `bytes` with `mutations` done to them, in order.
pub fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
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

/// Up to `max` random bytes.
pub fn garbage(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}
