//! Node-to-node traffic: everything one raftlock node says to another, over
//! the internal `raftlock.internal.v1.RaftTransport` gRPC service. openraft's
//! AppendEntries, votes and snapshot chunks leave through [`client`]
//! (openraft's network factory over a channel cache shared per peer
//! address) and arrive through [`server`]; a follower hands a client's
//! write, read-index request or keep-alive to the leader through
//! [`forward`]; every message is encoded in a peer protocol version both
//! sides speak ([`version`]: bincode, or protobuf through raftlock-codec and
//! [`codec`]) with a CRC32 the receiver checks ([`wire`]),
//! stamped with the sender's node, cluster and store ids and checked by the
//! receiver ([`identity`]).

pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod forward;
pub(crate) mod identity;
pub(crate) mod server;
pub(crate) mod snapshot_in;
pub(crate) mod version;
pub(crate) mod wire;

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;
