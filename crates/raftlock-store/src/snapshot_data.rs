//! A snapshot's data as openraft handles it: in memory (a snapshot being
//! received, or one re-encoded for an old peer), or a window of the
//! snapshot file (one built here, or the current one being sent).
//!
//! A snapshot of a million holds is about 90 MB. Kept in memory while it is
//! sent, it added 90 bytes per hold to the leader's peak for every
//! transfer (issue 18: at most 700 bytes per hold, also while a snapshot
//! is built and sent). From the file, a transfer holds one chunk at a time.

use std::fmt;
use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, ReadBuf};

/// Snapshot data: openraft's `SnapshotData` for raftlock. Reads and seeks
/// see only the data (offset 0 is its first byte), wherever it lies.
pub struct SnapshotData(Inner);

enum Inner {
    Memory(Cursor<Vec<u8>>),
    File(FileWindow),
}

/// `len` bytes of `file` from `start`; `pos` is relative to `start`.
struct FileWindow {
    file: tokio::fs::File,
    start: u64,
    len: u64,
    pos: u64,
    /// Reads land here first, cut to what is left of the window (the file
    /// goes on past it).
    scratch: Vec<u8>,
    /// Whether a seek was started and not yet completed: only then does
    /// the file's answer give the position (tokio's `File` answers an
    /// idle `poll_complete` with the position of its last seek, which
    /// reads since then have moved past).
    seeking: bool,
}

impl SnapshotData {
    /// Data held in memory.
    pub fn from_vec(data: Vec<u8>) -> Self {
        SnapshotData(Inner::Memory(Cursor::new(data)))
    }

    /// The `len` bytes of `file` from `start` (read-only: writes fail).
    /// Reads start at the data's first byte.
    pub fn from_file(mut file: std::fs::File, start: u64, len: u64) -> io::Result<Self> {
        std::io::Seek::seek(&mut file, SeekFrom::Start(start))?;
        Ok(SnapshotData(Inner::File(FileWindow {
            file: tokio::fs::File::from_std(file),
            start,
            len,
            pos: 0,
            scratch: Vec::new(),
            seeking: false,
        })))
    }

    /// The data's length.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Inner::Memory(cursor) => cursor.get_ref().len() as u64,
            Inner::File(window) => window.len,
        }
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole data in memory (read from the file if it is there; held
    /// data is handed over without a copy).
    pub async fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self.0 {
            Inner::Memory(cursor) => Ok(cursor.into_inner()),
            Inner::File(mut window) => {
                let len = usize::try_from(window.len).map_err(|_| {
                    io::Error::new(io::ErrorKind::OutOfMemory, "snapshot larger than memory")
                })?;
                let mut data = Vec::with_capacity(len);
                window.file.seek(SeekFrom::Start(window.start)).await?;
                (&mut window.file)
                    .take(window.len)
                    .read_to_end(&mut data)
                    .await?;
                if data.len() != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the snapshot file ended {} bytes into data of {len}",
                            data.len()
                        ),
                    ));
                }
                Ok(data)
            }
        }
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(data: Vec<u8>) -> Self {
        SnapshotData::from_vec(data)
    }
}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Memory(cursor) => f
                .debug_struct("SnapshotData::Memory")
                .field("len", &cursor.get_ref().len())
                .field("pos", &cursor.position())
                .finish(),
            Inner::File(window) => f
                .debug_struct("SnapshotData::File")
                .field("start", &window.start)
                .field("len", &window.len)
                .field("pos", &window.pos)
                .finish(),
        }
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Memory(cursor) => Pin::new(cursor).poll_read(cx, buf),
            Inner::File(window) => {
                let left = window.len.saturating_sub(window.pos);
                let want = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                if want == 0 {
                    return Poll::Ready(Ok(()));
                }
                if window.scratch.len() < want {
                    window.scratch.resize(want, 0);
                }
                let mut scratch = ReadBuf::new(&mut window.scratch[..want]);
                ready!(Pin::new(&mut window.file).poll_read(cx, &mut scratch))?;
                let got = scratch.filled().len();
                buf.put_slice(&window.scratch[..got]);
                window.pos += got as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match &mut self.get_mut().0 {
            Inner::Memory(cursor) => Pin::new(cursor).start_seek(position),
            Inner::File(window) => {
                let target = match position {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::End(delta) => window.len.checked_add_signed(delta),
                    SeekFrom::Current(delta) => window.pos.checked_add_signed(delta),
                };
                let absolute = target
                    .and_then(|t| window.start.checked_add(t))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("seek to {position:?} leaves the snapshot's data"),
                        )
                    })?;
                Pin::new(&mut window.file).start_seek(SeekFrom::Start(absolute))?;
                window.seeking = true;
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.get_mut().0 {
            Inner::Memory(cursor) => Pin::new(cursor).poll_complete(cx),
            Inner::File(window) if !window.seeking => {
                // Lets an operation still in flight (a read given up on)
                // finish, as tokio's `File` does, so a seek can start.
                ready!(Pin::new(&mut window.file).poll_complete(cx))?;
                Poll::Ready(Ok(window.pos))
            }
            Inner::File(window) => {
                let absolute = ready!(Pin::new(&mut window.file).poll_complete(cx));
                window.seeking = false;
                window.pos = absolute?.saturating_sub(window.start);
                Poll::Ready(Ok(window.pos))
            }
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a stored snapshot's data is read-only",
    )
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Memory(cursor) => Pin::new(cursor).poll_write(cx, buf),
            Inner::File(_) => Poll::Ready(Err(read_only())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Memory(cursor) => Pin::new(cursor).poll_flush(cx),
            Inner::File(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Memory(cursor) => Pin::new(cursor).poll_shutdown(cx),
            Inner::File(_) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A window reads and seeks only its own bytes, as a cursor over them
    /// would, in reads smaller and larger than what is left.
    #[tokio::test]
    async fn a_file_window_reads_and_seeks_like_its_bytes_in_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let all: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&all))
            .expect("write");
        let (start, len) = (1_000u64, 7_000u64);
        let window = || {
            SnapshotData::from_file(std::fs::File::open(&path).expect("open"), start, len)
                .expect("window")
        };
        let expected = &all[start as usize..(start + len) as usize];
        assert_eq!(window().len(), len);
        // Read before any seek: from the data's first byte.
        let mut first = [0u8; 3];
        window().read_exact(&mut first).await.expect("read");
        assert_eq!(first, expected[..3]);
        assert_eq!(window().into_bytes().await.expect("read"), expected);

        let mut data = window();
        assert_eq!(data.seek(SeekFrom::End(0)).await.expect("seek"), len);
        let mut nothing = [0u8; 8];
        assert_eq!(data.read(&mut nothing).await.expect("read at end"), 0);
        assert_eq!(
            data.seek(SeekFrom::Start(6_990)).await.expect("seek"),
            6_990
        );
        let mut last = Vec::new();
        data.read_to_end(&mut last).await.expect("read");
        assert_eq!(last, &expected[6_990..]);
        assert_eq!(
            data.seek(SeekFrom::Current(-20)).await.expect("seek"),
            6_980
        );
        let mut some = [0u8; 5];
        data.read_exact(&mut some).await.expect("read");
        assert_eq!(some, expected[6_980..6_985]);
        assert!(data.seek(SeekFrom::Current(-10_000)).await.is_err());
        assert!(data.write_all(b"x").await.is_err(), "read-only");

        let mut memory = SnapshotData::from_vec(expected.to_vec());
        memory.seek(SeekFrom::Start(10)).await.expect("seek");
        let mut rest = Vec::new();
        memory.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, &expected[10..]);
    }
}
