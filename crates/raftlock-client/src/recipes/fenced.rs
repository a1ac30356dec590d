//! The resource side of fencing: a value that refuses stale tokens.
//!
//! A lock alone cannot protect a resource from a holder that paused (GC,
//! swap, a stopped VM) past its lease: by the time it writes, the cluster
//! may have granted the lock to someone else. Fencing closes that gap at the
//! resource: every access carries the holder's token, and the resource
//! refuses any token lower than the highest it has seen. raftlock's tokens
//! only grow, so the newer holder always wins. Reads are fenced too: a
//! paused holder must not act on what it reads either.
//!
//! [`Fenced`] is that check in memory, to show the rule and to test with;
//! a real store keeps the highest token next to the data and checks it in
//! the same transaction as the write (`UPDATE ... WHERE fence <= $token`).
//!
//! With shared holds (readers of a [`crate::recipes::RwLock`]) every reader
//! has its own token, so an older reader is refused once a newer one has
//! read; it acquires again and retries.

use std::sync::{Mutex, PoisonError};

/// A token lower than the highest the resource has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stale fencing token {presented}: the resource has already seen token {highest}")]
pub struct StaleToken {
    /// The token that was refused.
    pub presented: u64,
    /// The highest token seen so far.
    pub highest: u64,
}

/// A value every access to which must present a fencing token at least as
/// high as the highest seen; a higher one raises the bar for everyone.
///
/// ```
/// use raftlock_client::recipes::{Fenced, StaleToken};
///
/// let account = Fenced::new(100_u64);
/// account.write(7, |v| *v += 1).unwrap();
/// assert_eq!(account.read(9, |v| *v), Ok(101)); // token 9 is now the bar
/// assert_eq!(
///     account.write(7, |v| *v = 0),
///     Err(StaleToken { presented: 7, highest: 9 })
/// );
/// assert_eq!(account.read(8, |v| *v), Err(StaleToken { presented: 8, highest: 9 }));
/// ```
#[derive(Debug, Default)]
pub struct Fenced<T> {
    inner: Mutex<(u64, T)>,
}

impl<T> Fenced<T> {
    /// A value no token has touched yet.
    pub fn new(value: T) -> Self {
        Fenced {
            inner: Mutex::new((0, value)),
        }
    }

    /// Read with `token`: refused if a higher token was seen.
    pub fn read<R>(&self, token: u64, f: impl FnOnce(&T) -> R) -> Result<R, StaleToken> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Self::admit(&mut g.0, token)?;
        Ok(f(&g.1))
    }

    /// Write with `token`: refused if a higher token was seen.
    pub fn write<R>(&self, token: u64, f: impl FnOnce(&mut T) -> R) -> Result<R, StaleToken> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Self::admit(&mut g.0, token)?;
        Ok(f(&mut g.1))
    }

    /// The highest token seen (0 before any access).
    pub fn highest(&self) -> u64 {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    pub fn into_inner(self) -> T {
        self.inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }

    fn admit(highest: &mut u64, token: u64) -> Result<(), StaleToken> {
        if token < *highest {
            return Err(StaleToken {
                presented: token,
                highest: *highest,
            });
        }
        *highest = token;
        Ok(())
    }
}
