//! The domain: what each route does, as plain async functions over the [ports](crate::ports).
//!
//! One method of [`Chat`] per route (`connect`, `disconnect`, `default`, `broadcast`, `list`,
//! `chat`, `post`, `cleanup`), and `shard`, a worker's job of a sharded broadcast. They never see
//! an AWS type or an HTTP status: the [Lambda glue](crate::lambda) translates events in and
//! responses out, and the same code runs in Lambda and in `webchat-local`.
//!
//! By job:
//! - `routes`: the routes, each reading like the protocol's description of it;
//! - `sharding`: a broadcast split into scan segments, one queued job each, and a job's delivery;
//! - `delivery`: posting to every connection a scan segment holds, concurrently, pruning the
//!   gone, and accounting for every connection;
//! - `retry`: the retry budget ([`Backoff`]) and the pacer that keeps posts within a rate;
//! - `deadline`: the invocation's [`Deadline`] and what is cut off before it;
//! - `summary`: what a broadcast, a shard job and a cleanup did, as one value each;
//! - `text`: what the routes tell clients in their own words.
//!
//! Client mistakes are answered to the client as `{"type":"error"}` frames and are not errors here;
//! a [`RouteError`] means the infrastructure failed (the client is told `internal`).

mod deadline;
mod delivery;
mod guard;
pub mod limits;
mod retry;
mod rooms;
mod routes;
mod sharding;
mod summary;
mod text;

use std::sync::Arc;
use std::time::Duration;

pub use deadline::{CutOff, Deadline};
pub use delivery::Rest;
pub use guard::Admitted;
pub use retry::Backoff;
pub use routes::ConnectError;
pub use sharding::{ShardError, ShardReport};
#[cfg(test)]
pub(crate) use summary::example_shard;
pub use summary::{
    CleanupReport, Deliveries, InlineBroadcast, Metric, Refusal, ShardDelivery, ShardedBroadcast,
    Summary, Unit,
};

use crate::ports::{
    ApiError, BusError, Clock, LimitStore, Metrics, QueueError, ShardQueue, StoreError,
};
pub use rooms::CATCH_UP_LIMIT;

/// The `tracing` target of the spans that count the calls made inside them (a delivery, a
/// cleanup) rather than have a span each: the telemetry leaves the per-connection spans inside
/// them out of the export.
pub const COUNTING_TARGET: &str = "webchat::counting";

/// API Gateway's integration timeout, the longest `$connect` can take. Until `$connect`
/// returns, `@connections` answers 410 for the new connection, so a record younger than this
/// that answers 410 is a newcomer still connecting, not a connection that is gone: it is never
/// pruned.
pub const CONNECT_WINDOW: Duration = Duration::from_secs(29);

/// The tunables of the routes. The defaults suit Lambda with a 128-1024 MB function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How many `@connections` calls a delivery keeps in flight (`FANOUT_CONCURRENCY`). A call
    /// is network-bound (tens of ms), so concurrency decides a broadcast's time until signing and
    /// HTTP work saturate the CPU; `cargo bench --all-features --bench fanout` measures the
    /// choice (docs/benchmarks.md).
    pub posts_in_flight: usize,
    /// Retries of a throttled (429) `@connections` call.
    pub throttle_backoff: Backoff,
    /// API Gateway establishes a connection only after `$connect` returns, so the welcome can
    /// arrive first and get 410: `post` retries 410 within this budget before giving up.
    pub welcome_backoff: Backoff,
    /// Kept free at the end of an invocation, for exporting its spans (at most 2 s): every
    /// call is cut off this long before the deadline. At most a fifth of the invocation's time.
    pub deadline_reserve: Duration,
    /// How long before that cut-off a delivery stops starting posts, so that the posts in flight
    /// can finish and the sender can be told how it went. At most a tenth of the invocation's
    /// time, so that a function with a short timeout still spends most of it delivering.
    pub stop_margin: Duration,
    /// Posts a second one invocation may start: its share of the account's `@connections`
    /// throttle (a stack's budget divided among the functions that can run at once). `None`:
    /// as fast as the concurrency allows.
    pub post_rate: Option<u32>,
    /// Connections a segment is sized for when a broadcast is sharded.
    pub shard_size: u32,
    /// At least this many segments a sharded broadcast (the workers that can take jobs at once:
    /// the table's size estimate can be hours old, and a fast-grown audience still keeps every
    /// worker busy).
    pub min_segments: u32,
    /// At most this many segments a broadcast.
    pub max_segments: u32,
    /// Posts a shard job starts before it hands the rest of its segment on as a new job: bounds
    /// what is delivered twice if its worker dies mid-job.
    pub shard_posts: usize,
    /// Receives of a shard job before the queue sets it aside (its `maxReceiveCount`): a job that
    /// fails on this one is told to its sender.
    pub shard_attempts: u32,
    /// Rooms of at most this many members (the joining or leaving one included) send presence
    /// frames (`PRESENCE_LIMIT`, the stack's `webchat:presenceLimit`): past it the frames would
    /// grow with the square of the room.
    pub presence_limit: u64,
    /// How long a room's messages are kept (`HISTORY_DAYS`, the stack's `webchat:historyDays`).
    pub history_days: u32,
    /// The per-client limits ([`limits::Limits`]; the stack's `webchat:frameRate` and the rest).
    pub limits: limits::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            posts_in_flight: 512,
            throttle_backoff: Backoff {
                attempts: 5,
                base: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
            welcome_backoff: Backoff {
                attempts: 8,
                base: Duration::from_millis(25),
                max: Duration::from_millis(1000),
            },
            deadline_reserve: Duration::from_secs(2),
            stop_margin: Duration::from_secs(1),
            post_rate: None,
            shard_size: 1_000,
            min_segments: 2,
            max_segments: 1_000,
            shard_posts: 20_000,
            shard_attempts: 3,
            presence_limit: 100,
            history_days: 7,
            limits: limits::Limits::default(),
        }
    }
}

/// Who sent a frame: its connection, and the identity its token gave (`None` without sign-in,
/// where the display name is the one stored at `$connect`).
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    pub connection_id: &'a str,
    pub identity: Option<&'a crate::auth::Identity>,
}

/// A connection id alone: a sender without sign-in.
impl<'a> From<&'a str> for Sender<'a> {
    fn from(connection_id: &'a str) -> Self {
        Sender {
            connection_id,
            identity: None,
        }
    }
}

impl<'a> From<&'a String> for Sender<'a> {
    fn from(connection_id: &'a String) -> Self {
        Sender::from(connection_id.as_str())
    }
}

/// The routes, bound to their ports.
pub struct Chat<S, A, B, R> {
    pub store: S,
    /// Rooms: members, each connection's rooms, counters and history.
    pub rooms: R,
    pub api: A,
    pub bus: B,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
    /// Where a broadcast larger than one Scan page goes as shard jobs; `None`: every broadcast is
    /// delivered by the function that received it.
    pub shards: Option<Arc<dyn ShardQueue>>,
    /// Where every summary goes as metrics.
    pub metrics: Arc<dyn Metrics>,
    /// The limits' buckets, shared by every instance (DynamoDB in Lambda; memory locally).
    pub limits: Arc<dyn LimitStore>,
}

impl<S, A, B, R> Chat<S, A, B, R> {
    /// Reports what a broadcast, a shard job or a cleanup did: its one log line and its metrics,
    /// both from the one value.
    pub(crate) fn report(&self, summary: Summary) {
        summary.log();
        self.metrics.record(&summary);
    }
}

/// The infrastructure failed while serving a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    CutOff(#[from] CutOff),
}

/// The shard queue failed: a sharded broadcast's failure.
impl From<QueueError> for RouteError {
    fn from(error: QueueError) -> Self {
        RouteError::Shard(ShardError::Queue(error))
    }
}
