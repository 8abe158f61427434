//! Fan-out done right: follow every page of a scan, keep a bounded number of `@connections` calls
//! in flight (the next page is fetched while posts of the last one are still running), retry
//! throttling with jittered exponential backoff inside a budget, prune exactly the records that
//! answer 410 and are not newcomers still connecting, never let one connection's failure stop
//! delivery to the others, stop starting posts before the invocation's deadline, and account for
//! every connection: delivered, pruned, connecting, failed or not attempted.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, FuturesUnordered, Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;

use tracing::Instrument;
use tracing::field::Empty;

use super::{CONNECT_WINDOW, Chat, Deadline};
use crate::ports::{
    ApiError, ConnectionApi, ConnectionStore, EventBus, Outcome, Page, Recipient, StoreError,
};

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

/// What a fan-out did: every connection the scan found is in exactly one count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanOut {
    pub delivered: usize,
    /// Answered 410 and were removed from the store.
    pub pruned: usize,
    /// Answered 410 but connected less than [`CONNECT_WINDOW`] ago: still connecting, kept.
    pub connecting: usize,
    /// Failed for another reason (throttled past the budget, a 5xx, cut off by the deadline,
    /// a failed prune).
    pub failed: usize,
    /// Found by the scan but not posted to: the deadline came first.
    pub not_attempted: usize,
    /// Whether the scan was read to its end. If not (the deadline, or a Scan that failed after
    /// its retries), connections beyond the last page read were not counted at all.
    pub complete: bool,
}

impl FanOut {
    /// Whether some live connection may have missed the message.
    pub fn is_incomplete(&self) -> bool {
        self.failed > 0 || self.not_attempted > 0 || !self.complete
    }
}

/// What became of a connection that answered 410.
pub(crate) enum Gone {
    /// A newcomer still connecting: kept.
    Connecting,
    /// Its record was removed.
    Pruned,
    /// Its record changed since it was read (or went): kept.
    Changed,
}

enum Delivery {
    Delivered,
    Pruned,
    Connecting,
    Failed,
}

/// Why [`Chat::concurrently`] stopped taking items.
pub(crate) enum Ended {
    /// The stream was read to its end.
    Complete,
    /// The stop time came first.
    Stopped,
    /// A page could not be read.
    Failed(StoreError),
}

/// Every item of a paginated scan, fetching page after page as the consumer asks for more.
pub(crate) fn paginate<T, F, Fut>(mut fetch: F) -> impl Stream<Item = Result<T, StoreError>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, StoreError>>,
{
    enum Cursor {
        Start,
        At(String),
        Done,
    }
    stream::try_unfold(Cursor::Start, move |cursor| {
        let request = match cursor {
            Cursor::Start => Some(fetch(None)),
            Cursor::At(next) => Some(fetch(Some(next))),
            Cursor::Done => None,
        };
        async move {
            let Some(request) = request else {
                return Ok(None);
            };
            let page = request.await?;
            let cursor = page.next.map_or(Cursor::Done, Cursor::At);
            Ok(Some((stream::iter(page.items.into_iter().map(Ok)), cursor)))
        }
    })
    .try_flatten()
}

/// Whether a record that answered 410 may be a newcomer whose `$connect` has not returned yet.
fn is_newcomer(connected_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(connected_at)
        .to_std()
        .map_or(true, |age| age < CONNECT_WINDOW)
}

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus> Chat<S, A, B> {
    /// Posts `data` to one connection, retrying throttling within the budget, and giving up at
    /// `cut_off` whatever the retries have left.
    pub(crate) async fn post_to(
        &self,
        connection_id: &str,
        data: &Bytes,
        cut_off: Option<Instant>,
    ) -> Result<Outcome<()>, ApiError> {
        let attempts = self.settings.throttle_backoff.run(
            || self.api.post(connection_id, data.clone()),
            |result| result.as_ref().is_err_and(ApiError::is_retryable),
        );
        until(cut_off, attempts)
            .await
            .unwrap_or_else(|()| Err(ApiError::Unavailable(DEADLINE.into())))
    }

    /// The reserve and the fan-out margin for `deadline`: the settings', scaled down for an
    /// invocation given little time (a fifth and a tenth of it at most).
    fn margins(&self, deadline: Deadline) -> (Duration, Duration) {
        let budget = deadline.budget().unwrap_or(Duration::MAX);
        (
            self.settings.deadline_reserve.min(budget / 5),
            self.settings.fanout_margin.min(budget / 10),
        )
    }

    /// When every call of an invocation must be over.
    pub(crate) fn cut_off(&self, deadline: Deadline) -> Option<Instant> {
        let (reserve, _) = self.margins(deadline);
        deadline.minus(reserve)
    }

    /// When a route's own work must be over: half the fan-out margin before the cut-off, which
    /// leaves the sender's reply time to say how it went.
    pub(crate) fn work_cut_off(&self, deadline: Deadline) -> Option<Instant> {
        let (reserve, margin) = self.margins(deadline);
        deadline.minus(reserve + margin / 2)
    }

    /// When a fan-out stops starting posts.
    pub(crate) fn stop_starting(&self, deadline: Deadline) -> Option<Instant> {
        let (reserve, margin) = self.margins(deadline);
        deadline.minus(reserve + margin)
    }

    /// Posts `data` to every live connection in the store, until the deadline's margin. Returns
    /// what happened to each connection, and the Scan's error if one failed after its retries.
    pub(crate) async fn fan_out(
        &self,
        data: Bytes,
        deadline: Deadline,
    ) -> (FanOut, Option<StoreError>) {
        let now = self.clock.now();
        // Posts start until `stop`; those in flight then (prunes included) are cut off halfway
        // to the cut-off, which leaves the rest of the margin to tell the sender.
        let stop = self.stop_starting(deadline);
        let cut_off = self.work_cut_off(deadline);
        let mut summary = FanOut::default();
        let scanned = AtomicUsize::new(0);
        let mut started = 0usize;
        // One span for the whole fan-out, with its counts; the posts are not exported one by one.
        let span = tracing::info_span!(
            "fan_out",
            delivered = Empty,
            pruned = Empty,
            connecting = Empty,
            failed = Empty,
            not_attempted = Empty,
            complete = Empty,
        );
        let recipients = paginate(|cursor| {
            let page = self.store.scan_recipients(now.timestamp(), cursor);
            let scanned = &scanned;
            async move {
                let page = page.await?;
                scanned.fetch_add(page.items.len(), Ordering::Relaxed);
                Ok(page)
            }
        });
        let delivering = self.concurrently(
            recipients,
            stop,
            |recipient| {
                started += 1;
                let data = &data;
                async move {
                    let delivery = self.deliver_or_prune(&recipient, data, now);
                    until(cut_off, delivery).await.unwrap_or_else(|_| {
                        let connection_id = recipient.connection_id.as_str();
                        tracing::warn!(connection_id, "delivery cut off by the deadline");
                        Delivery::Failed
                    })
                }
            },
            |delivery| match delivery {
                Delivery::Delivered => summary.delivered += 1,
                Delivery::Pruned => summary.pruned += 1,
                Delivery::Connecting => summary.connecting += 1,
                Delivery::Failed => summary.failed += 1,
            },
        );
        let ended = delivering.instrument(span.clone()).await;
        summary.not_attempted = scanned.into_inner().saturating_sub(started);
        let error = match ended {
            Ended::Complete => {
                summary.complete = true;
                None
            }
            Ended::Stopped => None,
            Ended::Failed(error) => Some(error),
        };
        span.record("delivered", summary.delivered);
        span.record("pruned", summary.pruned);
        span.record("connecting", summary.connecting);
        span.record("failed", summary.failed);
        span.record("not_attempted", summary.not_attempted);
        span.record("complete", summary.complete);
        (summary, error)
    }

    async fn deliver_or_prune(
        &self,
        recipient: &Recipient,
        data: &Bytes,
        now: DateTime<Utc>,
    ) -> Delivery {
        let connection_id = recipient.connection_id.as_str();
        match self.post_to(connection_id, data, None).await {
            Ok(Outcome::Done(())) => Delivery::Delivered,
            Ok(Outcome::Gone) => match self.gone(recipient, now).await {
                Ok(Gone::Connecting) => Delivery::Connecting,
                Ok(Gone::Pruned | Gone::Changed) => Delivery::Pruned,
                Err(error) => {
                    tracing::warn!(connection_id, %error, "could not prune a gone connection");
                    Delivery::Failed
                }
            },
            Err(error) => {
                tracing::warn!(connection_id, %error, "delivery failed");
                Delivery::Failed
            }
        }
    }

    /// What to do with a connection that answered 410, for every route alike: a newcomer
    /// whose `$connect` has not returned is kept; any other record is removed, unless it
    /// changed since it was read (a conditional delete on `connectedAt`).
    pub(crate) async fn gone(
        &self,
        recipient: &Recipient,
        now: DateTime<Utc>,
    ) -> Result<Gone, StoreError> {
        let connection_id = recipient.connection_id.as_str();
        if is_newcomer(recipient.connected_at, now) {
            tracing::debug!(connection_id, "410 from a newcomer still connecting; kept");
            return Ok(Gone::Connecting);
        }
        let deleted = self
            .store
            .delete_if_connected_at(connection_id, recipient.connected_at)
            .await?;
        Ok(if deleted { Gone::Pruned } else { Gone::Changed })
    }

    /// Runs `work` over the items of a stream with at most `fanout_concurrency` in flight, and
    /// takes no more items once `stop` has come; the work in flight runs to its end either way.
    pub(crate) async fn concurrently<T, R, Fut>(
        &self,
        items: impl Stream<Item = Result<T, StoreError>>,
        stop: Option<Instant>,
        mut work: impl FnMut(T) -> Fut,
        mut tally: impl FnMut(R),
    ) -> Ended
    where
        Fut: Future<Output = R>,
    {
        let limit = self.settings.fanout_concurrency.max(1);
        let mut items = pin!(items);
        let mut in_flight = FuturesUnordered::new();
        let mut ended = None;
        let mut stopping = pin!(async move {
            match stop {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        loop {
            let more = ended.is_none() && in_flight.len() < limit;
            tokio::select! {
                biased;
                Some(result) = in_flight.next(), if !in_flight.is_empty() => tally(result),
                () = &mut stopping, if ended.is_none() => ended = Some(Ended::Stopped),
                item = items.next(), if more => match item {
                    Some(Ok(item)) => in_flight.push(work(item)),
                    Some(Err(error)) => ended = Some(Ended::Failed(error)),
                    None => ended = Some(Ended::Complete),
                },
                else => break,
            }
        }
        ended.unwrap_or(Ended::Complete)
    }
}

/// Why a call that the deadline cut off failed.
pub(crate) const DEADLINE: &str = "cut off: the invocation's deadline is near";

/// Runs `work` until `cut_off` (or to its end, without one); `Err(())` if the cut-off came first.
pub(crate) async fn until<T>(
    cut_off: Option<Instant>,
    work: impl Future<Output = T>,
) -> Result<T, ()> {
    match cut_off {
        None => Ok(work.await),
        Some(at) => tokio::time::timeout_at(at, work).await.map_err(|_| ()),
    }
}
