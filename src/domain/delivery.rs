//! Delivery done right: follow every page of a scan, keep a bounded number of `@connections` calls
//! in flight (the next page is fetched while posts of the last one are still running), retry
//! throttling within a budget ([`super::retry`]), prune exactly the records that answer 410 and
//! are not newcomers still connecting, never let one connection's failure stop delivery to the
//! others, stop starting posts before the invocation's deadline, and account for every
//! connection: delivered, pruned, connecting, failed or not attempted.
//!
//! The same delivery serves a whole broadcast inline and one shard of a sharded broadcast: a scan
//! segment from a cursor, at most so many posts, paced to a rate, and, when it stops before the
//! segment's end, the cursor after which everything still has to be delivered (the last
//! connection before which every post has finished: at most the posts in flight then are
//! delivered twice).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryFutureExt;
use futures_util::future::Either;
use futures_util::stream::{self, BoxStream, FuturesUnordered, Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;

use tracing::Instrument;
use tracing::field::Empty;

use super::deadline::{CutOff, until};
use super::retry::{Pacer, wait_for};
use super::{CONNECT_WINDOW, COUNTING_TARGET, Chat, Deadline, Deliveries, RouteError};
use crate::ports::{
    ApiError, ConnectedAt, ConnectionApi, ConnectionStore, EventBus, Outcome, Page, Recipient,
    RoomStore, Segment, StoreError,
};

/// What became of a connection that answered 410.
pub(crate) enum Gone {
    /// A newcomer still connecting: kept.
    Connecting,
    /// Its record was removed.
    Pruned,
    /// Its record changed since it was read (or went): kept.
    Changed,
}

/// Which connections a delivery addresses and how many posts it may start.
pub(crate) struct Sweep {
    /// A room's members (`segment` is then [`Segment::WHOLE`], every membership shard, or one
    /// membership shard of [`MEMBERSHIP_SHARDS`]); `None`: every connection (a scan segment).
    pub room: Option<String>,
    pub segment: Segment,
    /// Start right after this connection id.
    pub cursor: Option<String>,
    /// A page already read from that point (the broadcast's first page), not read again.
    pub first: Option<Page<Recipient>>,
    /// Stop starting posts after this many.
    pub limit: Option<usize>,
}

impl Sweep {
    pub(crate) fn whole(first: Option<Page<Recipient>>) -> Sweep {
        Sweep {
            room: None,
            segment: Segment::WHOLE,
            cursor: None,
            first,
            limit: None,
        }
    }
}

/// What is left of a segment when a delivery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Nothing: the delivery read its segment to the end.
    Nothing,
    /// Every connection after `cursor` (`None`: the segment's start) still needs the message.
    After { cursor: Option<String> },
}

/// A delivery's outcome: its counts, the Scan's error if one failed after its retries, and what
/// is left of the segment.
pub(crate) struct Swept {
    pub summary: Deliveries,
    /// Of `summary.failed`, the posts the deadline cut off (a continuation tries them again).
    pub cut_off: usize,
    /// How long the delivery took.
    pub took: Duration,
    pub error: Option<StoreError>,
    pub rest: Rest,
}

/// The posts started, in scan order, until every post before them has finished: the last
/// connection of the finished prefix is where a delivery resumes.
struct Finished {
    /// Started posts from the first unfinished one on: (connection id, finished).
    window: VecDeque<(String, bool)>,
    /// The sequence number of the window's first post.
    base: usize,
    /// The last connection before which every post has finished.
    last: Option<String>,
}

impl Finished {
    fn new(cursor: Option<String>) -> Self {
        Finished {
            window: VecDeque::new(),
            base: 0,
            last: cursor,
        }
    }

    /// Records that the post for `connection_id` started; returns its sequence number.
    fn start(&mut self, connection_id: &str) -> usize {
        self.window.push_back((connection_id.to_owned(), false));
        self.base + self.window.len() - 1
    }

    /// Records that a post ended; `done` false if it must be tried again (cut off).
    fn finish(&mut self, sequence: usize, done: bool) {
        if let Some(entry) = self.window.get_mut(sequence - self.base) {
            entry.1 = done;
        }
        while self.window.front().is_some_and(|(_, done)| *done) {
            let (id, _) = self.window.pop_front().expect("checked");
            self.base += 1;
            self.last = Some(id);
        }
    }
}

enum Delivery {
    Delivered,
    Pruned,
    Connecting,
    Failed,
    /// Still in flight when the deadline's cut-off came: a failure, which a continuation of the
    /// segment tries again.
    CutOff,
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

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus, R: RoomStore> Chat<S, A, B, R> {
    /// Posts `data` to one connection, retrying throttling within the budget, and giving up at
    /// `cut_off` whatever the retries have left.
    pub(crate) async fn post_to(
        &self,
        connection_id: &str,
        data: &Bytes,
        cut_off: Option<Instant>,
    ) -> Result<Outcome<()>, RouteError> {
        let throttled = AtomicUsize::new(0);
        let posted = self.post_counting(connection_id, data, &throttled, None);
        Ok(until(cut_off, posted).await??)
    }

    /// Posts `data`, retrying throttling within the budget and counting the 429 answers in
    /// `throttled`; with a `pacer`, each retry waits for its turn too (the first attempt had its
    /// own).
    async fn post_counting(
        &self,
        connection_id: &str,
        data: &Bytes,
        throttled: &AtomicUsize,
        pacer: Option<&Pacer>,
    ) -> Result<Outcome<()>, ApiError> {
        let mut first = true;
        self.settings
            .throttle_backoff
            .run(
                || {
                    let turn = if std::mem::take(&mut first) {
                        None
                    } else {
                        pacer.map(Pacer::take)
                    };
                    async move {
                        wait_for(turn).await;
                        self.api.post(connection_id, data.clone()).await
                    }
                },
                |result| {
                    if matches!(result, Err(ApiError::Throttled(_))) {
                        throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    result.as_ref().is_err_and(ApiError::is_retryable)
                },
            )
            .await
    }

    /// Posts `data` to every live connection `sweep` addresses, until the deadline's margin or
    /// its limit. Returns what happened to each connection, the Scan's error if one failed after
    /// its retries, and what is left of the segment if it stopped early.
    pub(crate) async fn deliver(&self, data: Bytes, mut sweep: Sweep, deadline: Deadline) -> Swept {
        let now = self.clock.now();
        let began = Instant::now();
        // Posts start until `stop`; those in flight then (prunes included) are cut off halfway
        // to the cut-off, which leaves the rest of the margin to tell the sender.
        let stop = self.stop_starting(deadline);
        let cut_off = self.work_cut_off(deadline);
        let mut summary = Deliveries::default();
        let scanned = AtomicUsize::new(0);
        let throttled = AtomicUsize::new(0);
        let mut cut_offs = 0usize;
        // A mutex only to be Send: the posts' tasks run on this one task, never at once.
        let finished = std::sync::Mutex::new(Finished::new(sweep.cursor.clone()));
        // One span for the whole delivery, with its counts; the posts are not exported one by one.
        let span = tracing::info_span!(
            target: COUNTING_TARGET,
            "fan_out",
            segment = sweep.segment.index,
            segments = sweep.segment.total,
            delivered = Empty,
            pruned = Empty,
            connecting = Empty,
            failed = Empty,
            not_attempted = Empty,
            complete = Empty,
        );
        let first = sweep.first.take();
        let recipients = self.recipients(&sweep, first, now.timestamp(), &scanned);
        let room = sweep.room.as_deref();
        let recipients = recipients.take(sweep.limit.unwrap_or(usize::MAX));
        let pacer = Pacer::new(self.settings.post_rate);
        let pacer = pacer.as_ref();
        let delivering = self.concurrently(
            recipients,
            stop,
            pacer,
            |recipient: Recipient| {
                let sequence = finished.lock().unwrap().start(&recipient.connection_id);
                let (data, throttled) = (&data, &throttled);
                async move {
                    let delivery =
                        self.deliver_or_prune(&recipient, room, data, now, throttled, pacer);
                    let delivery = until(cut_off, delivery).await.unwrap_or_else(|CutOff| {
                        let connection_id = recipient.connection_id.as_str();
                        tracing::warn!(connection_id, "delivery cut off by the deadline");
                        Delivery::CutOff
                    });
                    (sequence, delivery)
                }
            },
            |(sequence, delivery)| {
                // A post cut off is not finished: the segment resumes before it.
                let done = !matches!(delivery, Delivery::CutOff);
                finished.lock().unwrap().finish(sequence, done);
                match delivery {
                    Delivery::Delivered => summary.delivered += 1,
                    Delivery::Pruned => summary.pruned += 1,
                    Delivery::Connecting => summary.connecting += 1,
                    Delivery::Failed => summary.failed += 1,
                    Delivery::CutOff => {
                        summary.failed += 1;
                        cut_offs += 1;
                    }
                }
            },
        );
        let ended = delivering.instrument(span.clone()).await;
        let finished = finished.into_inner().unwrap();
        let started = finished.base + finished.window.len();
        summary.not_attempted = scanned.into_inner().saturating_sub(started);
        summary.throttled = throttled.into_inner();
        let limited = sweep.limit.is_some_and(|limit| started >= limit);
        let after = Rest::After {
            cursor: finished.last,
        };
        let (error, rest) = match ended {
            // The stream ends at the limit too: the segment may go on.
            Ended::Complete if !limited => {
                summary.complete = true;
                (None, Rest::Nothing)
            }
            Ended::Complete | Ended::Stopped => (None, after),
            Ended::Failed(error) => (Some(error), after),
        };
        span.record("delivered", summary.delivered);
        span.record("pruned", summary.pruned);
        span.record("connecting", summary.connecting);
        span.record("failed", summary.failed);
        span.record("not_attempted", summary.not_attempted);
        span.record("complete", summary.complete);
        Swept {
            summary,
            cut_off: cut_offs,
            took: began.elapsed(),
            error,
            rest,
        }
    }

    /// The connections `sweep` addresses, page after page (each page's size added to
    /// `scanned`): a scan segment of the connections table, one membership shard of a room, or a
    /// whole room (its shards read at once: the order does not matter to a delivery that is not
    /// continued).
    fn recipients<'a>(
        &'a self,
        sweep: &Sweep,
        first: Option<Page<Recipient>>,
        live_at: i64,
        scanned: &'a AtomicUsize,
    ) -> BoxStream<'a, Result<Recipient, StoreError>> {
        let count = move |page: Page<Recipient>| {
            scanned.fetch_add(page.items.len(), Ordering::Relaxed);
            page
        };
        let resume = sweep.cursor.clone();
        let Some(room) = sweep.room.clone() else {
            let segment = sweep.segment;
            let mut first = first;
            return paginate(move |cursor| {
                let read = match first.take() {
                    Some(page) => Either::Left(std::future::ready(Ok(page))),
                    None => Either::Right(self.store.scan_recipients(
                        live_at,
                        segment,
                        cursor.or_else(|| resume.clone()),
                    )),
                };
                read.map_ok(count)
            })
            .boxed();
        };
        let members = if sweep.segment == Segment::WHOLE {
            self.room_members(&room, live_at)
        } else {
            self.membership_shard(room, sweep.segment.index, resume, live_at)
        };
        members
            .map_ok(move |member| {
                scanned.fetch_add(1, Ordering::Relaxed);
                member.recipient()
            })
            .boxed()
    }

    async fn deliver_or_prune(
        &self,
        recipient: &Recipient,
        room: Option<&str>,
        data: &Bytes,
        now: DateTime<Utc>,
        throttled: &AtomicUsize,
        pacer: Option<&Pacer>,
    ) -> Delivery {
        let connection_id = recipient.connection_id.as_str();
        match self
            .post_counting(connection_id, data, throttled, pacer)
            .await
        {
            Ok(Outcome::Done(())) => Delivery::Delivered,
            Ok(Outcome::Gone) => match self.gone(recipient, now).await {
                Ok(Gone::Connecting) => Delivery::Connecting,
                Ok(Gone::Pruned) => Delivery::Pruned,
                Ok(Gone::Changed) => {
                    // no record to prune (or another's): the membership that answered 410 goes
                    if let Some(room) = room {
                        self.leave_rooms(connection_id, &[room.to_owned()], now, None)
                            .await;
                    }
                    Delivery::Pruned
                }
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
    /// changed since it was read (a conditional delete on `connectedAt`), and leaves its rooms.
    pub(crate) async fn gone(
        &self,
        recipient: &Recipient,
        now: DateTime<Utc>,
    ) -> Result<Gone, StoreError> {
        let connection_id = recipient.connection_id.as_str();
        if is_newcomer(recipient.connected_at.time(), now) {
            tracing::debug!(connection_id, "410 from a newcomer still connecting; kept");
            return Ok(Gone::Connecting);
        }
        let pruned = self
            .prune(connection_id, &recipient.connected_at, now)
            .await?;
        Ok(if pruned { Gone::Pruned } else { Gone::Changed })
    }

    /// Removes a connection's record if it is still the one read (its `connectedAt`), and then
    /// its memberships, with presence frames. The rooms are read first: the record lists them.
    /// Whether the record was removed.
    pub(crate) async fn prune(
        &self,
        connection_id: &str,
        connected_at: &ConnectedAt,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let rooms = self.rooms.rooms_of(connection_id).await?;
        let deleted = self
            .store
            .delete_if_connected_at(connection_id, connected_at)
            .await?;
        if deleted {
            self.leave_rooms(connection_id, &rooms, now, None).await;
        }
        Ok(deleted)
    }

    /// Runs `work` over the items of a stream with at most `posts_in_flight` in flight, and
    /// takes no more items once `stop` has come; the work in flight runs to its end either way.
    /// With a `pacer`, each item waits for its turn (shared with whatever else takes turns from
    /// it: the retries of throttled posts).
    pub(crate) async fn concurrently<T, O, Fut>(
        &self,
        items: impl Stream<Item = Result<T, StoreError>>,
        stop: Option<Instant>,
        pacer: Option<&Pacer>,
        mut work: impl FnMut(T) -> Fut,
        mut tally: impl FnMut(O),
    ) -> Ended
    where
        Fut: Future<Output = O>,
    {
        let limit = self.settings.posts_in_flight.max(1);
        let mut items = pin!(items);
        let mut in_flight = FuturesUnordered::new();
        let mut ended = None;
        let mut stopping = pin!(async move {
            match stop {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        let mut paced = pin!(tokio::time::sleep(Duration::ZERO));
        let mut ready = true;
        loop {
            let room = ended.is_none() && in_flight.len() < limit;
            tokio::select! {
                biased;
                Some(result) = in_flight.next(), if !in_flight.is_empty() => tally(result),
                () = &mut stopping, if ended.is_none() => ended = Some(Ended::Stopped),
                () = &mut paced, if room && !ready => ready = true,
                item = items.next(), if room && ready => match item {
                    Some(Ok(item)) => {
                        let turn = pacer.map(Pacer::take);
                        let work = work(item);
                        in_flight.push(async move {
                            wait_for(turn).await;
                            work.await
                        });
                        if let Some(pacer) = pacer {
                            // Take no item before the next free turn: items wait in the stream,
                            // not in flight.
                            let next = pacer.next_free();
                            paced.as_mut().reset(next);
                            ready = next <= Instant::now();
                        }
                    }
                    Some(Err(error)) => ended = Some(Ended::Failed(error)),
                    None => ended = Some(Ended::Complete),
                },
                else => break,
            }
        }
        ended.unwrap_or(Ended::Complete)
    }
}
