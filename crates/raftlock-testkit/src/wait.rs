//! Waits with a bound: every wait in a test ends, in success or a panic
//! that says what did not happen.

use std::future::Future;
use std::time::{Duration, Instant};

/// The bound of [`bounded`].
pub const BOUND: Duration = Duration::from_secs(20);

/// Polls `f` until it returns Some, at most `within` (then panics).
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `f`, or a panic if it takes longer than [`BOUND`].
pub async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.expect("bounded wait")
}
