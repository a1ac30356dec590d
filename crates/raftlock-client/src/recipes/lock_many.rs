//! Several names at once, all or none, and running code under them.
//!
//! [`Session::lock_many`] sends one acquire naming every lock: the server
//! grants them in one log entry (one fencing token) or not at all, and a
//! waiting request is queued on every name and granted when it is first in
//! line on all of them. There is no lock ordering to get wrong and no
//! half-held state to clean up after a failure.
//!
//! [`with_locks`] is the "with lock" pattern of the scripts raftlock
//! replaces: take the locks, run the work, release, even when the work
//! fails; and if the session is lost while the work runs, stop it (its
//! future is dropped) and say so, since another holder may already be in.

use std::future::Future;
use std::time::Duration;

use crate::{Error, MultiLockGuard, Session};

/// Acquire every name in `names` (duplicates are dropped) exclusively,
/// waiting up to `wait`; nothing is held unless everything is.
pub async fn lock_many<I, S>(
    session: &Session,
    names: I,
    wait: Duration,
) -> Result<MultiLockGuard, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
    names.sort();
    names.dedup();
    session.lock_many(names).wait(wait).acquire().await
}

/// Run `work(token)` while holding every name in `names`, then release
/// them. `Error::LeaseLost` if the session is lost before `work` finishes
/// (then `work` is cancelled); acquire errors as from [`lock_many`].
///
/// ```
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (node, addr, _dir) = doc_node().await?;
/// use std::time::Duration;
/// use raftlock_client::recipes::{Fenced, with_locks};
/// use raftlock_client::{Client, ClientOptions, SessionOptions};
///
/// let client = Client::connect([addr], ClientOptions::default()).await?;
/// let session = client.session(SessionOptions::new(Duration::from_secs(10))).await?;
/// let ledger = Fenced::new(vec![100_i64, 0]);
/// let store = &ledger;
///
/// // Move 30 from account 0 to account 1 under both accounts' locks.
/// let wrote_with = with_locks(&session, ["accounts/1", "accounts/0"], Duration::from_secs(5), |token| async move {
///     store.write(token, |l| {
///         l[0] -= 30;
///         l[1] += 30;
///     })?;
///     Ok::<u64, raftlock_client::recipes::StaleToken>(token)
/// })
/// .await??;
/// assert_eq!(ledger.highest(), wrote_with);
/// assert_eq!(ledger.into_inner(), [70, 30]);
/// // Released afterwards.
/// assert!(client.inspect("accounts/0").await?.is_none());
/// # node.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn with_locks<I, S, F, Fut, T>(
    session: &Session,
    names: I,
    wait: Duration,
    work: F,
) -> Result<T, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = T>,
{
    let guard = lock_many(session, names, wait).await?;
    let result = tokio::select! {
        out = work(guard.token()) => Ok(out),
        end = guard.lost() => Err(Error::LeaseLost {
            lease_id: session.lease_id(),
            reason: raftlock_proto::errors::ErrorReason::LeaseLost,
            message: format!("the session ended ({end:?}) while the work ran; it was cancelled"),
        }),
    };
    match result {
        Ok(out) => {
            guard.release().await?;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}
