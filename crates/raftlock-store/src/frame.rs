//! Checksum framing of every stored value: 4 bytes of CRC32 (big-endian) of
//! the payload, then the payload (bincode 2, standard config, through
//! [`raftlock_core::encode`]).
//!
//! Every read goes through [`unseal`] or [`decode`], so a flipped bit or a
//! torn write in sled surfaces as a [`Damaged`] error naming the record,
//! never as a value that decodes to something else.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Damaged;

/// Length of the checksum prefix.
pub const CHECKSUM_LEN: usize = 4;

/// Frames `payload` with its checksum.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKSUM_LEN + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the checksum of a framed value and returns its payload.
/// `what` names the record for the error ("log entry 42", "vote").
pub fn unseal<'a>(what: &dyn std::fmt::Display, bytes: &'a [u8]) -> Result<&'a [u8], Damaged> {
    let Some((stored, payload)) = bytes.split_first_chunk::<CHECKSUM_LEN>() else {
        return Err(Damaged::new(
            what,
            format!(
                "{} bytes is shorter than the {CHECKSUM_LEN}-byte checksum",
                bytes.len()
            ),
        ));
    };
    let stored = u32::from_be_bytes(*stored);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(Damaged::new(
            what,
            format!("checksum mismatch (stored {stored:08x}, computed {computed:08x})"),
        ));
    }
    Ok(payload)
}

/// Encodes `value` and frames it.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    seal(&raftlock_core::encode(value))
}

/// Checks and decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(
    what: &dyn std::fmt::Display,
    bytes: &[u8],
) -> Result<T, Damaged> {
    let payload = unseal(what, bytes)?;
    raftlock_core::decode("record", payload).map_err(|e| Damaged::new(what, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_detected() {
        let framed = encode(&("vote", 7u64));
        let back: (String, u64) = decode(&"vote", &framed).expect("decodes");
        assert_eq!(back, ("vote".to_string(), 7));
        for byte in 0..framed.len() {
            for bit in 0..8 {
                let mut bad = framed.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode::<(String, u64)>(&"vote", &bad).is_err());
            }
        }
    }

    #[test]
    fn short_value_is_damaged_not_a_panic() {
        let err = unseal(&"log entry 3", &[1, 2]).expect_err("too short");
        assert!(err.to_string().contains("log entry 3"), "{err}");
    }
}
