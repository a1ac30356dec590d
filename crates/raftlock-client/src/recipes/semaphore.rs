//! A counting semaphore: at most `permits` holders of one name.
//!
//! Built on the server's semaphore mode: the first acquirer fixes the count
//! while the lock exists, and a request with another count is refused
//! (`PERMITS_MISMATCH`). Waiters are granted in arrival order.
//!
//! A lease holds at most one permit of a name (acquiring again with the
//! same session is `Error::AlreadyHeld`), so a process that wants several
//! permits of one semaphore uses a session per permit.

use std::time::Duration;

use crate::{Error, LockGuard, Mode, Session};

/// `permits` places on one name. Cheap to clone.
///
/// ```
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (node, addr, _dir) = doc_node().await?;
/// use std::time::Duration;
/// use raftlock_client::recipes::Semaphore;
/// use raftlock_client::{Client, ClientOptions, Error, SessionOptions};
///
/// let client = Client::connect([addr], ClientOptions::default()).await?;
/// let mut sessions = Vec::new();
/// for _ in 0..3 {
///     sessions.push(client.session(SessionOptions::new(Duration::from_secs(10))).await?);
/// }
/// // Two GPU slots shared by every worker.
/// let slots: Vec<_> = sessions.iter().map(|s| Semaphore::new(s, "gpu/slots", 2)).collect();
/// let p1 = slots[0].try_acquire().await?;
/// let p2 = slots[1].acquire(Duration::from_secs(5)).await?;
/// assert_eq!(slots[2].available().await?, 0);
/// assert!(matches!(slots[2].try_acquire().await, Err(Error::Busy { .. })));
/// p1.release().await?;
/// let p3 = slots[2].try_acquire().await?;
/// assert!(p3.token() > p2.token());
/// # node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    session: Session,
    name: String,
    permits: u32,
}

impl Semaphore {
    /// A semaphore of `permits` (1 to 65536) on `name`, for `session`.
    pub fn new(session: &Session, name: impl Into<String>, permits: u32) -> Self {
        Semaphore {
            session: session.clone(),
            name: name.into(),
            permits,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Take a permit, waiting up to `wait` in line (`Error::WaitTimeout`).
    /// The guard's token fences the holder's work like a lock's.
    pub async fn acquire(&self, wait: Duration) -> Result<LockGuard, Error> {
        self.session
            .lock(self.name.clone())
            .mode(Mode::Semaphore(self.permits))
            .wait(wait)
            .acquire()
            .await
    }

    /// Take a permit only if one is free now (`Error::Busy` otherwise).
    pub async fn try_acquire(&self) -> Result<LockGuard, Error> {
        self.session
            .lock(self.name.clone())
            .mode(Mode::Semaphore(self.permits))
            .try_acquire()
            .await
    }

    /// Permits free right now (a linearizable read; it may change at once).
    pub async fn available(&self) -> Result<u32, Error> {
        let held = self
            .session
            .client()
            .inspect(&self.name)
            .await?
            .map_or(0, |l| l.holders.len());
        Ok(self
            .permits
            .saturating_sub(u32::try_from(held).unwrap_or(u32::MAX)))
    }
}
