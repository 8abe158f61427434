//! The stack's shard queue, its dead-letter queue and its event source mapping, in memory: a
//! sharded broadcast's jobs go to `fanout` in the SQS event shape, at most `workers` at once (the
//! mapping's maximum concurrency); a job whose invocation fails or reports it in
//! `batchItemFailures` comes back after the visibility timeout, and after `max_receives`
//! deliveries it is set aside in the dead-letter queue, as SQS's redrive policy does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};

use super::{Shared, invoke};
use crate::lambda::{self, Function};
use crate::ports::{QueueError, ShardJob, ShardQueue};

/// How the local queue hands jobs out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// `fanout` invocations at once (the event source mapping's maximum concurrency).
    pub workers: usize,
    /// How long a failed job stays invisible before it is delivered again.
    pub visibility_timeout: Duration,
    /// Deliveries of a job before it goes to the dead-letter queue (the redrive policy's
    /// `maxReceiveCount`).
    pub max_receives: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            workers: 8,
            visibility_timeout: Duration::from_secs(1),
            max_receives: 3,
        }
    }
}

/// A job on the queue: its message id, and how many times it was delivered.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    id: String,
    body: String,
    receives: u32,
}

/// The queue's sending side: what `broadcast` and `fanout` enqueue to.
#[derive(Debug)]
pub struct LocalQueue {
    messages: mpsc::UnboundedSender<Message>,
    /// Jobs set aside after their retries, by message id (what SQS's dead-letter queue keeps).
    dead_letters: Mutex<HashMap<String, String>>,
}

impl LocalQueue {
    pub(crate) fn new() -> (Arc<LocalQueue>, mpsc::UnboundedReceiver<Message>) {
        let (messages, receiver) = mpsc::unbounded_channel();
        let queue = LocalQueue {
            messages,
            dead_letters: Mutex::new(HashMap::new()),
        };
        (Arc::new(queue), receiver)
    }

    /// The bodies of the jobs in the dead-letter queue.
    pub fn dead_letters(&self) -> Vec<String> {
        let dead = self.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
        dead.values().cloned().collect()
    }
}

impl ShardQueue for LocalQueue {
    fn enqueue(&self, jobs: Vec<ShardJob>) -> BoxFuture<'_, Result<(), QueueError>> {
        let sent = jobs.into_iter().try_for_each(|job| {
            let body = serde_json::to_string(&job).expect("a job always serializes");
            let id = format!("{:032x}", fastrand::u128(..));
            self.messages.send(Message {
                id,
                body,
                receives: 0,
            })
        });
        let result = sent.map_err(|_| QueueError("the queue is not served any more".into()));
        Box::pin(std::future::ready(result))
    }
}

/// The SQS event Lambda's event source mapping delivers for one message.
fn sqs_event(message: &Message) -> SqsEvent {
    let mut record = SqsMessage::default();
    record.message_id = Some(message.id.clone());
    record.receipt_handle = Some(format!("local-{}-{}", message.id, message.receives));
    record.body = Some(message.body.clone());
    record.attributes = HashMap::from([(
        "ApproximateReceiveCount".to_owned(),
        message.receives.to_string(),
    )]);
    record.event_source = Some("aws:sqs".into());
    record.event_source_arn = Some("arn:aws:sqs:local:000000000000:shards".into());
    record.aws_region = Some("local".into());
    let mut event = SqsEvent::default();
    event.records = vec![record];
    event
}

/// The event source mapping: hands each message to `fanout`, `workers` at a time, and applies
/// the redrive policy to the ones that fail.
pub(crate) async fn run(
    shared: Arc<Shared>,
    queue: Arc<LocalQueue>,
    mut messages: mpsc::UnboundedReceiver<Message>,
) {
    let settings = shared.config.queue.clone();
    let workers = Arc::new(Semaphore::new(settings.workers.max(1)));
    while let Some(mut message) = messages.recv().await {
        let Ok(worker) = workers.clone().acquire_owned().await else {
            return;
        };
        message.receives += 1;
        let (shared, queue, settings) = (shared.clone(), queue.clone(), settings.clone());
        tokio::spawn(async move {
            let event = sqs_event(&message);
            let work = async {
                Ok::<_, lambda::HandlerError>(
                    lambda::shards(&shared.chat, event, shared.deadline()).await,
                )
            };
            let answer = invoke(Function::Fanout, &message.id, None, work).await;
            drop(worker);
            let failed = answer.is_err()
                || answer.is_ok_and(|response| !response.batch_item_failures.is_empty());
            if !failed {
                return;
            }
            if message.receives >= settings.max_receives {
                tracing::error!(
                    message_id = message.id,
                    receives = message.receives,
                    "shard job set aside in the dead-letter queue after its retries"
                );
                let mut dead = queue.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
                dead.insert(message.id, message.body);
                return;
            }
            tokio::time::sleep(settings.visibility_timeout).await;
            let _ = queue.messages.send(message);
        });
    }
}
