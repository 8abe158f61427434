//! SQS in memory: the shard queue, its dead-letter queue and Lambda's event source mapping, with
//! the semantics the sharded broadcast relies on. `webchat-local`, the shard tests and the
//! sharded bench all use this one.
//!
//! - A message received is invisible for the visibility timeout, counted from the receive; one
//!   its receiver does not delete by then (a worker that failed, or died) becomes visible again,
//!   with its receive count one higher when received next. A delete or a failure names the
//!   receive it settles ([`Received`], SQS's receipt handle): a receiver whose message has since
//!   been received again settles nothing.
//! - After `max_receives` receives, a message that fails (or times out) again is moved to the
//!   dead-letter queue (the redrive policy's `maxReceiveCount`), where [`MemoryQueue::dead_letters`]
//!   reads it.
//! - [`serve`] is the event source mapping: a batch of one message at a time to the worker, in
//!   the SQS event shape ([`sqs_event`]), at most `workers` at once; an invocation that fails, or
//!   that reports the message in `batchItemFailures`, fails it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::lock;
use crate::ports::{QueueError, ShardJob, ShardQueue};

/// How the queue and its event source mapping behave (the stack's settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// Invocations at once (the event source mapping's maximum concurrency).
    pub workers: usize,
    /// How long a received message stays invisible unless deleted: at least the worker's
    /// timeout, or a job still running is handed to a second worker (SQS refuses an event source
    /// mapping otherwise). A failed job comes back after it too.
    pub visibility_timeout: Duration,
    /// Receives of a message before a failure sets it aside in the dead-letter queue (the
    /// redrive policy's `maxReceiveCount`).
    pub max_receives: u32,
}

impl QueueSettings {
    /// The visibility timeout for a worker with `timeout`, as the stack sets it: six times the
    /// timeout (AWS's recommendation); with none, SQS's longest (12 h), so that no job still
    /// running goes to a second worker.
    pub fn visibility_for(timeout: Option<Duration>) -> Duration {
        timeout.map_or(Duration::from_secs(12 * 3600), |timeout| {
            timeout.saturating_mul(6)
        })
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            workers: 8,
            // a worker's default timeout is 10 s
            visibility_timeout: QueueSettings::visibility_for(Some(Duration::from_secs(10))),
            max_receives: 3,
        }
    }
}

/// A message as a receiver gets it: with its receive count, it is also the receipt that a delete
/// or a failure names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub body: String,
    /// This receive included (SQS's `ApproximateReceiveCount`).
    pub receives: u32,
}

/// Dead letters kept (the newest): a long-running webchat-local must not grow without bound.
const DEAD_LETTERS_KEPT: usize = 1000;

#[derive(Debug)]
struct Stored {
    id: String,
    body: String,
    receives: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Visible messages, oldest first, with when each becomes visible.
    waiting: VecDeque<(Instant, Stored)>,
    /// Received and neither deleted nor failed yet, by id, with when they become visible again.
    in_flight: HashMap<String, (Instant, Stored)>,
    dead: VecDeque<Stored>,
    sent: usize,
}

/// An SQS queue with its dead-letter queue, in memory.
#[derive(Debug)]
pub struct MemoryQueue {
    settings: QueueSettings,
    state: Mutex<State>,
    changed: Notify,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        MemoryQueue::new(QueueSettings::default())
    }
}

impl MemoryQueue {
    pub fn new(settings: QueueSettings) -> Self {
        MemoryQueue {
            settings,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// Sends a message (SendMessage).
    pub fn send(&self, body: String) {
        let mut state = lock(&self.state);
        state.sent += 1;
        let id = format!("{:08x}-{:024x}", state.sent, fastrand::u128(..) >> 32);
        state.waiting.push_back((
            Instant::now(),
            Stored {
                id,
                body,
                receives: 0,
            },
        ));
        drop(state);
        self.changed.notify_waiters();
    }

    /// A message that is visible now, if any (ReceiveMessage with no wait).
    pub fn receive(&self) -> Option<Received> {
        let (received, expired) = self.take_visible();
        // A message now in flight, or one the expiry moved, changes what settled() waits for
        // (its timer must count from this receive). Nothing changed, nobody is woken: next()
        // would otherwise wake itself.
        if received.is_some() || expired {
            self.changed.notify_waiters();
        }
        received
    }

    /// The oldest visible message, now in flight; and whether an expiry moved anything.
    fn take_visible(&self) -> (Option<Received>, bool) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let expired = self.expire(&mut state, now);
        let Some(index) = state.waiting.iter().position(|(at, _)| *at <= now) else {
            return (None, expired);
        };
        let Some((_, mut message)) = state.waiting.remove(index) else {
            return (None, expired);
        };
        message.receives += 1;
        let received = Received {
            id: message.id.clone(),
            body: message.body.clone(),
            receives: message.receives,
        };
        let until = now + self.settings.visibility_timeout;
        state.in_flight.insert(message.id.clone(), (until, message));
        (Some(received), expired)
    }

    /// The next message, waiting until one is visible (a long poll that never ends empty).
    pub async fn next(&self) -> Received {
        loop {
            let changed = self.changed.notified();
            if let Some(message) = self.receive() {
                return message;
            }
            let wake = self
                .next_visible()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Deletes a received message: its work is done (DeleteMessage). A receipt that is no longer
    /// the message's latest (it was received again since) deletes nothing.
    pub fn delete(&self, message: &Received) {
        let mut state = lock(&self.state);
        let latest = |stored: &Stored| stored.receives == message.receives;
        let deleted = match state.in_flight.get(&message.id) {
            Some((_, stored)) if latest(stored) => state.in_flight.remove(&message.id).is_some(),
            Some(_) => false,
            // Its visibility timeout is over, but nobody has received it since: SQS still takes
            // this receipt.
            None => {
                let before = state.waiting.len();
                state
                    .waiting
                    .retain(|(_, stored)| stored.id != message.id || !latest(stored));
                state.waiting.len() < before
            }
        };
        drop(state);
        if deleted {
            self.changed.notify_waiters();
        }
    }

    /// A received message whose work failed: visible again when its visibility timeout (from
    /// the receive) is over, or, after its last receive, set aside in the dead-letter queue. (SQS
    /// has no such call: the receiver does not delete the message, and the timeout does the rest;
    /// this says so at once.) A stale receipt fails nothing.
    pub fn fail(&self, message: &Received) {
        let mut state = lock(&self.state);
        let current = state
            .in_flight
            .get(&message.id)
            .is_some_and(|(_, stored)| stored.receives == message.receives);
        if current && let Some((until, stored)) = state.in_flight.remove(&message.id) {
            self.requeue(&mut state, until, stored);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Messages in flight whose visibility timeout is over come back (or go to the dead-letter
    /// queue), as if their receiver had died. Whether any did.
    fn expire(&self, state: &mut State, now: Instant) -> bool {
        let over: Vec<String> = state
            .in_flight
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &over {
            if let Some((until, message)) = state.in_flight.remove(id) {
                self.requeue(state, until, message);
            }
        }
        !over.is_empty()
    }

    fn requeue(&self, state: &mut State, visible: Instant, message: Stored) {
        if message.receives >= self.settings.max_receives {
            tracing::error!(
                message_id = message.id,
                receives = message.receives,
                "shard job set aside in the dead-letter queue after its retries"
            );
            if state.dead.len() == DEAD_LETTERS_KEPT {
                state.dead.pop_front();
            }
            state.dead.push_back(message);
        } else {
            state.waiting.push_back((visible, message));
        }
    }

    /// When the next message waiting or in flight becomes visible.
    fn next_visible(&self) -> Option<Instant> {
        let state = lock(&self.state);
        let waiting = state.waiting.iter().map(|(at, _)| *at);
        let in_flight = state.in_flight.values().map(|(until, _)| *until);
        waiting.chain(in_flight).min()
    }

    /// Messages waiting or in flight (not deleted, not dead).
    pub fn len(&self) -> usize {
        let state = lock(&self.state);
        state.waiting.len() + state.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every message sent has been deleted or set aside (by the receivers, or by the
    /// visibility timeout of a receiver that died).
    pub async fn settled(&self) {
        loop {
            let changed = self.changed.notified();
            let (expiry, expired) = {
                let mut state = lock(&self.state);
                let expired = self.expire(&mut state, Instant::now());
                if state.waiting.is_empty() && state.in_flight.is_empty() {
                    return;
                }
                (
                    state.in_flight.values().map(|(until, _)| *until).min(),
                    expired,
                )
            };
            if expired {
                // a message back on the queue is news to the receivers waiting in next()
                self.changed.notify_waiters();
            }
            match expiry {
                Some(at) => tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(at) => {}
                },
                None => changed.await,
            }
        }
    }

    /// How many messages were ever sent.
    pub fn sent(&self) -> usize {
        lock(&self.state).sent
    }

    /// The bodies in the dead-letter queue (the newest thousand), oldest first.
    pub fn dead_letters(&self) -> Vec<String> {
        lock(&self.state)
            .dead
            .iter()
            .map(|message| message.body.clone())
            .collect()
    }

    /// The bodies of the messages waiting (not in flight), oldest first, without receiving them.
    pub fn peek(&self) -> Vec<String> {
        lock(&self.state)
            .waiting
            .iter()
            .map(|(_, message)| message.body.clone())
            .collect()
    }
}

/// The shard queue's side of the queue: jobs go in as JSON bodies, as the SQS adapter sends them.
impl ShardQueue for MemoryQueue {
    fn enqueue(&self, jobs: Vec<ShardJob>) -> BoxFuture<'_, Result<(), QueueError>> {
        for job in jobs {
            self.send(serde_json::to_string(&job).expect("a job always serializes"));
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The SQS event Lambda's event source mapping delivers for `messages`.
pub fn sqs_event(messages: &[Received]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|message| {
            let mut record = SqsMessage::default();
            record.message_id = Some(message.id.clone());
            record.receipt_handle = Some(format!("{}-{}", message.id, message.receives));
            record.body = Some(message.body.clone());
            record.attributes = HashMap::from([(
                "ApproximateReceiveCount".to_owned(),
                message.receives.to_string(),
            )]);
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some("arn:aws:sqs:local:000000000000:shards".into());
            record.aws_region = Some("local".into());
            record
        })
        .collect();
    event
}

/// Settles a received message by its invocation's answer: deleted if it served it, failed if
/// the invocation failed or reported a failure in `batchItemFailures` (a batch is one message
/// here; Lambda fails a whole batch on an identifier it does not know).
pub fn settle<E>(queue: &MemoryQueue, message: &Received, answer: &Result<SqsBatchResponse, E>) {
    let failed = match answer {
        Ok(response) => !response.batch_item_failures.is_empty(),
        Err(_) => true,
    };
    if failed {
        queue.fail(message);
    } else {
        queue.delete(message);
    }
}

/// Lambda's event source mapping: hands each message, as a batch of one, to `invoke`, at most
/// `workers` at once, and settles it by the answer. Runs until dropped; the invocations in flight
/// are dropped with it (a gateway shutting down stops its workers).
pub async fn serve<F, Fut, E>(queue: Arc<MemoryQueue>, invoke: F)
where
    F: Fn(SqsEvent, String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<SqsBatchResponse, E>> + Send + 'static,
    E: Send + 'static,
{
    let workers = Arc::new(Semaphore::new(queue.settings.workers.max(1)));
    let mut invocations = tokio::task::JoinSet::new();
    loop {
        let Ok(worker) = workers.clone().acquire_owned().await else {
            return;
        };
        // reap the finished ones, so the set holds only what is in flight
        while invocations.try_join_next().is_some() {}
        let message = queue.next().await;
        let (queue, invoke) = (queue.clone(), invoke.clone());
        invocations.spawn(async move {
            let event = sqs_event(std::slice::from_ref(&message));
            let answer = invoke(event, message.id.clone()).await;
            settle(&queue, &message, &answer);
            drop(worker);
        });
    }
}
