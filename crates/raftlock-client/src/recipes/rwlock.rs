//! A readers/writer lock on one name: many readers or one writer.
//!
//! Readers take shared holds, the writer an exclusive one. Writers are not
//! starved: the server grants a name's waiters strictly in arrival (log)
//! order, and a reader that arrives while a writer is queued waits behind
//! that writer instead of joining the readers already holding. So a steady
//! stream of readers cannot keep a writer out; the writer gets the lock as
//! soon as the readers that were ahead of it release.
//!
//! One session holds a name once, in one mode: asking again while holding
//! (in either mode) is refused by the client (`Error::AlreadyHeld`); release
//! first.

use std::time::Duration;

use crate::{Error, LockGuard, Mode, Session};

/// A readers/writer lock. Cheap to clone.
///
/// ```
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (node, addr, _dir) = doc_node().await?;
/// use std::time::Duration;
/// use raftlock_client::recipes::RwLock;
/// use raftlock_client::{Client, ClientOptions, SessionOptions};
///
/// let client = Client::connect([addr], ClientOptions::default()).await?;
/// let ttl = Duration::from_secs(10);
/// let (s1, s2, s3) = (
///     client.session(SessionOptions::new(ttl)).await?,
///     client.session(SessionOptions::new(ttl)).await?,
///     client.session(SessionOptions::new(ttl)).await?,
/// );
/// let r1 = RwLock::new(&s1, "config/app").read(Duration::from_secs(5)).await?;
/// let r2 = RwLock::new(&s2, "config/app").try_read().await?; // readers share
/// let writer = RwLock::new(&s3, "config/app");
/// assert!(writer.try_write().await.is_err()); // busy while read
///
/// let w = tokio::spawn(async move { writer.write(Duration::from_secs(10)).await });
/// # while client.inspect("config/app").await?.map_or(0, |l| l.queue.len()) == 0 {
/// #     tokio::time::sleep(Duration::from_millis(10)).await;
/// # }
/// // A writer is waiting: new readers queue behind it instead of starving it.
/// let s4 = client.session(SessionOptions::new(ttl)).await?;
/// assert!(RwLock::new(&s4, "config/app").try_read().await.is_err());
/// r1.release().await?;
/// r2.release().await?;
/// let w = w.await??;
/// assert!(w.token() > 0);
/// # node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RwLock {
    session: Session,
    name: String,
}

impl RwLock {
    pub fn new(session: &Session, name: impl Into<String>) -> Self {
        RwLock {
            session: session.clone(),
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A shared hold, waiting up to `wait` behind any writer ahead in line.
    pub async fn read(&self, wait: Duration) -> Result<LockGuard, Error> {
        self.session
            .lock(self.name.clone())
            .mode(Mode::Shared)
            .wait(wait)
            .acquire()
            .await
    }

    /// A shared hold only if no writer holds or waits (`Error::Busy`).
    pub async fn try_read(&self) -> Result<LockGuard, Error> {
        self.session
            .lock(self.name.clone())
            .mode(Mode::Shared)
            .try_acquire()
            .await
    }

    /// The exclusive hold, waiting up to `wait` for the readers and
    /// writers ahead of it.
    pub async fn write(&self, wait: Duration) -> Result<LockGuard, Error> {
        self.session
            .lock(self.name.clone())
            .mode(Mode::Exclusive)
            .wait(wait)
            .acquire()
            .await
    }

    /// The exclusive hold only if the lock is free now (`Error::Busy`).
    pub async fn try_write(&self) -> Result<LockGuard, Error> {
        self.session
            .lock(self.name.clone())
            .mode(Mode::Exclusive)
            .try_acquire()
            .await
    }
}
