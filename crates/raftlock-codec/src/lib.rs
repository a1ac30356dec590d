//! raftlock-codec: the versioned encoding of what raftlock stores and sends.
//!
//! Every value is a protobuf message of `proto/raftlock/storage/v1/
//! storage.proto` (generated in [`raftlock_proto::storage::v1`]) inside an
//! [`Envelope`](pb::Envelope) that names the writer's format, the oldest
//! format that reads it correctly, and which message the body is. A newer
//! node reads what an older one wrote (protobuf ignores fields it does not
//! know and defaults those it does not find); an older node refuses, by
//! name and version, what only a newer one can read.
//!
//! Pure: no I/O, no async, no clock. [`encode`] and [`decode`] work on any
//! type that implements [`Codec`]: raftlock-core's log payloads, answers and
//! state, and openraft's log ids, votes, memberships, snapshot metadata,
//! entries and RPC payloads (AppendEntries, Vote, InstallSnapshot requests
//! and their `Result<response, RaftError>` answers). Decoding never panics: any input is either a value or a
//! [`CodecError`] naming what is wrong.
//!
//! Used by the store (on-disk format 5) and by the peer transport
//! (protocol 2); see docs/ARCHITECTURE.md.

mod core_types;
mod error;
mod raft;
mod rpc;
mod state;

use prost::Message;
pub use raftlock_proto::storage::v1 as pb;

pub use core_types::check_nesting;
pub use error::CodecError;
pub use rpc::{ApiError, RaftlockConfig};
pub use state::{
    SmHeader, SnapshotBody, StoredSnapshot, StoredSnapshotLayout, StreamedSnapshotBody,
    decode_snapshot_body, encode_lease, encode_lock, encode_sm_header, encode_snapshot_body,
    encode_snapshot_body_into, encode_stored_snapshot, encode_waiter, stored_snapshot_around,
    stored_snapshot_around_padded, stored_snapshot_layout,
};

/// The format generation this build writes and reads (the schema of
/// `raftlock.storage.v1` as of this build). Raised when a writer starts to
/// put something into the data that an older reader would misread.
pub const FORMAT: u32 = 1;

/// What this build writes as `min_reader`: the oldest format that reads
/// what it writes correctly. Everything format 1 writes, format 1 reads.
pub const MIN_READER: u32 = 1;

/// How deep batches may nest: a `Batch` command inside a `Batch` inside ...
/// The state machine refuses any batch inside a batch (only acquires,
/// releases and extends share an entry), so one level is all a correct
/// leader writes; a few more keep such an entry readable (and answered with
/// the state machine's refusal, the same on every replica) while bounding
/// the recursion a hostile input can cause. The encoder refuses what the
/// decoder would, so nothing is written that cannot be read back.
pub const MAX_BATCH_NESTING: usize = 4;

/// A type with a stored and sent form: a message of raftlock.storage.v1.
pub trait Codec: Sized {
    /// The envelope's `kind` for this type.
    const KIND: pb::BodyKind;
    /// The name of this type in errors.
    const WHAT: &'static str;
    /// Its message.
    type Proto: Message + Default;

    /// The message of `self`. Fails only for a value the decoder would
    /// refuse (batches nested too deep).
    fn to_proto(&self) -> Result<Self::Proto, CodecError>;

    /// The value of a decoded message, checked: required fields present,
    /// enum values known, integers in range, sets ordered.
    fn from_proto(proto: Self::Proto) -> Result<Self, CodecError>;
}

/// `value` as enveloped bytes. Equal values give equal bytes.
///
/// Writes the envelope's fields itself, so that the body is encoded once,
/// straight into the output (this runs for every log entry): a message
/// field and a `bytes` field holding that message's encoding are the same
/// on the wire, so the bytes are exactly `pb::Envelope`'s encoding (the
/// `envelope_written_in_place_is_the_envelope_message` test checks it).
pub fn encode<T: Codec>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(enveloped(T::KIND, &value.to_proto()?))
}

/// `body`, a message of `kind`, enveloped.
pub(crate) fn enveloped(kind: pb::BodyKind, body: &impl Message) -> Vec<u8> {
    enveloped_with(kind, body.encoded_len(), |out| body.encode_raw(out))
}

/// An envelope of `kind` around a body of `body_len` bytes that `write`
/// appends: for bodies written field by field from borrowed data.
pub(crate) fn enveloped_with(
    kind: pb::BodyKind,
    body_len: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_len + 24);
    envelope_start(body_len, &mut out);
    let start = out.len();
    if body_len > 0 {
        write(&mut out);
    }
    debug_assert_eq!(
        out.len() - start,
        body_len,
        "the body is as long as announced"
    );
    envelope_end(kind, &mut out);
    out
}

/// What an envelope holds before a body of `body_len` bytes: its format,
/// the oldest reader, and the body's key and length (proto3 leaves an
/// empty `bytes` field out; so does this).
pub(crate) fn envelope_start(body_len: usize, out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    envelope_versions(out);
    if body_len > 0 {
        encode_key(3, WireType::LengthDelimited, out);
        encode_varint(body_len as u64, out);
    }
}

/// [`envelope_start`] with the body's length [padded](encode_padded_len)
/// (written even when it is 0).
pub(crate) fn envelope_start_padded(body_len: u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
    use prost::encoding::{WireType, encode_key};
    envelope_versions(out);
    encode_key(3, WireType::LengthDelimited, out);
    encode_padded_len(body_len, out)
}

fn envelope_versions(out: &mut Vec<u8>) {
    prost::encoding::uint32::encode(1, &FORMAT, out);
    prost::encoding::uint32::encode(2, &MIN_READER, out);
}

/// How wide a [padded](encode_padded_len) length is.
pub const PADDED_LEN: usize = 5;

/// The largest length a padded length holds (32 GiB - 1).
pub const PADDED_LEN_MAX: u64 = (1 << 35) - 1;

/// `len` as a varint of exactly [`PADDED_LEN`] bytes: the groups above its
/// highest set bit are written as zeros with the continuation bit, which
/// every protobuf reader (prost included) decodes as the same number. A
/// writer that streams a large body into a file leaves this much room for
/// the body's length and fills it in once the body is written, instead of
/// holding the body in memory to learn its length first (issue 18).
pub fn encode_padded_len(len: u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if len > PADDED_LEN_MAX {
        return Err(CodecError::OutOfRange {
            field: "length of a streamed body",
            value: len,
            max: PADDED_LEN_MAX,
        });
    }
    for group in 0..PADDED_LEN - 1 {
        out.push(((len >> (7 * group)) & 0x7f) as u8 | 0x80);
    }
    out.push((len >> (7 * (PADDED_LEN - 1))) as u8);
    Ok(())
}

/// What an envelope holds after its body: the body's kind.
pub(crate) fn envelope_end(kind: pb::BodyKind, out: &mut Vec<u8>) {
    prost::encoding::int32::encode(4, &(kind as i32), out);
}

/// An envelope of `kind` around a body that `write` appends without
/// knowing its length first (a snapshot's, written record by record).
/// It is appended to `out` (which may hold a caller's framing already).
pub(crate) fn enveloped_streamed(
    kind: pb::BodyKind,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    // The format and oldest reader; the body's key and length follow.
    envelope_start(0, out);
    let before = out.len();
    delimited(3, out, write);
    // proto3 leaves an empty `bytes` field out (as `enveloped_with` does):
    // a key and a zero length are all there is of it then.
    if out.len() == before + 2 {
        out.truncate(before);
    }
    envelope_end(kind, out);
}

/// Appends field `tag` (length-delimited) whose contents `write` appends,
/// without knowing their length first: they are written after a gap as
/// wide as the longest length, which is then filled with the real length
/// and closed by moving the contents back (one `memmove`, no second
/// buffer). The bytes are what prost writes for the same contents.
pub(crate) fn delimited(tag: u32, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    const WIDEST: usize = 10;
    encode_key(tag, WireType::LengthDelimited, out);
    let gap = out.len();
    out.resize(gap + WIDEST, 0);
    write(out);
    let len = out.len() - gap - WIDEST;
    let mut prefix = [0u8; WIDEST];
    let mut cursor = &mut prefix[..];
    encode_varint(len as u64, &mut cursor);
    let width = WIDEST - cursor.len();
    out[gap..gap + width].copy_from_slice(&prefix[..width]);
    out.copy_within(gap + WIDEST.., gap + width);
    out.truncate(gap + width + len);
}

/// The value that [`encode`] (of this or an older format) wrote.
pub fn decode<T: Codec>(bytes: &[u8]) -> Result<T, CodecError> {
    let body = open_envelope(T::KIND, T::WHAT, bytes)?;
    let proto = T::Proto::decode(body.as_slice()).map_err(|e| CodecError::Undecodable {
        what: T::WHAT,
        reason: e.to_string(),
    })?;
    T::from_proto(proto)
}

/// One field of a message, as it is on the wire.
pub(crate) enum Field<'a> {
    Varint(u64),
    Len(&'a [u8]),
    /// Fixed 32 or 64 bits, or a group: not used by raftlock's messages.
    Other,
}

/// The fields of a message's bytes, one at a time, borrowed from them.
pub(crate) struct Fields<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Fields { what, rest: bytes }
    }

    fn field(&mut self) -> Result<(u32, Field<'a>), CodecError> {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
        let what = self.what;
        let undecodable = |e: prost::DecodeError| CodecError::Undecodable {
            what,
            reason: e.to_string(),
        };
        let (tag, wire) = decode_key(&mut self.rest).map_err(undecodable)?;
        Ok(match wire {
            WireType::Varint => (
                tag,
                Field::Varint(decode_varint(&mut self.rest).map_err(undecodable)?),
            ),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut self.rest).map_err(undecodable)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= self.rest.len())
                    .ok_or_else(|| CodecError::Undecodable {
                        what,
                        reason: format!("field {tag} of {len} bytes runs past the end"),
                    })?;
                let (value, rest) = self.rest.split_at(len);
                self.rest = rest;
                (tag, Field::Len(value))
            }
            _ => {
                skip_field(wire, tag, &mut self.rest, DecodeContext::default())
                    .map_err(undecodable)?;
                (tag, Field::Other)
            }
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Nothing after a broken field can be read.
            self.rest = &[];
        }
        Some(field)
    }
}

/// Calls `each` with every field of a message's bytes, in order.
pub(crate) fn for_each_field<'a>(
    what: &'static str,
    bytes: &'a [u8],
    mut each: impl FnMut(u32, Field<'a>) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    for field in Fields::new(what, bytes) {
        let (tag, field) = field?;
        each(tag, field)?;
    }
    Ok(())
}

/// The body of an envelope of `kind` in place (a slice of `bytes`, no
/// copy), after the checks of [`open_envelope`].
pub(crate) fn envelope_body_in_place<'a>(
    kind: pb::BodyKind,
    what: &'static str,
    bytes: &'a [u8],
) -> Result<&'a [u8], CodecError> {
    let (mut format, mut min_reader, mut found, mut body) = (0u32, 0u32, 0i32, &[][..]);
    for_each_field(what, bytes, |tag, field| {
        match (tag, field) {
            (1, Field::Varint(v)) => format = v as u32,
            (2, Field::Varint(v)) => min_reader = v as u32,
            (3, Field::Len(b)) => body = b,
            (4, Field::Varint(v)) => found = v as i32,
            (1..=4, _) => {
                return Err(CodecError::Undecodable {
                    what,
                    reason: format!("envelope: field {tag} has the wrong wire type"),
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    check_envelope(kind, what, format, min_reader, found)?;
    Ok(body)
}

/// The body of an envelope of `kind`, after checking that this build can
/// read it.
fn open_envelope(
    kind: pb::BodyKind,
    what: &'static str,
    bytes: &[u8],
) -> Result<Vec<u8>, CodecError> {
    let envelope = pb::Envelope::decode(bytes).map_err(|e| CodecError::Undecodable {
        what,
        reason: format!("envelope: {e}"),
    })?;
    let pb::Envelope {
        format,
        min_reader,
        body,
        kind: found,
    } = envelope;
    check_envelope(kind, what, format, min_reader, found)?;
    Ok(body)
}

/// The checks of an envelope's fields that decide whether this build reads
/// its body as a `kind`.
pub(crate) fn check_envelope(
    kind: pb::BodyKind,
    what: &'static str,
    format: u32,
    min_reader: u32,
    found: i32,
) -> Result<(), CodecError> {
    check_versions(what, format, min_reader)?;
    if found != kind as i32 {
        let found = pb::BodyKind::try_from(found)
            .map(|k| k.as_str_name().to_string())
            .unwrap_or_else(|_| format!("unknown kind {found}"));
        return Err(CodecError::WrongKind { what, found });
    }
    Ok(())
}

/// The checks of an envelope's format and oldest reader.
pub(crate) fn check_versions(
    what: &'static str,
    format: u32,
    min_reader: u32,
) -> Result<(), CodecError> {
    if format == 0 {
        return Err(CodecError::NoFormat { what });
    }
    if min_reader == 0 || min_reader > format {
        return Err(CodecError::BadEnvelope {
            what,
            format,
            min_reader,
        });
    }
    // Checked before the kind: a newer format may add kinds this build
    // does not know, and "upgrade" is then the useful answer.
    if min_reader > FORMAT {
        return Err(CodecError::TooNew {
            what,
            format,
            min_reader,
            reader: FORMAT,
        });
    }
    Ok(())
}

/// A required message field.
pub(crate) fn required<T>(value: Option<T>, field: &'static str) -> Result<T, CodecError> {
    value.ok_or(CodecError::Missing { field })
}

/// A u16 that travels as a u32.
pub(crate) fn to_u16(value: u32, field: &'static str) -> Result<u16, CodecError> {
    u16::try_from(value).map_err(|_| CodecError::OutOfRange {
        field,
        value: u64::from(value),
        max: u64::from(u16::MAX),
    })
}

/// A `uint64` of the storage format that the core keeps as a `u32` (a
/// hold's counters): a larger value is refused, never cut.
pub(crate) fn to_u32(value: u64, field: &'static str) -> Result<u32, CodecError> {
    u32::try_from(value).map_err(|_| CodecError::OutOfRange {
        field,
        value,
        max: u64::from(u32::MAX),
    })
}

/// Checks that keys come in strictly increasing order (a set or a map
/// stored as a sorted list: no duplicates, one order, so one encoding).
pub(crate) fn strictly_increasing<'a, K: Ord + std::fmt::Debug + 'a>(
    keys: impl IntoIterator<Item = &'a K>,
    field: &'static str,
) -> Result<(), CodecError> {
    let mut previous: Option<&K> = None;
    for key in keys {
        if let Some(p) = previous
            && p >= key
        {
            return Err(CodecError::Invalid {
                field,
                detail: format!(
                    "{key:?} follows {p:?}: entries must be unique and in increasing order"
                ),
            });
        }
        previous = Some(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_nesting_refuses_exactly_what_the_encoder_refuses() {
        let mut command = raftlock_core::Command::Tick;
        for depth in 0..=MAX_BATCH_NESTING + 2 {
            assert_eq!(
                check_nesting(&command).is_ok(),
                encode(&command).is_ok(),
                "{depth} batches deep"
            );
            command = raftlock_core::Command::Batch {
                commands: vec![command],
            };
        }
        assert!(check_nesting(&command).is_err(), "the deepest is refused");
    }

    /// [`encode`] writes the envelope's fields itself; its bytes must be
    /// those of the `Envelope` message around the body, empty or not.
    #[test]
    fn envelope_written_in_place_is_the_envelope_message() {
        let empty: Option<openraft::LogId<u64>> = None;
        let full = raftlock_core::Command::Release {
            lease: 7,
            token: 9,
            names: vec!["a".into(), "b/c".into()],
        };
        fn through_message<T: Codec>(value: &T) -> Vec<u8> {
            pb::Envelope {
                format: FORMAT,
                min_reader: MIN_READER,
                body: value.to_proto().expect("encodes").encode_to_vec(),
                kind: T::KIND as i32,
            }
            .encode_to_vec()
        }
        assert_eq!(encode(&empty).expect("encodes"), through_message(&empty));
        assert_eq!(encode(&full).expect("encodes"), through_message(&full));
        assert_eq!(
            decode::<Option<openraft::LogId<u64>>>(&encode(&empty).expect("encodes")),
            Ok(None)
        );
    }

    /// A field written through the gap is what prost writes for the same
    /// bytes, at every width of the length (1 to 4 bytes here), and an
    /// empty one too.
    #[test]
    fn a_delimited_field_matches_prost_at_every_length_width() {
        for len in [
            0usize, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, 2_097_152,
        ] {
            let contents: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut ours = vec![7u8, 7];
            delimited(5, &mut ours, |out| out.extend_from_slice(&contents));
            let mut theirs = vec![7u8, 7];
            prost::encoding::bytes::encode(5, &contents, &mut theirs);
            assert_eq!(ours, theirs, "contents of {len} bytes");
        }
    }
}
