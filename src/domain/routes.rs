//! One function per route. Each reads like the protocol's description of it.

use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use tracing::Instrument;
use tracing::field::Empty;

use super::fanout::{DEADLINE, Ended, Gone, Pacer, ShardReport, Sweep, Swept, paginate, until};
use super::summary::{
    CleanupReport, Deliveries, InlineBroadcast, ShardDelivery, ShardedBroadcast, Summary,
};
use super::{COUNTING_TARGET, Chat, Deadline, RouteError};
use crate::ports::{
    ApiError, BusEvent, ConnectionApi, ConnectionRecord, ConnectionStore, EventBus, Outcome,
    QueueError, Segment, ShardJob, ShardQueue, rfc3339,
};
use crate::protocol::{
    BroadcastRequest, ChatRequest, ConnectionEntry, ConnectionsPacker, EVENT_SOURCE, ErrorCode,
    MAX_FRAME_BYTES, ProtocolError, Said, ServerMessage, WELCOME_DETAIL_TYPE, WelcomeDetail,
    default_route_error, validate_name, welcome_message,
};

/// Why `$connect` refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The client asked for something invalid (a bad `name`): a 4xx.
    #[error("refused: {0}")]
    Refused(ProtocolError),
    /// The infrastructure failed: a 5xx; nothing is left stored.
    #[error(transparent)]
    Failed(#[from] RouteError),
}

enum Checked {
    Live,
    Expired,
    Gone,
    Failed,
}

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus> Chat<S, A, B> {
    /// `$connect`: validate the display name, publish the welcome event, store the connection.
    /// `connected_at` is API Gateway's; the clock's time is used when the event lacks it.
    ///
    /// The record is written last on purpose. API Gateway establishes the connection only when
    /// `$connect` returns, and until then `@connections` answers 410 for it: a broadcast that
    /// finds the record in that window prunes it, and the newcomer would never hear from anyone.
    /// Writing it after PutEvents shrinks that window to the put itself. The welcome needs no
    /// record, and if the put fails the client is refused and its welcome finds it gone.
    pub async fn connect(
        &self,
        connection_id: &str,
        name: Option<&str>,
        connected_at: Option<DateTime<Utc>>,
    ) -> Result<ConnectionRecord, ConnectError> {
        let name = validate_name(name).map_err(ConnectError::Refused)?;
        let connected_at = connected_at.unwrap_or_else(|| self.clock.now());
        let record = ConnectionRecord::new(connection_id.to_owned(), name, connected_at);
        let detail = WelcomeDetail {
            connection_id: connection_id.to_owned(),
            message: welcome_message(connection_id),
        };
        let event = BusEvent {
            source: EVENT_SOURCE.to_owned(),
            detail_type: WELCOME_DETAIL_TYPE.to_owned(),
            detail: serde_json::to_string(&detail).expect("the welcome detail always serializes"),
        };
        // Refuse rather than accept a connection that will never be welcomed: the client can
        // retry, and nothing has been stored yet.
        self.bus.publish(event).await.map_err(RouteError::from)?;
        self.store
            .put(record.clone())
            .await
            .map_err(RouteError::from)?;
        tracing::info!(connection_id, name = record.name.as_deref(), "connected");
        Ok(record)
    }

    /// `$disconnect`: forget the connection.
    pub async fn disconnect(&self, connection_id: &str) -> Result<(), RouteError> {
        self.store.delete(connection_id).await?;
        tracing::info!(connection_id, "disconnected");
        Ok(())
    }

    /// `$default`: the frame named no route; tell the client why.
    pub async fn default(
        &self,
        sender: &str,
        frame: &[u8],
        binary: bool,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        self.reply(
            sender,
            default_route_error(frame, binary).to_frame(),
            deadline,
        )
        .await
    }

    /// `broadcast`: deliver the message to every live connection, the sender included. The
    /// summary is always logged; if some live connection may have missed the message, the
    /// sender is told `delivery_incomplete` with the counts.
    ///
    /// With a shard queue, the first Scan page decides who delivers: if it holds every
    /// connection, this function does; if the table goes on, the broadcast is split into scan
    /// segments, one job each, and workers deliver them ([`Chat::shard`]).
    pub async fn broadcast(
        &self,
        sender: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let request = match BroadcastRequest::parse(body) {
            Ok(request) => request,
            Err(error) => return self.reply(sender, error.to_frame(), deadline).await,
        };
        let frame = self
            .or_tell_internal(sender, deadline, async {
                let now = self.clock.now();
                let name = self.name_of(sender, now).await?;
                Ok(ServerMessage::Broadcast(Said {
                    from: sender,
                    name: name.as_deref(),
                    message: &request.message,
                    sent_at: &rfc3339(now),
                })
                .to_json())
            })
            .await?;
        let mut first = None;
        if let Some(queue) = &self.shards {
            let now = self.clock.now().timestamp();
            match self.store.scan_recipients(now, Segment::WHOLE, None).await {
                Ok(page) if page.next.is_some() => {
                    return self
                        .shard_out(queue.as_ref(), sender, frame, deadline)
                        .await;
                }
                Ok(page) => first = Some(page),
                // The inline fan-out reads it again, and reports if it fails again.
                Err(error) => tracing::warn!(connection_id = sender, %error, "first page"),
            }
        }
        let Swept {
            summary,
            took,
            error: scan_error,
            ..
        } = self
            .fan_out(Bytes::from(frame), Sweep::whole(first), deadline)
            .await;
        self.report(Summary::Inline(InlineBroadcast {
            sender: sender.to_owned(),
            deliveries: summary,
            took,
            error: scan_error.as_ref().map(ToString::to_string),
        }));
        if !summary.is_incomplete() {
            return Ok(());
        }
        let told = delivery_incomplete(&summary, scan_error.is_some());
        if let Err(error) = self.reply(sender, told, deadline).await {
            tracing::warn!(connection_id = sender, %error, "could not tell the sender");
        }
        scan_error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// A broadcast larger than one Scan page: one job per scan segment, as many segments as the
    /// table's estimated size needs ([`segments_for`]), for the workers. If the jobs cannot be
    /// queued the sender is told `internal` (some segments may have been queued: a retry can
    /// deliver twice to those).
    async fn shard_out(
        &self,
        queue: &dyn ShardQueue,
        sender: &str,
        frame: String,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        self.or_tell_internal(sender, deadline, async {
            let estimate = self.store.count_estimate().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "no table size estimate; sharding by the minimum");
                0
            });
            let segments = segments_for(estimate, &self.settings);
            let broadcast = format!("{:016x}", fastrand::u64(..));
            let frame: std::sync::Arc<str> = frame.into();
            let jobs = (0..segments)
                .map(|index| ShardJob {
                    broadcast: broadcast.clone(),
                    sender: sender.to_owned(),
                    frame: frame.clone(),
                    segment: Segment {
                        index,
                        total: segments,
                    },
                    cursor: None,
                    part: 0,
                })
                .collect();
            queue.enqueue(jobs).await?;
            self.report(Summary::Sharded(ShardedBroadcast {
                sender: sender.to_owned(),
                broadcast,
                segments,
                estimate,
            }));
            Ok(())
        })
        .await
    }

    /// A worker's job: deliver one shard of a broadcast. A job that stops early (its post limit,
    /// the deadline, or a Scan that failed after its retries) hands the rest of its segment on as
    /// the next job, which reads it again from there. A job that delivered nothing past its own
    /// cursor, or whose continuation cannot be queued, fails: the queue retries it from its
    /// cursor (what it delivered may be delivered twice) and sets it aside after its retries
    /// ([`Chat::shard_abandoned`] tells the sender then). If some connection could not be
    /// reached, the sender is told `delivery_incomplete`.
    ///
    /// The report (and the summary line, hence the metrics) counts what this job settled: the
    /// connections it handed on (not attempted, or cut off in flight) are the continuation's.
    pub async fn shard(
        &self,
        job: ShardJob,
        deadline: Deadline,
    ) -> Result<ShardReport, RouteError> {
        let sweep = Sweep {
            segment: job.segment,
            cursor: job.cursor.clone(),
            first: None,
            limit: Some(self.settings.shard_posts.max(1)),
        };
        let data = Bytes::copy_from_slice(job.frame.as_bytes());
        let Swept {
            mut summary,
            cut_off,
            took,
            error,
            rest,
        } = self.fan_out(data, sweep, deadline).await;
        let handed_on = match &rest {
            Some(after) if *after != job.cursor => {
                let handed_on = summary.not_attempted + cut_off;
                summary.failed -= cut_off;
                summary.not_attempted = 0;
                handed_on
            }
            _ => 0,
        };
        self.report(Summary::Shard(ShardDelivery {
            sender: job.sender.clone(),
            broadcast: job.broadcast.clone(),
            segment: job.segment,
            part: job.part,
            deliveries: summary,
            took,
            continued: rest.is_some(),
            handed_on,
            error: error.as_ref().map(ToString::to_string),
        }));
        match (&rest, error) {
            // Nothing finished past the job's own cursor (a Scan that failed at once, or the
            // first post still in flight at the deadline): handing the same job on could loop
            // without end, so fail it and let the queue's retries and dead-letter queue bound it.
            (Some(after), error) if *after == job.cursor => {
                return Err(error.map_or_else(
                    || QueueError("the shard made no progress before its deadline".into()).into(),
                    RouteError::from,
                ));
            }
            (None, Some(error)) => return Err(error.into()),
            (Some(_), Some(error)) => tracing::warn!(
                connection_id = job.sender,
                broadcast = job.broadcast,
                %error,
                "the segment's Scan failed; its continuation reads it again from where delivery stopped"
            ),
            _ => {}
        }
        if let Some(after) = &rest {
            let queue = self
                .shards
                .as_ref()
                .ok_or_else(|| QueueError("no shard queue to continue the segment".into()))?;
            let next = ShardJob {
                cursor: after.clone(),
                part: job.part + 1,
                ..job.clone()
            };
            until(self.cut_off(deadline), queue.enqueue(vec![next]))
                .await
                .map_err(|()| QueueError(DEADLINE.into()))??;
        }
        // The connections handed on are the continuation's: only the others that failed are
        // missed.
        if summary.failed > 0 {
            let missed = Deliveries {
                not_attempted: 0,
                complete: true,
                ..summary
            };
            let told = delivery_incomplete(&missed, false);
            if let Err(error) = self.reply(&job.sender, told, deadline).await {
                tracing::warn!(connection_id = job.sender, %error, "could not tell the sender");
            }
        }
        Ok(ShardReport {
            deliveries: summary,
            continued: rest,
        })
    }

    /// A shard job that failed its last attempt (`attempts`: the queue sets it aside in its
    /// dead-letter queue now): its sender is told `delivery_incomplete`, as the sender of an
    /// inline broadcast that could not be read to its end would be.
    pub async fn shard_abandoned(&self, job: &ShardJob, attempts: u32, deadline: Deadline) {
        let told = ProtocolError::new(
            ErrorCode::DeliveryIncomplete,
            format!(
                "part of the broadcast (segment {} of {}) could not be delivered after {attempts} attempts; send it again to reach everyone (some may get it twice)",
                job.segment.index + 1,
                job.segment.total
            ),
        )
        .to_frame();
        tracing::error!(
            connection_id = job.sender,
            broadcast = job.broadcast,
            segment = job.segment.index,
            part = job.part,
            attempts,
            "shard job abandoned to the dead-letter queue"
        );
        if let Err(error) = self.reply(&job.sender, told, deadline).await {
            tracing::warn!(connection_id = job.sender, %error, "could not tell the sender");
        }
    }

    /// `list`: send the sender every live connection, in as many frames as it takes.
    pub async fn list(&self, sender: &str, deadline: Deadline) -> Result<(), RouteError> {
        let cut_off = self.work_cut_off(deadline);
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now().timestamp();
            let records = paginate(|cursor| self.store.scan_records(Some(now), cursor));
            futures_util::pin_mut!(records);
            let mut packer = ConnectionsPacker::new(MAX_FRAME_BYTES);
            let (mut listed, mut frames) = (0usize, 0usize);
            while let Some(record) = records.try_next().await? {
                let entry = ConnectionEntry {
                    connection_id: record.connection_id,
                    name: record.name,
                    connected_at: rfc3339(record.connected_at.time()),
                };
                listed += 1;
                if let Some(frame) = packer.push(&entry) {
                    frames += 1;
                    let sent = self.post_to(sender, &Bytes::from(frame), cut_off).await?;
                    if sent == Outcome::Gone {
                        return Ok(());
                    }
                }
            }
            if let Some(frame) = packer.finish() {
                frames += 1;
                self.post_to(sender, &Bytes::from(frame), cut_off).await?;
            }
            tracing::info!(connection_id = sender, listed, frames, "list");
            Ok(())
        })
        .await
    }

    /// `chat`: deliver the message to one connection; tell the sender if it is unknown, gone or
    /// still connecting.
    pub async fn chat(
        &self,
        sender: &str,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let request = match ChatRequest::parse(body) {
            Ok(request) => request,
            Err(error) => return self.reply(sender, error.to_frame(), deadline).await,
        };
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now();
            let target = &request.connection;
            let Some(record) = self.store.get(target, now.timestamp()).await? else {
                return self.reply(sender, not_found(target), deadline).await;
            };
            let name = self.name_of(sender, now).await?;
            let frame = ServerMessage::Chat(Said {
                from: sender,
                name: name.as_deref(),
                message: &request.message,
                sent_at: &rfc3339(now),
            })
            .to_json();
            let cut_off = self.work_cut_off(deadline);
            match self.post_to(target, &Bytes::from(frame), cut_off).await? {
                Outcome::Done(()) => {
                    tracing::info!(connection_id = sender, to = %target, "chat delivered");
                    Ok(())
                }
                Outcome::Gone => match self.gone(&record.recipient(), now).await? {
                    Gone::Connecting => {
                        tracing::info!(connection_id = sender, to = %target, "chat target still connecting; kept");
                        self.reply(sender, still_connecting(target), deadline).await
                    }
                    Gone::Pruned | Gone::Changed => {
                        tracing::info!(connection_id = sender, to = %target, "chat target gone; pruned");
                        self.reply(sender, not_found(target), deadline).await
                    }
                },
            }
        })
        .await
    }

    /// `post`: deliver the welcome event to its connection. An early welcome can beat API
    /// Gateway's establishment of the connection and get 410, so 410 is retried within the
    /// welcome budget; `Gone` after that means the client left.
    pub async fn post(
        &self,
        welcome: &WelcomeDetail,
        deadline: Deadline,
    ) -> Result<Outcome<()>, RouteError> {
        let frame = Bytes::from(
            ServerMessage::Welcome {
                connection_id: &welcome.connection_id,
                message: &welcome.message,
            }
            .to_json(),
        );
        let connection_id = welcome.connection_id.as_str();
        let attempts = self.settings.welcome_backoff.run(
            || self.api.post(connection_id, frame.clone()),
            |result| match result {
                Ok(outcome) => *outcome == Outcome::Gone,
                Err(error) => error.is_retryable(),
            },
        );
        let outcome = until(self.cut_off(deadline), attempts)
            .await
            .map_err(|()| ApiError::Unavailable(DEADLINE.into()))??;
        match outcome {
            Outcome::Done(()) => tracing::info!(connection_id, "welcome delivered"),
            Outcome::Gone => tracing::warn!(
                connection_id,
                "welcome not delivered: the connection is gone"
            ),
        }
        Ok(outcome)
    }

    /// `cleanup`: remove records past `expiresAt` and records whose connection is gone, until
    /// the deadline's margin; the next run goes on from the start.
    pub async fn cleanup(&self, deadline: Deadline) -> Result<CleanupReport, RouteError> {
        let now = self.clock.now();
        let began = tokio::time::Instant::now();
        let cut_off = self.work_cut_off(deadline);
        let mut report = CleanupReport::default();
        let pacer = Pacer::new(self.settings.post_rate);
        let checking = self.concurrently(
            paginate(|cursor| self.store.scan_records(None, cursor)),
            self.stop_starting(deadline),
            pacer.as_ref(),
            |record| async move {
                until(cut_off, self.check(&record, now))
                    .await
                    .unwrap_or(Checked::Failed)
            },
            |checked| {
                report.checked += 1;
                match checked {
                    Checked::Live => {}
                    Checked::Expired => report.expired += 1,
                    Checked::Gone => report.gone += 1,
                    Checked::Failed => report.failed += 1,
                }
            },
        );
        // One span for the whole run, with its counts: GetConnection is not exported call by call.
        let span = tracing::info_span!(
            target: COUNTING_TARGET,
            "cleanup",
            checked = Empty,
            expired = Empty,
            gone = Empty,
            failed = Empty,
            complete = Empty,
        );
        let ended = checking.instrument(span.clone()).await;
        report.complete = matches!(ended, Ended::Complete);
        span.record("checked", report.checked);
        span.record("expired", report.expired);
        span.record("gone", report.gone);
        span.record("failed", report.failed);
        span.record("complete", report.complete);
        self.report(Summary::Cleanup {
            report,
            took: began.elapsed(),
        });
        match ended {
            Ended::Failed(error) => Err(error.into()),
            Ended::Complete | Ended::Stopped => Ok(report),
        }
    }

    async fn check(&self, record: &ConnectionRecord, now: DateTime<Utc>) -> Checked {
        let id = record.connection_id.as_str();
        let removed = if !record.is_live_at(now.timestamp()) {
            self.store
                .delete_if_connected_at(id, &record.connected_at)
                .await
                .map(|deleted| {
                    if deleted {
                        Checked::Expired
                    } else {
                        Checked::Live
                    }
                })
        } else {
            match self.api.describe(id).await {
                Ok(Outcome::Done(_)) => return Checked::Live,
                Ok(Outcome::Gone) => {
                    self.gone(&record.recipient(), now)
                        .await
                        .map(|gone| match gone {
                            Gone::Pruned => Checked::Gone,
                            Gone::Connecting | Gone::Changed => Checked::Live,
                        })
                }
                Err(error) => {
                    tracing::warn!(connection_id = id, %error, "cleanup could not check a connection");
                    return Checked::Failed;
                }
            }
        };
        removed.unwrap_or_else(|error| {
            tracing::warn!(connection_id = id, %error, "cleanup could not remove a record");
            Checked::Failed
        })
    }

    async fn name_of(
        &self,
        connection_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, RouteError> {
        let record = self.store.get(connection_id, now.timestamp()).await?;
        Ok(record.and_then(|record| record.name))
    }

    /// Sends the sender a frame. A sender that left meanwhile is not an error.
    async fn reply(
        &self,
        sender: &str,
        frame: String,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let cut_off = self.cut_off(deadline);
        if self.post_to(sender, &Bytes::from(frame), cut_off).await? == Outcome::Gone {
            tracing::debug!(connection_id = sender, "the sender left before the reply");
        }
        Ok(())
    }

    /// Runs a route's work until the deadline's cut-off for it; if the infrastructure fails (or
    /// the cut-off comes first), tells the sender `internal` (the detail stays in the logs) and
    /// returns the error for the invocation to report.
    async fn or_tell_internal<T>(
        &self,
        sender: &str,
        deadline: Deadline,
        work: impl Future<Output = Result<T, RouteError>>,
    ) -> Result<T, RouteError> {
        let work = until(self.work_cut_off(deadline), work);
        let error = match work.await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(error)) => error,
            Err(()) => RouteError::Api(ApiError::Unavailable(DEADLINE.into())),
        };
        tracing::error!(connection_id = sender, %error, "route failed");
        let internal = ProtocolError::new(
            ErrorCode::Internal,
            "something went wrong on our side; please try again",
        );
        if let Err(reply_error) = self.reply(sender, internal.to_frame(), deadline).await {
            tracing::warn!(connection_id = sender, error = %reply_error, "could not tell the sender");
        }
        Err(error)
    }
}

fn still_connecting(connection_id: &str) -> String {
    ProtocolError::new(
        ErrorCode::ConnectionNotFound,
        format!("connection {connection_id} is still connecting: try again in a moment"),
    )
    .to_frame()
}

/// How many segments a sharded broadcast gets for about `estimate` connections: one per
/// `shard_size`, at least `min_segments` and two (it is sharded because it is larger than a
/// page), at most `max_segments`.
pub(crate) fn segments_for(estimate: u64, settings: &super::Settings) -> u32 {
    let size = u64::from(settings.shard_size.max(1));
    let wanted = estimate.div_ceil(size).min(u64::from(u32::MAX)) as u32;
    let most = settings.max_segments.max(2);
    wanted.clamp(settings.min_segments.clamp(2, most), most)
}

/// What the sender of a broadcast is told when some live connection may have missed it.
fn delivery_incomplete(summary: &Deliveries, scan_failed: bool) -> String {
    let mut missed = Vec::new();
    if summary.failed > 0 {
        missed.push(format!("{} could not be reached", summary.failed));
    }
    if summary.not_attempted > 0 {
        missed.push(format!(
            "{} were not attempted before the time limit",
            summary.not_attempted
        ));
    }
    if !summary.complete && scan_failed {
        missed.push("the list of connections could not be read to its end".into());
    } else if !summary.complete {
        missed.push("the time limit came before the rest of the connections were read".into());
    }
    ProtocolError::new(
        ErrorCode::DeliveryIncomplete,
        format!(
            "the broadcast reached {} connections, but {}; send it again to reach everyone (some may get it twice)",
            summary.delivered,
            missed.join(", and ")
        ),
    )
    .to_frame()
}

fn not_found(connection_id: &str) -> String {
    ProtocolError::new(
        ErrorCode::ConnectionNotFound,
        format!("no connection {connection_id}: it may have disconnected; send {{\"action\":\"list\"}} to see who is here"),
    )
    .to_frame()
}
