//! A backup (`Admin.SaveSnapshot`) and its file format, written by
//! `raftlock snapshot save` and read by `raftlock snapshot restore`:
//!
//! | bytes | content                                            |
//! |-------|----------------------------------------------------|
//! | 16    | `RAFTLOCK-BACKUP\n`                                |
//! | 4     | file format version, u32 big-endian (1)            |
//! | 4     | header length H, u32 big-endian                    |
//! | H     | the `BackupHeader`, protobuf                       |
//! | 8     | data length D, u64 big-endian                      |
//! | D     | the data (the store's snapshot data, with its own CRC) |
//! | 32    | SHA-256 of everything above                        |

use prost::Message;
use sha2::{Digest, Sha256};

use raftlock_proto::v1 as pb;

const MAGIC: &[u8; 16] = b"RAFTLOCK-BACKUP\n";
const FILE_FORMAT: u32 = 1;
const SHA_BYTES: usize = 32;
/// A header is a few hundred bytes; more is damage, not a header.
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// One consistent copy of a cluster's state, as its leader sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    pub header: pb::BackupHeader,
    pub data: Vec<u8>,
}

/// Why bytes are not a usable backup; each names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a raftlock backup (it does not start with {:?})", String::from_utf8_lossy(MAGIC).trim_end())]
    NotABackup,
    #[error("backup file format {found}; this raftlock reads format {FILE_FORMAT}")]
    UnknownFormat { found: u32 },
    #[error("the backup is truncated: it ends inside its {0}")]
    Truncated(&'static str),
    #[error(
        "the backup is damaged: its SHA-256 is {computed}, the file records {stored} (changed or truncated after it was written)"
    )]
    ChecksumMismatch { stored: String, computed: String },
    #[error("the backup's header does not decode: {0}")]
    BadHeader(String),
    #[error("the backup has {0} bytes after its checksum")]
    TrailingBytes(usize),
    #[error("the backup's stream was malformed: {0}")]
    BadStream(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Backup {
    /// Assembles a backup from a SaveSnapshot stream's chunks (header,
    /// data, trailer), checking the data's length and SHA-256 against them.
    pub fn from_chunks(
        chunks: impl IntoIterator<Item = pb::SnapshotChunk>,
    ) -> Result<Backup, BackupError> {
        use pb::snapshot_chunk::Part;
        let mut header = None;
        let mut data = Vec::new();
        let mut trailer = None;
        for chunk in chunks {
            match (chunk.part, &header, &trailer) {
                (Some(Part::Header(h)), None, None) => header = Some(h),
                (Some(Part::Data(d)), Some(_), None) => data.extend_from_slice(&d),
                (Some(Part::Trailer(t)), Some(_), None) => trailer = Some(t),
                (part, _, _) => {
                    return Err(BackupError::BadStream(format!(
                        "unexpected {}",
                        match part {
                            Some(Part::Header(_)) => "second header",
                            Some(Part::Data(_)) => "data outside header..trailer",
                            Some(Part::Trailer(_)) => "second trailer",
                            None => "empty chunk",
                        }
                    )));
                }
            }
        }
        let header = header.ok_or_else(|| BackupError::BadStream("no header".into()))?;
        let trailer = trailer.ok_or_else(|| BackupError::BadStream("no trailer".into()))?;
        if data.len() as u64 != header.data_bytes {
            return Err(BackupError::BadStream(format!(
                "{} bytes of data, the header says {}",
                data.len(),
                header.data_bytes
            )));
        }
        let computed = Sha256::digest(&data);
        if computed.as_slice() != trailer.data_sha256.as_slice() {
            return Err(BackupError::ChecksumMismatch {
                stored: hex(&trailer.data_sha256),
                computed: hex(&computed),
            });
        }
        Ok(Backup { header, data })
    }

    /// The backup as a file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = self.header.encode_to_vec();
        let mut out = Vec::with_capacity(64 + header.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FILE_FORMAT.to_be_bytes());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(self.data.len() as u64).to_be_bytes());
        out.extend_from_slice(&self.data);
        let sha = Sha256::digest(&out);
        out.extend_from_slice(&sha);
        out
    }

    /// The SHA-256 of a backup file's bytes (hex): what a restore derives
    /// the new cluster's id from.
    pub fn file_sha256(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Reads a backup file's bytes, checking everything but the data's own
    /// content (the store checks that: its CRC, format and invariants).
    pub fn from_bytes(bytes: &[u8]) -> Result<Backup, BackupError> {
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err(BackupError::NotABackup);
        };
        let (format, rest) = take::<4>(rest, "format version")?;
        let format = u32::from_be_bytes(format);
        if format != FILE_FORMAT {
            return Err(BackupError::UnknownFormat { found: format });
        }
        // The checksum first: a damaged length must be reported as damage.
        if bytes.len() < MAGIC.len() + 4 + SHA_BYTES {
            return Err(BackupError::Truncated("checksum"));
        }
        let (body, stored) = bytes.split_at(bytes.len() - SHA_BYTES);
        let computed = Sha256::digest(body);
        if computed.as_slice() != stored {
            return Err(BackupError::ChecksumMismatch {
                stored: hex(stored),
                computed: hex(&computed),
            });
        }
        let rest = &rest[..rest.len() - SHA_BYTES];
        let (len, rest) = take::<4>(rest, "header length")?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER_BYTES {
            return Err(BackupError::BadHeader(format!("{len} bytes long")));
        }
        let (header, rest) = split(rest, len as usize, "header")?;
        let header =
            pb::BackupHeader::decode(header).map_err(|e| BackupError::BadHeader(e.to_string()))?;
        let (len, rest) = take::<8>(rest, "data length")?;
        let len =
            usize::try_from(u64::from_be_bytes(len)).map_err(|_| BackupError::Truncated("data"))?;
        let (data, rest) = split(rest, len, "data")?;
        if !rest.is_empty() {
            return Err(BackupError::TrailingBytes(rest.len()));
        }
        if data.len() as u64 != header.data_bytes {
            return Err(BackupError::BadHeader(format!(
                "it says {} bytes of data, the file has {}",
                header.data_bytes,
                data.len()
            )));
        }
        Ok(Backup {
            header,
            data: data.to_vec(),
        })
    }
}

fn take<'a, const N: usize>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<([u8; N], &'a [u8]), BackupError> {
    let (head, rest) = split(bytes, N, what)?;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok((out, rest))
}

fn split<'a>(
    bytes: &'a [u8],
    n: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), BackupError> {
    if bytes.len() < n {
        return Err(BackupError::Truncated(what));
    }
    Ok(bytes.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            header: pb::BackupHeader {
                cluster_id: "c".into(),
                index: 42,
                term: 3,
                voters: vec![1, 2, 3],
                data_bytes: 5,
                ..Default::default()
            },
            data: b"hello".to_vec(),
        }
    }

    #[test]
    fn a_backup_round_trips_through_its_file_bytes() {
        let b = sample();
        assert_eq!(Backup::from_bytes(&b.to_bytes()), Ok(b));
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(Backup::from_bytes(&bad).is_err(), "flip at {i}");
            assert!(Backup::from_bytes(&bytes[..i]).is_err(), "cut at {i}");
        }
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 1);
        assert!(matches!(
            Backup::from_bytes(&cut),
            Err(BackupError::ChecksumMismatch { .. })
        ));
        assert_eq!(
            Backup::from_bytes(b"hello world, not a backup"),
            Err(BackupError::NotABackup)
        );
    }
}
