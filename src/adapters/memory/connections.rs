//! `@connections` in memory: API Gateway's management API over whatever is at the far end of each
//! connection. The far end is a [`Peer`]: a socket of the local gateway, an [`Inbox`] a test
//! reads, or a counter in a bench. What API Gateway does between the caller and the peer is here
//! once, for all of them: the 128 KB payload limit (413), "gone" for a connection it does not know
//! (410), the account's throttle (429), a service's latency, and answers scripted per connection
//! (429 twice, then 200).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::lock;
use crate::ports::{ApiError, ConnectionApi, ConnectionInfo, Outcome};
use crate::protocol::MAX_PAYLOAD_BYTES;

/// The far end of one connection: what a post is handed to.
pub trait Peer: Send + Sync + 'static {
    /// Takes one message (within the payload limit); `Gone` when the far end cannot take it.
    fn deliver(&self, data: Bytes) -> Outcome<()>;

    /// GetConnection's answer; `None` once the connection is closed (410).
    fn info(&self) -> Option<ConnectionInfo>;

    /// Closes the connection after the messages already handed over, with close `code` and
    /// `reason` (DeleteConnection: 1000).
    fn close(&self, code: u16, reason: &'static str) -> Outcome<()>;
}

/// A peer that takes every message until it is closed: a client that reads everything. What it
/// was sent is in the recording of the [`MemoryConnectionApi`] it is open in.
#[derive(Debug)]
pub struct Inbox {
    opened: DateTime<Utc>,
    closed: AtomicBool,
}

impl Peer for Inbox {
    fn deliver(&self, _data: Bytes) -> Outcome<()> {
        if self.closed.load(Ordering::Relaxed) {
            Outcome::Gone
        } else {
            Outcome::Done(())
        }
    }

    fn info(&self) -> Option<ConnectionInfo> {
        (!self.closed.load(Ordering::Relaxed)).then(|| ConnectionInfo {
            connected_at: self.opened,
            last_active_at: self.opened,
            source_ip: Some("127.0.0.1".into()),
            user_agent: None,
        })
    }

    fn close(&self, _code: u16, _reason: &'static str) -> Outcome<()> {
        self.closed.store(true, Ordering::Relaxed);
        Outcome::Done(())
    }
}

type Scripted = Result<Outcome<()>, ApiError>;

/// What was asked of the API, in order: kept only when built to record (tests), so a long-running
/// local server does not grow without bound.
#[derive(Debug, Default)]
struct Recording {
    /// Every post asked for, by connection id, whatever its answer.
    attempts: Vec<String>,
    posts: Vec<(String, String)>,
    describes: Vec<String>,
}

/// API Gateway's account throttle: a token bucket of `rate` a second holding at most `burst`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        let refilled = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refilled).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `@connections` in memory, over peers of type `P`.
#[derive(Debug)]
pub struct MemoryConnectionApi<P = Inbox> {
    peers: RwLock<HashMap<String, Arc<P>>>,
    max_payload_bytes: usize,
    scripts: Mutex<HashMap<String, VecDeque<Scripted>>>,
    /// Whether any answer was ever scripted: webchat-local's posts never take that lock.
    scripted: AtomicBool,
    /// The latency of a post that is not scripted, in nanoseconds.
    delay_nanos: AtomicU64,
    throttle: Option<Mutex<Bucket>>,
    throttled: AtomicUsize,
    recording: Option<Mutex<Recording>>,
}

impl Default for MemoryConnectionApi {
    fn default() -> Self {
        MemoryConnectionApi::new()
    }
}

impl MemoryConnectionApi {
    /// Inboxes that record every post and describe, for tests.
    pub fn new() -> Self {
        MemoryConnectionApi {
            recording: Some(Mutex::default()),
            ..MemoryConnectionApi::serving(MAX_PAYLOAD_BYTES)
        }
    }

    /// Opens an inbox for `connection_id` (a client that connected and reads everything).
    pub fn open(&self, connection_id: &str) {
        self.insert(
            connection_id,
            Arc::new(Inbox {
                opened: Utc::now(),
                closed: AtomicBool::new(false),
            }),
        );
    }
}

impl<P: Peer> MemoryConnectionApi<P> {
    /// Serves posts of at most `max_payload_bytes` and records nothing.
    pub fn serving(max_payload_bytes: usize) -> Self {
        MemoryConnectionApi {
            peers: RwLock::new(HashMap::new()),
            max_payload_bytes,
            scripts: Mutex::default(),
            scripted: AtomicBool::new(false),
            delay_nanos: AtomicU64::new(0),
            throttle: None,
            throttled: AtomicUsize::new(0),
            recording: None,
        }
    }

    /// Answers 429 to posts beyond `rate` a second, bursts of `burst` allowed: API Gateway's
    /// account throttle, which every post in the account shares.
    pub fn with_throttle(mut self, rate: f64, burst: f64) -> Self {
        self.throttle = Some(Mutex::new(Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }));
        self
    }

    /// A connection established: posts to `connection_id` reach `peer` from now on.
    pub fn insert(&self, connection_id: &str, peer: Arc<P>) {
        self.write().insert(connection_id.to_owned(), peer);
    }

    /// A connection ended (the client left): posts to it answer 410 from now on.
    pub fn remove(&self, connection_id: &str) {
        self.write().remove(connection_id);
    }

    /// DeleteConnection: closes the connection after what was already posted to it.
    pub fn delete(&self, connection_id: &str) -> Outcome<()> {
        match self.peer(connection_id) {
            Some(peer) => peer.close(1000, "connection deleted"),
            None => Outcome::Gone,
        }
    }

    /// Closes `connection_id` for breaking the service's policy (1008, `reason`).
    pub fn close_for_policy(&self, connection_id: &str, reason: &'static str) -> Outcome<()> {
        match self.peer(connection_id) {
            Some(peer) => peer.close(1008, reason),
            None => Outcome::Gone,
        }
    }

    /// The peer of `connection_id`, if it is established.
    pub fn peer(&self, connection_id: &str) -> Option<Arc<P>> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(connection_id)
            .cloned()
    }

    /// Every established connection's peer.
    pub fn peers(&self) -> Vec<(String, Arc<P>)> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(id, peer)| (id.clone(), peer.clone()))
            .collect()
    }

    /// How many connections are established.
    pub fn len(&self) -> usize {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<P>>> {
        self.peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next posts to `connection_id` answer these, in order, before normal service resumes
    /// (an answer of 200 hands the post to the peer, if there is one).
    pub fn script(&self, connection_id: &str, answers: impl IntoIterator<Item = Scripted>) {
        let mut scripts = lock(&self.scripts);
        scripts
            .entry(connection_id.to_owned())
            .or_default()
            .extend(answers);
        self.scripted.store(true, Ordering::Release);
    }

    /// Every post that is not scripted takes this long before it answers.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// How many posts the throttle answered 429.
    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Every message handed to a peer as (connection id, message), in order (empty unless built
    /// to record).
    pub fn posts(&self) -> Vec<(String, String)> {
        self.recording
            .as_ref()
            .map(|recording| lock(recording).posts.clone())
            .unwrap_or_default()
    }

    /// The messages handed to `connection_id`'s peer, in order.
    pub fn posts_to(&self, connection_id: &str) -> Vec<String> {
        self.posts()
            .into_iter()
            .filter(|(to, _)| to == connection_id)
            .map(|(_, message)| message)
            .collect()
    }

    /// How many posts to `connection_id` were asked for, whatever their answers.
    pub fn attempts_to(&self, connection_id: &str) -> usize {
        self.recording.as_ref().map_or(0, |recording| {
            lock(recording)
                .attempts
                .iter()
                .filter(|to| *to == connection_id)
                .count()
        })
    }

    /// The connections described, in order.
    pub fn describes(&self) -> Vec<String> {
        self.recording
            .as_ref()
            .map(|recording| lock(recording).describes.clone())
            .unwrap_or_default()
    }

    fn hand_over(&self, connection_id: &str, data: Bytes) -> Outcome<()> {
        let Some(peer) = self.peer(connection_id) else {
            return Outcome::Gone;
        };
        let recorded = self
            .recording
            .as_ref()
            .map(|_| String::from_utf8_lossy(&data).into_owned());
        let outcome = peer.deliver(data);
        if let (Outcome::Done(()), Some(message), Some(recording)) =
            (&outcome, recorded, &self.recording)
        {
            lock(recording)
                .posts
                .push((connection_id.to_owned(), message));
        }
        outcome
    }
}

impl<P: Peer> ConnectionApi for MemoryConnectionApi<P> {
    async fn post(&self, connection_id: &str, data: Bytes) -> Result<Outcome<()>, ApiError> {
        if let Some(recording) = &self.recording {
            lock(recording).attempts.push(connection_id.to_owned());
        }
        if data.len() > self.max_payload_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        let scripted = if self.scripted.load(Ordering::Acquire) {
            lock(&self.scripts)
                .get_mut(connection_id)
                .and_then(VecDeque::pop_front)
        } else {
            None
        };
        if let Some(answer) = scripted {
            if answer == Ok(Outcome::Done(())) {
                self.hand_over(connection_id, data);
            }
            return answer;
        }
        let delay = self.delay_nanos.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_nanos(delay)).await;
        }
        if let Some(bucket) = &self.throttle
            && !lock(bucket).admit()
        {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::Throttled("429 LimitExceededException".into()));
        }
        Ok(self.hand_over(connection_id, data))
    }

    async fn delete_connection(&self, connection_id: &str) -> Result<Outcome<()>, ApiError> {
        Ok(self.delete(connection_id))
    }

    async fn close_for_policy(
        &self,
        connection_id: &str,
        reason: &'static str,
    ) -> Result<Outcome<()>, ApiError> {
        Ok(MemoryConnectionApi::close_for_policy(
            self,
            connection_id,
            reason,
        ))
    }

    async fn describe(&self, connection_id: &str) -> Result<Outcome<ConnectionInfo>, ApiError> {
        if let Some(recording) = &self.recording {
            lock(recording).describes.push(connection_id.to_owned());
        }
        Ok(
            match self.peer(connection_id).and_then(|peer| peer.info()) {
                Some(info) => Outcome::Done(info),
                None => Outcome::Gone,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn posts_reach_open_peers_and_answer_gone_for_the_rest() {
        let api = MemoryConnectionApi::new();
        api.open("a");
        assert_eq!(
            api.post("a", Bytes::from_static(b"hi")).await,
            Ok(Outcome::Done(()))
        );
        assert_eq!(
            api.post("b", Bytes::from_static(b"hi")).await,
            Ok(Outcome::Gone)
        );
        assert_eq!(api.delete("a"), Outcome::Done(()));
        assert_eq!(
            api.post("a", Bytes::from_static(b"late")).await,
            Ok(Outcome::Gone),
            "a deleted connection takes nothing more"
        );
        assert_eq!(api.describe("a").await, Ok(Outcome::Gone));
        assert_eq!(api.attempts_to("a"), 2);
        api.remove("a");
        assert_eq!(api.describe("a").await, Ok(Outcome::Gone));
        assert_eq!(api.posts(), vec![("a".to_owned(), "hi".to_owned())]);
    }

    #[tokio::test]
    async fn a_payload_over_the_limit_is_refused_before_anything_else() {
        let api = MemoryConnectionApi::new();
        api.open("a");
        api.script("a", [Ok(Outcome::Done(()))]);
        let data = Bytes::from(vec![b'x'; MAX_PAYLOAD_BYTES + 1]);
        assert_eq!(api.post("a", data).await, Err(ApiError::PayloadTooLarge));
        assert!(api.posts().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_admits_its_burst_then_its_rate() {
        let api = MemoryConnectionApi::new().with_throttle(10.0, 5.0);
        api.open("a");
        let mut admitted = 0;
        for _ in 0..8 {
            if api.post("a", Bytes::from_static(b"x")).await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!((admitted, api.throttled()), (5, 3), "the burst, then 429s");
        tokio::time::advance(Duration::from_millis(300)).await;
        let mut later = 0;
        for _ in 0..5 {
            if api.post("a", Bytes::from_static(b"x")).await.is_ok() {
                later += 1;
            }
        }
        assert_eq!(later, 3, "10 a second refill 3 tokens in 300 ms");
    }
}
