//! One function per route. Each reads like the protocol's description of it.

use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::fanout::paginate;
use super::{Chat, RouteError};
use crate::ports::{
    BusEvent, ConnectionApi, ConnectionRecord, ConnectionStore, EventBus, Outcome, rfc3339,
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

/// What a cleanup run found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Records looked at.
    pub checked: usize,
    /// Removed because they were past `expiresAt`.
    pub expired: usize,
    /// Removed because `@connections` said 410.
    pub gone: usize,
    /// Could not be checked or removed this time; the next run tries again.
    pub failed: usize,
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
    ) -> Result<(), RouteError> {
        self.reply(sender, default_route_error(frame, binary).to_frame())
            .await
    }

    /// `broadcast`: deliver the message to every live connection, the sender included.
    pub async fn broadcast(&self, sender: &str, body: &str) -> Result<(), RouteError> {
        let request = match BroadcastRequest::parse(body) {
            Ok(request) => request,
            Err(error) => return self.reply(sender, error.to_frame()).await,
        };
        self.or_tell_internal(sender, async {
            let now = self.clock.now();
            let name = self.name_of(sender, now).await?;
            let frame = ServerMessage::Broadcast(Said {
                from: sender,
                name: name.as_deref(),
                message: &request.message,
                sent_at: &rfc3339(now),
            })
            .to_json();
            let summary = self.fan_out(Bytes::from(frame)).await?;
            tracing::info!(
                connection_id = sender,
                delivered = summary.delivered,
                pruned = summary.pruned,
                failed = summary.failed,
                "broadcast"
            );
            Ok(())
        })
        .await
    }

    /// `list`: send the sender every live connection, in as many frames as it takes.
    pub async fn list(&self, sender: &str) -> Result<(), RouteError> {
        self.or_tell_internal(sender, async {
            let now = self.clock.now().timestamp();
            let records = paginate(|cursor| self.store.scan_records(Some(now), cursor));
            futures_util::pin_mut!(records);
            let mut packer = ConnectionsPacker::new(MAX_FRAME_BYTES);
            let (mut listed, mut frames) = (0usize, 0usize);
            while let Some(record) = records.try_next().await? {
                let entry = ConnectionEntry {
                    connection_id: record.connection_id,
                    name: record.name,
                    connected_at: rfc3339(record.connected_at),
                };
                listed += 1;
                if let Some(frame) = packer.push(&entry) {
                    frames += 1;
                    if self.post_to(sender, &Bytes::from(frame)).await? == Outcome::Gone {
                        return Ok(());
                    }
                }
            }
            if let Some(frame) = packer.finish() {
                frames += 1;
                self.post_to(sender, &Bytes::from(frame)).await?;
            }
            tracing::info!(connection_id = sender, listed, frames, "list");
            Ok(())
        })
        .await
    }

    /// `chat`: deliver the message to one connection; tell the sender if it is unknown or gone.
    pub async fn chat(&self, sender: &str, body: &str) -> Result<(), RouteError> {
        let request = match ChatRequest::parse(body) {
            Ok(request) => request,
            Err(error) => return self.reply(sender, error.to_frame()).await,
        };
        self.or_tell_internal(sender, async {
            let now = self.clock.now();
            let target = &request.connection;
            if self.store.get(target, now.timestamp()).await?.is_none() {
                return self.reply(sender, not_found(target)).await;
            }
            let name = self.name_of(sender, now).await?;
            let frame = ServerMessage::Chat(Said {
                from: sender,
                name: name.as_deref(),
                message: &request.message,
                sent_at: &rfc3339(now),
            })
            .to_json();
            match self.post_to(target, &Bytes::from(frame)).await? {
                Outcome::Done(()) => {
                    tracing::info!(connection_id = sender, to = %target, "chat delivered");
                    Ok(())
                }
                Outcome::Gone => {
                    self.store.delete(target).await?;
                    tracing::info!(connection_id = sender, to = %target, "chat target gone; pruned");
                    self.reply(sender, not_found(target)).await
                }
            }
        })
        .await
    }

    /// `post`: deliver the welcome event to its connection. An early welcome can beat API
    /// Gateway's establishment of the connection and get 410, so 410 is retried within the
    /// welcome budget; `Gone` after that means the client left.
    pub async fn post(&self, welcome: &WelcomeDetail) -> Result<Outcome<()>, RouteError> {
        let frame = Bytes::from(
            ServerMessage::Welcome {
                connection_id: &welcome.connection_id,
                message: &welcome.message,
            }
            .to_json(),
        );
        let connection_id = welcome.connection_id.as_str();
        let outcome = self
            .settings
            .welcome_backoff
            .run(
                || self.api.post(connection_id, frame.clone()),
                |result| match result {
                    Ok(outcome) => *outcome == Outcome::Gone,
                    Err(error) => error.is_retryable(),
                },
            )
            .await?;
        match outcome {
            Outcome::Done(()) => tracing::info!(connection_id, "welcome delivered"),
            Outcome::Gone => tracing::warn!(
                connection_id,
                "welcome not delivered: the connection is gone"
            ),
        }
        Ok(outcome)
    }

    /// `cleanup`: remove records past `expiresAt` and records whose connection is gone.
    pub async fn cleanup(&self) -> Result<CleanupReport, RouteError> {
        let now = self.clock.now().timestamp();
        let mut report = CleanupReport::default();
        let checking = self.concurrently(
            paginate(|cursor| self.store.scan_records(None, cursor)),
            |record| async move { self.check(&record, now).await },
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
        // GetConnection for every record is counted, not traced one call at a time.
        crate::telemetry::counted(checking).await?;
        tracing::info!(
            checked = report.checked,
            expired = report.expired,
            gone = report.gone,
            failed = report.failed,
            "cleanup"
        );
        Ok(report)
    }

    async fn check(&self, record: &ConnectionRecord, now: i64) -> Checked {
        let id = record.connection_id.as_str();
        let verdict = if !record.is_live_at(now) {
            Checked::Expired
        } else {
            match self.api.describe(id).await {
                Ok(Outcome::Done(_)) => return Checked::Live,
                Ok(Outcome::Gone) => Checked::Gone,
                Err(error) => {
                    tracing::warn!(connection_id = id, %error, "cleanup could not check a connection");
                    return Checked::Failed;
                }
            }
        };
        match self.store.delete(id).await {
            Ok(()) => verdict,
            Err(error) => {
                tracing::warn!(connection_id = id, %error, "cleanup could not remove a record");
                Checked::Failed
            }
        }
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
    async fn reply(&self, sender: &str, frame: String) -> Result<(), RouteError> {
        if self.post_to(sender, &Bytes::from(frame)).await? == Outcome::Gone {
            tracing::debug!(connection_id = sender, "the sender left before the reply");
        }
        Ok(())
    }

    /// Runs a route's work; if the infrastructure fails, tells the sender `internal` (the detail
    /// stays in the logs) and returns the error for the invocation to report.
    async fn or_tell_internal(
        &self,
        sender: &str,
        work: impl Future<Output = Result<(), RouteError>>,
    ) -> Result<(), RouteError> {
        let Err(error) = work.await else {
            return Ok(());
        };
        tracing::error!(connection_id = sender, %error, "route failed");
        let internal = ProtocolError::new(
            ErrorCode::Internal,
            "something went wrong on our side; please try again",
        );
        if let Err(reply_error) = self.reply(sender, internal.to_frame()).await {
            tracing::warn!(connection_id = sender, error = %reply_error, "could not tell the sender");
        }
        Err(error)
    }
}

fn not_found(connection_id: &str) -> String {
    ProtocolError::new(
        ErrorCode::ConnectionNotFound,
        format!("no connection {connection_id}: it may have disconnected; send {{\"action\":\"list\"}} to see who is here"),
    )
    .to_frame()
}
