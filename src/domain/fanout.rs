//! Fan-out done right: follow every page of a scan, keep a bounded number of `@connections` calls
//! in flight (the next page is fetched while posts of the last one are still running), retry
//! throttling with jittered exponential backoff inside a budget, prune exactly the ids that answer
//! 410, and never let one connection's failure stop delivery to the others.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};

use tracing::Instrument;
use tracing::field::Empty;

use super::{Chat, RouteError};
use crate::ports::{ApiError, ConnectionApi, ConnectionStore, EventBus, Outcome, Page, StoreError};
use crate::telemetry;

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

/// What a fan-out did, for the summary log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanOut {
    pub delivered: usize,
    /// Answered 410 and were removed from the store.
    pub pruned: usize,
    /// Failed for another reason (throttled past the budget, a 5xx, a failed prune).
    pub failed: usize,
}

enum Delivery {
    Delivered,
    Pruned,
    Failed,
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

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus> Chat<S, A, B> {
    /// Posts `data` to one connection, retrying throttling within the budget.
    pub(crate) async fn post_to(
        &self,
        connection_id: &str,
        data: &Bytes,
    ) -> Result<Outcome<()>, ApiError> {
        self.settings
            .throttle_backoff
            .run(
                || self.api.post(connection_id, data.clone()),
                |result| result.as_ref().is_err_and(ApiError::is_retryable),
            )
            .await
    }

    /// Posts `data` to every live connection in the store.
    pub(crate) async fn fan_out(&self, data: Bytes) -> Result<FanOut, RouteError> {
        let now = self.clock.now().timestamp();
        let mut summary = FanOut::default();
        // One span for the whole fan-out, with its counts; the posts are not traced one by one.
        let span =
            tracing::info_span!("fan_out", delivered = Empty, pruned = Empty, failed = Empty);
        let delivering = self.concurrently(
            paginate(|cursor| self.store.scan_ids(now, cursor)),
            |id| {
                let data = &data;
                async move { self.deliver_or_prune(&id, data).await }
            },
            |delivery| match delivery {
                Delivery::Delivered => summary.delivered += 1,
                Delivery::Pruned => summary.pruned += 1,
                Delivery::Failed => summary.failed += 1,
            },
        );
        let result = telemetry::counted(delivering)
            .instrument(span.clone())
            .await;
        span.record("delivered", summary.delivered);
        span.record("pruned", summary.pruned);
        span.record("failed", summary.failed);
        result?;
        Ok(summary)
    }

    async fn deliver_or_prune(&self, connection_id: &str, data: &Bytes) -> Delivery {
        match self.post_to(connection_id, data).await {
            Ok(Outcome::Done(())) => Delivery::Delivered,
            Ok(Outcome::Gone) => self.prune(connection_id).await,
            Err(error) => {
                tracing::warn!(connection_id, %error, "delivery failed");
                Delivery::Failed
            }
        }
    }

    /// Removes a connection that answered 410.
    async fn prune(&self, connection_id: &str) -> Delivery {
        match self.store.delete(connection_id).await {
            Ok(()) => Delivery::Pruned,
            Err(error) => {
                tracing::warn!(connection_id, %error, "could not prune a gone connection");
                Delivery::Failed
            }
        }
    }

    /// Runs `work` over every item of a stream with at most `fanout_concurrency` in flight.
    pub(crate) async fn concurrently<T, R, Fut>(
        &self,
        items: impl Stream<Item = Result<T, StoreError>>,
        work: impl Fn(T) -> Fut,
        mut tally: impl FnMut(R),
    ) -> Result<(), StoreError>
    where
        Fut: Future<Output = R>,
    {
        let results = items
            .map_ok(|item| {
                let done = work(item);
                async move { Ok(done.await) }
            })
            .try_buffer_unordered(self.settings.fanout_concurrency.max(1));
        futures_util::pin_mut!(results);
        while let Some(result) = results.next().await {
            tally(result?);
        }
        Ok(())
    }
}
