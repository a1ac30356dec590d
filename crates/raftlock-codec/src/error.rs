//! What can be wrong with bytes handed to [`crate::decode`].

/// Why bytes are not a value of the type asked for. Field names are
/// `Message.field` paths of storage.proto, so a person can find them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not protobuf of the expected shape: truncated, a bad length or wire
    /// type, nesting past prost's recursion limit.
    #[error("undecodable {what}: {reason}")]
    Undecodable { what: &'static str, reason: String },

    /// The envelope has no format version: not raftlock data, or damaged.
    #[error("undecodable {what}: its envelope names no format version (format 0)")]
    NoFormat { what: &'static str },

    /// The envelope contradicts itself.
    #[error(
        "undecodable {what}: its envelope says format {format} needs a reader of format {min_reader} (it must be between 1 and the format)"
    )]
    BadEnvelope {
        what: &'static str,
        format: u32,
        min_reader: u32,
    },

    /// Written by a newer raftlock that this build cannot read correctly.
    #[error(
        "{what} was written in storage format {format} and needs a reader of format {min_reader} or newer; this build reads format {reader} at most: upgrade this node to a raftlock that reads format {min_reader}"
    )]
    TooNew {
        what: &'static str,
        format: u32,
        min_reader: u32,
        reader: u32,
    },

    /// The envelope holds another type than the one asked for.
    #[error("undecodable {what}: the envelope holds a {found}")]
    WrongKind { what: &'static str, found: String },

    /// A required field (a message, or a oneof with no case set) is absent.
    #[error("required field {field} is missing")]
    Missing { field: &'static str },

    /// An enum value this build does not know (or UNSPECIFIED).
    #[error("{field} has the unknown value {value}")]
    UnknownValue { field: &'static str, value: i32 },

    /// An integer above what its Rust type holds.
    #[error("{field} is {value}, above its maximum {max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        max: u64,
    },

    /// Batches nested deeper than [`crate::MAX_BATCH_NESTING`].
    #[error("{field}: batches nest more than {max} deep")]
    TooDeep { field: &'static str, max: usize },

    /// A value that breaks a rule of its type (duplicates in a set, a
    /// voter without a node).
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },

    /// A decoded state that breaks the state machine's invariants.
    #[error("state violates an invariant: {0}")]
    Invariant(String),
}
