//! Ports: what the domain needs from the world, and nothing about how it is provided.
//!
//! - [`ConnectionStore`]: the connection records (DynamoDB in AWS, memory locally).
//! - [`ConnectionApi`]: API Gateway's management API (`@connections`): post, describe and
//!   delete, what the routes use.
//!   "The connection is gone" (HTTP 410) is an [`Outcome`], not an error: it is an ordinary event
//!   in a chat, and the caller decides what to prune.
//! - [`RoomStore`]: rooms' members, each connection's rooms, rooms' message counters and history.
//! - [`EventBus`]: EventBridge locally or in AWS.
//! - [`ShardQueue`]: where a large broadcast's shard jobs go (SQS in AWS, a queue in memory
//!   locally), for workers to deliver.
//! - [`Metrics`]: where the summary of a broadcast, a shard job or a cleanup goes as metrics.
//! - [`Clock`]: so that timestamps and expiry are testable.
//!
//! The methods return `impl Future + Send` so that adapters write plain `async fn` and the domain
//! stays generic (no boxing, no `async_trait`).

use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::protocol::CONNECTION_TTL_SECONDS;

/// A stored connection: the DynamoDB item, keyed by `connectionId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub connection_id: String,
    /// The signed-in user (the token's `sub`); `None` without sign-in.
    pub user: Option<String>,
    pub name: Option<String>,
    pub connected_at: ConnectedAt,
    /// Epoch seconds; the table's TTL attribute.
    pub expires_at: i64,
}

impl ConnectionRecord {
    pub fn new(connection_id: String, name: Option<String>, connected_at: DateTime<Utc>) -> Self {
        ConnectionRecord {
            connection_id,
            user: None,
            name,
            connected_at: ConnectedAt::new(connected_at),
            expires_at: connected_at.timestamp() + CONNECTION_TTL_SECONDS,
        }
    }

    /// The same record, of a signed-in user.
    pub fn of_user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }

    /// Its id and connection time: what a route that addresses it needs.
    pub fn recipient(&self) -> Recipient {
        Recipient {
            connection_id: self.connection_id.clone(),
            connected_at: self.connected_at.clone(),
        }
    }

    /// Expired records are ignored on read: TTL deletion in DynamoDB can lag by days.
    pub fn is_live_at(&self, now_epoch_seconds: i64) -> bool {
        now_epoch_seconds < self.expires_at
    }
}

/// RFC 3339 with milliseconds and `Z`, the one timestamp format on the wire.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// When a connection connected: the time, and the text the store holds for it.
///
/// A prune is a conditional delete that removes a record only if it is still the one that was
/// read, by comparing `connectedAt` with the text that was read, exactly. Formatting the parsed
/// time again would miss every record written in another RFC 3339 form (`…T07:00:00Z`, as an
/// older writer, a migration or a person may store it): such a record would answer 410 and
/// linger until its TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedAt {
    /// The stored text parsed once; `None`: absent or not RFC 3339.
    parsed: Option<DateTime<Utc>>,
    /// `None`: the record has no `connectedAt`.
    stored: Option<String>,
}

impl ConnectedAt {
    /// A time as this code stores it: RFC 3339 with milliseconds (so the time is the stored
    /// one, to the millisecond).
    pub fn new(time: DateTime<Utc>) -> Self {
        ConnectedAt::stored(Some(rfc3339(time)))
    }

    /// What a store holds.
    pub fn stored(text: Option<String>) -> Self {
        let parsed = text
            .as_deref()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc));
        ConnectedAt {
            parsed,
            stored: text,
        }
    }

    /// The time; text that is not RFC 3339 (or none) counts as long ago: such a record is no
    /// newcomer, and a 410 from it prunes it.
    pub fn time(&self) -> DateTime<Utc> {
        self.parsed.unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The text stored, exactly as it was read; `None` if the record has none.
    pub fn text(&self) -> Option<&str> {
        self.stored.as_deref()
    }

    /// Whether the stored text is a valid RFC 3339 time.
    pub fn is_valid(&self) -> bool {
        self.parsed.is_some()
    }
}

/// A connection a fan-out addresses: its id, and when it connected, so that a newcomer (which
/// `@connections` answers 410 for until its `$connect` returns) is told from a connection that
/// is gone, and a prune removes exactly the record that was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub connection_id: String,
    pub connected_at: ConnectedAt,
}

/// One page of a paginated scan. `next` is the id of the last record the page examined; `None`
/// means the scan is complete. A scan given the id of any record it returned continues right
/// after that record (as DynamoDB's `ExclusiveStartKey` does), so a fan-out can resume after the
/// last connection it finished, not only at page boundaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("connection store: {0}")]
pub struct StoreError(pub String);

/// A part of the table for a parallel scan: segment `index` of `total`, DynamoDB's `Segment` and
/// `TotalSegments`. Every record is in exactly one segment of a given `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub index: u32,
    pub total: u32,
}

impl Segment {
    /// The whole table: a plain scan.
    pub const WHOLE: Segment = Segment { index: 0, total: 1 };
}

/// The connection records. Reads that take `live_at` (epoch seconds) skip records expired at
/// that time; scans are paginated and must be followed to the end by the caller.
pub trait ConnectionStore: Send + Sync + 'static {
    fn put(&self, record: ConnectionRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get(
        &self,
        connection_id: &str,
        live_at: i64,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, StoreError>> + Send;

    /// Deleting a record that does not exist succeeds.
    fn delete(&self, connection_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the record only if it is still the one that was read, its `connectedAt` stored
    /// exactly as `connected_at` says (a conditional delete): a record written since, by a
    /// reconnect under the same id, is kept. Returns whether a record was deleted.
    fn delete_if_connected_at(
        &self,
        connection_id: &str,
        connected_at: &ConnectedAt,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Live connections' ids and connection times in `segment`: all a fan-out needs.
    fn scan_recipients(
        &self,
        live_at: i64,
        segment: Segment,
        cursor: Option<String>,
    ) -> impl Future<Output = Result<Page<Recipient>, StoreError>> + Send;

    /// About how many records there are, to size a sharded fan-out (DynamoDB's `ItemCount`,
    /// which it updates about every six hours).
    fn count_estimate(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The live connections of a signed-in user (a Query of the table's user index in
    /// DynamoDB: never a Scan).
    fn connections_of(
        &self,
        user: &str,
        live_at: i64,
    ) -> impl Future<Output = Result<Vec<Recipient>, StoreError>> + Send;

    /// Whole records; with `live_at: None`, expired ones too (cleanup needs them).
    fn scan_records(
        &self,
        live_at: Option<i64>,
        cursor: Option<String>,
    ) -> impl Future<Output = Result<Page<ConnectionRecord>, StoreError>> + Send;
}

/// Partitions a room's membership is spread over: a room's members are read (and written) under
/// `MEMBERSHIP_SHARDS` keys, each member under the one a hash of its connection id picks, so a
/// room of a million never puts one DynamoDB partition past its 3 000 reads or 1 000 writes a
/// second, and a large room's fan-out is one job per shard.
pub const MEMBERSHIP_SHARDS: u32 = 16;

/// The membership shard of `connection_id`: FNV-1a, stable across builds and machines (the
/// shard is part of a stored key).
pub fn membership_shard(connection_id: &str) -> u32 {
    let hash = connection_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % MEMBERSHIP_SHARDS
}

/// A room member: what a room's fan-out and its presence frames need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub connection_id: String,
    pub connected_at: ConnectedAt,
    pub user: Option<String>,
    pub name: Option<String>,
    /// Epoch seconds: the connection's own expiry (a member outlives no connection).
    pub expires_at: i64,
}

impl Member {
    /// Its id and connection time: what a fan-out addresses.
    pub fn recipient(&self) -> Recipient {
        Recipient {
            connection_id: self.connection_id.clone(),
            connected_at: self.connected_at.clone(),
        }
    }
}

/// A room's counters, kept on one item: its latest `seq` (0 if it has no message) and about how
/// many members it has (kept by joins and leaves; expired members count until they are removed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomMeta {
    pub seq: u64,
    pub members: u64,
}

/// What a join did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Joined {
    /// A member now (`new`: it was not one before), with the room's counters after it.
    Member { new: bool, room: RoomMeta },
    /// The connection is in as many rooms as it may be: nothing changed.
    TooManyRooms,
    /// The connection has no record (it ended meanwhile): nothing changed.
    NoConnection,
}

/// A message numbered and kept, with the room's counters as the numbering left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub message: crate::protocol::RoomMessage,
    pub room: RoomMeta,
}

/// A member that left, and the room's counters after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departed {
    pub member: Member,
    pub room: RoomMeta,
}

/// The messages a history read may return: numbered after `after` and before `before`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqRange {
    pub after: Option<u64>,
    pub before: Option<u64>,
}

impl SeqRange {
    /// Older than `before` (all, without it).
    pub fn before(before: Option<u64>) -> Self {
        SeqRange {
            after: None,
            before,
        }
    }

    /// Newer than `after`.
    pub fn after(after: u64) -> Self {
        SeqRange {
            after: Some(after),
            before: None,
        }
    }

    /// The first and last `seq` in it, if any can be.
    pub fn bounds(self) -> Option<(u64, u64)> {
        let first = self.after.map_or(Some(0), |after| after.checked_add(1))?;
        let last = self
            .before
            .map_or(Some(u64::MAX), |before| before.checked_sub(1))?;
        (first <= last).then_some((first, last))
    }
}

/// A page of a room's history: up to the limit asked for, oldest first, and whether older
/// messages remain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<crate::protocol::RoomMessage>,
    pub more: bool,
}

/// Rooms: who is in each (spread over [`MEMBERSHIP_SHARDS`]), each connection's rooms (so leaving
/// them all on disconnect needs no scan), each room's message counter and its history.
pub trait RoomStore: Send + Sync + 'static {
    /// Adds `member` to `room`, and `room` to the connection's rooms, unless it is already in
    /// `max_rooms` others. Joining again changes nothing (`new: false`).
    fn join(
        &self,
        room: &str,
        member: Member,
        max_rooms: usize,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send;

    /// Removes the connection from `room`, and `room` from its rooms: the member it was and the
    /// room's counters after it, or `None` if it was not a member.
    fn leave(
        &self,
        room: &str,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<Departed>, StoreError>> + Send;

    /// Removes a connection that ended from `room`, as [`RoomStore::leave`] does but leaving
    /// its record alone (it is deleted, or gone already).
    fn drop_member(
        &self,
        room: &str,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<Departed>, StoreError>> + Send;

    /// The rooms a connection is in.
    fn rooms_of(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The connection as a live member of `room`, if it is one.
    fn member(
        &self,
        room: &str,
        connection_id: &str,
        live_at: i64,
    ) -> impl Future<Output = Result<Option<Member>, StoreError>> + Send;

    /// One page of `room`'s live members in membership shard `shard`, after `cursor` (a
    /// connection id the previous page ended with).
    fn members(
        &self,
        room: &str,
        shard: u32,
        cursor: Option<String>,
        live_at: i64,
    ) -> impl Future<Output = Result<Page<Member>, StoreError>> + Send;

    /// The room's counters.
    fn meta(&self, room: &str) -> impl Future<Output = Result<RoomMeta, StoreError>> + Send;

    /// Numbers `message` with the room's next `seq` (an atomic counter) and keeps it until
    /// `expires_at` (epoch seconds). A failed write after the count leaves a gap, never a repeat.
    fn append(
        &self,
        message: crate::protocol::RoomMessage,
        expires_at: i64,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// The newest `limit` messages of `room` numbered after `after` and before `before` (without
    /// bounds: all), oldest first, skipping those expired at `live_at`; `more` says whether
    /// older ones remain within the bounds.
    fn history(
        &self,
        room: &str,
        range: SeqRange,
        limit: u32,
        live_at: i64,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;
}

/// The state of the limits' buckets ([`crate::domain::limits`]), shared by every function
/// instance: each bucket is one `tat` under its key.
pub trait LimitStore: Send + Sync + 'static {
    /// Takes `cost` tokens from bucket `key`, shaped `rate`, at `now_us` (microseconds since the
    /// epoch). A refusal takes nothing.
    /// A boxed future, so that the routes hold the store as `Arc<dyn LimitStore>`.
    fn take<'a>(
        &'a self,
        key: &'a str,
        cost: u64,
        rate: crate::domain::limits::Rate,
        now_us: i64,
    ) -> futures_util::future::BoxFuture<'a, Result<crate::domain::limits::Taken, StoreError>>;
}

/// What happened to a connection we addressed: done, or gone (HTTP 410 from `@connections`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(T),
    Gone,
}

/// What `@connections` tells about a live connection (GetConnection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub connected_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 429 / LimitExceededException: worth retrying after a pause.
    #[error("throttled by the management API: {0}")]
    Throttled(String),
    /// 5xx, a timeout or a broken connection: worth retrying too.
    #[error("management API unavailable: {0}")]
    Unavailable(String),
    /// 413: the payload exceeds 128 KB. Retrying cannot help.
    #[error("payload too large for the management API")]
    PayloadTooLarge,
    #[error("management API: {0}")]
    Other(String),
}

impl ApiError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Throttled(_) | ApiError::Unavailable(_))
    }
}

/// API Gateway's management API for the websocket connections.
pub trait ConnectionApi: Send + Sync + 'static {
    fn post(
        &self,
        connection_id: &str,
        data: Bytes,
    ) -> impl Future<Output = Result<Outcome<()>, ApiError>> + Send;

    fn describe(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Outcome<ConnectionInfo>, ApiError>> + Send;

    /// DeleteConnection: API Gateway closes the connection (and runs `$disconnect`).
    fn delete_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Outcome<()>, ApiError>> + Send;

    /// Closes a connection that broke the service's policy, with close code 1008 and `reason`
    /// where the gateway lets the server choose (the local gateway). API Gateway's
    /// DeleteConnection takes no code: it always closes with 1000 (its `$disconnect` says
    /// "Connection Closed Normally"), so the routes tell the client why in a frame first.
    fn close_for_policy(
        &self,
        connection_id: &str,
        _reason: &'static str,
    ) -> impl Future<Output = Result<Outcome<()>, ApiError>> + Send {
        self.delete_connection(connection_id)
    }
}

/// A shared management API is one too (the local gateway holds its registry of sockets and lends
/// it to the routes).
impl<T: ConnectionApi> ConnectionApi for std::sync::Arc<T> {
    fn post(
        &self,
        connection_id: &str,
        data: Bytes,
    ) -> impl Future<Output = Result<Outcome<()>, ApiError>> + Send {
        T::post(self, connection_id, data)
    }

    fn describe(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Outcome<ConnectionInfo>, ApiError>> + Send {
        T::describe(self, connection_id)
    }

    fn delete_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Outcome<()>, ApiError>> + Send {
        T::delete_connection(self, connection_id)
    }

    fn close_for_policy(
        &self,
        connection_id: &str,
        reason: &'static str,
    ) -> impl Future<Output = Result<Outcome<()>, ApiError>> + Send {
        T::close_for_policy(self, connection_id, reason)
    }
}

/// An event for the bus: EventBridge's `source`, `detail-type` and JSON `detail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusEvent {
    pub source: String,
    pub detail_type: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

pub trait EventBus: Send + Sync + 'static {
    fn publish(&self, event: BusEvent) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// A part of a broadcast for a worker: deliver `frame` to every live connection in `segment`,
/// after `cursor`. A worker that cannot finish hands the rest on as the next `part`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardJob {
    /// The broadcast it belongs to (for logs and metrics).
    pub broadcast: String,
    /// The room it was said in: `segment` is then a membership shard of it. `None` (and absent
    /// from the job's JSON): every connection, `segment` a scan segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Who broadcast: told if some connection in the shard may have missed the message.
    pub sender: String,
    /// The frame every recipient gets (shared by a broadcast's jobs).
    pub frame: std::sync::Arc<str>,
    pub segment: Segment,
    /// Resume right after this connection id; `None`: from the segment's start.
    pub cursor: Option<String>,
    /// 0 for a segment's first job, one more for each job that continues it.
    pub part: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("shard queue: {0}")]
pub struct QueueError(pub String);

/// Where a sharded broadcast's jobs go. A queue hands each job to a worker at least once, retries
/// a job whose worker failed, and sets a job aside (a dead-letter queue) after its retries. It is
/// called once a large broadcast and once a continued shard, so it is object-safe (boxed futures)
/// and shared as `Arc<dyn ShardQueue>`.
pub trait ShardQueue: Send + Sync + 'static {
    fn enqueue(
        &self,
        jobs: Vec<ShardJob>,
    ) -> futures_util::future::BoxFuture<'_, Result<(), QueueError>>;
}

/// Where the summaries of broadcasts, shard jobs and cleanups go as metrics: CloudWatch (EMF lines)
/// in Lambda, nowhere locally, a recorder in tests.
pub trait Metrics: Send + Sync + 'static {
    fn record(&self, summary: &crate::domain::Summary);
}

/// No metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _summary: &crate::domain::Summary) {}
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_shards_are_stable_and_spread() {
        // part of stored keys: these values must never change
        assert_eq!(membership_shard(""), 0x811c_9dc5 % MEMBERSHIP_SHARDS);
        assert_eq!(
            membership_shard("L0SM9cOFvHcCIhw="),
            membership_shard("L0SM9cOFvHcCIhw=")
        );
        let mut counts = [0u32; MEMBERSHIP_SHARDS as usize];
        for i in 0..16_000 {
            counts[membership_shard(&format!("conn-{i:011}=")) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_stored_connected_at_keeps_its_text_exactly_and_parses_any_rfc_3339_form() {
        for (text, millis) in [
            ("2026-11-28T07:00:00Z", 1_795_849_200_000),
            ("2026-11-28T08:00:00.5+01:00", 1_795_849_200_500),
            ("2026-11-28T07:00:00.123456Z", 1_795_849_200_123),
        ] {
            let stored = ConnectedAt::stored(Some(text.into()));
            assert_eq!(stored.text(), Some(text));
            assert!(stored.is_valid());
            assert_eq!(stored.time().timestamp_millis(), millis, "{text}");
        }
    }

    #[test]
    fn a_missing_or_broken_connected_at_counts_as_long_ago() {
        for text in [None, Some("yesterday".to_owned())] {
            let stored = ConnectedAt::stored(text.clone());
            assert_eq!(stored.text(), text.as_deref());
            assert!(!stored.is_valid());
            assert_eq!(stored.time(), DateTime::UNIX_EPOCH);
        }
    }

    #[test]
    fn what_this_code_writes_is_milliseconds_and_z() {
        let time = DateTime::from_timestamp_nanos(1_795_849_200_123_456_789);
        let written = ConnectedAt::new(time);
        assert_eq!(written.text(), Some("2026-11-28T07:00:00.123Z"));
        assert_eq!(written.time().timestamp_millis(), time.timestamp_millis());
    }
}
