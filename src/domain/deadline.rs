//! The invocation's deadline and what is cut off before it: every `@connections` call, every
//! retry, every enqueue ends before the function's timeout, with time left to export the spans
//! and to tell the sender how it went.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::Chat;

/// When an invocation must have finished: the Lambda deadline, or none (a test, or an event
/// with no limit). Every `@connections` call of a route is cut off before it, so that no post
/// or retry outlives the function's timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(Option<(Instant, Duration)>);

impl Deadline {
    /// No deadline.
    pub const NONE: Deadline = Deadline(None);

    /// `left` from now.
    pub fn after(left: Duration) -> Self {
        Deadline(Some((Instant::now() + left, left)))
    }

    /// Lambda's deadline: epoch milliseconds (the Runtime API's `Lambda-Runtime-Deadline-Ms`).
    pub fn from_epoch_millis(deadline_ms: u64) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
        Deadline::after(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }

    /// The time the invocation was given, from when the deadline was made.
    fn budget(self) -> Option<Duration> {
        self.0.map(|(_, budget)| budget)
    }

    /// `margin` before the deadline (maybe already past); `None` without a deadline.
    fn minus(self, margin: Duration) -> Option<Instant> {
        let (at, _) = self.0?;
        Some(at.checked_sub(margin).unwrap_or(at))
    }
}

/// Work the deadline's cut-off stopped before it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cut off: the invocation's deadline is near")]
pub struct CutOff;

/// Runs `work` until `cut_off` (or to its end, without one).
pub(crate) async fn until<T>(
    cut_off: Option<Instant>,
    work: impl Future<Output = T>,
) -> Result<T, CutOff> {
    match cut_off {
        None => Ok(work.await),
        Some(at) => tokio::time::timeout_at(at, work).await.map_err(|_| CutOff),
    }
}

impl<S, A, B, R> Chat<S, A, B, R> {
    /// The reserve and the stop margin for `deadline`: the settings', scaled down for an
    /// invocation given little time (a fifth and a tenth of it at most).
    fn margins(&self, deadline: Deadline) -> (Duration, Duration) {
        let budget = deadline.budget().unwrap_or(Duration::MAX);
        (
            self.settings.deadline_reserve.min(budget / 5),
            self.settings.stop_margin.min(budget / 10),
        )
    }

    /// When every call of an invocation must be over.
    pub(crate) fn cut_off(&self, deadline: Deadline) -> Option<Instant> {
        let (reserve, _) = self.margins(deadline);
        deadline.minus(reserve)
    }

    /// When a route's own work must be over: half the stop margin before the cut-off, which
    /// leaves the sender's reply time to say how it went.
    pub(crate) fn work_cut_off(&self, deadline: Deadline) -> Option<Instant> {
        let (reserve, margin) = self.margins(deadline);
        deadline.minus(reserve + margin / 2)
    }

    /// When a delivery stops starting posts.
    pub(crate) fn stop_starting(&self, deadline: Deadline) -> Option<Instant> {
        let (reserve, margin) = self.margins(deadline);
        deadline.minus(reserve + margin)
    }
}
