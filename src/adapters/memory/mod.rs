//! In-memory adapters. Each one either serves (`webchat-local`) or serves and records (tests):
//! recording is opt-in so a long-running local server does not grow without bound.
//!
//! [`MemoryConnectionApi`] is `@connections` in memory over any [`Peer`]: the local gateway's
//! sockets, a test's inboxes, a bench's counters.
//! [`MemoryRoomStore`] is the rooms' store, keyed as DynamoDB keys them.
//! [`MemoryLimits`] holds the per-client limits' buckets (issue 23, in progress: no route checks
//! them yet).
//! [`MemoryQueue`] is SQS in memory (visibility, receive counts, a dead-letter queue) with
//! Lambda's event source mapping ([`serve`]): the shard queue of `webchat-local`, the shard tests
//! and the sharded bench alike.

mod connections;
mod limits;
mod queue;
mod rooms;

pub use connections::{Inbox, MemoryConnectionApi, Peer};
pub use limits::MemoryLimits;
pub use queue::{MemoryQueue, QueueSettings, Received, serve, settle, sqs_event};
pub use rooms::MemoryRoomStore;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::domain::Summary;
use crate::ports::{
    BusError, BusEvent, Clock, ConnectedAt, ConnectionRecord, ConnectionStore, EventBus, Metrics,
    Page, Recipient, Segment, StoreError,
};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One call the store was asked to make: the routes' tests assert which calls a route makes (a
/// connect stores once and reads nothing, a broadcast follows every page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreCall {
    Put(String),
    Get(String),
    Delete(String),
    DeleteIfConnectedAt(String),
    ScanRecipients,
    CountEstimate,
    ScanRecords,
    ConnectionsOf(String),
}

/// Connection records in a `BTreeMap`, paginated like a DynamoDB Scan (by key, `page_size` a page).
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
}

#[derive(Debug)]
struct StoreState {
    records: BTreeMap<String, ConnectionRecord>,
    page_size: usize,
    failing: Option<String>,
    /// Scans that may still succeed before every scan fails (`None`: no limit).
    scans_left: Option<usize>,
    calls: Option<Vec<StoreCall>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store that serves and records nothing: for `webchat-local`.
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(StoreState {
                records: BTreeMap::new(),
                page_size: 1000,
                failing: None,
                scans_left: None,
                calls: None,
            }),
        }
    }

    /// Serves `page_size` items a page (at least one).
    pub fn with_page_size(self, page_size: usize) -> Self {
        lock(&self.state).page_size = page_size.max(1);
        self
    }

    /// A store that records its calls and serves `page_size` items a page.
    pub fn recording(page_size: usize) -> Self {
        let store = MemoryStore::new();
        {
            let mut state = lock(&store.state);
            state.page_size = page_size.max(1);
            state.calls = Some(Vec::new());
        }
        store
    }

    /// Makes every call fail with `reason` (or work again with `None`).
    pub fn set_failing(&self, reason: Option<&str>) {
        lock(&self.state).failing = reason.map(str::to_owned);
    }

    /// Lets `pages` more scan pages succeed, then fails every scan (a Scan throttled past its
    /// retries, say).
    pub fn fail_scans_after(&self, pages: usize) {
        lock(&self.state).scans_left = Some(pages);
    }

    pub fn insert(&self, record: ConnectionRecord) {
        lock(&self.state)
            .records
            .insert(record.connection_id.clone(), record);
    }

    /// Every stored record, expired ones included, by key.
    pub fn records(&self) -> Vec<ConnectionRecord> {
        lock(&self.state).records.values().cloned().collect()
    }

    pub fn contains(&self, connection_id: &str) -> bool {
        lock(&self.state).records.contains_key(connection_id)
    }

    pub fn len(&self) -> usize {
        lock(&self.state).records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The calls made so far (empty unless built with [`MemoryStore::recording`]).
    pub fn calls(&self) -> Vec<StoreCall> {
        lock(&self.state).calls.clone().unwrap_or_default()
    }

    fn begin(&self, call: StoreCall) -> Result<MutexGuard<'_, StoreState>, StoreError> {
        let mut state = lock(&self.state);
        if let Some(calls) = state.calls.as_mut() {
            calls.push(call);
        }
        match &state.failing {
            Some(reason) => Err(StoreError(reason.clone())),
            None => Ok(state),
        }
    }

    fn begin_scan(&self, call: StoreCall) -> Result<MutexGuard<'_, StoreState>, StoreError> {
        let mut state = self.begin(call)?;
        match state.scans_left {
            Some(0) => Err(StoreError("scan failed after its retries".into())),
            Some(left) => {
                state.scans_left = Some(left - 1);
                Ok(state)
            }
            None => Ok(state),
        }
    }
}

/// The segment of `total` a key falls in: its place in a 64-bit hash space split into `total`
/// equal ranges (DynamoDB splits its key space the same way), FNV-1a for a hash that is the same
/// in every process.
pub fn segment_of(key: &str, total: u32) -> u32 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    ((u128::from(hash) * u128::from(total.max(1))) >> 64) as u32
}

impl StoreState {
    fn page<T>(
        &self,
        segment: Segment,
        cursor: Option<&str>,
        live_at: Option<i64>,
        map: impl Fn(&ConnectionRecord) -> T,
    ) -> Page<T> {
        let start = cursor.map_or(Bound::Unbounded, |key| Bound::Excluded(key.to_owned()));
        let mut items = Vec::new();
        let mut last = None;
        let mut range = self
            .records
            .range((start, Bound::Unbounded))
            .filter(|(key, _)| {
                segment.total <= 1 || segment_of(key, segment.total) == segment.index
            });
        // Like DynamoDB, the page limit counts records examined, not records returned.
        for (key, record) in range.by_ref().take(self.page_size) {
            last = Some(key.clone());
            if live_at.is_none_or(|now| record.is_live_at(now)) {
                items.push(map(record));
            }
        }
        let next = if range.next().is_some() { last } else { None };
        Page { items, next }
    }
}

impl ConnectionStore for MemoryStore {
    async fn put(&self, record: ConnectionRecord) -> Result<(), StoreError> {
        let mut state = self.begin(StoreCall::Put(record.connection_id.clone()))?;
        state.records.insert(record.connection_id.clone(), record);
        Ok(())
    }

    async fn get(
        &self,
        connection_id: &str,
        live_at: i64,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        let state = self.begin(StoreCall::Get(connection_id.to_owned()))?;
        Ok(state
            .records
            .get(connection_id)
            .filter(|r| r.is_live_at(live_at))
            .cloned())
    }

    async fn connections_of(&self, user: &str, live_at: i64) -> Result<Vec<Recipient>, StoreError> {
        let state = self.begin(StoreCall::ConnectionsOf(user.to_owned()))?;
        let mut found: Vec<Recipient> = state
            .records
            .values()
            .filter(|r| r.user.as_deref() == Some(user) && r.is_live_at(live_at))
            .map(ConnectionRecord::recipient)
            .collect();
        found.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(found)
    }

    async fn delete(&self, connection_id: &str) -> Result<(), StoreError> {
        let mut state = self.begin(StoreCall::Delete(connection_id.to_owned()))?;
        state.records.remove(connection_id);
        Ok(())
    }

    async fn delete_if_connected_at(
        &self,
        connection_id: &str,
        connected_at: &ConnectedAt,
    ) -> Result<bool, StoreError> {
        let mut state = self.begin(StoreCall::DeleteIfConnectedAt(connection_id.to_owned()))?;
        // As DynamoDB's condition does: the stored text, compared exactly.
        let same = |record: &ConnectionRecord| record.connected_at.text() == connected_at.text();
        if state.records.get(connection_id).is_some_and(same) {
            state.records.remove(connection_id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn scan_recipients(
        &self,
        live_at: i64,
        segment: Segment,
        cursor: Option<String>,
    ) -> Result<Page<Recipient>, StoreError> {
        let state = self.begin_scan(StoreCall::ScanRecipients)?;
        Ok(state.page(
            segment,
            cursor.as_deref(),
            Some(live_at),
            ConnectionRecord::recipient,
        ))
    }

    async fn scan_records(
        &self,
        live_at: Option<i64>,
        cursor: Option<String>,
    ) -> Result<Page<ConnectionRecord>, StoreError> {
        let state = self.begin_scan(StoreCall::ScanRecords)?;
        Ok(state.page(
            Segment::WHOLE,
            cursor.as_deref(),
            live_at,
            ConnectionRecord::clone,
        ))
    }

    async fn count_estimate(&self) -> Result<u64, StoreError> {
        let state = self.begin(StoreCall::CountEstimate)?;
        Ok(state.records.len() as u64)
    }
}

/// An event on its way from the bus to a rule's target, with its publisher's X-Ray trace header
/// (EventBridge hands the target the publisher's trace).
#[derive(Clone, Debug)]
pub struct Routed {
    pub event: BusEvent,
    pub trace_header: Option<String>,
}

/// EventBridge in memory: hands every event to a rule's target (`webchat-local`'s rule gives the
/// welcome to `post`), records what was published (tests), and can be made to fail.
#[derive(Debug, Default)]
pub struct MemoryEventBus {
    published: Option<Mutex<Vec<BusEvent>>>,
    failing: Mutex<Option<String>>,
    rule: Option<tokio::sync::mpsc::UnboundedSender<Routed>>,
}

impl MemoryEventBus {
    /// Records every event, for tests.
    pub fn recording() -> Self {
        MemoryEventBus {
            published: Some(Mutex::new(Vec::new())),
            ..MemoryEventBus::default()
        }
    }

    /// Hands every event to a rule, which takes them from the receiver; keeps nothing.
    pub fn with_rule() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Routed>) {
        let (rule, routed) = tokio::sync::mpsc::unbounded_channel();
        let bus = MemoryEventBus {
            rule: Some(rule),
            ..MemoryEventBus::default()
        };
        (bus, routed)
    }

    pub fn published(&self) -> Vec<BusEvent> {
        self.published
            .as_ref()
            .map(|p| lock(p).clone())
            .unwrap_or_default()
    }

    /// Makes every publish fail with `reason` (or work again with `None`).
    pub fn set_failing(&self, reason: Option<&str>) {
        *lock(&self.failing) = reason.map(str::to_owned);
    }
}

impl EventBus for MemoryEventBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        if let Some(reason) = lock(&self.failing).clone() {
            return Err(BusError(reason));
        }
        if let Some(published) = &self.published {
            lock(published).push(event.clone());
        }
        if let Some(rule) = &self.rule {
            let trace_header = crate::telemetry::current_xray_header();
            rule.send(Routed {
                event,
                trace_header,
            })
            .map_err(|_| BusError("the rule is not listening any more".into()))?;
        }
        Ok(())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn at(time: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(time))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *lock(&self.0) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }
}

/// Metrics that keep every summary reported, for tests to read.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    summaries: Mutex<Vec<Summary>>,
}

impl MemoryMetrics {
    /// Every summary so far, in order.
    pub fn summaries(&self) -> Vec<Summary> {
        lock(&self.summaries).clone()
    }
}

impl Metrics for MemoryMetrics {
    fn record(&self, summary: &Summary) {
        lock(&self.summaries).push(summary.clone());
    }
}
