//! How calls are repeated and spread out: a retry budget with jittered exponential backoff, and a
//! pacer that keeps calls within a rate (a share of the account's `@connections` throttle).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A retry budget: `attempts` calls in all, the n-th retry waiting between half and all of
/// `min(base * 2^n, max)` ("equal jitter", so concurrent retries spread out but never hammer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, retry: u32) -> Duration {
        let cap = self.base.saturating_mul(1 << retry.min(20)).min(self.max);
        let half = cap / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }

    /// Calls `attempt` until it returns something `retry_on` rejects or the budget is spent.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        mut attempt: F,
        retry_on: impl Fn(&Result<T, E>) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut retry = 0;
        loop {
            let result = attempt().await;
            if retry + 1 >= self.attempts.max(1) || !retry_on(&result) {
                return result;
            }
            tokio::time::sleep(self.delay(retry)).await;
            retry += 1;
        }
    }
}

/// How far behind its rate a paced delivery may fall and make up for at once.
const CATCH_UP: Duration = Duration::from_millis(20);

/// Turns at a rate: calls paced by one pacer start no more than `rate` a second together, each
/// one interval after the last. The timer ticks in milliseconds, coarser than a fast rate's
/// interval, so a turn that came late is made up at once, up to [`CATCH_UP`] late.
#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    /// `None` without a rate (or a rate of 0): unpaced.
    pub(crate) fn new(rate: Option<u32>) -> Option<Pacer> {
        let rate = rate.filter(|rate| *rate > 0)?;
        Some(Pacer {
            interval: Duration::from_secs(1) / rate,
            next: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// Takes the next turn: when the call may start.
    pub(crate) fn take(&self) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let behind = now.checked_sub(CATCH_UP.max(self.interval)).unwrap_or(now);
        let turn = (*next).max(behind);
        *next = turn + self.interval;
        turn
    }

    /// When the next turn is free.
    pub(crate) fn next_free(&self) -> Instant {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits for `turn`, if it is still to come.
pub(crate) async fn wait_for(turn: Option<Instant>) {
    if let Some(turn) = turn
        && turn > Instant::now()
    {
        tokio::time::sleep_until(turn).await;
    }
}
