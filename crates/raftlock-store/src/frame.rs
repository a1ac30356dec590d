//! Checksum framing of every stored value: 4 bytes of CRC32 (big-endian) of
//! the payload, then the payload.
//!
//! The payload is the value in raftlock's versioned encoding
//! ([`raftlock_codec`]: protobuf inside an envelope that names its format
//! and kind), since store format 5. [`legacy`] keeps the bincode payloads
//! of formats 3 and 4, read only by the migration and written only for
//! peers that speak protocol 1.
//!
//! Every read goes through [`unseal`] or [`decode`], so a flipped bit or a
//! torn write in sled surfaces as a [`Damaged`] error naming the record,
//! never as a value that decodes to something else.

use raftlock_codec::Codec;

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

/// Frames `payload` with its checksum in place: no second copy of a
/// large value (a snapshot) while it is framed. Gives the same bytes as
/// [`seal`].
pub fn seal_owned(mut payload: Vec<u8>) -> Vec<u8> {
    let checksum = crc32fast::hash(&payload).to_be_bytes();
    // Moves the bytes up by 4 within the allocation when it has room
    // (the codec leaves some), else grows it once.
    payload.splice(0..0, checksum);
    payload
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

/// Encodes `value` and frames it. Fails only for a value the codec refuses
/// to write because it could not read it back (batches nested deeper than
/// [`raftlock_codec::MAX_BATCH_NESTING`]).
pub fn encode<T: Codec>(what: &dyn std::fmt::Display, value: &T) -> Result<Vec<u8>, Damaged> {
    raftlock_codec::encode(value)
        .map(seal_owned)
        .map_err(|e| Damaged::new(what, format!("cannot be encoded: {e}")))
}

/// Checks and decodes a value written by [`encode`].
pub fn decode<T: Codec>(what: &dyn std::fmt::Display, bytes: &[u8]) -> Result<T, Damaged> {
    let payload = unseal(what, bytes)?;
    raftlock_codec::decode(payload).map_err(|e| Damaged::new(what, e.to_string()))
}

/// The format version as every store format writes it: the one byte that
/// bincode 2's varint makes of a number below 251, framed. Formats 1 to 4
/// wrote it through bincode; writing the same bytes by hand keeps it
/// readable by every build, so an older build opening a newer store says
/// "newer format, run a newer raftlock" instead of "damaged".
pub fn encode_format_version(version: u32) -> Vec<u8> {
    const { assert!(crate::FORMAT_VERSION < 251) };
    debug_assert!(version < 251, "format versions stay below 251");
    seal(&[version as u8])
}

/// Reads what [`encode_format_version`] (or bincode, before format 5)
/// wrote.
pub fn decode_format_version(bytes: &[u8]) -> Result<u32, Damaged> {
    let what = "format version";
    match unseal(&what, bytes)? {
        [version] if *version < 251 => Ok(u32::from(*version)),
        other => Err(Damaged::new(
            &what,
            format!(
                "{} bytes {other:02x?} are not a format version",
                other.len()
            ),
        )),
    }
}

/// The store id (a hex string) as format 5 writes it: its UTF-8 bytes,
/// framed.
pub fn encode_text(text: &str) -> Vec<u8> {
    seal(text.as_bytes())
}

/// Reads what [`encode_text`] wrote.
pub fn decode_text(what: &dyn std::fmt::Display, bytes: &[u8]) -> Result<String, Damaged> {
    let payload = unseal(what, bytes)?;
    String::from_utf8(payload.to_vec()).map_err(|e| Damaged::new(what, e.to_string()))
}

/// The bincode payloads of store formats 3 and 4 (and of snapshot data
/// format 3, which protocol-1 peers still send and expect). The serde
/// shapes of raftlock-core's and openraft's types are what those formats
/// wrote: a change to them is a change to this frozen format, which the
/// checked-in fixtures (`tests/fixtures/store-v4.tar.gz`) catch.
pub mod legacy {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{seal, unseal};
    use crate::error::Damaged;

    /// Encodes `value` with bincode and frames it.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_detected() {
        let vote = openraft::Vote::<u64>::new_committed(3, 7);
        let framed = encode(&"vote", &vote).expect("encodes");
        let back: openraft::Vote<u64> = decode(&"vote", &framed).expect("decodes");
        assert_eq!(back, vote);
        for byte in 0..framed.len() {
            for bit in 0..8 {
                let mut bad = framed.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode::<openraft::Vote<u64>>(&"vote", &bad).is_err());
            }
        }
    }

    #[test]
    fn sealing_in_place_gives_the_same_bytes() {
        for payload in [vec![], vec![7], (0..=255).collect::<Vec<u8>>()] {
            assert_eq!(seal_owned(payload.clone()), seal(&payload));
        }
    }

    #[test]
    fn short_value_is_damaged_not_a_panic() {
        let err = unseal(&"log entry 3", &[1, 2]).expect_err("too short");
        assert!(err.to_string().contains("log entry 3"), "{err}");
    }

    #[test]
    fn the_format_version_is_written_as_bincode_wrote_it() {
        for version in [1u32, 4, 5, 250] {
            assert_eq!(encode_format_version(version), legacy::encode(&version));
            assert_eq!(
                decode_format_version(&legacy::encode(&version)),
                Ok(version)
            );
        }
        let wide = seal(&[251, 0, 1]);
        let err = decode_format_version(&wide).expect_err("not one byte");
        assert!(err.to_string().contains("format version"), "{err}");
    }

    #[test]
    fn a_value_of_another_kind_is_damaged() {
        let framed = encode(&"vote", &openraft::Vote::<u64>::new(1, 2)).expect("encodes");
        let err = decode::<Option<openraft::LogId<u64>>>(&"committed", &framed)
            .expect_err("a vote is not a log id");
        assert!(err.to_string().contains("committed"), "{err}");
    }
}
