//! One function per route. Each reads like the protocol's description of it. (A sharded
//! broadcast's jobs are in [`super::sharding`].)

use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use tracing::Instrument;
use tracing::field::Empty;

use super::deadline::{CutOff, until};
use super::delivery::{Ended, Gone, Sweep, Swept, paginate};
use super::guard::Admitted;
use super::retry::Pacer;
use super::summary::{CleanupReport, InlineBroadcast, Summary};
use super::{COUNTING_TARGET, Chat, Deadline, RouteError, Sender, text};
use crate::auth::Identity;
use crate::ports::{
    BusEvent, ConnectionApi, ConnectionRecord, ConnectionStore, EventBus, Outcome, RoomStore,
    Segment, StoreError, rfc3339,
};
use crate::protocol::{
    BroadcastRequest, ChatRequest, ChatTarget, ConnectionEntry, ConnectionsPacker, EVENT_SOURCE,
    ListRequest, MAX_FRAME_BYTES, ProtocolError, Said, ServerMessage, WELCOME_DETAIL_TYPE,
    WelcomeDetail, default_route_error, validate_name, welcome_message,
};

/// Why `$connect` refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The client asked for something invalid (a bad `name`): a 4xx.
    #[error("refused: {0}")]
    Refused(ProtocolError),
    /// The user holds as many connections as they may (`too_many_connections`): a 429.
    #[error("refused: {0}")]
    TooMany(ProtocolError),
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

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus, R: RoomStore> Chat<S, A, B, R> {
    /// `$connect`: validate the display name, publish the welcome event, store the connection.
    /// `connected_at` is API Gateway's; the clock's time is used when the event lacks it. With
    /// an `identity` (the authorizer's), the user and name are the token's and `name` (the
    /// client's `?name=`) is ignored.
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
        identity: Option<&Identity>,
        connected_at: Option<DateTime<Utc>>,
    ) -> Result<ConnectionRecord, ConnectError> {
        let (user, name) = match identity {
            Some(identity) => (Some(identity.user.clone()), Some(identity.name.clone())),
            None => (None, validate_name(name).map_err(ConnectError::Refused)?),
        };
        if let (Some(user), Some(max)) = (&user, self.settings.limits.connections_per_user) {
            self.hold_connection(user, connection_id, max).await?;
        }
        let connected_at = connected_at.unwrap_or_else(|| self.clock.now());
        let record =
            ConnectionRecord::new(connection_id.to_owned(), name, connected_at).of_user(user);
        let detail = WelcomeDetail {
            connection_id: connection_id.to_owned(),
            message: welcome_message(connection_id),
            user: record.user.clone(),
            name: record.name.clone(),
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
        tracing::info!(
            connection_id,
            user = record.user.as_deref(),
            name = record.name.as_deref(),
            "connected"
        );
        Ok(record)
    }

    /// `$disconnect`: leave the connection's rooms (telling their other members), then forget
    /// it. The rooms are read first: the record lists them.
    pub async fn disconnect(
        &self,
        connection_id: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let now = self.clock.now();
        match self.rooms.rooms_of(connection_id).await {
            Ok(rooms) => {
                let leaving = self.leave_rooms(connection_id, &rooms, now, Some(deadline));
                if until(self.work_cut_off(deadline), leaving).await.is_err() {
                    tracing::warn!(
                        connection_id,
                        "leaving the rooms was cut off by the deadline"
                    );
                }
            }
            // the memberships expire with the connection; forgetting it matters more
            Err(error) => tracing::warn!(connection_id, %error, "could not read the rooms"),
        }
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
        self.tell(sender, default_route_error(frame, binary), deadline)
            .await
    }

    /// `broadcast`: deliver the message to every live connection, the sender included. The
    /// summary is always logged; if some live connection may have missed the message, the
    /// sender is told `delivery_incomplete` with the counts.
    ///
    /// With a shard queue, the first Scan page decides who delivers: if it holds every
    /// connection, this function does; if the table goes on, the broadcast is split into scan
    /// segments, one job each, and workers deliver them ([`Chat::shard`]).
    pub async fn broadcast<'s>(
        &self,
        sender: impl Into<Sender<'s>>,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let caller = sender.into();
        let sender = caller.connection_id;
        let Some(request) = self
            .parsed(sender, BroadcastRequest::parse(body), deadline)
            .await?
        else {
            return Ok(());
        };
        if let Some(room) = &request.room {
            return self
                .room_broadcast(caller, room, &request.message, deadline)
                .await;
        }
        if !self.settings.limits.everyone_broadcast {
            return self.everyone_off(sender, deadline).await;
        }
        let frame = self
            .or_tell_internal(sender, deadline, async {
                let now = self.clock.now();
                let (user, name) = self.who(caller, now).await?;
                Ok(ServerMessage::Broadcast(Said {
                    from: sender,
                    to: None,
                    to_user: None,
                    user: user.as_deref(),
                    name: name.as_deref(),
                    message: &request.message,
                    sent_at: &rfc3339(now),
                })
                .to_json())
            })
            .await?;
        let mut first = None;
        let mut audience = None;
        if let Some(queue) = &self.shards {
            let now = self.clock.now().timestamp();
            match self.store.scan_recipients(now, Segment::WHOLE, None).await {
                Ok(page) if page.next.is_some() => {
                    // more than a page: the table's estimate, charged before the jobs are queued
                    let estimate = self.audience_estimate().await.max(page.items.len() as u64);
                    if self.afford(sender, estimate, deadline).await? == Admitted::No {
                        return Ok(());
                    }
                    return self
                        .shard_out(queue.as_ref(), sender, frame, None, estimate, deadline)
                        .await;
                }
                Ok(page) => {
                    audience = Some(page.items.len() as u64);
                    first = Some(page);
                }
                // The inline fan-out reads it again, and reports if it fails again.
                Err(error) => tracing::warn!(connection_id = sender, %error, "first page"),
            }
        }
        let audience = match audience {
            Some(audience) => audience,
            None => self.audience_estimate().await,
        };
        if self.afford(sender, audience, deadline).await? == Admitted::No {
            return Ok(());
        }
        self.deliver_inline(sender, None, frame, Sweep::whole(first), deadline)
            .await
    }

    /// About how many connections a broadcast to everyone addresses (the table's estimate; 0,
    /// charging nothing, if it cannot be read).
    async fn audience_estimate(&self) -> u64 {
        if self.settings.limits.deliveries.is_none() && self.shards.is_none() {
            return 0;
        }
        self.store.count_estimate().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "no table size estimate");
            0
        })
    }

    /// Delivers a broadcast (to everyone, or to a `room`) from this function, reports it, and
    /// tells the sender if someone may have missed it.
    pub(super) async fn deliver_inline(
        &self,
        sender: &str,
        room: Option<&str>,
        frame: String,
        sweep: Sweep,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let Swept {
            summary,
            took,
            error: scan_error,
            ..
        } = self.deliver(Bytes::from(frame), sweep, deadline).await;
        self.report(Summary::Inline(InlineBroadcast {
            sender: sender.to_owned(),
            room: room.map(str::to_owned),
            deliveries: summary,
            took,
            error: scan_error.as_ref().map(ToString::to_string),
        }));
        if !summary.is_incomplete() {
            return Ok(());
        }
        let told = text::delivery_incomplete(&summary, scan_error.is_some());
        if let Err(error) = self.reply(sender, told, deadline).await {
            tracing::warn!(connection_id = sender, %error, "could not tell the sender");
        }
        scan_error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// `list`: send the sender every live connection (or, with a room, the room's live members),
    /// in as many frames as it takes.
    pub async fn list<'s>(
        &self,
        sender: impl Into<Sender<'s>>,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = sender.into().connection_id;
        let Some(request) = self
            .parsed(sender, ListRequest::parse(body), deadline)
            .await?
        else {
            return Ok(());
        };
        if let Some(room) = &request.room {
            return self.room_list(sender, room, deadline).await;
        }
        let cut_off = self.work_cut_off(deadline);
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now().timestamp();
            let entries =
                paginate(|cursor| self.store.scan_records(Some(now), cursor)).map_ok(|record| {
                    ConnectionEntry {
                        connection_id: record.connection_id,
                        user: record.user,
                        name: record.name,
                        connected_at: rfc3339(record.connected_at.time()),
                    }
                });
            let packer = ConnectionsPacker::new(MAX_FRAME_BYTES);
            self.send_list(sender, entries, packer, cut_off).await
        })
        .await
    }

    /// Sends the sender `entries`, packed into `connections` frames as they are read.
    pub(super) async fn send_list(
        &self,
        sender: &str,
        entries: impl Stream<Item = Result<ConnectionEntry, StoreError>>,
        mut packer: ConnectionsPacker,
        cut_off: Option<tokio::time::Instant>,
    ) -> Result<(), RouteError> {
        futures_util::pin_mut!(entries);
        let (mut listed, mut frames) = (0usize, 0usize);
        while let Some(entry) = entries.try_next().await? {
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
        tracing::debug!(connection_id = sender, listed, frames, "list");
        Ok(())
    }

    /// `chat`: deliver the message to one connection, or to every live connection of a user;
    /// tell the sender if the target is unknown, gone or still connecting.
    pub async fn chat<'s>(
        &self,
        sender: impl Into<Sender<'s>>,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let caller = sender.into();
        let sender = caller.connection_id;
        let Some(request) = self
            .parsed(sender, ChatRequest::parse(body), deadline)
            .await?
        else {
            return Ok(());
        };
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now();
            match &request.to {
                ChatTarget::Connection(target) => {
                    self.chat_to_connection(caller, target, &request.message, now, deadline)
                        .await
                }
                ChatTarget::User(user) => {
                    self.chat_to_user(caller, user, &request.message, now, deadline)
                        .await
                }
            }
        })
        .await
    }

    async fn chat_to_connection(
        &self,
        caller: Sender<'_>,
        target: &str,
        message: &str,
        now: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = caller.connection_id;
        let Some(record) = self.store.get(target, now.timestamp()).await? else {
            return self.tell(sender, text::not_found(target), deadline).await;
        };
        let frame = self
            .chat_frame(caller, Some(target), None, message, now)
            .await?;
        let cut_off = self.work_cut_off(deadline);
        match self.post_to(target, &frame, cut_off).await? {
            // The sender gets the same frame: its copy says the message was delivered (a chat to
            // oneself is delivered once).
            Outcome::Done(()) if target == sender => Ok(()),
            Outcome::Done(()) => {
                tracing::debug!(connection_id = sender, to = %target, "chat delivered");
                self.reply(sender, frame, deadline).await
            }
            Outcome::Gone => match self.gone(&record.recipient(), now).await? {
                Gone::Connecting => {
                    tracing::debug!(connection_id = sender, to = %target, "chat target still connecting; kept");
                    self.tell(sender, text::still_connecting(target), deadline)
                        .await
                }
                Gone::Pruned | Gone::Changed => {
                    tracing::debug!(connection_id = sender, to = %target, "chat target gone; pruned");
                    self.tell(sender, text::not_found(target), deadline).await
                }
            },
        }
    }

    /// A chat to a person: every live connection of `target` (their tabs, devices) gets it, and
    /// the sender a copy unless it is one of them. The sender's other connections get nothing
    /// unless they are the target's.
    async fn chat_to_user(
        &self,
        caller: Sender<'_>,
        target: &str,
        message: &str,
        now: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = caller.connection_id;
        let recipients = self.store.connections_of(target, now.timestamp()).await?;
        if recipients.is_empty() {
            return self
                .tell(sender, text::user_not_found(target), deadline)
                .await;
        }
        let frame = self
            .chat_frame(caller, None, Some(target), message, now)
            .await?;
        let cut_off = self.work_cut_off(deadline);
        let (mut delivered, mut connecting, mut to_sender) = (0usize, 0usize, false);
        for recipient in &recipients {
            match self
                .post_to(&recipient.connection_id, &frame, cut_off)
                .await?
            {
                Outcome::Done(()) => {
                    delivered += 1;
                    to_sender |= recipient.connection_id == sender;
                }
                Outcome::Gone => {
                    if matches!(self.gone(recipient, now).await?, Gone::Connecting) {
                        connecting += 1;
                    }
                }
            }
        }
        tracing::debug!(
            connection_id = sender,
            to_user = target,
            delivered,
            connecting,
            "chat to a user"
        );
        match (delivered, to_sender) {
            (0, _) if connecting > 0 => {
                self.tell(sender, text::user_still_connecting(target), deadline)
                    .await
            }
            (0, _) => {
                self.tell(sender, text::user_not_found(target), deadline)
                    .await
            }
            (_, true) => Ok(()),
            (_, false) => self.reply(sender, frame, deadline).await,
        }
    }

    /// The `chat` frame `caller` says `message` in, to a connection or to a user.
    async fn chat_frame(
        &self,
        caller: Sender<'_>,
        to: Option<&str>,
        to_user: Option<&str>,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<Bytes, RouteError> {
        let (user, name) = self.who(caller, now).await?;
        Ok(Bytes::from(
            ServerMessage::Chat(Said {
                from: caller.connection_id,
                to,
                to_user,
                user: user.as_deref(),
                name: name.as_deref(),
                message,
                sent_at: &rfc3339(now),
            })
            .to_json(),
        ))
    }

    /// `token_expired`: the sender's token expired before this frame. It is told, then closed
    /// (DeleteConnection; its `$disconnect` removes the record).
    pub async fn expired(&self, sender: &str, deadline: Deadline) -> Result<(), RouteError> {
        self.tell(sender, text::token_expired(), deadline).await?;
        let cut_off = self.cut_off(deadline);
        match until(cut_off, self.api.delete_connection(sender)).await?? {
            Outcome::Done(()) => tracing::info!(connection_id = sender, "closed: token expired"),
            Outcome::Gone => tracing::debug!(connection_id = sender, "token expired; already gone"),
        }
        Ok(())
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
                user: welcome.user.as_deref(),
                name: welcome.name.as_deref(),
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
        let outcome = until(self.cut_off(deadline), attempts).await??;
        match outcome {
            Outcome::Done(()) => tracing::debug!(connection_id, "welcome delivered"),
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
            self.prune(id, &record.connected_at, now)
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

    /// The sender's user and display name: its token's (no store read), else the name stored at
    /// `$connect`.
    async fn who(
        &self,
        caller: Sender<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, Option<String>), RouteError> {
        if let Some(identity) = caller.identity {
            return Ok((Some(identity.user.clone()), Some(identity.name.clone())));
        }
        let record = self
            .store
            .get(caller.connection_id, now.timestamp())
            .await?;
        Ok((None, record.and_then(|record| record.name)))
    }

    /// The request a frame holds, or `None` once the sender has been told what is wrong with it.
    pub(super) async fn parsed<T>(
        &self,
        sender: &str,
        request: Result<T, ProtocolError>,
        deadline: Deadline,
    ) -> Result<Option<T>, RouteError> {
        match request {
            Ok(request) => Ok(Some(request)),
            Err(error) => self.tell(sender, error, deadline).await.map(|()| None),
        }
    }

    /// Tells the sender what it got wrong (one log line at info: the invocation's span names the
    /// route), and sends it the error frame.
    pub(super) async fn tell(
        &self,
        sender: &str,
        error: ProtocolError,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        tracing::info!(
            connection_id = sender,
            code = %error.code,
            "client error: {}",
            error.message
        );
        self.reply(sender, error.to_frame(), deadline).await
    }

    /// Sends the sender a frame. A sender that left meanwhile is not an error.
    pub(super) async fn reply(
        &self,
        sender: &str,
        frame: impl Into<Bytes>,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let cut_off = self.cut_off(deadline);
        if self.post_to(sender, &frame.into(), cut_off).await? == Outcome::Gone {
            tracing::debug!(connection_id = sender, "the sender left before the reply");
        }
        Ok(())
    }

    /// Runs a route's work until the deadline's cut-off for it; if the infrastructure fails (or
    /// the cut-off comes first), tells the sender `internal` (the detail stays in the logs) and
    /// returns the error for the invocation to report.
    pub(super) async fn or_tell_internal<T>(
        &self,
        sender: &str,
        deadline: Deadline,
        work: impl Future<Output = Result<T, RouteError>>,
    ) -> Result<T, RouteError> {
        let work = until(self.work_cut_off(deadline), work);
        let error = match work.await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(error)) => error,
            Err(CutOff) => RouteError::CutOff(CutOff),
        };
        tracing::error!(connection_id = sender, %error, "route failed");
        if let Err(reply_error) = self.reply(sender, text::internal(), deadline).await {
            tracing::warn!(connection_id = sender, error = %reply_error, "could not tell the sender");
        }
        Err(error)
    }
}
